"""Training throughput and orchestration overhead, each figure beside its peer, measured in one run.

1. Samples/s on the same standardised splits, 1 thread each: the tutorial's DataLoader loop
   (fixed; batch 32 only, as the tutorial), scikit-learn's MLPClassifier (same layers, Adam)
   and trackflow's train_network (autograd through trackflow.model.MLPClassifier); with the
   test accuracy each reaches. Goals: >= 2.3x the tutorial at batch 32, >= 2x scikit-learn
   at batch 256 on 100k rows.
2. Wall time of one training job (defaults, then 10k and 100k samples): the bare tutorial script
   against `trackflow train` with a running Prefect server, and with Prefect's temporary
   server. Each process pays its imports; trackflow also logs plots, the dataset and the
   model and registers it, which the bare script does not do.

Usage: python benchmarks/bench_training.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the baseline script beside this one
from _common import BIN, prefect_server, timed  # noqa: E402
from tutorial_baseline import accuracy_tutorial, train_tutorial  # noqa: E402

from tasks.data import generate_table, split_table  # noqa: E402
from tasks.training import train_network  # noqa: E402
from trackflow.config import TrainConfig  # noqa: E402


def _arrays(n_samples: int, seed: int):
    from sklearn.preprocessing import StandardScaler

    cfg = TrainConfig()
    s = split_table(generate_table(n_samples, 10, 5, seed), cfg.test_size, cfg.val_size, seed)
    scaler = StandardScaler().fit(s.X_train)
    f = lambda X: scaler.transform(X).astype(np.float32)  # noqa: E731
    return f(s.X_train), s.y_train.to_numpy(), f(s.X_val), s.y_val.to_numpy(), f(s.X_test), s.y_test.to_numpy()


def throughput(n_samples: int, epochs: int, batch_size: int, rounds: int) -> list[tuple[str, float, float]]:
    """(name, median samples/s over `rounds` interleaved rounds, test accuracy) for each training loop."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    cfg = TrainConfig()
    knobs = dict(n_classes=2, hidden_layers=cfg.hidden_layers, dropout=cfg.dropout, optimizer="adam", lr=cfg.lr,
                 weight_decay=0.0, batch_size=batch_size, seed=cfg.seed, device="cpu", activation="relu",
                 momentum=0.0, l1=0.0)
    warm = _arrays(300, 0)  # first-call costs out of the timings
    train_tutorial(warm[0], warm[1], epochs=1)
    train_network(*warm[:4], epochs=1, **knobs)
    X, y, Xv, yv, Xt, yt = _arrays(n_samples, cfg.seed)
    torch.set_num_threads(1)  # the same footing for all (and faster for the tutorial too)

    def tutorial():
        m = train_tutorial(X, y, epochs=epochs, batch_size=batch_size)
        return accuracy_tutorial(m, Xt, yt)

    def sklearn():
        clf = MLPClassifier((64, 64), batch_size=batch_size, learning_rate_init=cfg.lr, alpha=0.0, max_iter=epochs,
                            tol=0.0, n_iter_no_change=epochs + 1, random_state=cfg.seed)
        with warnings.catch_warnings(), threadpool_limits(1):  # its BLAS on one thread too (its fastest here)
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        return clf.score(Xt, yt)

    def trackflow():
        model = train_network(X, y, Xv, yv, epochs=epochs, **knobs).model
        with torch.no_grad():
            return float((model(torch.from_numpy(Xt)).argmax(1).numpy() == yt).mean())

    loops = {"scikit-learn MLPClassifier": sklearn, "trackflow train_network": trackflow}
    if batch_size == 32:  # the tutorial's own batch size
        loops = {"tutorial DataLoader loop": tutorial} | loops
    times: dict[str, list[float]] = {k: [] for k in loops}
    acc: dict[str, float] = {}
    for _ in range(rounds):  # interleaved, so the machine's drift hits every loop alike
        for name, fn in loops.items():
            t = time.perf_counter()
            acc[name] = fn()
            times[name].append(time.perf_counter() - t)
    n = len(y) * epochs
    return [(name, n / float(np.median(times[name])), acc[name]) for name in loops]


def overhead(repeats: int, n_samples: int) -> list[tuple[str, float]]:
    work = tempfile.mkdtemp(prefix="bench-train-")
    base_env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlruns/mlflow.db",
                             "PREFECT_HOME": f"{work}/prefect"}
    base_env.pop("PREFECT_API_URL", None)
    bare = [sys.executable, str(HERE / "tutorial_baseline.py"), str(n_samples)]
    train = [str(BIN / "trackflow"), "train", "--n-samples", str(n_samples)]
    timed(train, base_env, work)  # migrates the MLflow database once, outside the timings
    with prefect_server(f"{work}/prefect") as url:
        served = base_env | {"PREFECT_API_URL": url}
        timed(train, served, work)  # warm-up: registers the flow on the server
        results = {"bare tutorial script": [], "trackflow train, running Prefect server": [],
                   "trackflow train, temporary Prefect server": []}
        for _ in range(repeats):  # interleaved, so drift hits all three alike
            results["bare tutorial script"].append(timed(bare, base_env, work))
            results["trackflow train, running Prefect server"].append(timed(train, served, work))
            results["trackflow train, temporary Prefect server"].append(timed(train, base_env, work))
    shutil.rmtree(work, ignore_errors=True)
    return [(k, float(np.median(v))) for k, v in results.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and one repeat (a smoke run)")
    args = ap.parse_args()

    sizes = [(1_000, 10, 32), (10_000, 3, 256)] if args.quick else \
        [(1_000, 10, 32), (100_000, 3, 32), (100_000, 5, 256)]
    for n, epochs, bs in sizes:
        print(f"\nThroughput at batch {bs}, {n:,} samples, {epochs} epochs (1 thread each, median of "
              f"{1 if args.quick else 5} interleaved rounds):")
        rows = throughput(n, epochs, bs, rounds=1 if args.quick else 5)
        sk = next(r[1] for r in rows if r[0].startswith("scikit"))
        tut = next((r[1] for r in rows if r[0].startswith("tutorial")), None)
        for name, sps, acc in rows:
            vs_tut = f"{sps / tut:5.2f}x tutorial  " if tut else ""
            print(f"  {name:<28} {sps:>9,.0f} samples/s  {vs_tut}{sps / sk:5.2f}x scikit-learn  "
                  f"test accuracy {acc:.3f}")

    sizes = [(1_000, 1), (20_000, 1)] if args.quick else [(1_000, 3), (10_000, 1), (100_000, 1)]
    for n, repeats in sizes:
        print(f"\nOne training job, {n:,} samples, 10 epochs: wall time of the whole command (median of {repeats}):")
        rows = overhead(repeats, n)
        ref = rows[0][1]
        for name, secs in rows:
            print(f"  {name:<42} {secs:6.2f} s  {secs / ref:5.2f}x the bare script")


if __name__ == "__main__":
    main()
