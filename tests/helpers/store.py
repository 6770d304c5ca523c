"""Reading an MLflow store the way a user inspects it."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import ViewType


def all_runs(uri: str) -> list:
    c = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)]
    return c.search_runs(exps, run_view_type=ViewType.ALL, max_results=1000) if exps else []


def statuses(uri: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in all_runs(uri):
        out[r.info.status] = out.get(r.info.status, 0) + 1
    return out


def wait_for_running_run(uri: str, proc, timeout: float = 180) -> object:
    """Block until the command `proc` has a RUNNING run in the store (its log lines are no clock for that)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [r for r in all_runs(uri) if r.info.status == "RUNNING"]
        if running:
            return running[0]
        if proc.poll() is not None:
            raise AssertionError(f"the command exited {proc.returncode} before it opened a run")
        time.sleep(0.2)
    raise AssertionError(f"no RUNNING run in {uri} within {timeout} s")


def read_only(*paths):
    """A context in which `paths` cannot be written, also by root (whom mode bits do not stop).

    As root: the immutable attribute (`chattr +i`), which refuses writes to a file and new
    entries in a folder; otherwise `chmod a-w`. Skips the test where neither applies.
    """
    import contextlib
    import os
    import shutil
    import subprocess

    import pytest

    @contextlib.contextmanager
    def context():
        done = []
        try:
            for p in paths:
                if os.geteuid() == 0:
                    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(p)],
                                                                    capture_output=True).returncode:
                        pytest.skip("root, and this filesystem has no immutable attribute (chattr +i)")
                    done.append(lambda p=p: subprocess.run(["chattr", "-i", str(p)], check=True))
                else:
                    mode = os.stat(p).st_mode
                    os.chmod(p, mode & ~0o222)
                    done.append(lambda p=p, mode=mode: os.chmod(p, mode))
            yield
        finally:
            for undo in reversed(done):
                undo()

    return context()
