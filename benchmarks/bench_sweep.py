"""Sweep wall time, each figure beside its peer, measured in one run on this machine.

1. Whole commands against a running Prefect server: the default `trackflow sweep` (3 trials)
   against one `trackflow train` with the same defaults. Goal: <= 1.3x.
2. The default runner (`auto`) against the same sweep with `--runner sequential`, for
   small and large grids. Goal: never slower.
3. 8 trials on 100k generated rows (~15 s of training each): one after another, against
   `auto` (a pool of worker processes), a local Dask cluster of 2 processes started for
   the sweep (`--runner dask --workers 2`) and an already running 2-process cluster
   (`--dask-address`). Goal: >= 1.8x.

Usage: python benchmarks/bench_sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import BIN, prefect_server, timed  # noqa: E402
from trackflow import telemetry  # noqa: E402

telemetry.quiet()
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def run_sweep(config) -> tuple[float, str]:
    from flows.sweep import sweep_pipeline

    t = time.perf_counter()
    res = sweep_pipeline(config)
    if res.failed:
        raise SystemExit(f"trials failed: {[x.error for x in res.failed]}")
    return time.perf_counter() - t, res.plan.reason


def commands(work: Path, url: str, reps: int) -> None:
    env = os.environ | {"PREFECT_API_URL": url, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/cli/mlflow.db"}
    train, sweep = [str(BIN / "trackflow"), "train"], [str(BIN / "trackflow"), "sweep"]
    timed(train, env, work)  # the store, the flows registered on the server, first imports
    timed(sweep, env, work)
    t_train, t_sweep = [], []
    for _ in range(reps):  # interleaved, so the machine's drift hits both alike
        t_train.append(timed(train, env, work))
        t_sweep.append(timed(sweep, env, work))
    a, b = statistics.median(t_train), statistics.median(t_sweep)
    print(f"Whole command, running Prefect server, defaults (median of {reps}):")
    print(f"  trackflow train                 {a:6.2f} s   1.00x")
    print(f"  trackflow sweep (3 trials)      {b:6.2f} s   {b / a:.2f}x one train (goal <= 1.3x)")


def auto_vs_sequential(quick: bool) -> None:
    from trackflow.config import SweepConfig, TrainConfig

    print("\nDefault runner (auto) against --runner sequential, same sweep, in one process:")
    sizes = [(3, 1000, 10), (9, 1000, 10), (8, 20_000, 3)] + ([] if quick else [(4, 100_000, 3)])
    for n, rows, epochs in sizes:
        base = TrainConfig(n_samples=rows, epochs=epochs, register_model=False)
        lrs = [round(10 ** (-4 + 3 * i / max(1, n - 1)), 6) for i in range(n)]
        cfg = SweepConfig(base=base, lrs=lrs)
        seq, _ = run_sweep(cfg.model_copy(update={"runner": "sequential"}))
        auto, why = run_sweep(cfg)
        print(f"  {n:2d} trials x {rows:>7,} rows x {epochs:2d} epochs: sequential {seq:6.2f} s   auto {auto:6.2f} s "
              f"({seq / auto:4.2f}x)   [{why}]")


def _train_alone(_):
    import numpy as np

    from tasks.training import TrialData, train_and_score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(70_000, 10)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    t = time.perf_counter()
    train_and_score(TrialData(X, y, X[:10_000], y[:10_000], X[:1000], y[:1000], 2), hidden_layers=[64, 64],
                    dropout=0.2, optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=32, epochs=2, seed=0,
                    device="cpu", activation="relu", momentum=0.0, l1=0.0)
    return time.perf_counter() - t


def parallel_ceiling(rounds: int) -> float:
    """How much faster 2 trainings go side by side than one after another on this machine, no orchestration."""
    ceiling, a, p = _common.parallel_ceiling(_train_alone, rounds)
    print(f"\nThis machine: one training alone {a:.2f} s; two side by side {p:.2f} s each "
          f"(median of {rounds}): no runner can beat {ceiling:.2f}x on 2 worker processes")
    return ceiling


def heavy(quick: bool, address: str) -> None:
    from trackflow.config import SweepConfig, TrainConfig

    rows, epochs = (20_000, 3) if quick else (100_000, 8)
    base = TrainConfig(n_samples=rows, epochs=epochs, register_model=False)
    cfg = SweepConfig(base=base, lrs=[0.0005, 0.001, 0.002, 0.005], optimizers=["adam", "adamw"])
    seq, _ = run_sweep(cfg.model_copy(update={"runner": "sequential"}))
    print(f"\n{len(cfg.trials())} trials x {rows:,} rows x {epochs} epochs (~{seq / len(cfg.trials()):.0f} s each), "
          "wall time of the sweep:")
    print(f"  one after another (--runner sequential)       {seq:7.2f} s   1.00x")
    for label, update in (("auto (default)", {}), ("--runner dask --workers 2 (started)", {"runner": "dask", "workers": 2}),
                          ("--dask-address (running, 2 processes)", {"dask_address": address})):
        t, why = run_sweep(cfg.model_copy(update=update))
        print(f"  {label:<45} {t:7.2f} s   {seq / t:4.2f}x faster (goal >= 1.8x)   [{why}]")


@contextlib.contextmanager
def running_dask_cluster():
    """A 2-process Dask cluster started once, as `--dask-address` users have: its workers stay warm."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, one repeat (a smoke run)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    with prefect_server(work / "prefect") as url:
        commands(work, url, reps=1 if args.quick else 3)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/inproc/mlflow.db"
        os.environ["PREFECT_API_URL"] = url
        from trackflow import store

        store.configure()
        with running_dask_cluster() as address:
            from trackflow.config import SweepConfig, TrainConfig

            warm = SweepConfig(base=TrainConfig(n_samples=300, epochs=1, register_model=False), lrs=[0.01, 0.02])
            run_sweep(warm)  # imports, first-call costs
            run_sweep(warm.model_copy(update={"dask_address": address}))  # the running cluster's workers import once
            auto_vs_sequential(args.quick)
            parallel_ceiling(3 if args.quick else 7)
            heavy(args.quick, address)


if __name__ == "__main__":
    main()
