"""Calls for WorkerPool's worker processes in tests: importable by reference, so a spawned worker can run them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def die_once(marker: str, value: int) -> tuple[int, int]:
    """Killed (SIGKILL) the first time, as the OOM killer would; (value, pid) once `marker` exists."""
    if not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return value, os.getpid()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fail(message: str) -> None:
    raise ValueError(message)


def write_pid_and_sleep(path: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
