"""Wiring the flows share (not a flow): MLflow runs tied to the Prefect flow run, and a training's record."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from prefect.runtime import flow_run

from flows import steps
from tasks import tracking
from tasks.cluster import dask_client, n_workers
from tasks.data import Encoded, Splits, Table, classifier_from, networks_of
from tasks.evaluation import Evaluation
from tasks.models import MLFLOW_SCHEMES
from tasks.plots import plot_confusion_matrix, plot_loss_curves, plot_roc_curves
from tasks.registry import Promotion, schema_tags
from tasks.shards import ClusterStats, stage_model, unstage_models
from tasks.training import TrialOutcome
from trackflow.config import GENERATED_FIELDS, BatchClusterConfig, TrainConfig
from trackflow.runs import is_interrupt

LOGGED_PARAMS = ("epochs", "lr", "batch_size", "dropout", "optimizer", "weight_decay", "l1", "activation", "seed",
                 "test_size", "val_size")
MAX_PARAM = 6000  # MLflow's limit on a parameter's length
READING_FIELDS = ("sep", "thousands", "na_values")  # how --data was read, logged when given


def flow_run_url() -> str | None:
    """The flow run's page in the Prefect UI, or None where no UI address is known.

    Built here, not taken from `prefect.runtime.flow_run.ui_url`: that one points at
    `/flow-runs/flow-run/<id>`, while the UI served by this Prefect routes a flow run at
    `/runs/flow-run/<id>` (tests/integration/test_ui.py opens the link in a browser).
    """
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if not flow_run.id or not ui or not str(ui).startswith(("http://", "https://")):
        return None
    return f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run.id}"


def prefect_tags() -> dict[str, str]:
    """Tags linking an MLflow run back to the Prefect flow run that made it."""
    tags = {}
    if flow_run.id:
        tags["prefect.flow_run_id"] = str(flow_run.id)
        tags["prefect.flow_run_name"] = str(flow_run.name)
        if url := flow_run_url():
            tags["prefect.flow_run_url"] = url
    return tags


@contextlib.contextmanager
def tracked(run_id: str):
    """End the MLflow run FINISHED, or FAILED if the body raises (KILLED on Ctrl-C or SIGTERM).

    The error paths call the plain function: no new task run while the flow unwinds.
    """
    try:
        yield
    except BaseException as exc:
        tracking.end_run(run_id, "KILLED" if is_interrupt(exc) else "FAILED")
        raise
    steps.end_run(run_id, "FINISHED")


def load_args(config: TrainConfig, trainings: Sequence[TrainConfig] = ()) -> dict:
    """The arguments of tasks.data.load_data, from a training config; the memory check covers `trainings`
    (a sweep's trials), by default `config`'s own."""
    return dict(data=config.data, target=config.target, features=config.features, drop=config.drop,
                n_samples=config.n_samples, n_features=config.n_features, n_informative=config.n_informative,
                seed=config.seed, test_size=config.test_size, val_size=config.val_size, sep=config.sep,
                thousands=config.thousands, na_values=config.na_values,
                networks=networks_of(trainings or [config]))


def network_args(config: TrainConfig) -> dict:
    """The arguments of tasks.training.train_and_score, from a training config."""
    return dict(hidden_layers=config.hidden_layers, dropout=config.dropout, optimizer=config.optimizer, lr=config.lr,
                weight_decay=config.weight_decay, batch_size=config.batch_size, epochs=config.epochs,
                seed=config.seed, device=config.device, activation=config.activation, momentum=config.momentum,
                l1=config.l1)


def training_params(config: TrainConfig, table: Table) -> dict[str, object]:
    """What a training run records as its params: the data, the columns, the knobs."""
    features = json.dumps(list(table.X.columns), ensure_ascii=False)
    if len(features) > MAX_PARAM:
        features = features[: MAX_PARAM - 40] + " ... (all in data/profile.json)"
    params = {k: getattr(config, k) for k in LOGGED_PARAMS} | {
        "data": config.data or "generated", "target": str(table.y.name), "features": features,
        "n_features_in": table.X.shape[1], "hidden_layers": json.dumps(config.hidden_layers),
    }
    if config.optimizer == "sgd":  # the other optimizers have no momentum
        params["momentum"] = config.momentum
    reading = {k: json.dumps(v) if isinstance(v, list) else v for k in READING_FIELDS if (v := getattr(config, k))}
    if table.left_out:  # ID-like columns the table had, left out (the reasons are in data/profile.json)
        left_out = json.dumps(list(table.left_out), ensure_ascii=False)
        params["left_out_columns"] = left_out if len(left_out) <= MAX_PARAM else left_out[: MAX_PARAM - 40] + " ..."
    return params | reading | ({k: getattr(config, k) for k in GENERATED_FIELDS} if not config.data else {})


def example_rows(splits: Splits):
    """A few real training rows for the model's input example (complete ones when there are)."""
    complete = splits.X_train.dropna()
    return (complete if len(complete) >= 2 else splits.X_train).head(5)


def log_training_metrics(run_id: str, evaluation: Evaluation, outcome: TrialOutcome, table: Table) -> None:
    """Test metrics, per-epoch history and throughput, in one write."""
    steps.log_metrics(run_id, evaluation.metrics | {"train_samples_per_second": outcome.samples_per_second,
                                                    "data_rows": len(table.y)}, outcome.history)


def log_model(run_id: str, encoded: Encoded, outcome: TrialOutcome, evaluation: Evaluation, splits: Splits) -> str:
    """The figures and the served model of a finished training; returns the model's URI.

    With many classes the per-class figures show the most frequent ones only (tasks.plots):
    the run says which in `plots/classes_shown.json` and a tag.
    """
    confusion, confusion_shown = plot_confusion_matrix(evaluation.confusion, evaluation.classes)
    roc, roc_shown = plot_roc_curves(evaluation.y_true, evaluation.proba, evaluation.classes)
    steps.log_figures(run_id, {"loss_curves": plot_loss_curves(outcome.history), "confusion_matrix": confusion,
                               "roc_curve": roc})
    k = len(evaluation.classes)
    if len(confusion_shown) < k or len(roc_shown) < k:
        steps.log_json(run_id, {name: {"shown": shown, "left_out": [c for c in evaluation.classes if c not in shown]}
                                for name, shown in (("confusion_matrix", confusion_shown), ("roc_curve", roc_shown))},
                       "plots/classes_shown.json")
        steps.set_tags(run_id, {"trackflow.figures_classes": f"confusion matrix: {len(confusion_shown)} of {k} "
                                f"classes, ROC: {len(roc_shown)} of {k} (most frequent; plots/classes_shown.json)"})
    return steps.log_classifier(run_id, classifier_from(encoded, outcome), example_rows(splits))


def register_and_promote(config: TrainConfig, model_uri: str, run_id: str, encoded: Encoded, splits: Splits,
                         metric: str, decision_run: str) -> tuple[str | None, Promotion | None]:
    """Register the model of `run_id` with what it takes and answers, then promote it by the registry's rule.

    (version, promotion); None for what the config turns off. The decision and why are
    tags of `decision_run` and a line in the flow run's log.
    """
    if not config.register_model:
        return None, None
    tags = schema_tags(encoded.columns, str(splits.y_train.name), encoded.classes)
    version = steps.register_model(model_uri, config.model_name, run_id, tags)
    if not config.promote:
        return version, None
    promo = steps.promote_if_better(config.model_name, version, metric, config.promote_alias)
    steps.set_tags(decision_run, {"trackflow.promotion": "promoted" if promo.promoted else "kept",
                                  "trackflow.promotion_reason": promo.reason})
    print(promo.reason)
    return version, promo


@contextlib.contextmanager
def batch_cluster(config: BatchClusterConfig, out_dir: Path):
    """A batch job's Dask client (the cluster at `dask_address`, or a local one of `workers` processes, default
    the cores), stopped on the way out, and then the model copies staged for its workers in `out_dir` removed,
    however the job ends; None for a job that runs in this process."""
    if not config.on_dask:
        yield None
        return
    try:
        with dask_client(config.dask_address, config.workers or os.cpu_count() or 1) as client:
            yield client
    finally:
        unstage_models(out_dir)


IN_PROCESS = {"model_loads": 1, "workers": 1}
"""A batch job's runner metrics when it ran in its own process."""


def runner_metrics(run_id: str, cluster: ClusterStats | None, measure: str) -> dict[str, float]:
    """Where a batch job's work ran, as run metrics (`model_loads`, `workers`, throughput per worker); on a cluster
    also its workers' names as `trackflow.*` tags."""
    if cluster is None:
        return dict(IN_PROCESS)
    steps.set_tags(run_id, {f"trackflow.{k}": v for k, v in cluster.names().items()})
    return cluster.metrics(measure)


def runner_params(client) -> dict[str, object]:
    """Where a batch job ran, as its run's params (they replace the config's `runner` and `workers`)."""
    if client is None:
        return {"runner": "sequential", "workers": 1}
    return {"runner": "dask", "workers": n_workers(client)}


def stage_for_workers(model: str, path: str | Path, out_dir: Path) -> str:
    """The model folder as a cluster's workers read it: an MLflow model (downloaded here, where the store is, as
    the version the job resolved) copied into the output folder, which the workers share; a local folder as an
    absolute path (a hub id as it is: each worker finds it in its own Hugging Face cache)."""
    if model.startswith(MLFLOW_SCHEMES):
        return stage_model(path, out_dir, "model")
    return str(Path(path).resolve()) if Path(path).exists() else str(path)
