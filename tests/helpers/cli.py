"""Running the `trackflow` console script as a user does, against the session's Prefect server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRACKFLOW = shutil.which("trackflow", path=str(Path(sys.executable).parent))


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment, pointed at the session's Prefect server (the `prefect_server` fixture)."""
    from prefect.settings import PREFECT_API_URL

    return os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()} | extra


def run_cli(*args, timeout=300, **env):
    """Run the `trackflow` console script; stdin closed so nothing can wait on it."""
    return subprocess.run([TRACKFLOW, *map(str, args)], env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
