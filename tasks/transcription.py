"""Batched CTC transcription (Wav2Vec2 and kin), with long recordings chunked and stitched.

A recording longer than the chunk is cut into overlapping windows; each window's
logits lose their overlap (`stride` on each inner side) and the rest are concatenated
before one CTC decode, so words on a window edge are seen whole by one window.

Batching never changes a transcript: a group-norm encoder (wav2vec2-base) normalises
over time, padded zeros included, so only windows of exactly the same length share a
batch (all full windows of long recordings do); models that take an attention mask
are batched by sorted length with the mask.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.inputs import SILENCE_PEAK, TARGET_RATE, Loaded, read_recording
from tasks.models import SpeechModel


@dataclass(frozen=True)
class Window:
    clip: int  # index of the clip
    start: int  # sample offset
    stop: int
    drop_left: int  # samples of overlap dropped from each side (another window holds them whole)
    drop_right: int


def plan_windows(n_samples: int, chunk: int, stride: int, clip: int = 0) -> list[Window]:
    """Windows of `chunk` samples stepping by chunk - 2*stride; their kept parts tile [0, n_samples)."""
    if n_samples <= chunk:
        return [Window(clip, 0, n_samples, 0, 0)]
    step = chunk - 2 * stride
    windows, start = [], 0
    while True:
        stop = min(start + chunk, n_samples)
        last = stop == n_samples
        windows.append(Window(clip, start, stop, stride if start else 0, 0 if last else stride))
        if last:
            return windows
        start += step


# On a CPU a forward pass over more than ~20 s of audio gets slower per second of audio
# (measured on wav2vec2-base, 2 cores: 9.06 s/s at 1-2 x 10 s clips, 7.95 at 8 x 10 s),
# so CPU batches are capped by total audio; GPUs take the full batch.
CPU_BATCH_SAMPLES = 20 * TARGET_RATE


def _batches(model: SpeechModel, windows: list[Window], max_windows: int) -> list[list[Window]]:
    budget = CPU_BATCH_SAMPLES if model.device.type == "cpu" else None

    def split(group: list[Window]) -> list[list[Window]]:
        out, cur, total = [], [], 0
        for w in group:
            n = w.stop - w.start
            if cur and (len(cur) == max_windows or (budget and total + n > budget)):
                out.append(cur)
                cur, total = [], 0
            cur.append(w)
            total += n
        return out + ([cur] if cur else [])

    if model.takes_attention_mask:
        return split(sorted(windows, key=lambda w: w.stop - w.start))
    by_len: dict[int, list[Window]] = defaultdict(list)
    for w in windows:
        by_len[w.stop - w.start].append(w)
    return [b for _, group in sorted(by_len.items()) for b in split(group)]


def transcribe_clips(model: SpeechModel, clips: Sequence[np.ndarray], chunk_seconds: float) -> list[str]:
    """Transcripts of 16 kHz mono float32 clips, in order; a clip without signal transcribes to "".

    One forward pass holds at most as many windows as there are clips (the caller's
    batch size), so a long recording's chunks never make a pass larger than asked for.
    """
    import torch

    silent = [float(np.abs(c).max(initial=0.0)) < SILENCE_PEAK for c in clips]
    if any(silent):
        heard = [c for c, s in zip(clips, silent) if not s]
        texts = iter(transcribe_clips(model, heard, chunk_seconds) if heard else [])
        return ["" if s else next(texts) for s in silent]
    ratio = model.samples_per_frame
    chunk = max(int(chunk_seconds * TARGET_RATE) // ratio * ratio, 2 * ratio)
    stride = chunk // 6 // ratio * ratio  # as transformers' ASR pipeline: chunk/6 of context each side
    windows = [w for i, clip in enumerate(clips) for w in plan_windows(len(clip), chunk, stride, i)]
    pieces: dict[Window, torch.Tensor] = {}
    extractor = model.processor.feature_extractor
    for batch in _batches(model, windows, max_windows=len(clips)):
        audio = [clips[w.clip][w.start : w.stop] for w in batch]
        feats = extractor(audio, sampling_rate=TARGET_RATE, return_tensors="pt", padding=True,
                          return_attention_mask=model.takes_attention_mask)
        kwargs = {"input_values": feats["input_values"].to(model.device)}
        if model.takes_attention_mask:
            kwargs["attention_mask"] = feats["attention_mask"].to(model.device)
        with torch.inference_mode():
            logits = model.model(**kwargs).logits.cpu()
        for w, row in zip(batch, logits):
            n = int(model.model._get_feat_extract_output_lengths(torch.tensor(w.stop - w.start)))
            pieces[w] = row[w.drop_left // ratio : n - w.drop_right // ratio]
    per_clip: dict[int, list[torch.Tensor]] = defaultdict(list)
    for w in windows:  # windows are in clip order, then time order
        per_clip[w.clip].append(pieces[w])
    ids = [torch.cat(per_clip[i]).argmax(dim=-1) for i in range(len(clips))]
    return [model.processor.decode(t, skip_special_tokens=True) for t in ids]


@dataclass
class Transcription:
    """Recordings through a CTC model: the batch-job engine's audio kind (tasks.batch.InputKind)."""

    sm: SpeechModel
    chunk_seconds: float
    max_seconds: float
    model: str  # what --model named
    name: str = "audio"
    measure: str = "audio_seconds"

    def read(self, root: Path, rel: str, is_done) -> list[Loaded]:
        return [read_recording(root, rel, self.max_seconds, is_done)]

    def check(self, items: list[Loaded]) -> list[Loaded]:
        short = f"clip is shorter than the model's {self.sm.min_samples / TARGET_RATE * 1000:.0f} ms receptive field"
        return [Loaded(x.item, error=short) if len(x.value) < self.sm.min_samples else x for x in items]

    def size(self, item: Loaded) -> int:
        return len(item.value)  # samples: clips of equal length batch without padding

    def infer(self, values: list) -> list[str]:
        return transcribe_clips(self.sm, values, self.chunk_seconds)

    def fields(self, item: Loaded, output: str) -> dict:
        return {"output": output, "audio_seconds": round(len(item.value) / TARGET_RATE, 3)}
