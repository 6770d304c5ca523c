"""Reading an MLflow store the way a user inspects it."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import ViewType


def all_runs(uri: str) -> list:
    c = MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)]
    return c.search_runs(exps, run_view_type=ViewType.ALL, max_results=1000) if exps else []


def statuses(uri: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in all_runs(uri):
        out[r.info.status] = out.get(r.info.status, 0) + 1
    return out
