import numpy as np
import pytest
import torch

from tasks import tracking
from trackflow.model import MLPClassifier


def test_run_lifecycle_params_metrics_and_steps(client):
    exp = tracking.ensure_experiment.fn("exp-a")
    assert tracking.ensure_experiment.fn("exp-a") == exp  # idempotent
    assert client.get_experiment(exp).artifact_location.endswith("/mlruns/artifacts")
    run_id = tracking.start_run.fn(exp, run_name="r", tags={"k": "v"})
    tracking.log_params.fn(run_id, {"lr": 0.01, "optimizer": "adam"})
    tracking.log_metrics.fn(run_id, {"test_f1": 0.9}, {"val_loss": [0.5, 0.4, 0.3]})
    tracking.end_run.fn(run_id, "FINISHED")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.01", "optimizer": "adam"}
    assert run.data.tags["k"] == "v"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")] == [(1, 0.5), (2, 0.4), (3, 0.3)]


def test_nested_run_is_parented(client):
    exp = tracking.ensure_experiment.fn("exp-b")
    parent = tracking.start_run.fn(exp)
    child = tracking.start_run.fn(exp, parent_run_id=parent)
    assert client.get_run(child).data.tags["mlflow.parentRunId"] == parent


def test_deleted_experiment_is_a_clear_error(client):
    exp = tracking.ensure_experiment.fn("gone")
    client.delete_experiment(exp)
    with pytest.raises(ValueError, match="deleted"):
        tracking.ensure_experiment.fn("gone")


def test_logged_model_loads_back_and_predicts_the_same(client):
    import mlflow.pyfunc
    import mlflow.pytorch

    exp = tracking.ensure_experiment.fn("exp-m")
    run_id = tracking.start_run.fn(exp)
    model = MLPClassifier(10, 8, 2, 0.2)
    X = np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)
    uri = tracking.log_torch_model.fn(run_id, model, X)
    version = tracking.register_model.fn(uri, "clf", run_id)
    assert version == "1"
    assert tracking.register_model.fn(uri, "clf", run_id) == "2"
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(X)).numpy()
    loaded = mlflow.pyfunc.load_model("models:/clf/1")
    np.testing.assert_allclose(np.asarray(loaded.predict(X)), expected, rtol=1e-5, atol=1e-6)
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None and info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"][-1] == 10


def test_logging_to_an_unknown_run_fails_after_retries_are_exhausted():
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        tracking.log_params.fn("0" * 32, {"a": 1})


def test_same_dataset_logged_concurrently_by_many_runs(client):
    from concurrent.futures import ThreadPoolExecutor

    exp = tracking.ensure_experiment.fn("exp-ds")
    runs = [tracking.start_run.fn(exp) for _ in range(8)]
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda r: tracking.log_dataset.fn(r, X, y, name="shared"), runs))
    assert all(len(client.get_run(r).inputs.dataset_inputs) == 1 for r in runs)
