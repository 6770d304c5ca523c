"""Random/TPE search and pruning: training in segments, divergence, the search loop, its settings."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tasks import training
from tasks.data import encode_splits, generate_table, split_table
from tasks.search import Space, make_pruner, run_search
from tasks.training import DataNotHere, TrainingDiverged, TrainingState, TrialOutcome, train_and_score, train_segment
from trackflow.config import SweepConfig, TrainConfig
from trackflow.naming import flag


@pytest.fixture(scope="module")
def data():
    s = split_table(generate_table(400, 10, 5, 0), 0.2, 0.1, 0)
    return encode_splits(s).data


def knobs(config: TrainConfig) -> dict:
    return dict(hidden_layers=config.hidden_layers, dropout=config.dropout, optimizer=config.optimizer, lr=config.lr,
                weight_decay=config.weight_decay, batch_size=config.batch_size, epochs=config.epochs,
                seed=config.seed, device="cpu", activation=config.activation, momentum=config.momentum, l1=config.l1)


@pytest.mark.parametrize("optimizer, dropout", [("adam", 0.2), ("adamw", 0.0), ("sgd", 0.2), ("adagrad", 0.0)])
def test_training_in_segments_is_bit_identical_to_one_go(data, optimizer, dropout):
    k = knobs(TrainConfig(epochs=7, optimizer=optimizer, dropout=dropout, weight_decay=0.01, lr=0.01,
                          hidden_layers=[16, 8], seed=3))
    whole = train_and_score(data, **k)
    state = None
    for stop in (1, 3, 4, 7):  # each segment's result crosses a process boundary as a pickle
        state = pickle.loads(pickle.dumps(train_segment(data, "tok", k, state, stop)))
        if stop < 7:
            assert isinstance(state, TrainingState) and state.epochs_done == stop
    assert isinstance(state, TrialOutcome)
    assert state.history == whole.history  # exact floats, every epoch
    for (name, a), b in zip(whole.network.state_dict().items(), state.network.state_dict().values()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(state.proba_test, whole.proba_test)


def test_a_worker_keeps_the_data_by_token_and_asks_for_it_when_it_lacks_it(data, monkeypatch):
    monkeypatch.setattr(training, "_DATA", {})
    k = knobs(TrainConfig(epochs=2))
    assert train_segment("tok", "tok", k, None, 1) == DataNotHere("tok")
    first = train_segment(data, "tok", k, None, 1)
    again = train_segment("tok", "tok", k, None, 1)  # the arrays are kept: the token is enough
    assert first.history == again.history and list(training._DATA) == ["tok"]
    train_segment(data, "other", k, None, 1)
    assert list(training._DATA) == ["other"]  # one sweep's arrays at a time


def test_a_diverging_loss_raises_with_its_epoch_and_survives_pickling(data):
    # AdamW's decoupled decay multiplies the weights by (1 - lr * weight_decay) = -99 each step: they blow up.
    with pytest.raises(TrainingDiverged) as info:
        train_and_score(data, **knobs(TrainConfig(optimizer="adamw", lr=1.0, weight_decay=100.0, epochs=5)))
    assert info.value.epoch in (1, 2) and f"at epoch {info.value.epoch}" in str(info.value)
    assert "nan" in str(info.value) or "inf" in str(info.value)
    back = pickle.loads(pickle.dumps(info.value))
    assert back.epoch == info.value.epoch and str(back) == str(info.value)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"n_trials": 5}, "--trials goes with --search random or tpe"),
        ({"lr_range": [1e-4, 1e-1]}, "--lr-range goes with --search random or tpe"),
        ({"search": "tpe", "lr_range": [1e-1, 1e-4]}, "0 < LOW < HIGH <= 10"),
        ({"search": "tpe", "lr_range": [1e-4]}, "at least 2"),
        ({"search": "tpe", "lr_range": [1e-4, 1e-1], "lrs": [0.1]}, "either --lrs or --lr-range"),
        ({"prune": "hyperband"}, "prune"),
        ({"search": "bayes"}, "search"),
    ],
)
def test_bad_search_options_are_refused_naming_the_option(kw, message):
    from trackflow.naming import names

    with names("cli"), pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SweepConfig(**kw)


def test_the_trials_option_and_the_planned_trainings():
    assert flag("n_trials") == "--trials"
    assert SweepConfig().planned_trials() == 3
    assert SweepConfig(search="tpe").planned_trials() == 3  # never more than the grid's points by default
    assert SweepConfig(search="random", lrs=[1e-4, 1e-3, 1e-2, 1e-1], optimizers=["adam", "adamw"],
                       dropouts=[0, 0.1, 0.2]).planned_trials() == 20
    assert SweepConfig(search="tpe", n_trials=7).planned_trials() == 7
    assert SweepConfig(search="tpe", lr_range=[1e-4, 1e-1]).planned_trials() == 20
    cfg = SweepConfig(lrs=[0.1, 0.01], optimizers=["adam", "adamw"])
    assert {k: v for k, v in cfg.axes().items() if k in ("optimizer", "dropout", "lr")} == {
        "optimizer": ["adam", "adamw"], "dropout": [0.2], "lr": [0.1, 0.01]}


def test_pruners_act_at_asha_rungs_and_after_the_median_warm_up():
    asha = make_pruner("asha", 20)
    assert asha.checks == (5, 10) and "SuccessiveHalvingPruner(min_resource=5, reduction_factor=2" in asha.description
    assert make_pruner("asha", 10).checks == (2, 4, 8)  # the first rung at a quarter of the epochs
    assert make_pruner("asha", 20, min_resource=1, reduction_factor=3).checks == (1, 3, 9)
    median = make_pruner("median", 20)
    assert median.checks == (5, 7, 9, 11, 13, 15, 17, 19) and "MedianPruner" in median.description
    assert make_pruner("none", 20) is None


def test_space_encodes_shapes_and_draws_the_lr_from_a_range():
    import optuna

    space = Space({"hidden_layers": [[64, 64], [32]], "lr": [0.1]}, lr_range=[1e-4, 1e-1])
    assert space.size == float("inf") and "lr" not in space.axes
    trial = optuna.create_study().ask()
    params = space.fields(space.suggest(trial), {"hidden_layers": [[64, 64], [32]], "lr": [0.1]})
    assert params["hidden_layers"] in ([64, 64], [32]) and 1e-4 <= params["lr"] <= 1e-1


def search(config: SweepConfig, data, **kw):
    started, ended = [], []
    summary = run_search(config, data, executor=None, workers=1, knobs=knobs,
                         start=lambda c: started.append(c) or len(started) - 1,
                         finish=lambda i, r: ended.append((i, r)), **kw)
    return started, dict(ended), summary


def test_grid_with_asha_runs_the_grid_in_order_and_prunes_the_hopeless(data):
    cfg = SweepConfig(base=TrainConfig(n_samples=400, epochs=10), lrs=[1e-2, 1e-5, 3e-6, 1e-6], prune="asha")
    started, ended, summary = search(cfg, data, pruning=make_pruner("asha", 10))
    assert [c.lr for c in started] == [c.lr for c in cfg.trials()]
    outcomes = {started[i].lr: r.outcome for i, r in ended.items()}
    assert outcomes[1e-2] == "completed" and "pruned" in outcomes.values()
    for i, r in ended.items():
        if r.outcome == "pruned":  # stopped at a rung, with its curves up to there
            assert r.epoch in (2, 4, 8) and len(r.history["val_accuracy"]) == r.epoch == r.epochs
        else:
            assert len(r.history["val_accuracy"]) == 10 and r.training is not None
    assert summary.segments < 4 * 4  # one call per rung reached, not one per epoch
    assert sum(r.epochs for r in ended.values()) < 40


def test_a_repeated_point_is_not_trained_again_and_the_search_stops_when_the_space_is_tried(data):
    cfg = SweepConfig(base=TrainConfig(n_samples=400, epochs=2), lrs=[1e-3, 1e-2], search="random", n_trials=10)
    started, ended, summary = search(cfg, data)
    assert sorted(c.lr for c in started) == [1e-3, 1e-2]  # each point trained once
    assert all(r.outcome == "completed" for r in ended.values())
    assert summary.stop_reason == "every point of the space tried (2)" and summary.trainings == 2


def test_tpe_draws_trials_from_a_range_and_a_diverging_trial_fails_with_its_epoch(data):
    cfg = SweepConfig(base=TrainConfig(n_samples=400, epochs=3, weight_decay=100.0), optimizers=["adamw"],
                      search="tpe", n_trials=4, lr_range=[1e-3, 1.0])
    started, ended, summary = search(cfg, data)
    assert summary.trainings == 4 and len({c.lr for c in started}) == 4
    assert all(1e-3 <= c.lr <= 1.0 for c in started)
    for i, r in ended.items():
        if r.outcome == "failed":
            assert r.error.startswith("TrainingDiverged: training diverged") and r.epoch >= 1
    # lr * weight_decay >= 2 flips the weights' sign and grows them each step: those trials diverge
    assert {r.outcome for i, r in ended.items() if started[i].lr * 100 >= 2} == {"failed"}


def test_the_best_so_far_figure_carries_the_best_completed_value_through_pruned_and_failed_trials():
    from tasks.plots import plot_best_so_far

    fig = plot_best_so_far([("pruned", 0.6), ("completed", 0.8), ("pruned", 0.95), ("failed", None),
                            ("completed", 0.7), ("completed", 0.9)], "val_accuracy", "max")
    step, completed, pruned, failed = fig.axes[0].lines
    assert list(step.get_xdata()) == [2, 3, 4, 5, 6] and list(step.get_ydata()) == [0.8, 0.8, 0.8, 0.8, 0.9]
    assert list(pruned.get_xdata()) == [1, 3] and list(failed.get_xdata()) == [4]
    low = plot_best_so_far([("completed", 0.5), ("completed", 0.3)], "val_loss", "min").axes[0].lines[0]
    assert list(low.get_ydata()) == [0.5, 0.3]


def test_median_pruning_stops_trials_below_the_median_at_its_checks(data):
    cfg = SweepConfig(base=TrainConfig(n_samples=400, epochs=8), lrs=[1e-2, 2e-2, 1e-6, 1e-7], prune="median")
    pruning = make_pruner("median", 8, n_startup_trials=2)
    assert pruning.checks == (2, 3, 4, 5, 6, 7)
    started, ended, _ = search(cfg, data, pruning=pruning)
    outcomes = {started[i].lr: (r.outcome, r.epochs) for i, r in ended.items()}
    assert outcomes[1e-2] == outcomes[2e-2] == ("completed", 8)  # the first two: the pruner's start-up
    assert outcomes[1e-6][0] == outcomes[1e-7][0] == "pruned" and outcomes[1e-6][1] == 2
