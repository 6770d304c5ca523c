"""Terminal views of the MLflow store: runs, one run (a sweep's ranking), registered models.

Read-only, and quick: MLflow's client and `rich` only (no Prefect, no torch).
"""

from __future__ import annotations

import json
import time
from datetime import datetime

from rich.console import Console
from rich.table import Table

from cli.options import UsageError
from tasks.registry import TIEBREAK, rank_key
from trackflow import store
from trackflow.retention import KIND_TAG, artifact_bytes, artifact_files
from trackflow.runs import FLOW_RUN_TAG, PARENT_TAG

# Shown in `runs list` when a run has them, in this order (training, sweep parent, inference).
KEY_METRICS = ("test_accuracy", "test_f1", "test_f1_macro", "best_val_accuracy", "best_test_accuracy", "n_inputs",
               "n_failed", "inputs_per_second")
LIST_METRICS = 3
OUTCOME_TAG = "trackflow.outcome"  # a sweep trial's end: completed, pruned or failed


def client():
    from mlflow import MlflowClient

    uri = store.configure()
    store.check_reachable(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=store.registry_uri(uri))


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _duration(start: int | None, end: int | None) -> str:
    if not start:
        return "-"
    s = int(((end or time.time() * 1000) - start) / 1000)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def sized(n: int) -> str:
    return f"{human_size(n)} ({n} bytes)"


def prune_lines(plan) -> list[str]:
    """One line per run `trackflow runs prune` would delete."""
    return [f"  {d.run_id}  {d.run_name or '':<32} {d.experiment:<16} {_when(d.start_time)[:10]}  {d.status:<8} "
            f"{human_size(d.bytes)}" for d in plan.doomed]


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) and not v.is_integer() else f"{v:g}" if isinstance(v, float) else str(v)


def experiment_ids(c, name: str | None) -> list[str]:
    """The named experiment's id, or every active experiment's; an unknown name is a usage error."""
    from trackflow.retention import experiment_ids as ids

    try:
        return ids(c, name)
    except LookupError as exc:
        raise UsageError(str(exc.args[0])) from None


def versions_by_run(c) -> dict[str, list]:
    """Registered model versions, by the run they come from."""
    out: dict[str, list] = {}
    token = None
    while True:
        page = c.search_model_versions(max_results=1000, page_token=token)
        for mv in page:
            out.setdefault(mv.run_id, []).append(mv)
        token = page.token
        if not token:
            return out


def _aliases(c, mv) -> list[str]:
    # search_model_versions leaves aliases out on some stores; the registered model has them all.
    return mv.aliases or [a for a, v in c.get_registered_model(mv.name).aliases.items() if v == mv.version]


def runs_list(experiment: str | None, limit: int, console: Console | None = None) -> int:
    from mlflow.entities import ViewType

    c = client()
    ids = experiment_ids(c, experiment)
    runs = c.search_runs(ids, "", ViewType.ACTIVE_ONLY, limit, order_by=["attributes.start_time DESC"]) if ids else []
    names = {e.experiment_id: e.name for e in c.search_experiments()}
    models = versions_by_run(c)
    table = Table(title=f"Runs in {store.redact(store.tracking_uri())}" + (f", experiment {experiment!r}"
                                                                           if experiment else ""))
    for col in ("run", "name", "experiment", "status", "start", "duration", "metrics", "model"):
        table.add_column(col, overflow="fold", no_wrap=col in ("run", "start"))
    for r in runs:
        m = r.data.metrics
        keys = [k for k in KEY_METRICS if k in m][:LIST_METRICS] or sorted(m)[:LIST_METRICS]
        model = "\n".join(f"{mv.name} v{mv.version}" + "".join(f" @{a}" for a in _aliases(c, mv))
                          for mv in models.get(r.info.run_id, []))
        table.add_row(r.info.run_id, ("  " if PARENT_TAG in r.data.tags else "") + (r.info.run_name or ""),
                      names.get(r.info.experiment_id, r.info.experiment_id), r.info.status, _when(r.info.start_time),
                      _duration(r.info.start_time, r.info.end_time),
                      "\n".join(f"{k} {_fmt(m[k])}" for k in keys), model)
    out = console or Console()
    out.print(table)
    out.print(f"{len(runs)} run(s), newest first; `trackflow runs show RUN_ID` for one")
    return 0


def _get_run(c, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_run(run_id)
    except MlflowException:
        raise UsageError(f"no run {run_id!r} in {store.redact(store.tracking_uri())}; "
                         "`trackflow runs list` shows the runs") from None


def ranked_trials(c, parent) -> tuple[str, list, list]:
    """A sweep's trials as the sweep ranked them: (metric, finished trials best first, the others)."""
    metric = parent.data.params.get("metric", "val_accuracy")
    trials = c.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
                           max_results=1000)
    ok = [t for t in trials if t.info.status == "FINISHED" and metric in t.data.metrics
          and t.data.tags.get(OUTCOME_TAG, "completed") == "completed"]  # a pruned trial's last value is no result
    ok.sort(key=lambda t: t.info.start_time)  # equal keys keep the order the trials were opened in, as the sweep
    ok.sort(key=lambda t: rank_key(metric, t.data.metrics[metric], t.data.metrics.get(TIEBREAK)))
    return metric, ok, [t for t in trials if t not in ok]


