"""Batched text generation with a causal LM (GPT-2 and kin)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.inputs import InputError
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
    if not prompts:  # a window whose inputs were all done before (a rerun)
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


@task(cache_policy=NO_CACHE)
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
