"""`python -m cli.child PARENT CMD…`: CMD dies with the process that started it, `kill -9` included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A stand-in for a server slow to act on SIGTERM (uvicorn draining on a loaded machine): it ignores it.
DEAF = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(120)"
# The parent: starts the child as cli/prefect_api.py does, prints its pid, then waits to be killed.
PARENT = f"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-m", "cli.child", str(os.getpid()), sys.executable, "-c", {DEAF!r}],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True, text=True)
assert child.stdout.readline() == "up\\n"
print(child.pid, flush=True)
time.sleep(120)
"""


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_the_child_dies_with_a_parent_killed_with_9_even_when_it_ignores_sigterm():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": REPO})
    try:
        child = int(parent.stdout.readline())
        assert psutil.Process(child).is_running()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert _gone_within(child, 5), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, NameError):
            pass


def test_a_parent_gone_before_the_child_started_is_noticed():
    """The pid given is not the child's parent any more (it died first): the child exits at once, without CMD."""
    p = subprocess.run([sys.executable, "-m", "cli.child", "1", sys.executable, "-c", "print('ran')"], cwd=REPO,
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and p.stdout == ""
