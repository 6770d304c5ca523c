"""`trackflow train --skip-unchanged` on an unchanged ~1 GB folder table, beside a plain run, in one run.

A folder of Parquet partitions (~1 GB on disk: 8 numeric features, a 3-class target and a
~1 KB `payload` column of random text, left out with --drop) is built in a temporary folder
(deleted after). With a running Prefect server and a fresh SQLite MLflow store:
1. `trackflow train` once (1 epoch, batch 1024): the plain run; it also fills the digest cache;
2. `trackflow train --skip-unchanged`, digests cached (goal: <= 3 s, whole process);
3. the same with an empty digest cache (every byte hashed again; the files are in the page cache).
Each skip is checked to print "Unchanged since run ..." and to leave the run count alone.

Usage: python benchmarks/bench_skip_unchanged.py [--gb 1.0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import BIN, prefect_server  # noqa: E402

PAYLOAD = 1000  # bytes of random text per row
ROWS_PER_FILE = 100_000


def build_table(root: Path, gb: float) -> int:
    """Parquet partitions of about `gb` GB in total (uncompressed: the payload is random); returns the bytes."""
    rng = np.random.default_rng(0)
    n_files = max(1, round(gb * 1e9 / (ROWS_PER_FILE * (PAYLOAD + 40))))
    root.mkdir(parents=True)
    for i in range(n_files):
        X = rng.normal(size=(ROWS_PER_FILE, 8)).astype(np.float32)
        y = np.digitize(X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=ROWS_PER_FILE), [-0.5, 0.5])
        raw = rng.integers(0, 256, size=(ROWS_PER_FILE, PAYLOAD * 3 // 4), dtype=np.uint8)
        payload = [base64.b64encode(r.tobytes()).decode() for r in raw]
        columns = {f"f{j}": X[:, j] for j in range(8)} | {"label": y, "payload": payload}
        pq.write_table(pa.table(columns), root / f"part-{i:04d}.parquet", compression="none")
    return sum(f.stat().st_size for f in root.iterdir())


def run(cmd: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return dt, p.stdout


def run_count(db: Path) -> int:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-skip-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        size = build_table(work / "table", args.gb)
        files = len(list((work / "table").iterdir()))
        print(f"table: {files} Parquet files, {size / 1e9:.2f} GB, built in {time.perf_counter() - t:.0f} s")
        db = work / "mlruns" / "mlflow.db"
        env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{db}", "TRACKFLOW_CACHE_DIR": str(work / "cache")}
        train = [str(BIN / "trackflow"), "train", "--data", str(work / "table"), "--target", "label",
                 "--drop", "payload", "--epochs", "1", "--batch-size", "1024"]
        with prefect_server(work / "prefect") as url:
            env["PREFECT_API_URL"] = url
            plain, _ = run(train, env, work)
            n_runs = run_count(db)
            cached, uncached = [], []
            for i in range(args.repeats):
                dt, out = run(train + ["--skip-unchanged"], env, work)
                cached.append(dt)
                empty = env | {"TRACKFLOW_CACHE_DIR": str(work / f"empty-cache-{i}")}
                dt2, out2 = run(train + ["--skip-unchanged"], empty, work)
                uncached.append(dt2)
                for o in (out, out2):
                    assert o.startswith("Unchanged since run "), o
            assert run_count(db) == n_runs, "a skip made a run"
    c, u = statistics.median(cached), statistics.median(uncached)
    print(f"\nWhole process, {size / 1e9:.2f} GB folder table, running Prefect server "
          f"(skips: median of {args.repeats}):")
    print(f"  {'plain trackflow train (1 epoch)':<44} {plain:7.2f} s")
    print(f"  {'--skip-unchanged, digests cached':<44} {c:7.2f} s   goal <= 3 s: {'met' if c <= 3 else 'MISSED'}")
    print(f"  {'--skip-unchanged, no digest cache':<44} {u:7.2f} s")
    print(f"  ratios: plain / cached skip {plain / c:.1f}x; uncached / cached skip {u / c:.1f}x; "
          f"plain / uncached skip {plain / u:.1f}x")
    print(f"  cached skips: {', '.join(f'{x:.2f}' for x in cached)} s; "
          f"uncached: {', '.join(f'{x:.2f}' for x in uncached)} s")


if __name__ == "__main__":
    main()
