"""Retention as a flow, for a schedule (prefect.yaml's commented `weekly-prune`); `trackflow runs prune --yes` does the same."""

from __future__ import annotations

from prefect import flow

from trackflow import store
from trackflow.config import PruneConfig
from trackflow.retention import experiment_ids, plan_prune, prune


def delete_flow_runs(ids: list[str]) -> int:
    """Delete these flow runs (and their task runs) from the current Prefect API; returns how many were there."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deleted = 0
    with get_client(sync_client=True) as client:
        for flow_run_id in ids:
            try:
                client.delete_flow_run(UUID(flow_run_id))
                deleted += 1
            except ObjectNotFound:
                pass
    return deleted


@flow(name="prune-runs", log_prints=True)
def prune_pipeline(config: PruneConfig = PruneConfig()) -> tuple[int, int, int]:
    """Delete MLflow runs older than `config.older_than` days with their artifacts, and their flow runs."""
    from mlflow import MlflowClient

    uri = store.configure()
    client = MlflowClient(tracking_uri=uri, registry_uri=store.registry_uri(uri))
    plan = plan_prune(client, config.older_than, experiment_ids(client, config.experiment))
    runs, freed = prune(client, plan)
    flows = delete_flow_runs(plan.flow_run_ids)
    print(f"Deleted {runs} run(s), {freed} bytes of artifacts and {flows} Prefect flow run(s); kept {plan.kept}")
    return runs, freed, flows
