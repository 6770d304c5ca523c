"""`trackflow runs prune` on a real SQLite store: what goes, what stays, what is freed."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from cli.main import main
from tasks.tracking import ensure_experiment

DAY_MS = 24 * 3600 * 1000
NOW_MS = int(time.time() * 1000)


def local(uri: str) -> Path:
    return Path(url2pathname(urlsplit(uri).path))


def make_run(client, exp, name, days_ago, status="FINISHED", tags=None, files=None, model_bytes=0):
    run = client.create_run(exp, start_time=NOW_MS - int(days_ago * DAY_MS), tags=tags or {}, run_name=name)
    rid = run.info.run_id
    for path, text in (files or {}).items():
        client.log_text(rid, text, path)
    if model_bytes:
        model = client.create_logged_model(exp, source_run_id=rid, name="model")
        folder = local(model.artifact_location)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weights.bin").write_bytes(b"w" * model_bytes)
    if status != "RUNNING":
        client.set_terminated(rid, status, end_time=NOW_MS - int(days_ago * DAY_MS) + 1000)
    return rid


@pytest.fixture
def store_with_history(client, tmp_path):
    """Old and new runs of every kind the retention rules tell apart."""
    exp = ensure_experiment("classifier")
    other = ensure_experiment("elsewhere")
    user_results = tmp_path / "outbox" / "results.jsonl"
    user_results.parent.mkdir()
    user_results.write_text('{"input": "a.txt"}\n')
    ids = {
        "old": make_run(client, exp, "old-train", 40, files={"data/profile.json": "x" * 1000}, model_bytes=5000),
        "old_infer": make_run(client, exp, "old-infer", 50, files={"results/results.jsonl": user_results.read_text()}),
        "registered": make_run(client, exp, "registered", 60, model_bytes=100),
        "aliased": make_run(client, exp, "aliased", 70),
        "running": make_run(client, exp, "running", 45, status="RUNNING"),
        "new": make_run(client, exp, "new-train", 2, files={"a.txt": "a"}),
        "other_exp": make_run(client, other, "other-exp", 90, files={"b.txt": "b" * 10}),
    }
    sweep = make_run(client, exp, "old-sweep", 35, tags={"trackflow.kind": "sweep"})
    trial = make_run(client, exp, "old-trial", 35, tags={"mlflow.parentRunId": sweep, "trackflow.kind": "trial"},
                     files={"t.txt": "t" * 100})
    kept_sweep = make_run(client, exp, "kept-sweep", 40, tags={"trackflow.kind": "sweep"})
    kept_trial = make_run(client, exp, "new-trial", 1, tags={"mlflow.parentRunId": kept_sweep})
    ids |= {"sweep": sweep, "trial": trial, "kept_sweep": kept_sweep, "kept_trial": kept_trial}
    client.create_registered_model("classifier")
    client.create_model_version("classifier", f"runs:/{ids['registered']}/model", run_id=ids["registered"])
    client.create_registered_model("other")
    mv = client.create_model_version("other", f"runs:/{ids['aliased']}/model", run_id=ids["aliased"])
    client.set_registered_model_alias("other", "champion", mv.version)
    return ids, user_results


def exists(client, run_id) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
        return True
    except MlflowException:
        return False


def test_without_yes_prune_only_lists_the_runs_and_bytes_that_would_go(client, store_with_history, capsys):
    ids, _ = store_with_history
    artifacts = {k: local(client.get_run(v).info.artifact_uri) for k, v in ids.items()}
    assert main(["runs", "prune", "--older-than", "30", "--experiment", "classifier"]) == 0
    out = capsys.readouterr().out
    doomed = {"old", "old_infer", "sweep", "trial"}
    for key, rid in ids.items():
        assert (rid in out) == (key in doomed), key
        assert exists(client, rid)
    # 1000 (profile) + 5000 (logged model) + 19 (results copy) + 100 (trial)
    assert "Would delete 4 run(s) started over 30 days ago, 6.0 KB (6119 bytes) of artifacts" in out
    assert "kept 1: RUNNING" in out and "kept 2: behind a registered model version" in out
    assert "kept 1: part of a sweep with newer trials" in out and "Nothing deleted: rerun with --yes." in out
    assert (artifacts["old"] / "data" / "profile.json").exists()


def test_prune_plan_counts_the_bytes_of_run_and_logged_model_artifacts(client, store_with_history):
    from trackflow.retention import plan_prune

    ids, user_results = store_with_history
    plan = plan_prune(client, 30, [client.get_experiment_by_name("classifier").experiment_id])
    by_id = {d.run_id: d for d in plan.doomed}
    assert by_id[ids["old"]].bytes == 1000 + 5000
    assert by_id[ids["trial"]].bytes == 100
    assert plan.bytes == 1000 + 5000 + len(user_results.read_text()) + 100


def test_prune_with_yes_deletes_runs_artifacts_and_models_for_good_and_keeps_the_rest(client, store_with_history,
                                                                                     mlflow_store, capsys):
    ids, user_results = store_with_history
    artifacts = {k: local(client.get_run(v).info.artifact_uri) for k, v in ids.items()}
    [model] = client.search_logged_models([client.get_run(ids["old"]).info.experiment_id],
                                          filter_string=f"source_run_id = '{ids['old']}'")
    model_dir = local(model.artifact_location)
    assert model_dir.exists()

    assert main(["runs", "prune", "--older-than", "30", "--yes"]) == 0
    out = capsys.readouterr().out
    # the other experiment's 90-day-old run goes too (no --experiment)
    assert "Deleted 5 run(s) and 6.0 KB (6129 bytes) of artifacts" in out and "and 0 Prefect flow run(s)" in out
    gone = {"old", "old_infer", "sweep", "trial", "other_exp"}
    for key, rid in ids.items():
        assert exists(client, rid) == (key not in gone), key
        if key in gone:
            assert not artifacts[key].exists(), key
    assert (artifacts["new"] / "a.txt").exists()
    assert not model_dir.exists()
    # permanently: no row left in the database (as after `mlflow gc`)
    db = sqlite3.connect(mlflow_store.removeprefix("sqlite:///"))
    left = {r[0] for r in db.execute("SELECT run_uuid FROM runs")}
    assert left == {ids[k] for k in ids if k not in gone}
    assert db.execute("SELECT count(*) FROM logged_models WHERE model_id = ?", (model.model_id,)).fetchone()[0] == 0
    db.close()
    assert user_results.read_text() == '{"input": "a.txt"}\n'  # the user's results log, outside the store
    assert main(["runs", "prune", "--older-than", "30", "--yes"]) == 0
    assert "Deleted 0 run(s)" in capsys.readouterr().out


def test_prune_refuses_an_unknown_experiment_and_a_bad_age(capsys):
    assert main(["runs", "prune", "--older-than", "30", "--experiment", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no experiment 'nope'" in err[0]
    assert main(["runs", "prune", "--older-than", "-3"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "trackflow runs: invalid arguments:", "  --older-than: Input should be greater than or equal to 0 (got -3.0)"]
