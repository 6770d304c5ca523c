"""WorkerPool: a dead worker fails only its own call, which runs once more on a fresh worker; workers die with
the process that started them, kill -9 included. Real spawned processes, no server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tasks.workers import PARENT_POLL_SECONDS, WorkerDied, WorkerPool, describe_exit
from tests.helpers import workers as W

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pool():
    p = WorkerPool(2)
    yield p
    p.shutdown(wait=False, cancel_futures=True)


def test_a_dead_worker_fails_only_its_call_which_runs_again_on_a_fresh_worker(pool, tmp_path, capfd):
    marker = tmp_path / "died"
    healthy = pool.submit(W.pid_after, 4.0)  # still running on the other worker when this one dies
    retried = pool.submit(W.die_once, str(marker), 7)
    value, pid = retried.result(timeout=120)
    assert value == 7 and pid != int(marker.read_text())  # a fresh worker, not the killed one
    assert healthy.result(timeout=120) not in (os.getpid(), pid, int(marker.read_text()))
    err = capfd.readouterr().err
    assert "a worker process died (killed by SIGKILL) during a trial; running that trial once more" in err
    assert pool.submit(W.pid_after, 0).result(timeout=60) in (pid, healthy.result())  # two workers, as before


def test_a_call_whose_worker_dies_twice_fails_saying_how(pool):
    with pytest.raises(WorkerDied, match=r"died twice \(killed by SIGKILL, then killed by SIGKILL\)"):
        pool.submit(W.die).result(timeout=120)
    assert pool.submit(W.pid_after, 0).result(timeout=60) > 0  # the pool still runs calls


def test_an_error_in_the_call_is_raised_as_is_and_keeps_the_worker():
    pool = WorkerPool(1)
    try:
        first = pool.submit(W.pid_after, 0).result(timeout=60)
        with pytest.raises(ValueError, match="bad input"):
            pool.submit(W.fail, "bad input").result(timeout=60)
        assert pool.submit(W.pid_after, 0).result(timeout=60) == first
    finally:
        pool.shutdown()
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE


def test_workers_exit_within_a_second_of_a_kill_9_of_their_parent(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from tasks.workers import WorkerPool
        from tests.helpers.workers import write_pid_and_sleep
        pool = WorkerPool(2)
        for i in range(2):
            pool.submit(write_pid_and_sleep, {str(tmp_path)!r} + f"/w{{i}}", 600)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        files = [tmp_path / "w0", tmp_path / "w1"]
        deadline = time.monotonic() + 120
        while not all(f.exists() and f.read_text() for f in files) and time.monotonic() < deadline:
            assert parent.poll() is None
            time.sleep(0.1)
        workers = [psutil.Process(int(f.read_text())) for f in files]
        assert all(w.ppid() == parent.pid for w in workers)
    finally:
        parent.kill()
        parent.wait(10)
    t0 = time.monotonic()
    while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers) and time.monotonic() - t0 < 10:
        time.sleep(0.02)
    took = time.monotonic() - t0
    assert took < 4 * PARENT_POLL_SECONDS + 1, f"workers outlived their parent by {took:.1f} s"


@pytest.mark.parametrize("code, says", [(-signal.SIGKILL, "killed by SIGKILL"), (1, "exit code 1"),
                                        (None, "for an unknown reason")])
def test_how_a_worker_ended(code, says):
    assert describe_exit(code) == says


def test_terminate_stops_the_calls_running_at_once(tmp_path):
    pool = WorkerPool(1)
    running = pool.submit(W.write_pid_and_sleep, str(tmp_path / "w"), 600)
    deadline = time.monotonic() + 120
    while not ((tmp_path / "w").exists() and (tmp_path / "w").read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = psutil.Process(int((tmp_path / "w").read_text()))
    pool.terminate()
    with pytest.raises(RuntimeError, match="shut down"):  # not retried on a fresh worker
        running.result(timeout=30)
    worker.wait(10)
