"""Learning-rate sweep: data once -> a grid of trials on a runner -> rank -> the best gets the model -> promote.

Each trial is a nested MLflow run holding what compares trials (params, per-epoch and
test metrics, the dataset, its error if it failed). Only the best trial's run gets the
model and the figures, once, after ranking: that is the trained object from the trial,
not a retrain.

A trial is a Prefect task run of this flow run; its computation (tasks.training.
train_and_score, on arrays) goes where the runner plan says: this process, a pool of
worker processes, or a Dask cluster, each behind the same concurrent.futures Executor
interface. This process records each trial's run as its result comes back, so workers
never write to MLflow, and they import only torch and NumPy: a worker is ready in a few
seconds, where one running Prefect's own task engine (ProcessPoolTaskRunner) took ~11 s
on 2 cores, more than it saved (benchmarks/bench_sweep.py). Pool workers die with the
command, and one that dies fails only its own trial, which runs once more on a fresh
worker (tasks/workers.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from prefect import flow
from prefect.futures import as_completed

from flows import steps
from flows.common import (load_args, log_model, network_args, prefect_tags, register_and_promote, tracked,
                          training_params)
from tasks import tracking
from tasks.cluster import dask_client
from tasks.data import Encoded, Splits, Table
from tasks.evaluation import Evaluation, evaluate
from tasks.plots import plot_metric_vs_lr
from tasks.registry import TIEBREAK, rank_key
from tasks.training import TrialOutcome, estimate_seconds
from tasks.workers import WorkerPool
from trackflow import store
from trackflow.config import SweepConfig, TrainConfig
from trackflow.runs import is_interrupt

# Measured here (benchmarks/bench_sweep.py, 2 cores): a pool's workers return their first
# trials ~7 s after the pool starts (interpreter, torch, first-call costs), and a trial
# takes up to ~25% longer while another one trains beside it.
WORKER_START_SECONDS = 7.0
PARALLEL_SLOWDOWN = 1.25
# Worker processes must beat one-after-another by this factor before `auto` starts them.
WORTH_IT = 0.8


@dataclass
class Trial:
    config: TrainConfig
    run_id: str
    outcome: TrialOutcome | None = None
    evaluation: Evaluation | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.config.optimizer}/dropout={self.config.dropout:g}/lr={self.config.lr:g}"

    def value(self, metric: str) -> float:
        """The trial's validation metric at its last epoch (the model it would register)."""
        return self.outcome.history[metric][-1]


@dataclass(frozen=True)
class RunnerPlan:
    kind: str  # "sequential", "processes" or "dask"
    workers: int
    reason: str
    address: str | None = None


@dataclass
class SweepResult:
    run_id: str
    experiment_id: str
    metric: str
    plan: RunnerPlan | None = None
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None
    model_version: str | None = None
    promoted: bool = False
    promotion_reason: str = ""

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if t.error is not None]

    def ranked(self) -> list[Trial]:
        """Completed trials, best first by `metric` in its direction, then by val_loss, then in grid order."""
        ok = [t for t in self.trials if t.outcome is not None]  # in grid order: sorted() keeps it among equals
        return sorted(ok, key=lambda t: rank_key(self.metric, t.value(self.metric), t.value(TIEBREAK)))


def plan_runner(config: SweepConfig, trial_seconds: float, n_trials: int, cores: int) -> RunnerPlan:
    """Where the trials run, and why: the configured runner, or for `auto` the faster of one
    after another and a pool of worker processes, from the estimated length of one trial."""
    workers = max(1, min(config.workers or cores, n_trials))
    if config.dask_address:
        return RunnerPlan("dask", workers, f"a running Dask cluster at {config.dask_address} (--dask-address)",
                          config.dask_address)
    if config.runner == "dask":
        return RunnerPlan("dask", workers, f"a local Dask cluster of {workers} worker processes (--runner dask)")
    if config.runner == "sequential":
        return RunnerPlan("sequential", 1, "one after another (--runner sequential)")
    if config.runner == "processes":
        return RunnerPlan("processes", workers, f"a pool of {workers} worker processes (--runner processes)")
    one_by_one = n_trials * trial_seconds
    pooled = WORKER_START_SECONDS + math.ceil(n_trials / workers) * trial_seconds * PARALLEL_SLOWDOWN
    if workers >= 2 and pooled < WORTH_IT * one_by_one:
        return RunnerPlan("processes", workers, f"auto: {n_trials} trials of ~{trial_seconds:.1f} s each take "
                          f"~{pooled:.0f} s on {workers} worker processes against ~{one_by_one:.0f} s one after another")
    why = "one core" if workers < 2 else (f"starting worker processes (~{WORKER_START_SECONDS:.0f} s) would not pay "
                                          f"for {n_trials} trials of ~{trial_seconds:.2f} s each")
    return RunnerPlan("sequential", 1, f"auto: one after another; {why}")


