"""Learning-rate sweep: a grid of training trials run concurrently, the best one promoted."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.train import TrainResult, fit_and_log, load_data, prefect_tags, split_table, tracked
from tasks.plots import plot_metric_vs_lr
from tasks.registry import promote_if_better
from tasks.reporting import publish_table
from tasks.tracking import (
    end_run,
    end_unfinished,
    ensure_experiment,
    log_figures,
    log_metrics,
    log_params,
    register_model,
    set_tags,
    start_run,
)
from trackflow import store
from trackflow.config import SWEEP_METRICS, SweepConfig, TrainConfig
from trackflow import runs
from trackflow.runs import is_interrupt


@dataclass
class Trial:
    config: TrainConfig
    run_id: str
    result: TrainResult | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.config.optimizer}/dropout={self.config.dropout:g}/lr={self.config.lr:g}"


@dataclass
class SweepResult:
    run_id: str
    experiment_id: str
    metric: str
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None
    model_version: str | None = None
    promoted: bool = False
    promotion_reason: str = ""

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if t.error is not None]

    def ranked(self) -> list[Trial]:
        """Completed trials, best first by `metric` in its direction."""
        ok = [t for t in self.trials if t.result is not None]
        return sorted(ok, key=lambda t: metric_value(t.result, self.metric),
                      reverse=SWEEP_METRICS[self.metric] == "max")


def metric_value(result: TrainResult, metric: str) -> float:
    """The trial's validation metric at its last epoch (the model that was logged)."""
    return result.history[metric][-1]


def train_trial(config: TrainConfig, run_id: str, experiment_id: str, tracking_uri: str) -> TrainResult:
    """One trial, logged into its (already created, nested) MLflow run; retried as a whole."""
    # Workers may be other processes or machines: use the sweep's store, not their own default.
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    set_tags.fn(run_id, {"trackflow.worker": f"{socket.gethostname()}:{os.getpid()}"})
    table = load_data.fn(config.data, config.target, config.features, config.drop, config.n_samples,
                         config.n_features, config.n_informative, config.seed, config.test_size, config.val_size)
    splits = split_table.fn(table, config.test_size, config.val_size, config.seed)
    result = fit_and_log(config, table, splits, run_id, experiment_id, as_tasks=False)
    end_run.fn(run_id, "FINISHED")
    return result


# The task wraps a module-level function, so worker processes (Dask) get it by reference:
# pickled by value, it would drag this module's globals along, locks included.
run_trial = task(train_trial, name="run_trial", cache_policy=NO_CACHE)


def task_runner_for(config: SweepConfig):
    """Threads on this machine by default; a Dask cluster (existing or local processes) when asked."""
    if config.uses_dask:
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": config.workers, "threads_per_worker": 1, "processes": True,
                            "dashboard_address": None, "host": "127.0.0.1"}
        )
    return ThreadPoolTaskRunner(max_workers=config.max_concurrency or os.cpu_count() or 1)


def run_trials(runner, trials: list[TrainConfig], run_ids: list[str], experiment_id: str, retries: int) -> list[Trial]:
    """Fan the trials out on `runner` (inside the sweep's flow run); a failure is recorded, not raised.

    On Ctrl-C or SIGTERM the runner is abandoned, not shut down: its shutdown waits for the
    trials in flight, while the command must end within seconds (it stops its workers).
    """
    runner.__enter__()
    try:
        futures = runner.map(
            run_trial.with_options(retries=retries, retry_delay_seconds=1),
            {"config": trials, "run_id": run_ids, "experiment_id": unmapped(experiment_id),
             "tracking_uri": unmapped(store.tracking_uri())},
        )
        out = []
        for cfg, run_id, fut in zip(trials, run_ids, futures):
            fut.wait()
            value = fut.result(raise_on_failure=False)
            if fut.state.is_completed():
                out.append(Trial(cfg, run_id, result=value))
            else:
                out.append(Trial(cfg, run_id, error=f"{type(value).__name__}: {value}"))
    except BaseException as exc:
        if not is_interrupt(exc):
            runner.__exit__(type(exc), exc, exc.__traceback__)
        raise
    runner.__exit__(None, None, None)
    return out


