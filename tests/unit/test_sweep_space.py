"""A sweep over the search space, without a server: the figure's series and a trial's estimated length."""

from types import SimpleNamespace

import flows.sweep as sweep
from flows.sweep import Trial, lr_series
from trackflow.config import SweepConfig


def test_the_metric_vs_lr_figure_has_one_series_per_combination_of_the_other_varied_fields():
    cfg = SweepConfig(lrs=[0.01, 0.1], batch_sizes=[32, 128], activations=["tanh"])
    trials = [Trial(c, "", SimpleNamespace(history={"val_accuracy": [i / 10]}), varied=cfg.varied())
              for i, c in enumerate(cfg.trials())]
    assert lr_series(trials, cfg.varied(), "val_accuracy") == {"bs32": ([0.01, 0.1], [0.0, 0.1]),
                                                               "bs128": ([0.01, 0.1], [0.2, 0.3])}
    assert [t.label for t in trials] == ["bs32-lr0.01", "bs32-lr0.1", "bs128-lr0.01", "bs128-lr0.1"]
    assert list(lr_series(trials[:2], ["lr"], "val_accuracy")) == ["trials"]


def test_a_trials_length_is_estimated_over_the_grids_distinct_networks(monkeypatch):
    timed = []
    monkeypatch.setattr(sweep, "estimate_seconds", lambda data, **knobs: timed.append(knobs) or knobs["batch_size"] / 10)
    assert sweep.trial_seconds(None, SweepConfig().trials()) == 3.2  # today's grid: one network, timed once
    assert len(timed) == 1
    timed.clear()
    grid = SweepConfig(batch_sizes=[8, 16, 32, 64, 128, 256, 512, 1024], optimizers=["sgd", "adam"]).trials()
    assert sweep.trial_seconds(None, grid) == (8 + 32 + 256 + 1024) / 10 / 4  # 16 networks: 4 spread over them
    assert [(k["batch_size"], k["optimizer"]) for k in timed] == [(8, "sgd"), (32, "adam"), (256, "sgd"), (1024, "adam")]


def test_a_trial_is_timed_only_when_the_runner_is_auto(monkeypatch):
    timed = []
    monkeypatch.setattr(sweep, "estimate_seconds", lambda data, **knobs: timed.append(knobs) or 100.0)
    grid = SweepConfig().trials()
    for named in (SweepConfig(runner="sequential"), SweepConfig(runner="processes", workers=2),
                  SweepConfig(runner="dask", workers=2), SweepConfig(dask_address="tcp://127.0.0.1:8786")):
        plan = sweep.plan_sweep(named, None, grid, 3, 2)
        assert plan.kind == named.runner if not named.dask_address else plan.kind == "dask"
    assert timed == []  # a large network's timing fit is minutes that a named runner does not need
    assert sweep.plan_sweep(SweepConfig(), None, grid, 4, 2).kind == "processes"  # 4 trials of 100 s: a pool pays
    assert len(timed) == 1


def test_pruning_is_refused_when_there_is_no_epoch_to_stop_after():
    import pytest

    from trackflow.config import TrainConfig

    with pytest.raises(ValueError, match="config.prune stops a trial between epochs; with config.epochs 1 there is none"):
        SweepConfig(base=TrainConfig(epochs=1), prune="asha")
    assert SweepConfig(base=TrainConfig(epochs=2), prune="median").prune == "median"
    assert SweepConfig(base=TrainConfig(epochs=1)).prune == "none"