@contextlib.contextmanager
def trial_executor(plan: RunnerPlan) -> Iterator[object]:
    """Where the trials' computation runs: here (None), worker processes, or Dask.

    On Ctrl-C or SIGTERM the executor is dropped without waiting for the trials in flight
    (the command ends within seconds and stops its worker processes).
    """
    if plan.kind == "sequential":
        yield None
        return
    if plan.kind == "processes":
        # Workers die with this process (kill -9 included); a dead worker fails only its trial, retried once.
        pool = WorkerPool(plan.workers)
        try:
            yield pool
        except BaseException as exc:
            if is_interrupt(exc):  # stopped now, so that the trials' tasks end before the command reports it
                pool.terminate()
            else:
                pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        return
    with dask_client(plan.address, plan.workers) as client:
        yield client.get_executor()


def open_trials(grid: list[TrainConfig], table: Table, experiment_id: str, parent: str) -> list[Trial]:
    """One nested RUNNING run per grid point, with its params and the dataset, before any trial starts."""
    trials = []
    for c in grid:
        run_id = steps.start_run(experiment_id, run_name=f"trial-{c.optimizer}-lr{c.lr:g}-do{c.dropout:g}",
                                 tags=prefect_tags() | {"trackflow.kind": "trial"}, parent_run_id=parent)
        steps.log_params(run_id, training_params(c, table))
        steps.log_dataset(run_id, table)
        trials.append(Trial(c, run_id))
    return trials


def record_trial(trial: Trial, future, encoded: Encoded) -> None:
    """The trial's result into its run (metrics and history in one write), or its error; the run is ended."""
    value = future.result(raise_on_failure=False)
    if future.state.is_completed():
        trial.outcome = value
        trial.evaluation = evaluate(value.proba_test, encoded.data.y_test, encoded.classes)
        steps.log_metrics(trial.run_id, trial.evaluation.metrics | {"train_seconds": value.seconds,
                                                                    "train_samples_per_second": value.samples_per_second},
                          value.history)
        steps.set_tags(trial.run_id, {"trackflow.worker": value.worker})
        steps.end_run(trial.run_id, "FINISHED")
    else:
        trial.error = f"{type(value).__name__}: {value}"
        steps.set_tags(trial.run_id, {"trackflow.error": trial.error[:5000]})
        steps.end_run(trial.run_id, "FAILED")
        print(f"trial {trial.label} failed: {trial.error}")


def run_trials(plan: RunnerPlan, encoded: Encoded, trials: list[Trial]) -> None:
    """Run the trials (task runs of this flow run) and record each as it finishes; a failure is recorded, not raised."""
    from prefect.task_runners import ThreadPoolTaskRunner

    runner = ThreadPoolTaskRunner(max_workers=plan.workers)  # threads that wait on the executor's trials
    with trial_executor(plan) as executor:
        runner.__enter__()
        try:
            futures = {runner.submit(steps.train_on, {"executor": executor, "data": encoded.data}
                                     | network_args(t.config)): t for t in trials}
            for future in as_completed(list(futures)):
                record_trial(futures[future], future, encoded)
        except BaseException as exc:
            tracking.end_unfinished([t.run_id for t in trials], "KILLED" if is_interrupt(exc) else "FAILED")
            if not is_interrupt(exc):  # an interrupt leaves the waiting threads behind: the command is ending
                runner.__exit__(type(exc), exc, exc.__traceback__)
            raise
        runner.__exit__(None, None, None)


