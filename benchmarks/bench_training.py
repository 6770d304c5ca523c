"""Training throughput and orchestration overhead, each figure beside its peer, measured in one run.

1. Samples/s at batch 32 on the same splits: the tutorial's DataLoader loop (fixed),
   scikit-learn's MLPClassifier (same layers, Adam, batch 32), and trackflow's train_model;
   with the test accuracy each reaches.
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
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the baseline script beside this one
from tutorial_baseline import accuracy_tutorial, train_tutorial  # noqa: E402

from tasks.data import generate_dataset, split_dataset  # noqa: E402
from tasks.evaluation import evaluate_model  # noqa: E402
from tasks.training import train_model  # noqa: E402
from trackflow.config import TrainConfig  # noqa: E402

BIN = Path(sys.executable).parent


def throughput(n_samples: int, epochs: int) -> list[tuple[str, float, float]]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    cfg = TrainConfig(n_samples=n_samples, epochs=epochs)
    warm = split_dataset.fn(generate_dataset.fn(200, 10, 5, 0), 0.2, 0.1, 0)  # first-call costs out of the timings
    train_tutorial(warm.train.X, warm.train.y, epochs=1)
    train_model.fn(warm.train, warm.val, TrainConfig(n_samples=200, epochs=1))
    s = split_dataset.fn(generate_dataset.fn(n_samples, 10, 5, cfg.seed), cfg.test_size, cfg.val_size, cfg.seed)
    n = len(s.train) * epochs
    rows = []

    torch.set_num_threads(1)  # same footing as trackflow's loop (and faster for the tutorial too)
    t = time.perf_counter()
    m = train_tutorial(s.train.X, s.train.y, epochs=epochs)
    rows.append(("tutorial DataLoader loop", n / (time.perf_counter() - t), accuracy_tutorial(m, s.test.X, s.test.y)))

    clf = MLPClassifier((64, 64), batch_size=32, learning_rate_init=1e-3, alpha=0.0, max_iter=epochs,
                        tol=0.0, n_iter_no_change=epochs + 1, random_state=cfg.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t = time.perf_counter()
        clf.fit(s.train.X, s.train.y)
        dt = time.perf_counter() - t
    rows.append(("scikit-learn MLPClassifier", n / dt, clf.score(s.test.X, s.test.y)))

    t = time.perf_counter()
    trained = train_model.fn(s.train, s.val, cfg)
    dt = time.perf_counter() - t
    rows.append(("trackflow train_model", n / dt, evaluate_model.fn(trained.model, s.test).metrics["test_accuracy"]))
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str], env: dict, cwd: str) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return dt


def start_prefect_server(home: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = os.environ | {"PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the Prefect server did not start in 120 s")


def overhead(repeats: int, n_samples: int) -> list[tuple[str, float]]:
    work = tempfile.mkdtemp(prefix="bench-train-")
    base_env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlruns/mlflow.db",
                             "PREFECT_HOME": f"{work}/prefect", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                             "MLFLOW_DISABLE_TELEMETRY": "true"}
    base_env.pop("PREFECT_API_URL", None)
    bare = [sys.executable, str(HERE / "tutorial_baseline.py"), str(n_samples)]
    train = [str(BIN / "trackflow"), "train", "--n-samples", str(n_samples)]
    timed(train, base_env, work)  # migrates the MLflow database once, outside the timings
    server, url = start_prefect_server(f"{work}/prefect")
    try:
        served = base_env | {"PREFECT_API_URL": url}
        timed(train, served, work)  # warm-up: registers the flow on the server
        results = {"bare tutorial script": [], "trackflow train, running Prefect server": [],
                   "trackflow train, temporary Prefect server": []}
        for _ in range(repeats):  # interleaved, so drift hits all three alike
            results["bare tutorial script"].append(timed(bare, base_env, work))
            results["trackflow train, running Prefect server"].append(timed(train, served, work))
            results["trackflow train, temporary Prefect server"].append(timed(train, base_env, work))
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return [(k, float(np.median(v))) for k, v in results.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and one repeat (a smoke run)")
    args = ap.parse_args()

    sizes = [(1_000, 10), (10_000, 3)] if args.quick else [(1_000, 10), (100_000, 3)]
    for n, epochs in sizes:
        print(f"\nThroughput at batch 32, {n:,} samples, {epochs} epochs (1 thread each):")
        rows = throughput(n, epochs)
        ref = rows[1][1]
        for name, sps, acc in rows:
            print(f"  {name:<28} {sps:>9,.0f} samples/s  {sps / ref:5.2f}x scikit-learn  test accuracy {acc:.3f}")

    sizes = [(1_000, 1), (20_000, 1)] if args.quick else [(1_000, 3), (10_000, 1), (100_000, 1)]
    for n, repeats in sizes:
        print(f"\nOne training job, {n:,} samples, 10 epochs: wall time of the whole command (median of {repeats}):")
        rows = overhead(repeats, n)
        ref = rows[0][1]
        for name, secs in rows:
            print(f"  {name:<42} {secs:6.2f} s  {secs / ref:5.2f}x the bare script")


if __name__ == "__main__":
    main()
