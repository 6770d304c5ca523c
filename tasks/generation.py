"""Batched text generation with a causal LM (GPT-2 and kin)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.inputs import InputError, Loaded, read_prompt_file
from tasks.models import TextModel


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int


def generation_kwargs(settings: Mapping[str, object]) -> dict:
    """`generate()` arguments: greedy unless do_sample (sampling knobs are only passed when sampling)."""
    kw: dict = {"max_new_tokens": int(settings["max_new_tokens"]), "do_sample": bool(settings["do_sample"])}
    if kw["do_sample"]:
        kw |= {"temperature": settings["temperature"], "top_k": settings["top_k"], "top_p": settings["top_p"]}
    else:  # silence generation_config's sampling defaults, which greedy decoding ignores
        kw |= {"temperature": None, "top_k": None, "top_p": None}
    return kw


def check_prompt_lengths(lm: TextModel, prompts: Sequence[str], max_new_tokens: int) -> list[int | InputError]:
    """Each prompt's token count, or an InputError when prompt + new tokens exceed the model's context."""
    if not prompts:  # a window whose inputs were all done before (a rerun): the tokenizer refuses []
        return []
    room = lm.context_length - max_new_tokens
    out: list[int | InputError] = []
    for ids in lm.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]:
        if len(ids) > room:
            out.append(InputError(
                f"prompt too long: {len(ids)} tokens, but the model's context of {lm.context_length} tokens "
                f"leaves room for {max(room, 0)} with --max-new-tokens {max_new_tokens}; shorten the prompt "
                "or lower --max-new-tokens"
            ))
        else:
            out.append(len(ids))
    return out


def generate_batch(lm: TextModel, prompts: Sequence[str], settings: Mapping[str, object]) -> list[Generation]:
    """Continue each prompt. One left-padded batch; greedy results equal one-at-a-time results."""
    import torch

    if not prompts:
        return []
    if settings.get("do_sample"):
        torch.manual_seed(int(settings["seed"]))
    enc = lm.tokenizer(list(prompts), return_tensors="pt", padding=True).to(lm.device)
    with torch.inference_mode():
        out = lm.model.generate(**enc, **generation_kwargs(settings))
    new = out[:, enc["input_ids"].shape[1] :]
    eos = lm.tokenizer.eos_token_id
    results = []
    for row in new.tolist():
        n = row.index(eos) if eos in row else len(row)  # tokens up to the first EOS; the rest is padding
        results.append(Generation(lm.tokenizer.decode(row[:n], skip_special_tokens=True), n))
    return results


@dataclass
class TextGeneration:
    """Prompt files through a causal LM: the batch-job engine's text kind (tasks.batch.InputKind)."""

    lm: TextModel
    settings: Mapping[str, object]  # generation_kwargs' settings; the job's fingerprint
    model: str  # what --model named
    name: str = "text"
    measure: str = "new_tokens"

    def read(self, root: Path, rel: str, is_done) -> list[Loaded]:
        return read_prompt_file(root, rel)

    def check(self, items: list[Loaded]) -> list[Loaded]:
        lengths = check_prompt_lengths(self.lm, [x.value for x in items], int(self.settings["max_new_tokens"]))
        return [Loaded(x.item, error=str(n)) if isinstance(n, InputError) else Loaded(x.item, x.value, size=n)
                for x, n in zip(items, lengths)]

    def size(self, item: Loaded) -> int:
        return item.size  # tokens: prompts of similar length share a left-padded batch

    def infer(self, values: list) -> list[Generation]:
        return generate_batch(self.lm, values, self.settings)

    def fields(self, item: Loaded, output: Generation) -> dict:
        return {"output": output.text, "new_tokens": output.new_tokens}
