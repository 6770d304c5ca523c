"""Training pipeline: data -> split -> encode -> train -> evaluate -> log -> register."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow

from flows import steps
from flows.common import (
    flow_run_url,
    load_args,
    log_model,
    log_training_metrics,
    network_args,
    prefect_tags,
    register_and_promote,
    tracked,
    training_params,
)
from tasks.changes import DETAIL_ARTIFACT, KeyedRun, TrainingKey, describe_changes, unchanged_line
from tasks.data import profile_table
from tasks.reporting import metrics_markdown
from trackflow import store
from trackflow.config import RANKING_METRIC, TrainConfig


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
    changes: str = ""  # what changed since the experiment's latest keyed run
    unchanged: str = ""  # set instead of training (skip_unchanged): "Unchanged since run ..."
    promoted: bool = False
    promotion_reason: str = ""  # empty: not registered, or promotion turned off


@flow(name="train-classifier", log_prints=True)
def training_pipeline(config: TrainConfig = TrainConfig()) -> TrainResult:
    """Train the MLP on a table (or the generated set) and track everything in MLflow."""
    store.configure()
    key = steps.training_key(config)  # what would be trained: compared with earlier runs before any is made
    same, latest = steps.find_keyed_runs(store.tracking_uri(), config.experiment, key.key, config.model_name)
    if config.skip_unchanged and same:
        return _unchanged(same)
    changes = _changes_since(latest, key)
    print(changes)
    table = steps.load_data(**load_args(config))  # bad data stops here, before any run is made
    splits = steps.split_table(table, config.test_size, config.val_size, config.seed)
    encoded = steps.encode_splits(splits)
    experiment_id = steps.ensure_experiment(config.experiment)
    run_id = steps.start_run(experiment_id, run_name=f"train-{config.optimizer}-lr{config.lr:g}",
                             tags=prefect_tags() | key.tags())
    with tracked(run_id):
        steps.log_json(run_id, key.detail(), DETAIL_ARTIFACT)
        steps.log_params(run_id, training_params(config, table))
        steps.log_dataset(run_id, table)
        steps.log_json(run_id, profile_table(table), "data/profile.json")
        outcome = steps.train_and_score(encoded.data, **network_args(config))
        evaluation = steps.evaluate(outcome.proba_test, encoded.data.y_test, encoded.classes)
        log_training_metrics(run_id, evaluation, outcome, table)
        model_uri = log_model(run_id, encoded, outcome, evaluation, splits)
        version, promo = register_and_promote(config, model_uri, run_id, encoded, splits, RANKING_METRIC, run_id)
        run_url = store.run_url(store.tracking_uri(), experiment_id, run_id)
        links = {"MLflow run": run_url} | ({"Prefect flow run": url} if (url := flow_run_url()) else {})
        steps.publish_markdown("training-summary", metrics_markdown("Test metrics", evaluation.metrics, links),
                               "Test metrics of the trained MLP")
    return TrainResult(run_id, experiment_id, evaluation.metrics, model_uri, encoded.classes, outcome.history,
                       version, run_url, changes, promoted=promo is not None and promo.promoted,
                       promotion_reason=promo.reason if promo else "")


def _unchanged(run: KeyedRun) -> TrainResult:
    """Nothing to train: say so in the log and in a markdown artifact of the flow run; no MLflow run is made."""
    line = unchanged_line(run)
    print(line)
    steps.publish_markdown("training-skipped", f"# Nothing to train\n\n{line}\n",
                           "The training key matches a finished run: nothing changed")
    return TrainResult(run.run_id, "", {}, run.model or "", unchanged=line)


def _changes_since(latest: KeyedRun | None, key: TrainingKey) -> str:
    """One line: what differs from the experiment's latest finished run that has a training key."""
    if latest is None:
        return "Changed: no earlier finished run with a training key in this experiment to compare with"
    detail = steps.load_json(latest.run_id, DETAIL_ARTIFACT)
    if detail is None:
        return f"Changed since run {latest.run_id}: its key's details are missing ({DETAIL_ARTIFACT})"
    return f"Changed since run {latest.run_id}: {describe_changes(TrainingKey.from_detail(detail), key)}"
