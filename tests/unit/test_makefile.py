"""The interpreter `make install` makes .venv with, read with `make -n` (which prints the commands, runs none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3.11")


def venv_interpreter(*make_args: str) -> str:
    """The interpreter in `make install`'s `... -m venv` command, for a venv that does not exist yet."""
    p = subprocess.run(["make", "-n", "-C", str(REPO), "install", "VENV=/nonexistent/venv", *make_args],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    [line] = [x for x in p.stdout.splitlines() if " -m venv " in x]
    return line.split("||")[1].split()[0]


def can_make_venvs(python: Path) -> bool:
    return python.exists() and subprocess.run([str(python), "-c", "import ensurepip, venv"],
                                              capture_output=True, timeout=60).returncode == 0


@pytest.mark.skipif(not can_make_venvs(SYSTEM_PYTHON), reason=f"{SYSTEM_PYTHON} is missing or has no venv module")
def test_install_makes_the_venv_with_the_optimised_system_python():
    assert venv_interpreter() == str(SYSTEM_PYTHON)


def test_without_a_system_python_that_makes_venvs_install_falls_back_to_python3(tmp_path):
    no_ensurepip = tmp_path / "python3.11"  # a Debian python3.11 without python3.11-venv fails this way
    no_ensurepip.write_text("#!/bin/sh\necho \"No module named 'ensurepip'\" >&2\nexit 1\n")
    no_ensurepip.chmod(0o755)
    assert venv_interpreter(f"SYSTEM_PYTHON={no_ensurepip}") == "python3"
    assert venv_interpreter(f"SYSTEM_PYTHON={tmp_path / 'missing'}") == "python3"


def test_python_given_to_make_wins():
    assert venv_interpreter(f"PYTHON={sys.executable}") == sys.executable
