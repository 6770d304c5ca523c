"""Where models run: `auto` (CUDA when available), `cpu` or `cuda`."""

from __future__ import annotations


class DeviceError(ValueError):
    """The device asked for is not available; the message says what to pass instead."""


def resolve_device(device: str):
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"--device {device!r} is not one of auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but CUDA is not available; use --device cpu or auto")
    return torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
