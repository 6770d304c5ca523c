"""Hugging Face models for batch inference: where they come from, loading them, tiny local ones.

`--model` is a hub id, a local folder, or an MLflow model URI. Weights load from
safetensors only and remote code is never trusted. A hub id that is not in the local
cache fails at once when the hub cannot be reached (transformers itself would retry for
~30 s and then print a generic message).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from trackflow.devices import resolve_device
from trackflow.naming import param

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
_HUB_PROBE_TIMEOUT = 3.0


class ModelSourceError(ValueError):
    """`--model` names nothing that can be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSource:
    requested: str  # what the user passed
    path: str  # what from_pretrained gets: a local folder or a hub id
    kind: str  # "local", "mlflow", "hub-cache" or "hub"

    @property
    def local_only(self) -> bool:
        return self.kind != "hub"


def _find_config_dir(root: Path) -> Path | None:
    if (root / "config.json").is_file():
        return root
    found = sorted(p.parent for p in root.rglob("config.json"))
    return found[0] if found else None


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=_HUB_PROBE_TIMEOUT).close()
        return True
    except OSError:
        return False


def _check_safetensors(folder: Path, model: str) -> None:
    """Weights load from safetensors only: a pickle checkpoint can run code when it is loaded."""
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    what = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weights"
    raise ModelSourceError(
        f"model {model!r} holds {what}; trackflow loads safetensors only (a pickle can run code when loaded). "
        "If you trust the file, convert it once: AutoModel.from_pretrained(folder).save_pretrained(folder, "
        "safe_serialization=True)"
    )


_downloaded: dict[tuple[str, str], Path] = {}  # (model URI, tracking URI) -> local folder, per process


def _download(model: str) -> Path:
    import mlflow.artifacts

    from trackflow import store

    key = (model, store.configure())
    if key not in _downloaded:
        try:
            _downloaded[key] = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
        except Exception as exc:
            raise ModelSourceError(
                f"MLflow model {model!r} cannot be fetched ({store.redact_text(str(exc))}); check {param('model')} and the store"
            ) from None
    return _downloaded[key]


def resolve_model_source(model: str) -> ModelSource:
    """Find and check `model` without loading it: a local folder, an MLflow URI (downloaded once), or a hub id."""
    if model.startswith(MLFLOW_SCHEMES):
        folder = _find_config_dir(_download(model))
        if folder is None:
            raise ModelSourceError(f"MLflow model {model!r} holds no Hugging Face config.json; log the model folder")
        _check_safetensors(folder, model)
        return ModelSource(model, str(folder), "mlflow")
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelSourceError(
                f"model folder {model!r} has no config.json; set {param('model')} to a folder written by "
                "save_pretrained (e.g. `trackflow models tiny DEST`) or a hub id"
            )
        _check_safetensors(path, model)
        return ModelSource(model, str(path), "local")
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelSourceError(f"model folder {model!r} does not exist; check {param('model')}")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    if isinstance(cached, str):
        _check_safetensors(Path(cached).parent, model)
        return ModelSource(model, model, "hub-cache")
    if not _hub_reachable():
        raise ModelSourceError(
            f"model {model!r} is not in the local Hugging Face cache and the hub cannot be reached. Either pass "
            f"a local folder with {param('model')} (one made by save_pretrained, or `trackflow models tiny DEST` "
            "for a small offline model), or allow network access to huggingface.co (and unset HF_HUB_OFFLINE)"
        )
    return ModelSource(model, model, "hub")


def context_length(config: dict) -> int:
    """Tokens a causal LM attends over, from its Hugging Face config (GPT-2: n_positions, 1024)."""
    return int(config.get("n_positions") or config.get("max_position_embeddings") or 1024)


def check_generation_room(source: ModelSource, max_new_tokens: int) -> None:
    """Refuse up front a `max_new_tokens` that leaves no room for any prompt in the model's context (every input
    would fail one by one); a hub model not yet downloaded is checked when it loads."""
    if source.kind == "hub":
        return
    folder: Path | None = Path(source.path)
    if source.kind == "hub-cache":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source.path, "config.json")
        folder = Path(cached).parent if isinstance(cached, str) else None
    if folder is None or not (folder / "config.json").is_file():
        return
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSourceError(f"cannot read {folder / 'config.json'} of model {source.requested!r} "
                               f"({type(exc).__name__}: {exc}); fix or re-save the model folder") from None
    limit = context_length(config if isinstance(config, dict) else {})
    if max_new_tokens >= limit:
        raise ModelSourceError(
            f"{param('max_new_tokens')} {max_new_tokens} leaves no room for a prompt in the context of model "
            f"{source.requested!r} ({limit} tokens); pass a value below {limit}"
        )


