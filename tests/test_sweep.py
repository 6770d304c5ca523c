"""The learning-rate sweep: grid, nested runs under concurrency, promotion, failures, Dask."""

import os
import time

import pytest
from prefect import task

import flows.train as train_flow
from flows.sweep import sweep_pipeline
from tasks.registry import is_better
from trackflow.config import SweepConfig, TrainConfig

BASE = TrainConfig(n_samples=300, epochs=2)


def sweep(**kw) -> "SweepConfig":
    return SweepConfig(base=kw.pop("base", BASE), **kw)


def test_grid_is_the_product_in_order_without_duplicates():
    cfg = sweep(lrs=[0.1, 0.01, 0.1], optimizers=["adam", "adamw"], dropouts=[0.0, 0.5])
    grid = cfg.trials()
    assert len(grid) == 2 * 2 * 2
    assert [(c.optimizer, c.dropout, c.lr) for c in grid[:3]] == [("adam", 0.0, 0.1), ("adam", 0.0, 0.01), ("adam", 0.5, 0.1)]
    assert all(c.epochs == 2 and c.n_samples == 300 for c in grid)
    assert SweepConfig().trials()[0].lr == 0.001 and [c.lr for c in SweepConfig().trials()] == [0.001, 0.01, 0.1]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"lrs": [0.1, -1]}, "lrs must all be in (0, 10]"),
        ({"lrs": []}, "at least 1 item"),
        ({"dropouts": [1.0]}, "dropouts must all be in [0, 1)"),
        ({"metric": "test_accuracy"}, "metric"),
        ({"dask_address": "localhost:8786"}, "tcp://HOST:PORT"),
        ({"dask_address": "tcp://127.0.0.1:8786", "workers": 2}, "not both"),
    ],
)
def test_bad_sweep_configs(kw, message):
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        sweep(**kw)


def test_is_better_respects_direction():
    assert is_better(0.9, 0.8, "max") and not is_better(0.8, 0.8, "max")
    assert is_better(0.2, 0.3, "min") and not is_better(0.3, 0.2, "min")
    with pytest.raises(ValueError, match="direction"):
        is_better(1, 2, "up")


def children(client, parent_run_id):
    exp = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def test_sweep_nests_ranks_registers_and_promotes(client):
    res = sweep_pipeline(sweep(lrs=[0.0001, 0.01, 0.05]))
    parent = client.get_run(res.run_id)
    assert parent.info.status == "FINISHED"
    kids = children(client, res.run_id)
    assert sorted(float(r.data.params["lr"]) for r in kids) == [0.0001, 0.01, 0.05]
    assert all(r.info.status == "FINISHED" for r in kids)
    # same params and metric names as a plain training run
    assert set(kids[0].data.params) >= set(train_flow.LOGGED_PARAMS)
    assert set(kids[0].data.metrics) >= {"train_loss", "val_loss", "val_accuracy", "test_accuracy", "test_roc_auc"}

    vals = {r.info.run_id: r.data.metrics["val_accuracy"] for r in kids}
    best_run = max(vals, key=vals.get)
    assert res.best.run_id == best_run and parent.data.params["best_run_id"] == best_run
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(vals[best_run])
    assert {a.path for a in client.list_artifacts(res.run_id, "plots")} == {"plots/val_accuracy_vs_lr.png"}
    assert parent.data.params["lrs"] == "[0.0001, 0.01, 0.05]"

    champion = client.get_model_version_by_alias("classifier", "champion")
    assert champion.run_id == best_run and res.promoted
    assert parent.data.tags["trackflow.promotion"] == "promoted"


def test_metric_option_changes_the_ranking(client):
    res = sweep_pipeline(sweep(lrs=[0.0001, 0.05], metric="val_loss", base=BASE.model_copy(update={"register_model": False})))
    kids = children(client, res.run_id)
    losses = {r.info.run_id: r.data.metrics["val_loss"] for r in kids}
    assert res.best.run_id == min(losses, key=losses.get)
    assert client.get_run(res.run_id).data.metrics["best_val_loss"] == pytest.approx(min(losses.values()))
    assert client.search_registered_models() == []


