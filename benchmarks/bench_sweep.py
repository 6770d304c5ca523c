"""Sweep wall time: the concurrent sweep against its trials run one after another, side by side.

1. The default sweep (3 learning rates, default base): `sweep_pipeline` on the local thread
   runner, on a local Dask cluster of 2 worker processes started for the sweep, and on an
   already running 2-process cluster (`--dask-address`), against the same trials trained
   and logged one after another in this process with no orchestration.
2. How wall time grows with 3, 9 and 27 trials, each against sequential.

Usage: python benchmarks/bench_sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import tempfile
import time

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def sequential(config) -> float:
    from flows.train import fit_and_log
    from tasks.tracking import end_run, ensure_experiment, start_run

    t = time.perf_counter()
    exp = ensure_experiment.fn(config.base.experiment)
    for trial in config.trials():
        run_id = start_run.fn(exp)
        fit_and_log(trial, run_id, exp, as_tasks=False)
        end_run.fn(run_id)
    return time.perf_counter() - t


def concurrent(config) -> float:
    from flows.sweep import sweep_pipeline

    t = time.perf_counter()
    res = sweep_pipeline(config)
    if res.failed:
        raise SystemExit(f"trials failed: {[x.error for x in res.failed]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs and no 27-trial row")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-sweep-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"

    from prefect.testing.utilities import prefect_test_harness

    from trackflow.config import SweepConfig, TrainConfig

    base = TrainConfig(epochs=3 if args.quick else 10, register_model=False)
    with prefect_test_harness(server_startup_timeout=120), running_dask_cluster() as address:
        sequential(SweepConfig(base=base, lrs=[0.01]))  # warm-up: imports, DB migration, first-call costs
        concurrent(SweepConfig(base=base, lrs=[0.01]))
        concurrent(SweepConfig(base=base, lrs=[0.01, 0.02], dask_address=address))  # both workers import once
        default = SweepConfig(base=base)
        seq = sequential(default)
        thr = concurrent(default)
        dsk = concurrent(default.model_copy(update={"workers": 2}))
        warm = concurrent(default.model_copy(update={"dask_address": address}))
        print(f"\nDefault sweep ({len(default.trials())} trials, {base.n_samples} samples, {base.epochs} epochs), wall time:")
        print(f"  one after another, one process, no orchestration  {seq:6.2f} s  1.00x")
        print(f"  sweep_pipeline, threads (cores={os.cpu_count()})              {thr:6.2f} s  {seq / thr:5.2f}x faster")
        print(f"  sweep_pipeline, local Dask cluster, 2 processes   {dsk:6.2f} s  {seq / dsk:5.2f}x faster (incl. cluster start)")
        print(f"  sweep_pipeline, running Dask cluster, 2 processes {warm:6.2f} s  {seq / warm:5.2f}x faster (--dask-address)")
        n, cores = len(default.trials()), os.cpu_count() or 1
        print(f"  (a trial is one unit of work: {n} equal trials on {cores} cores finish in at least "
              f"{math.ceil(n / cores)} trial times, so no runner can beat {n / math.ceil(n / cores):.2f}x here)")

        print("\nGrowth with the number of trials (lrs log-spaced 1e-4..1e-1), wall time and x faster than sequential:")
        for n in [3, 9] + ([] if args.quick else [27]):
            lrs = [round(10 ** (-4 + 3 * i / max(1, n - 1)), 6) for i in range(n)]
            cfg = SweepConfig(base=base, lrs=lrs)
            seq = sequential(cfg)
            row = {"threads": concurrent(cfg), "local Dask": concurrent(cfg.model_copy(update={"workers": 2})),
                   "running Dask": concurrent(cfg.model_copy(update={"dask_address": address}))}
            print(f"  {n:3d} trials: sequential {seq:6.2f} s" + "".join(
                f"   {k} {v:6.2f} s ({seq / v:4.2f}x)" for k, v in row.items()))


@contextlib.contextmanager
def running_dask_cluster():
    """A 2-process Dask cluster started once, as `--dask-address` users have: its workers stay warm."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


if __name__ == "__main__":
    main()
