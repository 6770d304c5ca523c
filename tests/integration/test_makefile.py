"""Makefile targets that start servers, run as a user types them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers.processes import alive, descendants
from tests.helpers.servers import free_port, spawn, stop, wait_http

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_server_on_another_port_serves_a_ui_that_talks_to_that_port(tmp_path, prefect_home_template):
    port = free_port()
    shutil.copytree(prefect_home_template, tmp_path / "prefect-home")  # its database migrated: seconds, not ~20 s
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(tmp_path / "prefect-home")}
    venv = Path(sys.executable).parent.parent
    # -o: the install stamp counts as current (this test never reinstalls the environment).
    cmd = ["make", "-C", REPO, "-o", f"{venv}/.installed-stamp", f"VENV={venv}", "server", f"PREFECT_PORT={port}"]
    proc = spawn(cmd, tmp_path / "server.log", env)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", proc, tmp_path / "server.log", timeout=180)
        settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=30).json()
        started = descendants(proc.pid)
    finally:
        stop(proc)
    assert settings["api_url"] == f"http://127.0.0.1:{port}/api"
    assert started and alive(started) == [], "make server left processes behind"
