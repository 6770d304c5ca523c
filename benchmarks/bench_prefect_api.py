"""What a command's own Prefect API costs, before and after trackflow starts it itself.

1. Start-to-healthy of the temporary server on a migrated PREFECT_HOME: Prefect's own
   `SubprocessASGIServer` (what commands used before) against `cli.prefect_api.start_server`
   (own session, kernel-chosen port checked to be its own, dies with the command), alternating.
2. Whole `trackflow train` (1k samples) with its own temporary server, against the same with a
   running `prefect server start` (PREFECT_API_URL), and three commands started together.

Usage: python benchmarks/bench_prefect_api.py [--reps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BIN, prefect_server  # noqa: E402

from trackflow import telemetry  # noqa: E402


def prefects_own(home: Path) -> float:
    code = (
        "import time; t=time.perf_counter()\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "s=SubprocessASGIServer(); s.start(timeout=120); print(time.perf_counter()-t); s.stop()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=os.environ | {"PREFECT_HOME": str(home)},
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def trackflows(home: Path) -> float:
    code = (
        "import time, sys; t=time.perf_counter()\n"
        "from pathlib import Path\n"
        "from cli.prefect_api import start_server, stop\n"
        "p, url = start_server(Path(sys.argv[1])); print(time.perf_counter()-t); stop(p)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(home)], env=os.environ | {"PREFECT_HOME": str(home)},
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def train(env: dict, cwd: Path, n: int = 1) -> float:
    t = time.perf_counter()
    procs = [subprocess.Popen([str(BIN / "trackflow"), "train"], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL) for _ in range(n)]
    assert all(p.wait() == 0 for p in procs)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    reps = ap.parse_args().reps
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_TRACKING"))}
    telemetry.quiet(base)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        os.environ.update(base | {"PREFECT_HOME": str(home)})
        trackflows(home)  # migrate the database once, outside the timings
        own, ours = [], []
        for _ in range(reps):
            own.append(prefects_own(home))
            ours.append(trackflows(home))
        a, b = statistics.median(own), statistics.median(ours)
        print(f"Temporary Prefect server, start to healthy (median of {reps}, migrated PREFECT_HOME):")
        print(f"  Prefect's SubprocessASGIServer (before)   {a:6.2f} s   1.00x")
        print(f"  cli.prefect_api.start_server        {b:6.2f} s   {b / a:.2f}x")

        env = base | {"PREFECT_HOME": str(home)}
        train(env, tmp)  # the store, first imports
        alone = statistics.median(train(env, tmp) for _ in range(reps))
        together = train(env, tmp, n=3)
        with prefect_server(tmp / "server-home") as url:
            running = statistics.median(train(env | {"PREFECT_API_URL": url}, tmp) for _ in range(reps))
        print(f"\n`trackflow train` (1k samples) whole command, median of {reps}:")
        print(f"  with a running Prefect server              {running:6.2f} s   1.00x")
        print(f"  with its own temporary server              {alone:6.2f} s   {alone / running:.2f}x")
        print(f"  three started together, own servers        {together:6.2f} s   {together / running:.2f}x "
              "(all three done)")


if __name__ == "__main__":
    main()