def _pretrained_kw(source: ModelSource) -> dict:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard bars; the job has its own progress
    return dict(local_files_only=source.local_only, trust_remote_code=False)


@dataclass
class TextModel:
    source: ModelSource
    tokenizer: object
    model: object
    device: object

    @property
    def context_length(self) -> int:
        return context_length(self.model.config.to_dict())


@dataclass
class SpeechModel:
    source: ModelSource
    processor: object
    model: object
    device: object

    @property
    def samples_per_frame(self) -> int:
        """Input samples per output frame (the product of the feature encoder's conv strides: 320)."""
        ratio = 1
        for s in self.model.config.conv_stride:
            ratio *= s
        return ratio

    @property
    def min_samples(self) -> int:
        """The shortest input that yields one output frame: the feature encoder's receptive field (400)."""
        r = 1
        for k, s in reversed(list(zip(self.model.config.conv_kernel, self.model.config.conv_stride))):
            r = (r - 1) * s + k
        return r

    @property
    def takes_attention_mask(self) -> bool:
        # Group-norm feature encoders (wav2vec2-base) were trained on unmasked, zero-padded
        # input; only layer-norm ones (e.g. wav2vec2-large-lv60) accept an attention mask.
        return getattr(self.model.config, "feat_extract_norm", "group") == "layer"


def _load_pretrained(model: str, device: str, what: str, preprocessor_cls, model_cls):
    """(source, device, preprocessor, model) for `model`; a ModelSourceError naming `what` it failed to load as."""
    source = resolve_model_source(model)
    dev = resolve_device(device)
    try:
        pre = preprocessor_cls.from_pretrained(source.path, **_pretrained_kw(source))
        net = model_cls.from_pretrained(source.path, use_safetensors=True, **_pretrained_kw(source))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"model {model!r} cannot be loaded as a {what}: {exc}") from None
    return source, dev, pre, net.to(dev).eval()


def load_text_model(model: str, device: str) -> TextModel:
    """Tokenizer + causal LM (e.g. GPT-2), set up for batched generation with left padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, dev, tokenizer, lm = _load_pretrained(
        model, device, "text-generation model", AutoTokenizer, AutoModelForCausalLM
    )
    # Decoder-only models must be padded on the left so every prompt's last token is
    # where generation continues; GPT-2 has no pad token, so its EOS stands in.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    return TextModel(source, tokenizer, lm, dev)


def load_speech_model(model: str, device: str) -> SpeechModel:
    """Processor + CTC model (e.g. Wav2Vec2ForCTC)."""
    from transformers import AutoModelForCTC, AutoProcessor

    source, dev, processor, ctc = _load_pretrained(model, device, "CTC speech model", AutoProcessor, AutoModelForCTC)
    return SpeechModel(source, processor, ctc, dev)


# --------------------------------------------------------------------------- tiny models

# The character vocabulary of facebook/wav2vec2-base-960h, so the tiny model decodes alike.
W2V2_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]

_CORPUS = """The quick brown fox jumps over the lazy dog. Large models learn from data; pipelines track
what they learn. Prefect schedules the flows and MLflow records every run, its parameters, metrics and
models. Once upon a time there was a small model that wanted to tell stories about the sea, the sky and
the stars. Hello world! Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation , . ; : ? ! ' " ( ) - appear too."""


def make_tiny_gpt2(dest: str | Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE tokenizer, built and saved locally (no download)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([_CORPUS] * 4, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", model_max_length=128)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=64, n_layer=2, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


def make_tiny_wav2vec2(dest: str | Path, seed: int = 0) -> Path:
    """A 2-layer Wav2Vec2ForCTC (group-norm encoder, 320 samples per frame, as wav2vec2-base) and its processor."""
    import json
    import tempfile

    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.json"
        vocab.write_text(json.dumps({tok: i for i, tok in enumerate(W2V2_VOCAB)}))
        tokenizer = Wav2Vec2CTCTokenizer(str(vocab), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        vocab_size=len(W2V2_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32,) * 7, feat_extract_norm="group", num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        pad_token_id=0, ctc_loss_reduction="mean", do_stable_layer_norm=False,
    )
    Wav2Vec2ForCTC(config).save_pretrained(dest, safe_serialization=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(dest)
    return dest


def make_tiny_models(dest: str | Path) -> dict[str, Path]:
    """`DEST/tiny-gpt2` and `DEST/tiny-wav2vec2`."""
    dest = Path(dest)
    return {"text": make_tiny_gpt2(dest / "tiny-gpt2"), "audio": make_tiny_wav2vec2(dest / "tiny-wav2vec2")}
