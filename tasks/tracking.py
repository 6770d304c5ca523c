"""Tracking: everything written to MLflow goes through here.

Every call names its run id explicitly (MlflowClient), never MLflow's thread-local
"active run", so the steps work from worker threads and processes alike. These are
I/O: flows/steps.py wraps them as Prefect tasks with retries. Each write runs on a thread
of its own (`runs.uninterruptible`): Ctrl-C stops the wait for it, never the write halfway.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any


from trackflow import runs, store
from trackflow.naming import param


def client():
    from mlflow import MlflowClient

    uri = store.configure()
    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI", uri))


@runs.uninterruptible
def ensure_experiment(name: str) -> str:
    """The id of experiment `name`, created (with the store's artifact folder) if missing."""
    from mlflow.exceptions import MlflowException

    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(f"MLflow experiment {name!r} is deleted; restore it in the UI or pick another {param('experiment')}")
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=store.artifact_location(store.tracking_uri()))
    except MlflowException:  # created concurrently by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def start_run(
    experiment_id: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a RUNNING run (nested under `parent_run_id` when given) and return its id.

    The run carries this process as its owner and gets a heartbeat while it is open, so a
    later command can tell that it died (trackflow.runs).
    """
    tags = dict(tags or {}) | runs.owner_tags()
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    c = client()

    def create_and_watch() -> str:
        run_id = c.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        runs.heartbeat.watch(c, run_id)
        return run_id

    with runs.signals_held():  # an interrupt lands after the run is watched, so this process ends it KILLED
        return runs.uninterrupted(create_and_watch)


@runs.uninterruptible
def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Mark the run FINISHED, FAILED or KILLED.

    Watched until the store has taken it: a forced exit ends the runs still watched, also
    one whose ending was cut short (by a second signal).
    """
    client().set_terminated(run_id, status)
    runs.heartbeat.unwatch(run_id)


@runs.uninterruptible
def end_unfinished(run_ids: list[str], status: str) -> None:
    """End `status` those of `run_ids` that are still RUNNING (trials cut short by an interrupt or a crash)."""
    c = client()
    for run_id in run_ids:
        if c.get_run(run_id).info.status == "RUNNING":
            c.set_terminated(run_id, status)
        runs.heartbeat.unwatch(run_id)


@runs.uninterruptible
def log_params(run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    client().log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


@runs.uninterruptible
def log_metrics(run_id: str, metrics: Mapping[str, float] = {}, history: Mapping[str, list[float]] = {}) -> None:
    """Final `metrics` at step 0 and per-epoch `history` (step = epoch, from 1) in one batch call."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    rows += [Metric(k, float(v), now, i + 1) for k, vs in history.items() for i, v in enumerate(vs)]
    c = client()
    for i in range(0, len(rows), 1000):  # MLflow caps a batch at 1000 metrics
        c.log_batch(run_id, metrics=rows[i : i + 1000])


@runs.uninterruptible
def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


@runs.uninterruptible
def log_figures(run_id: str, figures: Mapping[str, Any]) -> None:
    """Save each matplotlib figure as `plots/<name>.png` in the run."""
    c = client()
    for name, fig in figures.items():
        c.log_figure(run_id, fig, f"plots/{name}.png")


@runs.uninterruptible
def log_dataset(run_id: str, table, context: str = "training") -> None:
    """Record the table as an input of the run: its source (with its files), digest and schema (features and target).

    A folder table's source lists its files (names relative to the folder) beside the
    folder's URI; MLflow's local source reads only the URI back, so the dataset still loads.
    """
    import json

    import mlflow.data
    import pandas as pd
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    frame = pd.concat([table.X, table.y.rename(table.y.name or "target")], axis=1)
    source = None if table.source == "generated" else table.source  # generated: MLflow records the code
    with warnings.catch_warnings():  # MLflow registers its local-file source class twice and warns about it;
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        # and its hint about integer columns concerns the target here, which a request never carries.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        ds = mlflow.data.from_pandas(frame, source=source, targets=frame.columns[-1], name=table.name)
    entity = ds._to_mlflow_entity()
    if source and Path(source).is_dir():
        entity = Dataset(entity.name, entity.digest, entity.source_type,
                         json.dumps(json.loads(entity.source) | {"files": list(table.rows_per_file)}),
                         entity.schema, entity.profile)
    inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])]
    c = client()
    try:
        c.log_inputs(run_id, datasets=inputs)
    except MlflowException as exc:
        # The store's get-or-create of the dataset row is not atomic: concurrent runs logging
        # the same dataset race on its unique key. The loser finds the row on a second try.
        if "UNIQUE constraint" not in str(exc) and "duplicate key" not in str(exc):
            raise
        c.log_inputs(run_id, datasets=inputs)


@runs.uninterruptible
def log_json(run_id: str, obj: Mapping[str, Any], artifact_file: str) -> None:
    client().log_dict(run_id, dict(obj), artifact_file)


def load_json(run_id: str, artifact_file: str) -> dict | None:
    """A JSON artifact of the run, or None when the run has none by that name."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    store.configure()
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_file}")
    except (MlflowException, OSError, ValueError):
        return None


