"""Training pipeline: data -> split -> train -> evaluate -> log -> register."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tasks import data as data_steps
from tasks import training
from tasks.evaluation import evaluate_classifier
from tasks.plots import plot_confusion_matrix, plot_loss_curves, plot_roc_curves
from tasks.reporting import metrics_markdown, publish_markdown
from tasks.tracking import (
    end_run,
    ensure_experiment,
    log_classifier,
    log_dataset,
    log_figures,
    log_json,
    log_metrics,
    log_params,
    register_model,
    start_run,
)
from trackflow import store
from trackflow.config import GENERATED_FIELDS, TrainConfig
from trackflow.runs import is_interrupt

LOGGED_PARAMS = ("epochs", "lr", "batch_size", "dropout", "optimizer", "weight_decay", "seed", "test_size", "val_size")
MAX_PARAM = 6000  # MLflow's limit on a parameter's length

load_data = task(data_steps.load_data, cache_policy=NO_CACHE)
split_table = task(data_steps.split_table, cache_policy=NO_CACHE)
fit_classifier = task(training.fit_classifier, cache_policy=NO_CACHE)
evaluate = task(evaluate_classifier, cache_policy=NO_CACHE)


@dataclass
class TrainResult:
    run_id: str
    experiment_id: str
    metrics: dict[str, float]
    model_uri: str
    classes: list = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    model_version: str | None = None
    run_url: str = ""


def flow_run_url() -> str | None:
    """The flow run's page in the Prefect UI, or None where no UI address is known.

    (Prefect builds it as f"{PREFECT_UI_URL}/..." even when that setting is unset, giving "None/...".)
    """
    url = flow_run.ui_url
    return str(url) if url and str(url).startswith(("http://", "https://")) else None


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
        end_run.fn(run_id, "KILLED" if is_interrupt(exc) else "FAILED")
        raise
    end_run(run_id, "FINISHED")


def training_params(config: TrainConfig, table: data_steps.Table) -> dict[str, object]:
    features = json.dumps(list(table.X.columns), ensure_ascii=False)
    if len(features) > MAX_PARAM:
        features = features[: MAX_PARAM - 40] + " ... (all in data/profile.json)"
    params = {k: getattr(config, k) for k in LOGGED_PARAMS} | {
        "data": config.data or "generated", "target": str(table.y.name), "features": features,
        "n_features_in": table.X.shape[1], "hidden_layers": json.dumps(config.hidden_layers),
    }
    return params | ({k: getattr(config, k) for k in GENERATED_FIELDS} if not config.data else {})


def load_and_split(config: TrainConfig) -> tuple[data_steps.Table, data_steps.Splits]:
    table = load_data(config.data, config.target, config.features, config.drop, config.n_samples, config.n_features,
                      config.n_informative, config.seed, config.test_size, config.val_size)
    return table, split_table(table, config.test_size, config.val_size, config.seed)


def fit_and_log(config: TrainConfig, table, splits, run_id: str, experiment_id: str, as_tasks: bool = True) -> TrainResult:
    """The body of one training run, logged into the existing MLflow run `run_id`.

    With `as_tasks=False` the steps run as plain functions: a sweep trial is itself one
    Prefect task (retried as a whole), possibly on a Dask worker.
    """

    def step(t):
        return t if as_tasks else t.fn

    step(log_params)(run_id, training_params(config, table))
    step(log_dataset)(run_id, table)
    step(log_json)(run_id, data_steps.profile_table(table), "data/profile.json")
    fitted = step(fit_classifier)(splits, hidden_layers=config.hidden_layers, dropout=config.dropout,
                                  optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
                                  batch_size=config.batch_size, epochs=config.epochs, seed=config.seed,
                                  device=config.device)
    evaluation = step(evaluate)(fitted.classifier, splits.X_test, splits.y_test)
    step(log_metrics)(run_id, evaluation.metrics | {"train_samples_per_second": fitted.samples_per_second,
                                                    "data_rows": len(table.y)}, fitted.history)
    step(log_figures)(run_id, {
        "loss_curves": plot_loss_curves(fitted.history),
        "confusion_matrix": plot_confusion_matrix(evaluation.confusion, evaluation.classes),
        "roc_curve": plot_roc_curves(evaluation.y_true, evaluation.proba, evaluation.classes),
    })
    example = splits.X_train.dropna().head(5) if splits.X_train.notna().all(axis=1).sum() >= 2 else \
        splits.X_train.head(5)
    model_uri = step(log_classifier)(run_id, fitted.classifier, example)
    return TrainResult(run_id, experiment_id, evaluation.metrics, model_uri, fitted.classifier.classes,
                       fitted.history, run_url=store.run_url(store.tracking_uri(), experiment_id, run_id))


@flow(name="train-classifier", log_prints=True)
def training_pipeline(config: TrainConfig = TrainConfig()) -> TrainResult:
    """Train the MLP on a table (or the generated set) and track everything in MLflow."""
    store.configure()
    table, splits = load_and_split(config)  # bad data stops here, before any run is made
    experiment_id = ensure_experiment(config.experiment)
    run_id = start_run(experiment_id, run_name=f"train-{config.optimizer}-lr{config.lr:g}", tags=prefect_tags())
    with tracked(run_id):
        result = fit_and_log(config, table, splits, run_id, experiment_id)
        if config.register_model:
            result.model_version = register_model(result.model_uri, config.model_name, run_id)
        links = {"MLflow run": result.run_url}
        if url := flow_run_url():
            links["Prefect flow run"] = url
        publish_markdown(
            "training-summary", metrics_markdown("Test metrics", result.metrics, links), "Test metrics of the trained MLP"
        )
    return result
