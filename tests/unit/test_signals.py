"""cli/signals.py in a child process: a signal's exception that Python ignores is raised again."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.helpers.cli import REPO

# The signal lands while the main thread runs a __del__: the handler's exception is raised there, and Python
# ignores it ("Exception ignored in ..."). What follows in the main thread must still be interrupted, at once.
CHILD = """
import contextlib, os, signal, sys, time
from cli import signals

signals.install()
if {bridge}:  # inside a flow run, Prefect's own SIGTERM handler is the one in place
    from prefect.utilities.engine import capture_sigterm as in_place
else:
    in_place = contextlib.nullcontext

class Dropped:
    def __del__(self):
        os.kill(os.getpid(), {sig})
        sum(range(10_000))  # the handler runs here, inside __del__

start = time.monotonic()
try:
    with in_place():
        try:
            Dropped()
            time.sleep(10)  # interrupted at once, blocked as it is
            print("not interrupted")
        except BaseException as e:
            print("interrupted by", type(e).__name__, "within 1 s" if time.monotonic() - start < 1 else "late")
            raise
except BaseException:
    pass
"""


@pytest.mark.parametrize("sig, bridge, exc", [(signal.SIGINT, False, "KeyboardInterrupt"),
                                              (signal.SIGTERM, False, "Terminated"),
                                              (signal.SIGTERM, True, "TerminationSignal")],
                         ids=["sigint", "sigterm", "sigterm-in-a-flow-run"])
def test_a_signal_whose_exception_a_del_swallowed_still_interrupts_the_main_thread(sig, bridge, exc):
    p = subprocess.run([sys.executable, "-c", CHILD.format(sig=int(sig), bridge=bridge)], cwd=REPO,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"interrupted by {exc} within 1 s", p.stdout + p.stderr
    assert "Exception ignored" not in p.stderr, p.stderr
