"""A spawned worker's whole-process CPU with Python's default collector, beside one tuned by trackflow.heap.

Each sample starts one spawned worker (as WorkerPool and a Dask local cluster do), runs one
sweep-sized trial in it (`train_network`, 2,000 rows, 10 epochs: importing torch and the
training code is most of its work) and shuts it down; the worker's CPU (user + system, from
RUSAGE_CHILDREN once it is reaped) is recorded. Default and tuned workers alternate, so
that the machine's drift falls on both alike.

Usage: python benchmarks/bench_worker_gc.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import children_cpu  # noqa: E402
from trackflow.heap import tune  # noqa: E402


def trial() -> float:
    """One trial as a sweep's worker runs it; returns its validation accuracy."""
    import numpy as np

    from tasks.training import train_network
    from trackflow.config import TrainConfig

    c = TrainConfig()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2_000, 10)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    out = train_network(X[:1600], y[:1600], X[1600:], y[1600:], n_classes=2, hidden_layers=c.hidden_layers,
                        dropout=c.dropout, optimizer=c.optimizer, lr=c.lr, weight_decay=c.weight_decay,
                        batch_size=c.batch_size, epochs=10, seed=c.seed, device="cpu", activation=c.activation,
                        momentum=c.momentum, l1=c.l1)
    return out.history["val_accuracy"][-1]


def worker_cpu(tuned: bool) -> float:
    """CPU seconds of one spawned worker that runs one trial and exits."""
    before = children_cpu()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=tune if tuned else None) as pool:
        assert pool.submit(trial).result() > 0.5
    return children_cpu() - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    samples: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for tuned in (False, True):
            samples[tuned].append(worker_cpu(tuned))
    default, tuned = statistics.median(samples[False]), statistics.median(samples[True])
    print(f"default collector: {default:.2f} CPU-s per worker (median of {args.repeats}: "
          f"{', '.join(f'{s:.2f}' for s in samples[False])})")
    print(f"trackflow.heap:    {tuned:.2f} CPU-s per worker (median of {args.repeats}: "
          f"{', '.join(f'{s:.2f}' for s in samples[True])})")
    print(f"tuned / default:   {tuned / default:.2f}")


if __name__ == "__main__":
    main()
