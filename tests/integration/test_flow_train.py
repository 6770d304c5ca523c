"""The training flow under a real (temporary) Prefect server with a real SQLite MLflow store."""

import pytest
from prefect import task

import flows.steps as steps
from flows.train import training_pipeline
from tests.helpers.servers import prefect_api
from trackflow.config import TrainConfig

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_flow_tracks_everything(client, tiny_config):
    result = training_pipeline(tiny_config)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    exp = client.get_experiment_by_name("classifier")
    assert run.info.experiment_id == exp.experiment_id

    assert set(run.data.params) >= {
        "n_samples", "n_features", "epochs", "lr", "batch_size", "dropout", "optimizer", "weight_decay", "seed",
        "data", "target", "features", "hidden_layers"
    }
    assert run.data.params["data"] == "generated" and run.data.params["hidden_layers"] == "[64, 64]"
    assert run.data.params["epochs"] == "3" and run.data.params["optimizer"] == "adam"
    for name in ("train_loss", "val_loss", "val_accuracy"):
        assert [m.step for m in client.get_metric_history(result.run_id, name)] == [1, 2, 3]
    for name in ("test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc"):
        assert run.data.metrics[name] == pytest.approx(result.metrics[name])

    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {"plots/loss_curves.png", "plots/confusion_matrix.png", "plots/roc_curve.png"}
    assert len(run.inputs.dataset_inputs) == 1
    assert run.inputs.dataset_inputs[0].dataset.name.startswith("make_classification-300x10")

    # linked to the Prefect flow run
    assert "prefect.flow_run_id" in run.data.tags

    # model logged with signature and registered
    versions = client.search_model_versions("name='classifier'")
    assert [str(v.version) for v in versions] == [result.model_version] == ["1"]
    assert versions[0].run_id == result.run_id


def flow_run_artifacts(flow_run_id: str) -> list[dict]:
    """Artifacts of a flow run, from the server's REST API.

    (Prefect 3.8.8's client sends nulls for unset filter fields, which its server rejects.) Filtered on the
    artifact's own flow_run_id: a filter on flow_runs or task_runs joins the task runs table, which the server's
    task-run recorder fills from events a moment later, so an artifact made by a task could be missed right after
    its flow returned.
    """
    from prefect.settings import PREFECT_API_URL

    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 50, "offset": 0, "sort": "CREATED_DESC"}
    return prefect_api(PREFECT_API_URL.value(), "/artifacts/filter", body)


def test_flow_run_gets_a_markdown_summary(client, tiny_config):
    result = training_pipeline(tiny_config)
    flow_run_id = client.get_run(result.run_id).data.tags["prefect.flow_run_id"]
    arts = flow_run_artifacts(flow_run_id)
    assert [a["key"] for a in arts] == ["training-summary"]
    assert arts[0]["type"] == "markdown"
    assert result.run_id in arts[0]["data"] and "test_accuracy" in arts[0]["data"]


def test_same_seed_reproduces_metrics(tiny_config):
    a = training_pipeline(tiny_config.model_copy(update={"register_model": False}))
    b = training_pipeline(tiny_config.model_copy(update={"register_model": False}))
    assert a.run_id != b.run_id
    assert a.metrics == b.metrics and a.history == b.history


def test_failing_task_leaves_the_run_failed(client, tiny_config, monkeypatch):
    @task
    def broken_fit(data, **knobs):
        raise RuntimeError("boom in training")

    monkeypatch.setattr(steps, "train_and_score", broken_fit)
    with pytest.raises(RuntimeError, match="boom in training"):
        training_pipeline(tiny_config)
    runs = client.search_runs([client.get_experiment_by_name("classifier").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_invalid_parameters_are_rejected_before_any_run(client):
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="lr"):
        training_pipeline({"lr": -1.0})
    assert client.get_experiment_by_name("classifier") is None


def test_a_real_table_is_tracked_with_its_source_profile_and_class_names(client, tmp_path):
    import json

    from tests.helpers.tables import wine_frame, write

    path = write(wine_frame(), tmp_path / "wine.parquet")
    result = training_pipeline(TrainConfig(data=str(path), target="cultivar", drop=["hue"], epochs=20))
    run = client.get_run(result.run_id)
    p = run.data.params
    assert p["data"] == str(path) and p["target"] == "cultivar" and "n_samples" not in p
    features = json.loads(p["features"])
    assert "colour / tint" in features and "prolin é" in features and "hue" not in features
    assert set(result.metrics) == {"test_accuracy", "test_precision_macro", "test_recall_macro", "test_f1_macro",
                                   "test_roc_auc_ovr"}
    assert result.classes == ["barbera", "barolo", "grignolino"]
    [inp] = run.inputs.dataset_inputs
    assert inp.dataset.name == "wine.parquet" and inp.dataset.digest
    assert str(path) in inp.dataset.source
    schema = json.loads(inp.dataset.schema)["mlflow_colspec"]
    assert {c["name"] for c in schema} >= {"colour / tint", "prolin é", "cultivar"}
    local = client.download_artifacts(result.run_id, "data/profile.json", str(tmp_path))
    profile = json.loads(open(local).read())
    assert profile["class_counts"] == {"barbera": 48, "barolo": 59, "grignolino": 71}
    assert profile["missing_values"]["alcohol"] == 3
    assert run.data.metrics["data_rows"] == 178


def test_bad_data_stops_before_any_run_and_registers_nothing(client, tmp_path):
    import pandas as pd

    from tasks.data import DataError

    path = tmp_path / "one-class.csv"
    pd.DataFrame({"a": range(40), "label": ["same"] * 40}).to_csv(path, index=False)
    with pytest.raises(DataError, match="single class"):
        training_pipeline(TrainConfig(data=str(path), target="label"))
    assert client.get_experiment_by_name("classifier") is None
    assert client.search_registered_models() == []


@pytest.mark.parametrize("update, says", [
    ({"data": "missing.csv", "target": "y"}, "does not exist; check config.data"),
    ({"target": "nope"}, "config.target 'nope' is not a column of"),
])
def test_an_error_in_a_flow_run_names_the_deployment_parameter(client, tmp_path, monkeypatch, update, says):
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"a": range(40), "y": [0, 1] * 20}).to_csv("t.csv", index=False)
    state = training_pipeline(TrainConfig(**({"data": "t.csv"} | update)), return_state=True)
    assert state.is_failed() and says in state.message and "--" not in state.message