@runs.uninterruptible
def log_artifact_files(run_id: str, paths: list[str], artifact_path: str | None = None) -> None:
    c = client()
    for p in paths:
        c.log_artifact(run_id, p, artifact_path)


SERVED_MODEL = Path(__file__).resolve().parents[1] / "trackflow" / "served_model.py"


def _requirements() -> list[str]:
    from importlib.metadata import version

    # Pinned here so MLflow need not infer them (which loads the model in a subprocess).
    return [f"{dist}=={version(dist).split('+')[0]}" for dist in
            ("mlflow", "torch", "scikit-learn", "skops", "safetensors", "pandas", "numpy")]


def model_signature(classifier, example):
    """Named input columns, all required; outputs `label` and one `proba_<class>` per class."""
    from mlflow.models import infer_signature
    from mlflow.types import ColSpec, Schema

    with warnings.catch_warnings():  # its hint is about the integer `label` output; inputs are never integers
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        inferred = infer_signature(example, classifier.predict(example))
    inputs = Schema([ColSpec(c.type, c.name, required=True) for c in inferred.inputs.inputs])
    return inferred.__class__(inputs, inferred.outputs)


@runs.uninterruptible
def log_classifier(run_id: str, classifier, input_example) -> str:
    """Log preprocessing + network as one MLflow pyfunc model (from code, no pickles); return its URI."""
    import tempfile

    import mlflow.pyfunc
    from mlflow.models import Model

    c = client()
    run = c.get_run(run_id)
    # Created here so the model lands in the run's experiment: given only run_id,
    # MLflow files it under the process-wide active experiment (0 by default).
    logged = c.create_logged_model(run.info.experiment_id, name="model", source_run_id=run_id,
                                   params=run.data.params, model_type="classifier")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")  # the label
        info = Model.log(
            artifact_path=None, name="model", flavor=mlflow.pyfunc, run_id=run_id, model_id=logged.model_id,
            python_model=str(SERVED_MODEL), artifacts=classifier.save(Path(tmp)),
            code_paths=[str(SERVED_MODEL.parent)],  # the trackflow package: the model loads without it installed
            signature=model_signature(classifier, input_example), input_example=input_example,
            pip_requirements=_requirements(),
        )
    return info.model_uri


@runs.uninterruptible
def register_model(model_uri: str, name: str, run_id: str, tags: Mapping[str, str] | None = None) -> str:
    """Register `model_uri` as a new version of `name`; return the version."""
    import mlflow

    store.configure()
    mv = mlflow.register_model(model_uri, name, tags=dict(tags or {}))
    return str(mv.version)
