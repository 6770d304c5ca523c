"""Folders with awkward properties, made for a test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def read_only_folder(tmp_path: Path) -> Path:
    """An existing folder this process cannot create files in.

    For a normal user, a folder under `tmp_path` with its write bits cleared. Root ignores
    permission bits, so for root a sysfs folder, where the kernel refuses new files; the
    test is skipped where there is neither.
    """
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys/kernel")
    try:
        with open(folder / "trackflow-write-probe", "x"):
            pass
    except OSError:
        return folder
    os.unlink(folder / "trackflow-write-probe")
    pytest.skip("no folder this root process cannot write")
