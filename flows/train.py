"""Training pipeline: data -> split -> train -> evaluate -> log -> register."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from prefect import flow
from prefect.runtime import flow_run

from tasks.data import generate_dataset, split_dataset
from tasks.evaluation import evaluate_model
from tasks.plots import plot_confusion_matrix, plot_loss_curves, plot_roc_curve
from tasks.reporting import metrics_markdown, publish_markdown
from tasks.tracking import (
    end_run,
    ensure_experiment,
    log_dataset,
    log_figures,
    log_metrics,
    log_params,
    log_torch_model,
    register_model,
    start_run,
)
from tasks.training import train_model
from trackflow import store
from trackflow.runs import is_interrupt
from trackflow.config import TrainConfig

LOGGED_PARAMS = ("n_samples", "n_features", "epochs", "lr", "batch_size", "dropout", "optimizer", "weight_decay", "seed")


@dataclass
class TrainResult:
    run_id: str
    experiment_id: str
    metrics: dict[str, float]
    model_uri: str
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


def fit_and_log(config: TrainConfig, run_id: str, experiment_id: str, as_tasks: bool = True) -> TrainResult:
    """The body of one training run, logged into the existing MLflow run `run_id`.

    With `as_tasks=False` the steps run as plain functions: a sweep trial is itself one
    Prefect task (retried as a whole), possibly on a Dask worker.
    """

    def step(t):
        return t if as_tasks else t.fn

    step(log_params)(run_id, {k: getattr(config, k) for k in LOGGED_PARAMS} | {"hidden_dim": config.hidden_dim})
    data = step(generate_dataset)(config.n_samples, config.n_features, config.n_informative, config.seed)
    step(log_dataset)(
        run_id, data.X, data.y, name=f"make_classification-{config.n_samples}x{config.n_features}-seed{config.seed}"
    )
    splits = step(split_dataset)(data, config.test_size, config.val_size, config.seed)
    trained = step(train_model)(splits.train, splits.val, config)
    evaluation = step(evaluate_model)(trained.model, splits.test)
    step(log_metrics)(
        run_id, evaluation.metrics | {"train_samples_per_second": trained.samples_per_second}, trained.history
    )
    step(log_figures)(
        run_id,
        {
            "loss_curves": plot_loss_curves(trained.history),
            "confusion_matrix": plot_confusion_matrix(evaluation.confusion),
            "roc_curve": plot_roc_curve(evaluation.y_true, evaluation.y_score),
        },
    )
    model_uri = step(log_torch_model)(run_id, trained.model, splits.test.X)
    return TrainResult(
        run_id=run_id,
        experiment_id=experiment_id,
        metrics=evaluation.metrics,
        model_uri=model_uri,
        history=trained.history,
        run_url=store.run_url(store.tracking_uri(), experiment_id, run_id),
    )


@flow(name="train-classifier", log_prints=True)
def training_pipeline(config: TrainConfig = TrainConfig()) -> TrainResult:
    """Train the MLP on a synthetic classification set and track everything in MLflow."""
    store.configure()
    experiment_id = ensure_experiment(config.experiment)
    run_id = start_run(experiment_id, run_name=f"train-{config.optimizer}-lr{config.lr:g}", tags=prefect_tags())
    with tracked(run_id):
        result = fit_and_log(config, run_id, experiment_id)
        if config.register_model:
            result.model_version = register_model(result.model_uri, config.model_name, run_id)
        links = {"MLflow run": result.run_url}
        if url := flow_run_url():
            links["Prefect flow run"] = url
        publish_markdown(
            "training-summary", metrics_markdown("Test metrics", result.metrics, links), "Test metrics of the trained MLP"
        )
    return result