def record_best(config: SweepConfig, result: SweepResult, encoded: Encoded, splits: Splits) -> None:
    """The best trial's run gets the model and figures; it is registered, and promoted if it beats the champion."""
    best = result.best
    model_uri = log_model(best.run_id, encoded, best.outcome, best.evaluation, splits)
    result.model_version, promo = register_and_promote(config.base, model_uri, best.run_id, encoded, splits,
                                                       config.metric, result.run_id)
    if promo is None:
        return
    result.promoted, result.promotion_reason = promo.promoted, promo.reason
    steps.log_metrics(result.run_id, {"candidate_value": promo.value}
                      | ({"champion_previous_value": promo.previous_value} if promo.previous_value is not None else {}))


def report_sweep(config: SweepConfig, result: SweepResult) -> None:
    """The parent run's figure, best-of metrics and params, and the Prefect table of trials."""
    metric, ok, best = config.metric, result.ranked(), result.best
    series: dict[str, tuple[list[float], list[float]]] = {}
    for t in ok:
        xs, ys = series.setdefault(f"{t.config.optimizer}, dropout {t.config.dropout:g}", ([], []))
        xs.append(t.config.lr)
        ys.append(t.value(metric))
    steps.log_figures(result.run_id, {f"{metric}_vs_lr": plot_metric_vs_lr(series, metric)})
    steps.log_metrics(result.run_id, {f"best_{metric}": best.value(metric), "n_failed": len(result.failed)}
                      | {f"best_{k}": v for k, v in best.evaluation.metrics.items()})
    steps.log_params(result.run_id, {"best_lr": best.config.lr, "best_optimizer": best.config.optimizer,
                                     "best_dropout": best.config.dropout, "best_run_id": best.run_id})
    rows = [{"rank": i + 1, "trial": t.label, "status": "ok", metric: round(t.value(metric), 4),
             **{k: round(v, 4) for k, v in t.evaluation.metrics.items()}, "mlflow_run_id": t.run_id}
            for i, t in enumerate(ok)]
    rows += [{"rank": None, "trial": t.label, "status": "failed", "error": t.error, "mlflow_run_id": t.run_id}
             for t in result.failed]
    steps.publish_table("sweep-trials", rows, f"Trials ranked by {metric} (best first)")


def sweep_params(config: SweepConfig, plan: RunnerPlan, n_trials: int) -> dict[str, object]:
    return ({"lrs": json.dumps(config.lrs), "optimizers": json.dumps(config.optimizers),
             "dropouts": json.dumps(config.dropouts), "metric": config.metric, "n_trials": n_trials,
             "runner": plan.kind, "runner_workers": plan.workers, "runner_reason": plan.reason}
            | {f"base_{k}": v for k, v in config.base.model_dump().items() if k not in ("lr", "optimizer", "dropout")})


@flow(name="lr-sweep", log_prints=True)
def sweep_pipeline(config: SweepConfig = SweepConfig()) -> SweepResult:
    """Train one nested MLflow run per grid point, pick the best by `config.metric`, promote it if it wins."""
    store.configure()
    base, grid = config.base, config.trials()
    table = steps.load_data(**load_args(base))  # bad data stops here, before any run is made
    splits = steps.split_table(table, base.test_size, base.val_size, base.seed)
    encoded = steps.encode_splits(splits)  # once: every trial trains on the same arrays
    plan = plan_runner(config, estimate_seconds(encoded.data, **network_args(base)), len(grid), os.cpu_count() or 1)
    print(f"Trials run {plan.reason}")
    experiment_id = steps.ensure_experiment(base.experiment)  # once, before the fan-out
    parent = steps.start_run(experiment_id, run_name=f"sweep-{len(grid)}-trials",
                             tags=prefect_tags() | {"trackflow.kind": "sweep"})
    result = SweepResult(parent, experiment_id, config.metric, plan)
    with tracked(parent):
        steps.log_params(parent, sweep_params(config, plan, len(grid)))
        steps.log_dataset(parent, table)
        result.trials = open_trials(grid, table, experiment_id, parent)
        run_trials(plan, encoded, result.trials)
        if not result.ranked():
            raise RuntimeError(f"all {len(grid)} trials failed; first error: {result.trials[0].error}")
        result.best = result.ranked()[0]
        record_best(config, result, encoded, splits)
        report_sweep(config, result)
    return result
