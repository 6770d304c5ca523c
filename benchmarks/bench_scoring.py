"""Scoring a table with a registered model: `trackflow score` against `mlflow models predict`, side by side.

On one table of N rows x 20 columns (17 numeric, 3 categorical; N = 1M by default), written
as CSV and as Parquet, with a model trained on its first rows and registered:

1. The scoring loop in one process (`tasks.scoring.score_file`: read, convert, predict,
   write Parquet, at `trackflow score`'s default batch) against a bare
   `mlflow.pyfunc.load_model(...).predict` on the whole frame in memory (read from Parquet
   beforehand, not timed): rows per second.
2. Whole process, with a running Prefect server, on the CSV: `trackflow score` against
   `mlflow models predict -t csv --env-manager local` on the same model version: wall time
   and peak RSS of each process tree.
3. Peak RSS of `trackflow score` at N and 5N rows (CSV and Parquet): streaming keeps it flat.

Usage: python benchmarks/bench_scoring.py [--rows N]    (or SCORE_BENCH_ROWS=N; e.g. 20000 for a quick check)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import BIN, prefect_server  # noqa: E402
from tests.helpers.scoring import CATEGORIES, N_NUMERIC, churn_table  # noqa: E402
from trackflow import telemetry  # noqa: E402

telemetry.quiet()
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
def peak_tree_rss(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB of the process and its children, sampled every 50 ms); exits on failure."""
    import psutil

    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        root, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                peak = max(peak, total)
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
    return wall, peak / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=int(os.environ.get("SCORE_BENCH_ROWS", 1_000_000)))
    n = ap.parse_args().rows
    work = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    store = work / "mlruns"
    store.mkdir()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    try:
        run(work, n)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from tests.helpers.scoring import register_classifier

    table = churn_table(n)
    train = work / "train.parquet"
    pq.write_table(table.slice(0, min(n, 20_000)), train)
    version = register_classifier(train, "target", epochs=3, hidden_layers=(64, 64))
    model = f"models:/classifier/{version}"
    features = table.drop_columns(["target"])
    csv_path, pq_path = work / "table.csv", work / "table.parquet"
    pacsv.write_csv(features, csv_path)
    pq.write_table(features, pq_path)
    print(f"Table: {n:,} rows x {features.num_columns} columns ({N_NUMERIC} numeric, {len(CATEGORIES)} categorical); "
          f"CSV {csv_path.stat().st_size / 1e6:.0f} MB, Parquet {pq_path.stat().st_size / 1e6:.0f} MB; model {model}")

    # The loop is measured before the Prefect server starts: on 2 cores its background work takes
    # the core the loop's read-ahead thread uses, which no other part of this comparison needs.
    print(f"\n1. Scoring loop in one process vs bare pyfunc predict on the whole frame ({n:,} rows):")
    loop(work, n, model, pq_path, csv_path)

    with prefect_server(work / "prefect") as url:
        env = os.environ | {"PREFECT_API_URL": url, "PATH": f"{BIN}:{os.environ['PATH']}"}
        trackflow = [str(BIN / "trackflow"), "score"]
        print(f"\n2. Whole process on the CSV ({n:,} rows), running Prefect server:")
        t_ours, rss_ours = peak_tree_rss([*trackflow, str(csv_path), "--out", str(work / "out-csv"), "--model", model],
                                         env, work / "score-csv.log")
        t_mlf, rss_mlf = peak_tree_rss([str(BIN / "mlflow"), "models", "predict", "-m", model, "-i", str(csv_path),
                                        "-t", "csv", "--env-manager", "local", "-o", str(work / "pred.json")],
                                       env, work / "predict.log")
        print(f"  mlflow models predict   {t_mlf:6.1f} s   peak RSS {rss_mlf:5.2f} GB")
        print(f"  trackflow score         {t_ours:6.1f} s   peak RSS {rss_ours:5.2f} GB   "
              f"({t_mlf / t_ours:.2f}x as fast; goal >= 1.00x)")

        print("\n3. Peak RSS of `trackflow score` (whole process tree), 1x and 5x the rows:")
        big_csv, big_pq = work / "table5.csv", work / "table5.parquet"
        with open(big_csv, "wb") as out:
            out.write(csv_path.read_bytes())
            body = csv_path.read_bytes().split(b"\n", 1)[1]
            for _ in range(4):
                out.write(body)
        with pq.ParquetWriter(big_pq, features.schema) as w:
            for _ in range(5):
                w.write_table(features, row_group_size=128 * 1024)
        rss = {("csv", 1): rss_ours}
        for fmt, path, mult in (("parquet", pq_path, 1), ("csv", big_csv, 5), ("parquet", big_pq, 5)):
            _, rss[fmt, mult] = peak_tree_rss([*trackflow, str(path), "--out", str(work / f"out-{fmt}{mult}"),
                                               "--model", model], env, work / f"score-{fmt}{mult}.log")
        for fmt in ("csv", "parquet"):
            print(f"  {fmt:<8} {n:>10,} rows {rss[fmt, 1]:5.2f} GB   {5 * n:>10,} rows {rss[fmt, 5]:5.2f} GB   "
                  f"ratio {rss[fmt, 5] / rss[fmt, 1]:.2f} (goals: <= 1.5 GB at 1M rows, ratio <= 1.3)")
        got = pq.ParquetFile(work / "out-parquet5" / "table5.parquet").metadata.num_rows
        assert got == 5 * n, f"the 5x output holds {got} rows"


def loop(work: Path, n: int, model: str, pq_path: Path, csv_path: Path) -> None:
    import gc

    import mlflow.pyfunc
    import pandas as pd

    from tasks import scoring
    from trackflow.config import ScoreConfig

    bare = mlflow.pyfunc.load_model(model)
    frame = pd.read_parquet(pq_path)
    bare.predict(frame.head(1000))  # warm-up
    t = time.perf_counter()
    bare.predict(frame)
    bare_rate = n / (time.perf_counter() - t)
    del frame
    gc.collect()
    scorer = scoring.load_scorer(scoring.resolve_model(model))
    print(f"  bare predict, whole frame in memory   {bare_rate:9,.0f} rows/s")
    batch = ScoreConfig.model_fields["batch_rows"].default  # what `trackflow score` uses
    for fmt, path in (("Parquet", pq_path), ("CSV", csv_path)):
        t = time.perf_counter()
        rows = scoring.score_file(path, path.parent, work / f"loop-{fmt}.parquet", scorer, batch, None)
        rate = rows / (time.perf_counter() - t)
        print(f"  score_file from {fmt:<8} ({batch:,}-row batches) {rate:9,.0f} rows/s   {rate / bare_rate:5.1%} of "
              "bare (goal >= 80%)")


if __name__ == "__main__":
    main()
