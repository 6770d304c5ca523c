"""A TPE search with ASHA pruning against the full grid, side by side, in one run; and the cost of a segment.

1. scikit-learn's breast cancer table with noise columns added, a grid of 48+ points (6
   learning rates x every optimizer SweepConfig accepts x 4 dropouts), 20 epochs each, 6
   seeds (the goal asks 3; the seed splits the data, draws the initial weights, shuffles, and
   seeds the sampler). Each seed: the grid's best validation accuracy (last epoch) and epochs
   trained, against `--search tpe --trials N --prune asha`'s (N: half the grid's points unless
   --trials says otherwise). Goals: within 0.5 percentage points of the grid's
   best (mean over the seeds), with <= 30% of the grid's epochs. Both run in this process
   through tasks.search.run_search, the loop the sweep flow runs (without Prefect and MLflow).
2. What a segment costs: one trial of the default `trackflow train` data trained in one call,
   against the same trial in one call per epoch, on a pool of worker processes and on a
   local Dask cluster (seconds per extra call; the trial's arrays are sent once).

Usage: python benchmarks/bench_search.py [--quick] [--seeds 0,1,2,3,4,5] [--trials N] [--min-resource N]
       [--reduction-factor N] [--startup N] [--multivariate] [--optimizers A,B] [--skip-segments | --segments-only]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trackflow import telemetry  # noqa: E402
from trackflow.config import DEFAULT_SEARCH_TRIALS  # noqa: E402

telemetry.quiet()

LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
DROPOUTS = [0.0, 0.2, 0.4, 0.6]
EPOCHS = 20
NOISE_COLUMNS = 20


def breast_cancer_with_noise(folder: Path, seed: int = 0) -> Path:
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    rng = np.random.default_rng(seed)
    for i in range(NOISE_COLUMNS):
        frame[f"noise_{i}"] = rng.normal(size=len(frame))
    path = folder / "breast_cancer_noise.csv"
    frame.to_csv(path, index=False)
    return path


def optimizers(chosen: str | None) -> list[str]:
    """The grid's optimizers: those named, or every one a sweep accepts (the list's item type in SweepConfig)."""
    from trackflow.config import SweepConfig

    accepted = list(typing.get_args(typing.get_args(SweepConfig.model_fields["optimizers"].annotation)[0]))
    return [o for o in chosen.split(",") if o in accepted] if chosen else accepted


def encoded_data(path: Path, seed: int):
    from tasks.data import encode_splits, load_data, split_table

    table = load_data(str(path), "target", None, [], 1000, 10, 5, seed, 0.2, 0.2)
    return encode_splits(split_table(table, 0.2, 0.2, seed)).data


def search(config, data, pruning=None, sampler=None):
    """(best validation accuracy among completed trials, epochs trained, outcomes, seconds) of one search."""
    from flows.common import network_args
    from tasks.search import run_search

    results = []
    t = time.perf_counter()
    run_search(config, data, executor=None, workers=1, knobs=network_args, start=lambda c: c,
               finish=lambda c, r: results.append(r), pruning=pruning, sampler=sampler)
    seconds = time.perf_counter() - t
    best = max(r.history["val_accuracy"][-1] for r in results if r.outcome == "completed")
    outcomes = {k: sum(r.outcome == k for r in results) for k in ("completed", "pruned", "failed")}
    return best, sum(r.epochs for r in results), outcomes, seconds


def grid_against_tpe(path: Path, seeds: list[int], n_trials: int | None, asha: dict, tpe: dict,
                     chosen: str | None) -> None:
    from tasks.search import make_pruner, make_sampler
    from trackflow.config import SweepConfig, TrainConfig

    opts = optimizers(chosen)
    n_grid = len(LRS) * len(opts) * len(DROPOUTS)
    n_trials = n_trials or n_grid // 2
    print(f"Breast cancer + {NOISE_COLUMNS} noise columns; grid {len(LRS)} lrs x {len(opts)} optimizers "
          f"({', '.join(opts)}) x {len(DROPOUTS)} dropouts = {n_grid} points x {EPOCHS} epochs; "
          f"tpe {tpe} --trials {n_trials} --prune asha {asha}")
    print(f"{'seed':>4}  {'grid best':>9}  {'tpe+asha best':>13}  {'diff (pp)':>9}  {'grid epochs':>11}  "
          f"{'tpe epochs':>10}  {'ratio':>6}  tpe outcomes                      seconds grid / tpe")
    diffs, ratios = [], []
    for seed in seeds:
        data = encoded_data(path, seed)
        base = TrainConfig(data=str(path), target="target", epochs=EPOCHS, seed=seed, val_size=0.2, device="cpu")
        grid = SweepConfig(base=base, lrs=LRS, optimizers=opts, dropouts=DROPOUTS)
        g_best, g_epochs, _, g_s = search(grid, data)
        cfg = grid.model_copy(update={"search": "tpe", "n_trials": n_trials, "prune": "asha"})
        t_best, t_epochs, outcomes, t_s = search(cfg, data, make_pruner("asha", EPOCHS, **asha),
                                                 make_sampler("tpe", seed, 1, **tpe))
        diff = 100 * (g_best - t_best)
        diffs.append(diff)
        ratios.append(t_epochs / g_epochs)
        print(f"{seed:>4}  {g_best:9.4f}  {t_best:13.4f}  {diff:9.2f}  {g_epochs:11d}  {t_epochs:10d}  "
              f"{t_epochs / g_epochs:6.1%}  {str(outcomes):<33} {g_s:5.1f} / {t_s:4.1f}")
    d, r = statistics.mean(diffs), statistics.mean(ratios)
    print(f"mean  grid best - tpe+asha best = {d:.2f} pp (goal <= 0.5: {'met' if d <= 0.5 else 'NOT met'}); "
          f"epochs {r:.1%} of the grid's (goal <= 30%: {'met' if r <= 0.30 else 'NOT met'})")


def _segments(executor, data, knobs: dict, stops: list[int]) -> float:
    """Seconds to train one trial in calls ending at `stops`, on `executor`, resending the arrays only on a miss."""
    from tasks.training import DataNotHere, train_segment

    t = time.perf_counter()
    state = None
    for stop in stops:
        result = executor.submit(train_segment, "bench", "bench", knobs, state, stop).result()
        if isinstance(result, DataNotHere):
            result = executor.submit(train_segment, data, "bench", knobs, state, stop).result()
        state = result
    return time.perf_counter() - t


def segment_cost(reps: int) -> None:
    from distributed import Client, LocalCluster

    from flows.common import network_args
    from tasks.data import encode_splits, generate_table, split_table
    from tasks.workers import WorkerPool
    from trackflow.config import TrainConfig

    base = TrainConfig(device="cpu")  # the defaults: 1,000 generated rows, 10 epochs
    data = encode_splits(split_table(generate_table(base.n_samples, base.n_features, base.n_informative, base.seed),
                                     base.test_size, base.val_size, base.seed)).data
    knobs = network_args(base)
    one, per_epoch = [base.epochs], list(range(1, base.epochs + 1))
    print(f"\nOne trial of the defaults ({base.n_samples} rows, {base.epochs} epochs): one call against one call "
          f"per epoch (median of {reps})")
    pool = WorkerPool(1)
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                           silence_logs=logging.WARNING)
    client = Client(cluster)
    try:
        runners = (("processes (WorkerPool)", pool), ("dask (LocalCluster)", client.get_executor(pure=False)))
        for name, executor in runners:
            _segments(executor, data, knobs, per_epoch)  # worker start, imports, the arrays sent once
            pairs = [(_segments(executor, data, knobs, one), _segments(executor, data, knobs, per_epoch))
                     for _ in range(reps)]  # interleaved, so the machine's drift hits both alike
            whole, split = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
            print(f"  {name:<24} one call {whole:6.3f} s   {len(per_epoch)} calls {split:6.3f} s   "
                  f"{(split - whole) / (len(per_epoch) - 1) * 1000:6.1f} ms per extra segment")
    finally:
        client.close()
        cluster.close()
        pool.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizers", default=None, help="the grid's optimizers, comma-separated (default: all four)")
    ap.add_argument("--quick", action="store_true", help="one seed, one repeat (a smoke run)")
    ap.add_argument("--seeds", default="0,1,2,3,4,5",
                    help="the seeds of the grid-against-TPE part, comma-separated (default six: the goal asks three)")
    ap.add_argument("--trials", type=int, default=None,
                    help=f"trainings of the TPE search (default: half the grid's points; the sweep's own default is "
                         f"{DEFAULT_SEARCH_TRIALS})")
    ap.add_argument("--min-resource", type=int, default=None, help="ASHA's first rung, in epochs")
    ap.add_argument("--reduction-factor", type=int, default=None, help="ASHA's reduction factor")
    ap.add_argument("--startup", type=int, default=None,
                    help="TPE's random trials before it models (n_startup_trials)")
    ap.add_argument("--multivariate", action="store_true", help="TPE models the parameters jointly")
    ap.add_argument("--skip-segments", action="store_true", help="leave out the segment-cost part")
    ap.add_argument("--segments-only", action="store_true", help="only the segment-cost part")
    args = ap.parse_args()
    asha = {k: v for k, v in (("min_resource", args.min_resource), ("reduction_factor", args.reduction_factor))
            if v is not None}
    tpe = ({"n_startup_trials": args.startup} if args.startup else {}) | (
        {"multivariate": True} if args.multivariate else {})
    if not args.segments_only:
        with tempfile.TemporaryDirectory(prefix="bench-search-") as work:
            seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
            grid_against_tpe(breast_cancer_with_noise(Path(work)), seeds, args.trials, asha, tpe, args.optimizers)
    if not args.skip_segments:
        segment_cost(1 if args.quick else 15)


if __name__ == "__main__":
    main()
