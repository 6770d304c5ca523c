"""`trackflow runs list`, `runs show` and `models list` over a real SQLite store, run in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli.main import main
from tasks.tracking import ensure_experiment


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps to the terminal; keep each row on one line


@pytest.fixture
def history(client):
    """A training run with a registered version @champion, and a sweep with three trials."""
    exp = ensure_experiment("classifier")
    train = client.create_run(exp, run_name="train-adam-lr0.001",
                              tags={"prefect.flow_run_id": "f-1",
                                    "prefect.flow_run_url": "http://127.0.0.1:4200/runs/flow-run/f-1"})
    tid = train.info.run_id
    for k, v in {"data": "/srv/wine.csv", "target": "cultivar", "lr": "0.001",
                 "features": json.dumps(["alcohol", "malic acid"])}.items():
        client.log_param(tid, k, v)
    client.log_metric(tid, "test_accuracy", 0.9123)
    client.log_metric(tid, "test_f1", 0.8)
    client.log_text(tid, "{}", "data/profile.json")
    client.set_terminated(tid)
    client.create_registered_model("classifier")
    mv = client.create_model_version("classifier", f"runs:/{tid}/model", run_id=tid)
    client.set_registered_model_alias("classifier", "champion", mv.version)

    sweep = client.create_run(exp, run_name="sweep-3-trials", tags={"trackflow.kind": "sweep"})
    sid = sweep.info.run_id
    client.log_param(sid, "metric", "val_loss")  # lower is better: the ranking must follow the direction
    trials = {}
    for name, loss in (("trial-a", 0.5), ("trial-b", 0.2), ("trial-c", 0.9)):
        t = client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": sid, "trackflow.kind": "trial"})
        client.log_metric(t.info.run_id, "val_loss", 5.0, step=0)  # an early epoch: not what ranks
        client.log_metric(t.info.run_id, "val_loss", loss, step=1)
        client.set_terminated(t.info.run_id)
        trials[name] = t.info.run_id
    failed = client.create_run(exp, run_name="trial-d", tags={"mlflow.parentRunId": sid})
    client.set_terminated(failed.info.run_id, "FAILED")
    client.set_terminated(sid)
    return tid, sid, trials


def test_runs_list_shows_status_metrics_and_model_version_with_alias(history, capsys):
    tid, sid, _ = history
    assert main(["runs", "list", "--experiment", "classifier"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if tid in line)
    for text in ("train-adam-lr0.001", "classifier", "FINISHED", "test_accuracy 0.9123", "classifier v1 @champion"):
        assert text in row, (text, row)
    assert sid in out and "6 run(s), newest first" in out
    assert main(["runs", "list", "--limit", "2"]) == 0
    assert "2 run(s), newest first" in capsys.readouterr().out


def test_runs_show_gives_params_metrics_artifacts_and_the_prefect_link(history, capsys):
    tid, _, _ = history
    assert main(["runs", "show", tid]) == 0
    out = capsys.readouterr().out
    for text in ("http://127.0.0.1:4200/runs/flow-run/f-1", "cultivar", "/srv/wine.csv", "test_accuracy", "0.9123",
                 "data/profile.json", "2 B", f"/#/experiments/"):
        assert text in out, text
    assert "Trials ranked" not in out


def test_runs_show_of_a_sweep_ranks_its_trials_by_the_sweeps_metric_and_direction(history, capsys):
    _, sid, trials = history
    assert main(["runs", "show", sid]) == 0
    out = capsys.readouterr().out
    assert "Trials ranked by val_loss" in out
    ranked = [line for line in out.splitlines() if any(t in line for t in trials.values())]
    assert [next(n for n in trials if n in line) for line in ranked] == ["trial-b", "trial-a", "trial-c"]
    assert "0.2000" in ranked[0] and "0.9000" in ranked[2]
    assert any("trial-d" in line and "FAILED" in line for line in out.splitlines())


def test_runs_show_breaks_ties_as_the_sweep_does_by_the_lower_val_loss(client, capsys):
    exp = ensure_experiment("classifier")
    sid = client.create_run(exp, run_name="sweep-4-trials", tags={"trackflow.kind": "sweep"}).info.run_id
    client.log_param(sid, "metric", "val_accuracy")
    for i, (name, acc, loss) in enumerate((("trial-a", 0.7, 0.5), ("trial-b", 0.7, 0.3), ("trial-c", 0.7, 0.5),
                                           ("trial-z", 0.8, 0.9))):
        t = client.create_run(exp, run_name=name, start_time=1_000 + i,
                              tags={"mlflow.parentRunId": sid, "trackflow.kind": "trial"})
        client.log_metric(t.info.run_id, "val_accuracy", acc)
        client.log_metric(t.info.run_id, "val_loss", loss)
        client.set_terminated(t.info.run_id)
    assert main(["runs", "show", sid]) == 0
    ranked = [line.split()[3] for line in capsys.readouterr().out.splitlines() if "trial-" in line]
    assert ranked == ["trial-z", "trial-b", "trial-a", "trial-c"]  # then the lower val_loss, then the first opened


def test_models_list_shows_versions_aliases_source_run_and_its_columns(history, capsys):
    tid, _, _ = history
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if tid in line)
    for text in ("classifier", "@champion", "/srv/wine.csv", "cultivar", "alcohol, malic acid"):
        assert text in row, (text, row)
    assert main(["models", "list", "classifier"]) == 0


@pytest.mark.parametrize("args, says", [
    (["runs", "show", "0123456789abcdef"], "trackflow runs: no run '0123456789abcdef'"),
    (["runs", "list", "--experiment", "nope"], "trackflow runs: no experiment 'nope'"),
    (["models", "list", "nope"], "trackflow models: no registered model 'nope'"),
])
def test_unknown_names_exit_2_with_one_line(history, capsys, args, says):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(says), err


def test_the_views_import_neither_prefect_nor_torch(history, mlflow_store):
    code = ("import sys; from cli.main import main; main(['runs', 'list']); main(['models', 'list']);"
            "bad = [m for m in ('prefect', 'torch') if m in sys.modules]; sys.exit(f'imported {bad}' if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "train-adam-lr0.001" in p.stdout
