"""The learning-rate sweep: the grid, the runner plan, what each run holds, promotion, failures, worker processes."""

import functools
import os
import time

import pytest
from prefect import task

import flows.steps as steps
from flows.sweep import RunnerPlan, plan_runner, sweep_pipeline
from tasks.training import train_on
from tests.helpers.servers import prefect_api
from trackflow.config import SweepConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("prefect_server")

BASE = TrainConfig(n_samples=300, epochs=2)


def sweep(**kw) -> "SweepConfig":
    return SweepConfig(base=kw.pop("base", BASE), **kw)


def test_grid_is_the_product_in_order_without_duplicates():
    cfg = sweep(lrs=[0.1, 0.01, 0.1], optimizers=["adam", "adamw"], dropouts=[0.0, 0.5])
    grid = cfg.trials()
    assert len(grid) == 2 * 2 * 2
    assert [(c.optimizer, c.dropout, c.lr) for c in grid[:3]] == [("adam", 0.0, 0.1), ("adam", 0.0, 0.01), ("adam", 0.5, 0.1)]
    assert all(c.epochs == 2 and c.n_samples == 300 for c in grid)
    assert [c.lr for c in SweepConfig().trials()] == [0.001, 0.01, 0.1]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"lrs": [0.1, -1]}, "lrs must all be in (0, 10]"),
        ({"lrs": []}, "at least 1 item"),
        ({"dropouts": [1.0]}, "dropouts must all be in [0, 1)"),
        ({"metric": "test_accuracy"}, "metric"),
        ({"dask_address": "localhost:8786"}, "tcp://HOST:PORT"),
        ({"dask_address": "tcp://127.0.0.1:8786", "workers": 2}, "not both"),
        ({"dask_address": "tcp://127.0.0.1:8786", "runner": "processes"}, "does not go with runner 'processes'"),
        ({"workers": 2, "runner": "sequential"}, "does not go with runner 'sequential'"),
        ({"runner": "threads"}, "runner"),
    ],
)
def test_bad_sweep_configs(kw, message):
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        sweep(**kw)


@pytest.mark.parametrize(
    "kw, seconds, trials, cores, kind, workers, says",
    [
        ({}, 0.1, 3, 2, "sequential", 1, "would not pay for 3 trials of ~0.10 s"),
        ({}, 15.0, 8, 2, "processes", 2, "8 trials of ~15.0 s each take ~82 s on 2 worker processes against ~120 s"),
        ({}, 15.0, 8, 1, "sequential", 1, "one core"),
        ({}, 3.0, 2, 2, "sequential", 1, "would not pay"),
        ({"workers": 4}, 30.0, 2, 8, "processes", 2, "on 2 worker processes"),  # never more workers than trials
        ({"runner": "processes"}, 0.1, 3, 2, "processes", 2, "--runner processes"),
        ({"runner": "sequential"}, 60.0, 8, 2, "sequential", 1, "--runner sequential"),
        ({"runner": "dask", "workers": 2}, 0.1, 8, 2, "dask", 2, "local Dask cluster of 2"),
        ({"dask_address": "tcp://10.0.0.1:8786"}, 0.1, 8, 2, "dask", 2, "running Dask cluster at tcp://10.0.0.1:8786"),
    ],
)
def test_the_runner_plan(kw, seconds, trials, cores, kind, workers, says):
    plan = plan_runner(sweep(**kw), seconds, trials, cores)
    assert (plan.kind, plan.workers) == (kind, workers) and says in plan.reason


def children(client, parent_run_id):
    exp = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def logged_models(client, run):
    return list(client.search_logged_models([run.info.experiment_id],
                                            filter_string=f"source_run_id = '{run.info.run_id}'"))


def test_each_trial_holds_its_comparison_and_only_the_best_holds_the_model(client):
    res = sweep_pipeline(sweep(lrs=[0.0001, 0.01, 0.05]))
    parent = client.get_run(res.run_id)
    assert parent.info.status == "FINISHED"
    kids = children(client, res.run_id)
    assert sorted(float(r.data.params["lr"]) for r in kids) == [0.0001, 0.01, 0.05]
    vals = {r.info.run_id: r.data.metrics["val_accuracy"] for r in kids}
    best_id = max(vals, key=vals.get)
    for run in kids:  # every trial: params, per-epoch curves, test metrics, the dataset, tags
        assert run.info.status == "FINISHED"
        assert {"lr", "optimizer", "dropout", "epochs", "data", "features", "hidden_layers"} <= set(run.data.params)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
        assert {"test_accuracy", "test_roc_auc", "train_loss", "val_accuracy"} <= set(run.data.metrics)
        assert len(run.inputs.dataset_inputs) == 1
        assert run.data.tags["trackflow.kind"] == "trial" and run.data.tags["prefect.flow_run_id"]
        assert run.data.tags["trackflow.worker"] == f"{os.uname().nodename}:{os.getpid()}"  # ran in this process
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        if run.info.run_id == best_id:  # the best alone: the model and its figures
            assert plots == {"plots/loss_curves.png", "plots/confusion_matrix.png", "plots/roc_curve.png"}
            assert len(logged_models(client, run)) == 1
        else:
            assert plots == set() and logged_models(client, run) == []
    assert res.best.run_id == best_id and parent.data.params["best_run_id"] == best_id
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(vals[best_id])
    assert {a.path for a in client.list_artifacts(res.run_id, "plots")} == {"plots/val_accuracy_vs_lr.png"}
    [version] = client.search_model_versions("name='classifier'")
    assert version.run_id == best_id  # the registered version is the best trial's own model
    assert client.get_model_version_by_alias("classifier", "champion").version == version.version and res.promoted
    assert parent.data.tags["trackflow.promotion"] == "promoted"
    # the default runner's choice, and why
    assert parent.data.params["runner"] == "sequential"
    assert parent.data.params["runner_reason"].startswith("auto: one after another")


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
    assert strong.best.value("val_accuracy") > weak.best.value("val_accuracy")
    assert strong.promoted and strong.model_version == "2"
    assert str(client.get_model_version_by_alias("classifier", "champion").version) == "2"
    again = sweep_pipeline(sweep(lrs=[0.00001]))
    assert again.model_version == "3" and not again.promoted
    assert str(client.get_model_version_by_alias("classifier", "champion").version) == "2"
    parent = client.get_run(again.run_id)
    assert parent.data.tags["trackflow.promotion"] == "kept"
    assert parent.data.metrics["champion_previous_value"] > parent.data.metrics["candidate_value"]


