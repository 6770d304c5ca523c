"""Retention: MLflow runs older than N days deleted for good, with their artifacts and logged models.

MLflow alone leaves a deleted run's artifacts behind (mlflow#602, `mlflow gc` mlflow#13393),
so here the artifacts go first, through the artifact repository of each run and logged
model (a local folder or a tracking server's artifact proxy alike), then the records.
On a store trackflow reaches as a database (SQLite, PostgreSQL, ...) the records are deleted
permanently, as `mlflow gc` does; through a tracking server they are marked deleted, and
the server's own `mlflow gc` removes what remains of them.

A run is kept when it is RUNNING, when a registered model version comes from it (which
covers every version an alias points to), or when it belongs to a sweep that is kept: a
sweep's parent run and its trials go together or not at all. Files outside the store
(the results logs of inference jobs, in their --out folder) are never touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from trackflow.runs import FLOW_RUN_TAG, PARENT_TAG

KIND_TAG = "trackflow.kind"  # 'sweep' on a sweep's parent run, 'trial' on its nested runs

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Doomed:
    """A run to delete, with what deleting it frees."""

    run_id: str
    run_name: str
    experiment: str
    start_time: int  # ms since the epoch
    status: str
    artifact_uris: tuple[str, ...]  # the run's own and its logged models'
    logged_model_ids: tuple[str, ...]
    bytes: int
    flow_run_id: str | None  # the Prefect flow run of a top-level run


@dataclass
class Plan:
    doomed: list[Doomed] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # why -> how many old runs kept for it

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.doomed)

    @property
    def flow_run_ids(self) -> list[str]:
        return sorted({d.flow_run_id for d in self.doomed if d.flow_run_id})


def experiment_ids(client, name: str | None) -> list[str]:
    """The named experiment's id, or every active experiment's; LookupError naming the known ones if unknown."""
    if name is None:
        return [e.experiment_id for e in client.search_experiments()]
    exp = client.get_experiment_by_name(name)
    if exp is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none yet"
        raise LookupError(f"no experiment {name!r} in the store (experiments: {known})")
    return [exp.experiment_id]


def artifact_files(uri: str) -> list[tuple[str, int]]:
    """(path, size) of every file under an artifact URI, sorted; none when nothing is there."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo, files, todo = get_artifact_repository(uri), [], [None]
    while todo:
        try:
            entries = repo.list_artifacts(todo.pop())
        except Exception:  # a folder already gone, or never made
            continue
        for e in entries:
            if e.is_dir:
                todo.append(e.path)
            else:
                files.append((e.path, e.file_size or 0))
    return sorted(files)


def artifact_bytes(uri: str) -> int:
    return sum(size for _, size in artifact_files(uri))


def _protected_run_ids(client) -> set[str]:
    """Runs that registered model versions come from (aliases point at versions, so at these too)."""
    protected, token = set(), None
    while True:
        page = client.search_model_versions(max_results=1000, page_token=token)
        protected |= {mv.run_id for mv in page if mv.run_id}
        token = page.token
        if not token:
            return protected


def _search(client, experiment_ids: list[str], filter_string: str) -> list:
    from mlflow.entities import ViewType

    out = []
    for i in range(0, len(experiment_ids), 100):  # search_runs takes at most 100 experiments
        token = None
        while True:
            page = client.search_runs(experiment_ids[i : i + 100], filter_string, ViewType.ALL, 1000,
                                      page_token=token)
            out += page
            token = page.token
            if not token:
                break
    return out


def _logged_models(client, experiment_ids: list[str]) -> dict[str, list]:
    """The experiments' logged models (MLflow 3 keeps a run's models outside its artifacts), by source run."""
    out: dict[str, list] = {}
    for i in range(0, len(experiment_ids), 100):
        token = None
        while True:
            page = client.search_logged_models(experiment_ids[i : i + 100], max_results=100, page_token=token)
            for m in page:
                out.setdefault(m.source_run_id, []).append(m)
            token = page.token
            if not token:
                break
    return out


def plan_prune(client, older_than_days: float, experiment_ids: list[str], now: float | None = None) -> Plan:
    """What `prune` would delete: runs started more than `older_than_days` ago, minus the kept ones."""
    cutoff = int(((now or time.time()) * 1000) - older_than_days * DAY_MS)
    names = {e.experiment_id: e.name for e in (client.get_experiment(x) for x in experiment_ids)}
    old = _search(client, experiment_ids, f"attributes.start_time < {cutoff}")
    protected = _protected_run_ids(client)
    old_ids = {r.info.run_id for r in old}
    # Families: a run with its nested runs (a sweep and its trials), which go together.
    families: dict[str, list] = {}
    for r in old:
        parent = r.data.tags.get(PARENT_TAG)
        families.setdefault(parent if parent in old_ids else r.info.run_id, []).append(r)
    models = _logged_models(client, experiment_ids)
    plan = Plan()
    for root_id, family in families.items():
        # Only sweeps nest runs here: one more search each finds trials started after the cutoff.
        root = next((r for r in family if r.info.run_id == root_id), family[0])
        newer = (_search(client, [root.info.experiment_id], f"tags.`{PARENT_TAG}` = '{root_id}'")
                 if root.data.tags.get(KIND_TAG) == "sweep" else [])
        why = ("part of a sweep with newer trials" if any(c.info.run_id not in old_ids for c in newer)
               else "RUNNING" if any(r.info.status == "RUNNING" for r in family)
               else "behind a registered model version" if any(r.info.run_id in protected for r in family)
               else None)
        if why:
            plan.kept[why] = plan.kept.get(why, 0) + len(family)
            continue
        for r in family:
            own = models.get(r.info.run_id, [])
            uris = (r.info.artifact_uri, *(m.artifact_location for m in own))
            plan.doomed.append(Doomed(
                r.info.run_id, r.info.run_name, names.get(r.info.experiment_id, r.info.experiment_id),
                r.info.start_time, r.info.status, uris, tuple(m.model_id for m in own),
                sum(artifact_bytes(u) for u in uris),
                None if PARENT_TAG in r.data.tags else r.data.tags.get(FLOW_RUN_TAG)))
    plan.doomed.sort(key=lambda d: d.start_time)
    return plan


def prune(client, plan: Plan) -> tuple[int, int]:
    """Delete the plan's runs: artifacts, then logged models, then the runs; returns (runs, bytes) freed.

    A run that turned RUNNING or got a registered model version since the plan was made is skipped.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    store = client._tracking_client.store  # a database store can delete for good; a tracking server's cannot
    hard = hasattr(store, "_hard_delete_run")
    protected = _protected_run_ids(client)
    runs = freed = 0
    for d in plan.doomed:
        run = client.get_run(d.run_id)
        if d.run_id in protected or run.info.status == "RUNNING":
            continue
        for uri in d.artifact_uris:
            get_artifact_repository(uri).delete_artifacts()
        for model_id in d.logged_model_ids:
            client.delete_logged_model(model_id)
            if hard:
                store._hard_delete_logged_model(model_id)
        if run.info.lifecycle_stage != "deleted":
            client.delete_run(d.run_id)
        if hard:
            store._hard_delete_run(d.run_id)
        runs += 1
        freed += d.bytes
    return runs, freed
