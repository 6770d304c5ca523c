"""Random/TPE search and pruning through the real flow: nested runs, outcomes, the study's record, every runner."""

import io
import json
import os


import pytest
from prefect.settings import PREFECT_API_URL
from rich.console import Console

from cli.views import runs_show
from flows.sweep import sweep_pipeline
from tests.helpers.servers import prefect_api
from trackflow.config import SweepConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("prefect_server")

BASE = TrainConfig(n_samples=400, epochs=8)
# Hopeless learning rates beside good ones: ASHA (rungs at epochs 2 and 4 of 8) stops some of them.
LRS = [1e-2, 3e-2, 1e-6, 3e-7, 1e-7, 2e-6]


def children(client, parent_run_id):
    exp = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def check_search_record(client, res, n_trials):
    parent = client.get_run(res.run_id)
    kids = children(client, res.run_id)
    assert len(kids) == len(res.trials) == n_trials
    assert all(k.data.tags["mlflow.parentRunId"] == res.run_id for k in kids)
    outcome = {k.info.run_id: k.data.tags["trackflow.outcome"] for k in kids}
    assert set(outcome.values()) <= {"completed", "pruned", "failed"} and "pruned" in outcome.values()
    epochs = 0
    for k in kids:
        steps = [m.step for m in client.get_metric_history(k.info.run_id, "val_accuracy")]
        if outcome[k.info.run_id] == "pruned":  # its curves stop at the epoch it stopped at
            stopped = int(k.data.metrics["stopped_epoch"])
            assert k.data.tags["trackflow.stopped_epoch"] == str(stopped) and stopped in (2, 4)
            assert steps == list(range(1, stopped + 1)) and k.info.status == "FINISHED"
            assert "test_accuracy" not in k.data.metrics
            epochs += stopped
        elif outcome[k.info.run_id] == "completed":
            assert steps == list(range(1, 9)) and "test_accuracy" in k.data.metrics
            epochs += 8
    m = parent.data.metrics
    assert (m["n_completed"], m["n_pruned"], m["n_failed"]) == (
        list(outcome.values()).count("completed"), list(outcome.values()).count("pruned"), 0)
    assert m["epochs_trained"] == epochs and m["grid_epochs"] == len(LRS) * 8
    assert m["epochs_vs_grid"] == pytest.approx(epochs / (len(LRS) * 8))
    p = parent.data.params
    assert p["search"] == "tpe" and p["sampler"].startswith("TPESampler(seed=42")
    assert p["pruner"].startswith("SuccessiveHalvingPruner(min_resource=2, reduction_factor=2")
    assert "plots/val_accuracy_best_so_far.png" in {a.path for a in client.list_artifacts(res.run_id, "plots")}
    # the best is a completed trial, registered and promoted as a grid's best would be
    assert outcome[res.best.run_id] == "completed"
    [version] = client.search_model_versions("name='classifier'")
    assert version.run_id == res.best.run_id
    return outcome


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["processes", "dask"])
def test_tpe_with_asha_on_worker_processes(client, runner):
    res = sweep_pipeline(SweepConfig(base=BASE, lrs=LRS, search="tpe", n_trials=6, prune="asha", runner=runner,
                                     workers=2))
    assert res.plan.kind == runner
    outcome = check_search_record(client, res, 6)
    assert all(t.status == outcome[t.run_id] for t in res.trials)
    workers = {client.get_run(t.run_id).data.tags["trackflow.worker"] for t in res.ranked()}
    assert all(not w.endswith(f":{os.getpid()}") for w in workers)  # trained in the workers
    # `trackflow runs show` of the parent ranks the completed trials only; pruned ones are listed as such
    out = io.StringIO()
    runs_show(res.run_id, Console(file=out, width=300))
    shown = out.getvalue()
    assert shown.count("pruned after epoch") == len(res.pruned)
    table = shown.split("Trials ranked by")[1]
    ranked = [line.strip("│ ").split()[0] for line in table.splitlines()
              if any(t.run_id in line for t in res.ranked())]
    assert ranked == [str(i) for i in range(1, len(res.ranked()) + 1)]


def test_tpe_with_asha_here_records_pruned_trials(client):
    res = sweep_pipeline(SweepConfig(base=BASE, lrs=LRS, search="tpe", n_trials=6, prune="asha",
                                     runner="sequential"))
    outcome = check_search_record(client, res, 6)
    assert res.search.segments < 6 * 3  # one call per rung reached
    # the Prefect table: every trial with its outcome, completed ones ranked first
    flow_run_id = client.get_run(res.run_id).data.tags["prefect.flow_run_id"]
    body = {"artifacts": {"key": {"any_": ["sweep-trials"]}, "flow_run_id": {"any_": [flow_run_id]}}}
    [artifact] = prefect_api(PREFECT_API_URL.value(), "/artifacts/filter", body)
    rows = json.loads(artifact["data"]) if isinstance(artifact["data"], str) else artifact["data"]
    assert {r["mlflow_run_id"]: r["outcome"] for r in rows} == outcome
    assert [r["rank"] for r in rows if r["outcome"] == "completed"] == list(range(1, len(res.ranked()) + 1))


def test_a_diverging_trial_fails_with_its_epoch_and_the_sweep_goes_on(client):
    # AdamW with lr 1 and weight decay 100 multiplies the weights by -99 each step: NaN within two epochs.
    base = TrainConfig(n_samples=300, epochs=3, weight_decay=100.0)
    res = sweep_pipeline(SweepConfig(base=base, lrs=[0.001, 1.0], optimizers=["adamw"]))
    [bad] = res.failed
    assert bad.config.lr == 1.0 and res.best.config.lr == 0.001
    run = client.get_run(bad.run_id)
    assert run.info.status == "FAILED" and run.data.tags["trackflow.outcome"] == "failed"
    assert run.data.tags["trackflow.failed_epoch"] in ("1", "2")
    assert "TrainingDiverged: training diverged: train_loss became nan" in run.data.tags["trackflow.error"]
    good = client.get_run(res.best.run_id)
    assert good.data.tags["trackflow.outcome"] == "completed"
    parent = client.get_run(res.run_id).data
    assert parent.metrics["n_failed"] == 1 and parent.metrics["n_completed"] == 1 and parent.metrics["n_pruned"] == 0
    assert parent.params["search"] == "grid" and parent.params["pruner"] == "none"
