"""Run a command that dies with the process that started it: `python -m cli.child PARENT_PID CMD...`.

A helper server started by a command (its temporary Prefect API) must not outlive the
command, even one killed with `kill -9`, which runs no cleanup. On Linux the kernel can
send the child a signal when its parent dies (prctl PR_SET_PDEATHSIG); the setting
survives the exec below. The parent's pid is passed in so that a parent that died before
the prctl call is noticed too.

The signal is SIGKILL: a parent that is gone can no longer wait for a graceful stop, and
a server busy in its shutdown (uvicorn draining, Prefect's services stopping) took seconds
on a loaded machine to act on SIGTERM. The normal path, `cli.prefect_api.stop`, still
stops it with SIGTERM first. Its SQLite database survives a kill as it survives a crash.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent is already gone
        os._exit(0)


def main(argv: list[str]) -> None:
    parent, cmd = int(argv[0]), argv[1:]
    die_with_parent(parent)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