@flow(name="lr-sweep", log_prints=True)
def sweep_pipeline(config: SweepConfig = SweepConfig()) -> SweepResult:
    """Train one nested MLflow run per grid point, pick the best by `config.metric`, promote it if it wins."""
    store.configure()
    grid = config.trials()
    base, metric, direction = config.base, config.metric, SWEEP_METRICS[config.metric]
    experiment_id = ensure_experiment(base.experiment)  # once, before the fan-out
    parent = start_run(experiment_id, run_name=f"sweep-{len(grid)}-trials", tags=prefect_tags() | {"trackflow.kind": "sweep"})
    result = SweepResult(parent, experiment_id, metric)
    with tracked(parent):
        log_params(parent, {"lrs": json.dumps(config.lrs), "optimizers": json.dumps(config.optimizers),
                            "dropouts": json.dumps(config.dropouts), "metric": metric, "n_trials": len(grid),
                            "runner": "dask" if config.uses_dask else "threads"}
                   | {f"base_{k}": v for k, v in base.model_dump().items() if k not in ("lr", "optimizer", "dropout")})
        tags = {"trackflow.kind": "trial"} | prefect_tags()
        run_ids = [start_run(experiment_id, run_name=f"trial-{c.optimizer}-lr{c.lr:g}-do{c.dropout:g}", tags=tags,
                             parent_run_id=parent) for c in grid]
        try:
            result.trials = run_trials(task_runner_for(config), grid, run_ids, experiment_id, config.retries)
        except BaseException as exc:
            end_unfinished(run_ids, "KILLED" if is_interrupt(exc) else "FAILED")
            raise
        for run_id in run_ids:  # the trials ended their own runs
            # (through the module: Dask workers get this flow pickled by value, and the
            # heartbeat object holds a lock)
            runs.heartbeat.unwatch(run_id)

        for t in result.failed:
            set_tags(t.run_id, {"trackflow.error": t.error[:5000]})
            end_run(t.run_id, "FAILED")
            print(f"trial {t.label} failed after {config.retries} retries: {t.error}")
        ok = result.ranked()
        if not ok:
            raise RuntimeError(f"all {len(grid)} trials failed; first error: {result.trials[0].error}")
        best = result.best = ok[0]

        series: dict[str, tuple[list[float], list[float]]] = {}
        for t in ok:
            xs, ys = series.setdefault(f"{t.config.optimizer}, dropout {t.config.dropout:g}", ([], []))
            xs.append(t.config.lr)
            ys.append(metric_value(t.result, metric))
        log_figures(parent, {f"{metric}_vs_lr": plot_metric_vs_lr(series, metric)})
        best_value = metric_value(best.result, metric)
        log_metrics(parent, {f"best_{metric}": best_value, "n_failed": len(result.failed)}
                    | {f"best_{k}": v for k, v in best.result.metrics.items()})
        log_params(parent, {"best_lr": best.config.lr, "best_optimizer": best.config.optimizer,
                            "best_dropout": best.config.dropout, "best_run_id": best.run_id})

        if base.register_model:
            result.model_version = register_model(best.result.model_uri, base.model_name, best.run_id)
            promo = promote_if_better(base.model_name, result.model_version, metric, best_value, direction,
                                      config.promote_alias)
            result.promoted, result.promotion_reason = promo.promoted, promo.reason
            set_tags(parent, {"trackflow.promotion": "promoted" if promo.promoted else "kept",
                              "trackflow.promotion_reason": promo.reason})
            log_metrics(parent, {"candidate_value": promo.value}
                        | ({"champion_previous_value": promo.previous_value} if promo.previous_value is not None else {}))
            print(("Promoted" if promo.promoted else "Not promoted") + f": {promo.reason}")

        rows = [{"rank": i + 1, "trial": t.label, "status": "ok", metric: round(metric_value(t.result, metric), 4),
                 **{k: round(v, 4) for k, v in t.result.metrics.items()}, "mlflow_run_id": t.run_id}
                for i, t in enumerate(ok)]
        rows += [{"rank": None, "trial": t.label, "status": "failed", "error": t.error, "mlflow_run_id": t.run_id}
                 for t in result.failed]
        publish_table("sweep-trials", rows, f"Trials ranked by {metric} (best first)")
    return result
