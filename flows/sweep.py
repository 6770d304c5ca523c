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

With --search random|tpe or --prune, Optuna picks and stops the trials (tasks/search.py):
a trial's run opens as it starts, and its training goes to the same executors in segments
that end where the pruner can act.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Collection, Iterator
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
from tasks.plots import plot_best_so_far, plot_metric_vs_lr
from tasks.registry import TIEBREAK, rank_key
from tasks.search import SearchSummary, TrialResult, describe_sampler, make_pruner, run_search
from tasks.training import TrialOutcome, estimate_seconds
from tasks.workers import WorkerPool
from trackflow import store
from trackflow.config import SWEEP_AXES, SWEEP_METRICS, SweepConfig, TrainConfig, trial_label
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
    outcome: TrialOutcome | None = None  # set when it completed
    evaluation: Evaluation | None = None
    error: str | None = None  # set when it failed
    varied: Collection[str] = ()  # the fields that differ between the sweep's trials (SweepConfig.varied)
    pruned_at: int | None = None  # the epoch it was pruned after
    pruned_history: dict[str, list[float]] | None = None  # its curves up to there
    epochs_trained: int = 0

    @property
    def status(self) -> str:
        """completed, pruned or failed (trackflow.outcome); running while none of these."""
        return ("completed" if self.outcome is not None else "failed" if self.error is not None
                else "pruned" if self.pruned_at is not None else "running")

    @property
    def label(self) -> str:
        """The trial's values of the varied fields and its learning rate, e.g. 'h64x64-bs128-adam-lr0.01'."""
        return trial_label(self.config, {*self.varied, "lr"})

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

    search: SearchSummary | None = None

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if t.error is not None]

    @property
    def pruned(self) -> list[Trial]:
        return [t for t in self.trials if t.pruned_at is not None]

    def ranked(self) -> list[Trial]:
        """Completed trials (never pruned ones), best first by `metric` in its direction, then by val_loss,
        then in grid order."""
        ok = [t for t in self.trials if t.outcome is not None]  # in grid order: sorted() keeps it among equals
        return sorted(ok, key=lambda t: rank_key(self.metric, t.value(self.metric), t.value(TIEBREAK)))


def trial_seconds(data, grid: list[TrainConfig], most: int = 4) -> float:
    """A trial's estimated length here: the mean of estimate_seconds over the grid's distinct networks (shape, batch
    size, activation, optimizer: what sets a step's cost), at most `most` (>= 2) of them, the first, the last and
    evenly between."""
    networks: dict[tuple, TrainConfig] = {}
    for c in grid:
        networks.setdefault((tuple(c.hidden_layers), c.batch_size, c.activation, c.optimizer), c)
    nets = list(networks.values())
    picked = nets if len(nets) <= most else [nets[round(i * (len(nets) - 1) / (most - 1))] for i in range(most)]
    return sum(estimate_seconds(data, **network_args(c)) for c in picked) / len(picked)


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


def plan_sweep(config: SweepConfig, data, grid: list[TrainConfig], n_trials: int, cores: int) -> RunnerPlan:
    """plan_runner, timing a trial only for `auto`: a named runner (or --dask-address) needs no estimate, and the
    timing fit of a large network would cost minutes in this process before the sweep starts."""
    auto = config.runner == "auto" and not config.dask_address
    return plan_runner(config, trial_seconds(data, grid) if auto else 0.0, n_trials, cores)


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
        yield client.get_executor(pure=False)  # a segment resent after a worker lacked the data is a new call


def open_trials(grid: list[TrainConfig], varied: Collection[str], table: Table, experiment_id: str,
                parent: str) -> list[Trial]:
    """One nested RUNNING run per grid point, with its params and the dataset, before any trial starts."""
    return [open_trial(c, varied, table, experiment_id, parent) for c in grid]


def open_trial(c: TrainConfig, varied: Collection[str], table: Table, experiment_id: str, parent: str) -> Trial:
    """The trial's nested RUNNING run, named by its `varied` values, with its params and the dataset."""
    trial = Trial(c, "", varied=varied)
    trial.run_id = steps.start_run(experiment_id, run_name=f"trial-{trial.label}",
                                   tags=prefect_tags() | {"trackflow.kind": "trial"}, parent_run_id=parent)
    steps.log_params(trial.run_id, training_params(c, table))
    steps.log_dataset(trial.run_id, table)
    return trial


