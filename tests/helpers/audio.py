"""Test recordings written to disk."""

from __future__ import annotations

from pathlib import Path


def write_audio(path: Path, rate: int, seconds: float, channels: int = 1, kind: str = "tone", seed: int = 0) -> Path:
    """A test recording: a sine tone or speech-like noise (noise bursts under a syllable-rate envelope)."""
    import numpy as np
    import soundfile as sf

    n = int(rate * seconds)
    t = np.arange(n) / rate
    if kind == "tone":
        x = 0.3 * np.sin(2 * np.pi * 220 * t)
    else:
        rng = np.random.default_rng(seed)
        x = 0.2 * rng.standard_normal(n) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    data = np.stack([x * (0.8 + 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate)
    return path
