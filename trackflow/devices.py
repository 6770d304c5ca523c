"""Where models run: `auto` (CUDA when available), `cpu` or `cuda`."""

from __future__ import annotations

from trackflow.naming import param


class DeviceError(ValueError):
    """The device asked for is not available; the message says what to pass instead."""


def resolve_device(device: str):
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"{param('device')} {device!r} is not one of auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{param('device')} cuda was asked for but CUDA is not available; use cpu or auto")
    return torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