def record_trial(trial: Trial, future, encoded: Encoded) -> None:
    """A grid trial's Prefect task result into its run (finish_trial)."""
    value = future.result(raise_on_failure=False)
    if future.state.is_completed():
        finish_trial(trial, TrialResult("completed", training=value, history=value.history), encoded)
    else:
        finish_trial(trial, TrialResult("failed", error=f"{type(value).__name__}: {value}",
                                        epoch=getattr(value, "epoch", None)), encoded)


def finish_trial(trial: Trial, result: TrialResult, encoded: Encoded) -> None:
    """How the trial ended into its run, which is ended: a completed one's metrics and history in one write;
    a pruned one's curves up to the epoch it stopped at; a failed one's error (and the epoch, when known).
    Every trial gets `trackflow.outcome`."""
    trial.epochs_trained = result.epochs
    tags = {"trackflow.outcome": result.outcome}
    if result.outcome == "completed":
        value = result.training
        trial.outcome = value
        trial.evaluation = evaluate(value.proba_test, encoded.data.y_test, encoded.classes)
        steps.log_metrics(trial.run_id, trial.evaluation.metrics | {"train_seconds": value.seconds,
                                                                    "train_samples_per_second": value.samples_per_second},
                          value.history)
        steps.set_tags(trial.run_id, tags | {"trackflow.worker": value.worker})
        steps.end_run(trial.run_id, "FINISHED")
    elif result.outcome == "pruned":
        trial.pruned_at, trial.pruned_history = result.epoch, result.history
        steps.log_metrics(trial.run_id, {"stopped_epoch": result.epoch}, result.history)
        steps.set_tags(trial.run_id, tags | {"trackflow.stopped_epoch": str(result.epoch)})
        steps.end_run(trial.run_id, "FINISHED")  # it ended as the pruner decided, not in error
    else:
        trial.error = result.error
        if result.history:
            steps.log_metrics(trial.run_id, {}, result.history)
        epoch = {"trackflow.failed_epoch": str(result.epoch)} if result.epoch is not None else {}
        steps.set_tags(trial.run_id, tags | epoch | {"trackflow.error": trial.error[:5000]})
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


def search_trials(config: SweepConfig, plan: RunnerPlan, encoded: Encoded, table: Table, experiment_id: str,
                  result: SweepResult) -> None:
    """--search random|tpe, or a grid with --prune: Optuna proposes and prunes (tasks/search.py), this process
    records each trial's run as it starts and ends; a failure is recorded, not raised."""
    pruning = make_pruner(config.prune, config.base.epochs)

    def start(c: TrainConfig) -> Trial:
        trial = open_trial(c, config.varied(), table, experiment_id, result.run_id)
        result.trials.append(trial)
        return trial

    with trial_executor(plan) as executor:
        try:
            result.search = run_search(config, encoded.data, executor=executor, workers=plan.workers,
                                       knobs=network_args, start=start, pruning=pruning,
                                       finish=lambda trial, r: finish_trial(trial, r, encoded))
        except BaseException as exc:
            tracking.end_unfinished([t.run_id for t in result.trials], "KILLED" if is_interrupt(exc) else "FAILED")
            raise
    print(f"Search stopped: {result.search.stop_reason}")


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


def lr_series(trials: list[Trial], varied: Collection[str], metric: str) -> dict[str, tuple[list[float], list[float]]]:
    """`metric` against the learning rate: one series per combination of the other varied fields, labelled by them."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for t in trials:
        xs, ys = series.setdefault(trial_label(t.config, set(varied) - {"lr"}) or "trials", ([], []))
        xs.append(t.config.lr)
        ys.append(t.value(metric))
    return series


def report_sweep(config: SweepConfig, result: SweepResult) -> None:
    """The parent run's figure, best-of metrics and params, and the Prefect table of trials."""
    metric, ok, best, varied = config.metric, result.ranked(), result.best, config.varied()
    steps.log_figures(result.run_id, {f"{metric}_vs_lr": plot_metric_vs_lr(lr_series(ok, varied, metric), metric)})
    if result.search is not None:  # a search's trials in the order it chose them (a grid's order says nothing)
        steps.log_figures(result.run_id, {f"{metric}_best_so_far": plot_best_so_far(
            [(t.status, t.value(metric) if t.outcome else t.pruned_history[metric][-1] if t.pruned_history else None)
             for t in result.trials], metric,
            SWEEP_METRICS[metric])})
    steps.log_metrics(result.run_id, {f"best_{metric}": best.value(metric)} | study_metrics(config, result)
                      | {f"best_{k}": v for k, v in best.evaluation.metrics.items()})
    steps.log_params(result.run_id, {f"best_{field}": _param(getattr(best.config, field))
                                     for field in ("lr", "optimizer", "dropout", *varied)} | {"best_run_id": best.run_id})
    rows = [{"rank": i + 1, "trial": t.label, "outcome": "completed", "epochs": t.epochs_trained,
             metric: round(t.value(metric), 4), **{k: round(v, 4) for k, v in t.evaluation.metrics.items()},
             "mlflow_run_id": t.run_id} for i, t in enumerate(ok)]
    rows += [{"rank": None, "trial": t.label, "outcome": "pruned", "epochs": t.pruned_at,
              "mlflow_run_id": t.run_id} for t in result.pruned]
    rows += [{"rank": None, "trial": t.label, "outcome": "failed", "epochs": t.epochs_trained, "error": t.error,
              "mlflow_run_id": t.run_id} for t in result.failed]
    steps.publish_table("sweep-trials", rows, f"Trials ranked by {metric} (best first)")


