"""The scale-out store: an MLflow tracking server on PostgreSQL, serving artifacts, shared by CLI runs."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.cli import call_main
from tests.helpers.servers import mlflow_server, pg_bin, postgres, sqlite_from

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.mark.slow
def test_train_and_sweep_against_an_mlflow_server_on_postgresql(tmp_path):
    from mlflow import MlflowClient

    with postgres(tmp_path / "pg" / "data") as db, \
            mlflow_server(db, tmp_path / "artifacts", tmp_path / "mlflow.log") as url:
        small = ["--n-samples", "300", "--epochs", "2", "--experiment", "shared"]
        p = call_main("train", *small, MLFLOW_TRACKING_URI=url)
        assert p.returncode == 0, p.stderr
        assert f"{url}/#/experiments/" in p.stdout  # links point at the tracking server's own UI
        p = call_main("sweep", *small, "--lrs", "0.01,0.1", MLFLOW_TRACKING_URI=url)
        assert p.returncode == 0, p.stderr

        client = MlflowClient(tracking_uri=url, registry_uri=url)
        exp = client.get_experiment_by_name("shared")
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 1 + 1 + 2 and {r.info.status for r in runs} == {"FINISHED"}
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
        assert sorted(float(r.data.params["lr"]) for r in children) == [0.01, 0.1]
        # Artifacts travel through the server (--serve-artifacts) into its destination folder.
        train = next(r for r in runs if r.data.tags.get("mlflow.runName", "").startswith("train-"))
        png = client.download_artifacts(train.info.run_id, "plots/loss_curves.png", str(tmp_path / "dl"))
        assert open(png, "rb").read(4) == b"\x89PNG"
        assert any((tmp_path / "artifacts").rglob("loss_curves.png"))
        versions = client.search_model_versions("name = 'classifier'")
        assert len(versions) == 2
        assert client.get_model_version_by_alias("classifier", "champion").version in {v.version for v in versions}

        # And the runs really live in PostgreSQL.
        port = db.rsplit(":", 1)[1].split("/")[0]
        out = subprocess.run([pg_bin("psql") or "psql", "-h", "127.0.0.1", "-p", port, "-U", "trackflow", "-d", "mlflow",
                              "-tAc", "select count(*) from runs where status = 'FINISHED'"],
                             capture_output=True, text=True, check=True)
        assert int(out.stdout.strip()) == 4


@pytest.mark.slow
def test_two_promotions_at_once_through_a_tracking_server(tmp_path, monkeypatch, mlflow_template):
    """The registry-side lock over MLflow's REST API: the better of two racing promotions ends as champion."""
    from mlflow import MlflowClient

    from tasks.registry import promote_if_better
    from tests.helpers.registry import candidate, champion, race, slow_alias_reads

    db = sqlite_from(mlflow_template, tmp_path / "server.db")
    with mlflow_server(db, tmp_path / "artifacts", tmp_path / "mlflow.log") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        slow_alias_reads(monkeypatch, {"better": 0.05, "worse": 0.6})
        for round_ in range(2):
            name = f"m{round_}"
            promote_if_better(name, candidate(client, name, 0.5), "val_accuracy", "champion")
            better, worse = candidate(client, name, 0.9), candidate(client, name, 0.7)
            assert set(race(client, name, better, worse)) == {"better", "worse"}
            assert champion(client, name) == better
        assert sorted(m.name for m in client.search_registered_models()) == ["m0", "m1"]  # no lock left behind
