"""What the benchmarks share: a free port, a running Prefect server, timing a command, the parallel ceiling."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from trackflow import telemetry

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str], env: dict, cwd: str | Path) -> float:
    """Wall time of a command that must succeed."""
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return dt


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's children reaped so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@contextlib.contextmanager
def prefect_server(home: str | Path):
    """`prefect server start` on a free loopback port, as `make server` runs it; yields its API URL."""
    import httpx

    port = free_port()
    env = telemetry.quiet(os.environ | {"PREFECT_HOME": str(home)})
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(480):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.25)
        else:
            raise SystemExit("the Prefect server did not start in 120 s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def parallel_ceiling(work, rounds: int, initializer=None, initargs=()) -> tuple[float, float, float]:
    """How much faster 2 runs of `work(0)` (a picklable function returning its own seconds) go side by side than
    one after another on this machine, in 2 bare spawned processes, no orchestration: (ceiling, alone, paired),
    the medians of `rounds`. No 2-worker runner can beat the ceiling (2 vCPUs share caches and memory bandwidth)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    alone, paired = [], []
    with ctx.Pool(2, initializer=initializer, initargs=initargs) as pool:
        pool.map(work, [0, 0])  # imports and first-call costs in both workers
        for _ in range(rounds):
            alone.append(pool.apply(work, (0,)))
            paired.append(max(pool.map(work, [0, 0])))
    a, p = statistics.median(alone), statistics.median(paired)
    return 2 * a / p, a, p
