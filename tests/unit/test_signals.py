"""cli/signals.py in a child process: a first signal's exception that Python ignores is raised again."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.helpers.cli import REPO

# The signal lands while the main thread runs a __del__: the handler's exception is raised there, and Python
# ignores it ("Exception ignored in ..."). What follows in the main thread must still be interrupted, at once.
CHILD = """
import os, signal, sys, time
from cli import signals

signals.install()

class Dropped:
    def __del__(self):
        os.kill(os.getpid(), {sig})
        sum(range(10_000))  # the handler runs here, inside __del__

start = time.monotonic()
try:
    Dropped()
    time.sleep(10)  # interrupted at once, blocked as it is
    print("not interrupted")
except {exc} as e:
    print("interrupted by", type(e).__name__, "within 1 s" if time.monotonic() - start < 1 else "late")
"""


@pytest.mark.parametrize("sig, exc", [(signal.SIGINT, "KeyboardInterrupt"), (signal.SIGTERM, "signals.Terminated")])
def test_a_signal_whose_exception_a_del_swallowed_still_interrupts_the_main_thread(sig, exc):
    p = subprocess.run([sys.executable, "-c", CHILD.format(sig=int(sig), exc=exc)], cwd=REPO, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"interrupted by {exc.split('.')[-1]} within 1 s", p.stdout + p.stderr
    assert "Exception ignored" not in p.stderr, p.stderr
