"""Where runs are tracked: one resolution of the MLflow store, used by every entry point."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_DIR = "mlruns"


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else SQLite at ./mlruns/mlflow.db made absolute.

    Made absolute once, here, so that a worker or deployment that changes directory
    keeps writing to the same store.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = Path.cwd() / DEFAULT_DIR / "mlflow.db"
    return f"sqlite:///{db.resolve()}"


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go in an `artifacts` folder beside its database.

    (MLflow's own default is ./mlruns relative to the working directory.) A tracking
    server decides for itself, so None.
    """
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def configure() -> str:
    """Point MLflow at the project's store (creating the SQLite folder) and return the URI."""
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI", uri))
    return uri


def run_url(uri: str, experiment_id: str, run_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """A link to the run in the MLflow UI: the tracking server's own for http stores, else `make ui`'s."""
    base = uri.rstrip("/") if urlparse(uri).scheme in ("http", "https") else ui
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