def test_a_failing_trial_is_recorded_and_the_rest_finish(client, monkeypatch):
    @task
    @functools.wraps(train_on)  # the runner checks parameters against the signature
    def flaky(executor, data, **knobs):
        if knobs["lr"] == 0.01:
            raise RuntimeError("simulated trial failure")
        return train_on(executor, data, **knobs)

    monkeypatch.setattr(steps, "train_on", flaky)
    res = sweep_pipeline(sweep(lrs=[0.001, 0.01, 0.1]))
    assert [t.config.lr for t in res.failed] == [0.01]
    by_lr = {float(r.data.params["lr"]): r for r in children(client, res.run_id)}
    assert by_lr[0.01].info.status == "FAILED"
    assert "simulated trial failure" in by_lr[0.01].data.tags["trackflow.error"]
    assert by_lr[0.001].info.status == by_lr[0.1].info.status == "FINISHED"
    assert client.get_run(res.run_id).data.metrics["n_failed"] == 1


def test_trials_are_task_runs_of_the_sweep_flow_run(client):
    """No inner flow: the trials show up as task runs of the sweep's own flow run."""
    from prefect.settings import PREFECT_API_URL

    res = sweep_pipeline(sweep(lrs=[0.001, 0.01], base=BASE.model_copy(update={"register_model": False})))
    flow_run_id = client.get_run(res.run_id).data.tags["prefect.flow_run_id"]
    api = PREFECT_API_URL.value()
    assert prefect_api(api, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}}) == []
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "task_runs": {"name": {"like_": "train_trial"}}}
    for _ in range(50):  # task runs reach the server as events: give it a moment
        trials = prefect_api(api, "/task_runs/filter", body)
        if len(trials) == 2 and all(t["state_type"] == "COMPLETED" for t in trials):
            break
        time.sleep(0.2)
    assert sorted(t["state_type"] for t in trials) == ["COMPLETED", "COMPLETED"]


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["processes", "dask"])
def test_trials_on_two_worker_processes(client, runner):
    lrs = [0.001, 0.003, 0.01, 0.03]
    res = sweep_pipeline(sweep(lrs=lrs, runner=runner, workers=2))
    assert not res.failed, [t.error for t in res.failed]
    assert res.plan == RunnerPlan(runner, 2, res.plan.reason)
    kids = children(client, res.run_id)
    assert len(kids) == 4 and all(r.info.status == "FINISHED" for r in kids)
    workers = {r.data.tags["trackflow.worker"] for r in kids}
    assert len(workers) == 2 and all(not w.endswith(f":{os.getpid()}") for w in workers)
    assert client.get_run(res.run_id).data.params["runner"] == runner
    [version] = client.search_model_versions("name='classifier'")
    assert version.run_id == res.best.run_id


def test_a_sweep_over_batch_sizes_shapes_and_optimizers_from_the_command_line(client):
    from tests.helpers.cli import call_main

    p = call_main("sweep", "--n-samples", "300", "--epochs", "2", "--lrs", "0.01", "--batch-sizes", "32,128",
                  "--hidden-layers-grid", "16/8,8", "--optimizers", "sgd,adam", "--momentum", "0.5",
                  "--activations", "tanh", "--no-register-model")
    assert p.returncode == 0, p.stderr
    exp = client.get_experiment_by_name("classifier").experiment_id
    [parent] = client.search_runs([exp], filter_string="tags.`trackflow.kind` = 'sweep'")
    kids = children(client, parent.info.run_id)
    got = {r.info.run_name: (r.data.params["hidden_layers"], r.data.params["batch_size"], r.data.params["optimizer"],
                             r.data.params.get("momentum")) for r in kids}
    assert got == {f"trial-{h}-bs{bs}-{opt}-lr0.01": (shape, str(bs), opt, "0.5" if opt == "sgd" else None)
                   for h, shape in (("h16", "[16]"), ("h8x8", "[8, 8]")) for bs in (32, 128) for opt in ("sgd", "adam")}
    assert all(r.data.params["activation"] == "tanh" and r.info.status == "FINISHED" for r in kids)
    params = parent.data.params
    assert (params["hidden_layers_grid"], params["batch_sizes"], params["optimizers"]) == (
        "[[16], [8, 8]]", "[32, 128]", '["sgd", "adam"]')
    assert (params["activations"], params["lrs"], params["n_trials"]) == ('["tanh"]', "[0.01]", "8")
    assert "base_batch_size" not in params and params["base_epochs"] == "2"
    best = client.get_run(params["best_run_id"])
    for field in ("hidden_layers", "batch_size", "optimizer", "lr"):
        assert params[f"best_{field}"] == best.data.params[field]
    assert f"{best.info.run_name.removeprefix('trial-')} " in p.stdout  # the ranked list names trials the same way