def _param(value) -> object:
    """A param's value as MLflow records it: lists as JSON, as training_params does."""
    return json.dumps(value) if isinstance(value, list) else value


def study_metrics(config: SweepConfig, result: SweepResult) -> dict[str, float]:
    """How the search went: trials by outcome, and the epochs it trained against the full grid's."""
    out = {"n_completed": len(result.ranked()), "n_pruned": len(result.pruned), "n_failed": len(result.failed),
           "epochs_trained": sum(t.epochs_trained for t in result.trials)}
    if config.lr_range is None:  # a learning-rate range has no grid to compare with
        out["grid_epochs"] = len(config.trials()) * config.base.epochs
        out["epochs_vs_grid"] = out["epochs_trained"] / out["grid_epochs"]
    return out


def search_params(config: SweepConfig, workers: int) -> dict[str, object]:
    pruning = make_pruner(config.prune, config.base.epochs)
    return {"search": config.search, "sampler": describe_sampler(config.search, config.base.seed, workers),
            "prune": config.prune, "pruner": pruning.description if pruning else "none"} \
        | ({"lr_range": json.dumps(config.lr_range)} if config.lr_range else {})


def sweep_params(config: SweepConfig, plan: RunnerPlan, n_trials: int) -> dict[str, object]:
    """Every axis's values (the base's value alone for one left out), the ranking, the runner, the other base fields."""
    axes = config.axes()
    return ({axis: json.dumps(axes[field]) for axis, field in SWEEP_AXES.items()}
            | {"metric": config.metric, "n_trials": n_trials,
               "runner": plan.kind, "runner_workers": plan.workers, "runner_reason": plan.reason}
            | {f"base_{k}": v for k, v in config.base.model_dump().items() if k not in axes})


@flow(name="lr-sweep", log_prints=True)
def sweep_pipeline(config: SweepConfig = SweepConfig()) -> SweepResult:
    """Train one nested MLflow run per grid point, pick the best by `config.metric`, promote it if it wins."""
    store.configure()
    base, grid, planned = config.base, config.trials(), config.planned_trials()
    table = steps.load_data(**load_args(base, grid))  # bad data stops here, before any run is made
    splits = steps.split_table(table, base.test_size, base.val_size, base.seed)
    encoded = steps.encode_splits(splits)  # once: every trial trains on the same arrays
    plan = plan_sweep(config, encoded.data, grid, planned, os.cpu_count() or 1)
    print(f"Trials run {plan.reason}")
    experiment_id = steps.ensure_experiment(base.experiment)  # once, before the fan-out
    parent = steps.start_run(experiment_id, run_name=f"sweep-{planned}-trials",
                             tags=prefect_tags() | {"trackflow.kind": "sweep"})
    result = SweepResult(parent, experiment_id, config.metric, plan)
    with tracked(parent):
        steps.log_params(parent, sweep_params(config, plan, planned) | search_params(config, plan.workers))
        steps.log_dataset(parent, table)
        if config.search == "grid" and config.prune == "none":  # every grid point, one call each
            result.trials = open_trials(grid, config.varied(), table, experiment_id, parent)
            run_trials(plan, encoded, result.trials)
        else:
            search_trials(config, plan, encoded, table, experiment_id, result)
        if not result.ranked():
            first = next((t.error for t in result.trials if t.error), "none failed: every trial was pruned")
            raise RuntimeError(f"no trial of {len(result.trials)} completed; first error: {first}")
        result.best = result.ranked()[0]
        record_best(config, result, encoded, splits)
        report_sweep(config, result)
    return result