def runs_show(run_id: str, console: Console | None = None) -> int:
    c = client()
    r = _get_run(c, run_id)
    out = console or Console()
    exp = c.get_experiment(r.info.experiment_id)
    tags = r.data.tags
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    for k, v in (("run", r.info.run_id), ("name", r.info.run_name), ("experiment", exp.name),
                 ("status", r.info.status), ("start", _when(r.info.start_time)),
                 ("duration", _duration(r.info.start_time, r.info.end_time)),
                 ("parent run", tags.get(PARENT_TAG)), ("reaped", tags.get("trackflow.reaped")),
                 ("MLflow", store.run_url(store.tracking_uri(), r.info.experiment_id, r.info.run_id)),
                 ("Prefect flow run", tags.get("prefect.flow_run_url") or tags.get(FLOW_RUN_TAG))):
        if v:
            head.add_row(k, str(v))
    out.print(head)

    for title, values in (("Params", r.data.params), ("Final metrics", r.data.metrics)):
        t = Table(title=title, title_justify="left")
        t.add_column("name")
        t.add_column("value", overflow="fold")
        for k in sorted(values):
            t.add_row(k, _fmt(values[k]))
        out.print(t if values else f"{title}: none")

    files = artifact_files(r.info.artifact_uri)
    models = c.search_logged_models([r.info.experiment_id], filter_string=f"source_run_id = '{r.info.run_id}'")
    t = Table(title="Artifacts", title_justify="left")
    t.add_column("path", overflow="fold")
    t.add_column("size", justify="right")
    for path, size in files:
        t.add_row(path, human_size(size))
    for m in models:
        t.add_row(f"logged model {m.name} ({m.model_id})", human_size(artifact_bytes(m.artifact_location)))
    out.print(t if files or models else "Artifacts: none")

    if tags.get(KIND_TAG) == "sweep":
        metric, ok, others = ranked_trials(c, r)
        t = Table(title=f"Trials ranked by {metric} (validation, last epoch)", title_justify="left")
        for col in ("rank", "trial", metric, "test_accuracy", "run"):
            t.add_column(col, overflow="fold")
        for i, trial in enumerate(ok, 1):
            m = trial.data.metrics
            t.add_row(str(i), trial.info.run_name, f"{m[metric]:.4f}",
                      f"{m['test_accuracy']:.4f}" if "test_accuracy" in m else "-", trial.info.run_id)
        for trial in others:
            outcome = trial.data.tags.get(OUTCOME_TAG)
            why = (f"pruned after epoch {trial.data.tags.get('trackflow.stopped_epoch', '?')}" if outcome == "pruned"
                   else trial.info.status)
            t.add_row("-", trial.info.run_name, why, "-", trial.info.run_id)
        out.print(t)
    return 0


def models_list(name: str | None, console: Console | None = None) -> int:
    from mlflow.exceptions import MlflowException

    c = client()
    if name is not None:
        try:
            models = [c.get_registered_model(name)]
        except MlflowException:
            known = ", ".join(sorted(m.name for m in c.search_registered_models())) or "none yet"
            raise UsageError(f"no registered model {name!r} in {store.redact(store.registry_uri(store.tracking_uri()))}"
                             f" (models: {known})") from None
    else:
        models = c.search_registered_models()
    out = console or Console()
    table = Table(title="Registered models")
    for col in ("model", "version", "aliases", "created", "source run", "data", "target", "input columns"):
        table.add_column(col, overflow="fold")
    for rm in models:
        by_version: dict[str, list[str]] = {}
        for alias, v in rm.aliases.items():
            by_version.setdefault(str(v), []).append(f"@{alias}")
        for mv in sorted(c.search_model_versions(f"name = '{rm.name}'"), key=lambda v: -int(v.version)):
            params = {}
            if mv.run_id:
                try:
                    params = c.get_run(mv.run_id).data.params
                except MlflowException:
                    pass
            table.add_row(rm.name, str(mv.version), " ".join(sorted(by_version.get(str(mv.version), []))),
                          _when(mv.creation_timestamp), mv.run_id or "-", params.get("data", "-"),
                          params.get("target", "-"), _columns(params.get("features")))
    out.print(table)
    if not models:
        out.print("No registered models yet: `trackflow train` registers one.")
    return 0


def _columns(features: str | None) -> str:
    if not features:
        return "-"
    try:
        return ", ".join(json.loads(features))
    except ValueError:  # cut to MLflow's parameter limit: the start of the list, as logged
        return features
