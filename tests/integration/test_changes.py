"""`trackflow train --skip-unchanged` on a folder table, as a nightly job sees it: new partitions, new settings."""

from __future__ import annotations

import json

import pytest

from flows.train import training_pipeline
from tests.helpers.cli import call_main
from tests.helpers.store import all_runs
from tests.helpers.tables import wine_frame, write
from tests.integration.test_flow_train import flow_run_artifacts
from trackflow.config import TrainConfig

pytestmark = pytest.mark.usefixtures("prefect_server")

TRAIN = ("train", "--target", "cultivar", "--epochs", "2", "--skip-unchanged")


def partitions(root, n):
    df = wine_frame()
    for i in range(n):
        write(df.iloc[i::n], root / f"part-{i}.csv")
    return root


@pytest.mark.slow
def test_retrains_only_when_data_or_config_changed(client, mlflow_store, tmp_path):
    root = partitions(tmp_path / "table", 3)
    (root / ".partial.csv").write_text("half,a,file\n")  # a partition still being written: hidden
    first = call_main(*TRAIN, "--data", root)
    assert first.returncode == 0, first.stderr
    assert "Changed: no earlier finished run" in first.stdout
    run = all_runs(mlflow_store)[0]
    assert {"trackflow.key", "trackflow.key.data", "trackflow.key.config", "trackflow.key.code",
            "trackflow.key.versions"} <= set(run.data.tags)
    assert json.loads(run.inputs.dataset_inputs[0].dataset.source)["files"] == ["part-0.csv", "part-1.csv",
                                                                               "part-2.csv"]

    same = call_main(*TRAIN, "--data", root)
    assert same.returncode == 0, same.stderr
    assert same.stdout.strip() == f"Unchanged since run {run.info.run_id} (models:/classifier/1): nothing to train"
    assert len(all_runs(mlflow_store)) == 1 and len(client.search_model_versions("name='classifier'")) == 1

    # as a deployment runs it: the flow itself skips, with a markdown artifact saying so
    state = training_pipeline(TrainConfig(data=str(root), target="cultivar", epochs=2, skip_unchanged=True),
                              return_state=True)
    assert state.is_completed() and state.result().unchanged == same.stdout.strip()
    arts = flow_run_artifacts(str(state.state_details.flow_run_id))
    assert [a["key"] for a in arts] == ["training-skipped"] and run.info.run_id in arts[0]["data"]
    assert len(all_runs(mlflow_store)) == 1

    write(wine_frame().head(30), root / "part-3.csv")
    added = call_main(*TRAIN, "--data", root)
    assert added.returncode == 0, added.stderr
    assert f"Changed since run {run.info.run_id}: data: 1 file added (part-3.csv)\n" in added.stdout
    assert len(all_runs(mlflow_store)) == 2

    lr = call_main(*TRAIN, "--data", root, "--lr", "0.003")
    assert lr.returncode == 0, lr.stderr
    assert ": config: lr 0.001 -> 0.003\n" in lr.stdout
    assert len(all_runs(mlflow_store)) == 3


def test_a_partition_with_other_columns_exits_2_naming_it(client, mlflow_store, tmp_path):
    root = partitions(tmp_path / "table", 2)
    write(wine_frame().drop(columns=["ash"]), root / "part-7.csv")
    for extra in ((), ("--skip-unchanged",)):
        p = call_main("train", "--data", root, "--target", "cultivar", *extra)
        assert p.returncode == 2
        assert "'part-7.csv'" in p.stderr and "missing 'ash'" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert all_runs(mlflow_store) == []