def test_champion_is_replaced_when_beaten_and_kept_otherwise(client):
    weak = sweep_pipeline(sweep(lrs=[0.00001]))
    assert weak.promoted and weak.model_version == "1"
    strong = sweep_pipeline(sweep(lrs=[0.01]))
    assert strong.best.result.history["val_accuracy"][-1] > weak.best.result.history["val_accuracy"][-1]
    assert strong.promoted and strong.model_version == "2"
    assert str(client.get_model_version_by_alias("classifier", "champion").version) == "2"
    again = sweep_pipeline(sweep(lrs=[0.00001]))
    assert again.model_version == "3" and not again.promoted
    assert str(client.get_model_version_by_alias("classifier", "champion").version) == "2"
    parent = client.get_run(again.run_id)
    assert parent.data.tags["trackflow.promotion"] == "kept"
    assert parent.data.metrics["champion_previous_value"] > parent.data.metrics["candidate_value"]


def test_a_failing_trial_is_retried_then_recorded_and_the_rest_finish(client, monkeypatch):
    calls = []
    real = train_flow.fit_classifier

    @task
    def flaky_fit(splits, **knobs):
        if knobs["lr"] == 0.01:
            calls.append(knobs["lr"])
            raise RuntimeError("simulated trial failure")
        return real.fn(splits, **knobs)

    monkeypatch.setattr(train_flow, "fit_classifier", flaky_fit)
    res = sweep_pipeline(sweep(lrs=[0.001, 0.01, 0.1], retries=2))
    assert len(calls) == 3, res.failed  # one try + two retries
    assert [t.config.lr for t in res.failed] == [0.01]
    by_lr = {float(r.data.params["lr"]): r for r in children(client, res.run_id)}
    assert by_lr[0.01].info.status == "FAILED"
    assert "simulated trial failure" in by_lr[0.01].data.tags["trackflow.error"]
    assert by_lr[0.001].info.status == by_lr[0.1].info.status == "FINISHED"
    assert client.get_run(res.run_id).data.metrics["n_failed"] == 1


def test_trials_are_task_runs_of_the_sweep_flow_run(client):
    """No inner flow: the trials show up as task runs of the sweep's own flow run."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    res = sweep_pipeline(sweep(lrs=[0.001, 0.01], base=BASE.model_copy(update={"register_model": False})))
    flow_run_id = client.get_run(res.run_id).data.tags["prefect.flow_run_id"]
    api = PREFECT_API_URL.value()
    subflows = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}})
    assert subflows.json() == []
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "task_runs": {"name": {"like_": "run_trial"}}}
    for _ in range(50):  # task runs reach the server as events: give it a moment
        trials = httpx.post(f"{api}/task_runs/filter", json=body).json()
        if len(trials) == 2 and all(t["state_type"] == "COMPLETED" for t in trials):
            break
        time.sleep(0.2)
    assert sorted(t["state_type"] for t in trials) == ["COMPLETED", "COMPLETED"]


@pytest.mark.slow
def test_eight_concurrent_trials_on_sqlite_stay_parented(client):
    lrs = [0.001 * (i + 1) for i in range(8)]
    res = sweep_pipeline(sweep(lrs=lrs, max_concurrency=8))
    assert not res.failed, [t.error for t in res.failed]
    kids = children(client, res.run_id)
    assert len(kids) == 8 and all(r.info.status == "FINISHED" for r in kids)
    assert sorted(float(r.data.params["lr"]) for r in kids) == pytest.approx(lrs)
    assert all(len(client.get_metric_history(r.info.run_id, "val_loss")) == 2 for r in kids)


@pytest.mark.slow
def test_sweep_on_a_local_dask_cluster_uses_both_worker_processes(client):
    res = sweep_pipeline(sweep(lrs=[0.001, 0.003, 0.01, 0.03], workers=2))
    assert not res.failed, [t.error for t in res.failed]
    kids = children(client, res.run_id)
    assert len(kids) == 4 and all(r.info.status == "FINISHED" for r in kids)
    workers = {r.data.tags["trackflow.worker"] for r in kids}
    assert len(workers) == 2
    assert all(not w.endswith(f":{os.getpid()}") for w in workers)
    assert client.get_run(res.run_id).data.params["runner"] == "dask"
