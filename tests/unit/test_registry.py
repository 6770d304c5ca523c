"""Promotion rules (tasks/registry.py) on a real SQLite MLflow store: compatibility, ties, races."""

from __future__ import annotations

import time

import pytest

from tasks import registry
from tasks.registry import promote_if_better, rank_key, schema_tags
from tests.helpers.registry import SCHEMA, candidate, champion, race, slow_alias_reads
from trackflow.naming import names

def test_the_first_version_takes_the_alias(client):
    v = candidate(client, "m", 0.6)
    p = promote_if_better("m", v, "val_accuracy", "champion")
    assert p.promoted and champion(client) == v
    assert p.reason == "models:/m/1 is now @champion: no version held the alias"


def test_a_better_version_takes_it_and_a_worse_one_does_not(client):
    promote_if_better("m", candidate(client, "m", 0.7), "val_accuracy", "champion")
    worse = promote_if_better("m", candidate(client, "m", 0.6), "val_accuracy", "champion")
    assert not worse.promoted and champion(client) == "1"
    assert worse.reason == "@champion stays version 1: val_accuracy 0.6000 does not beat version 1's 0.7000"
    better = promote_if_better("m", candidate(client, "m", 0.8), "val_accuracy", "champion")
    assert better.promoted and champion(client) == "3" and (better.previous_version, better.previous_value) == ("1", 0.7)


def test_the_last_epoch_is_compared_not_the_best_one(client):
    promote_if_better("m", candidate(client, "m", 0.7), "val_accuracy", "champion")
    p = promote_if_better("m", candidate(client, "m", [0.95, 0.65]), "val_accuracy", "champion")
    assert not p.promoted and p.value == 0.65


def test_val_loss_is_the_direction_min(client):
    promote_if_better("m", candidate(client, "m", 0.7, val_loss=0.4), "val_loss", "champion")
    assert not promote_if_better("m", candidate(client, "m", 0.9, val_loss=0.5), "val_loss", "champion").promoted
    assert promote_if_better("m", candidate(client, "m", 0.1, val_loss=0.3), "val_loss", "champion").promoted
    assert champion(client) == "3"


def test_a_tie_goes_to_the_lower_val_loss_and_otherwise_the_champion_stays(client):
    promote_if_better("m", candidate(client, "m", 0.75, val_loss=0.40), "val_accuracy", "champion")
    same = promote_if_better("m", candidate(client, "m", 0.75, val_loss=0.40), "val_accuracy", "champion")
    assert not same.promoted and champion(client) == "1"
    assert "ties version 1's 0.7500 and val_loss 0.4000 is not lower than its 0.4000" in same.reason
    higher = promote_if_better("m", candidate(client, "m", 0.75, val_loss=0.45), "val_accuracy", "champion")
    assert not higher.promoted and champion(client) == "1"
    lower = promote_if_better("m", candidate(client, "m", 0.75, val_loss=0.35), "val_accuracy", "champion")
    assert lower.promoted and champion(client) == "4"


@pytest.mark.parametrize("change, what", [
    ({"inputs": ["a", "c"]}, "input columns"),
    ({"target": "label"}, "target"),
    ({"classes": [0, 1, 2]}, "classes"),
    ({"inputs": ["feature_0"], "target": "target"}, "input columns and target"),
    ({"inputs": ["feature_0"], "target": "target", "classes": ["x", "y"]}, "input columns, target and classes"),
])
def test_a_model_of_other_data_is_registered_but_never_promoted(client, change, what):
    promote_if_better("m", candidate(client, "m", 0.6), "val_accuracy", "champion")
    p = promote_if_better("m", candidate(client, "m", 0.99, schema=SCHEMA | change), "val_accuracy", "champion")
    assert not p.promoted and champion(client) == "1"
    verb = "differs" if what == "target" else "differ"
    assert p.reason.startswith(f"@champion stays version 1: this model's {what} {verb} from it")
    assert p.reason.endswith("to keep both, pass another config.model_name")  # a flow run's words
    with names("cli"):
        p = promote_if_better("m", candidate(client, "m", 0.99, schema=SCHEMA | change), "val_accuracy", "champion")
    assert p.reason.endswith("to keep both, pass another --model-name")


def test_input_columns_compare_as_a_set_and_long_lists_as_a_digest():
    assert schema_tags(["a", "b"], "y", [0, 1]) == schema_tags(["b", "a"], "y", ["0", "1"])
    many = schema_tags(["a"], "y", [f"class {i}" for i in range(200)])["trackflow.classes"]
    assert many.startswith("200 classes, sha256 ") and len(many) < 60


def test_a_champion_registered_before_schema_tags_is_judged_by_its_runs_params(client):
    old = candidate(client, "m", 0.6, schema=None, params={"features": '["a", "b"]', "target": "y"})
    promote_if_better("m", old, "val_accuracy", "champion")
    other = promote_if_better("m", candidate(client, "m", 0.9, schema=SCHEMA | {"inputs": ["x"]}), "val_accuracy",
                              "champion")
    assert not other.promoted and "input columns differ" in other.reason
    same = promote_if_better("m", candidate(client, "m", 0.9), "val_accuracy", "champion")
    assert same.promoted and champion(client) == "3"


def test_rank_key_sorts_best_first_then_lower_loss_then_given_order():
    trials = [("a", 0.8, 0.5), ("b", 0.9, 0.6), ("c", 0.9, 0.4), ("d", 0.8, 0.5), ("e", 0.9, 0.4)]
    ranked = sorted(trials, key=lambda t: rank_key("val_accuracy", t[1], t[2]))
    assert [t[0] for t in ranked] == ["c", "e", "b", "a", "d"]
    by_loss = sorted(trials, key=lambda t: rank_key("val_loss", t[2], t[2]))
    assert [t[0] for t in by_loss] == ["c", "e", "a", "d", "b"]


# --------------------------------------------------------------------------- two promotions at once


@pytest.mark.parametrize("lock", ["fcntl", "registry"])
def test_two_promotions_at_once_leave_the_better_one(client, monkeypatch, lock):
    if lock == "registry":  # the marker used for PostgreSQL and tracking servers, here on SQLite
        monkeypatch.setattr(registry.store, "sqlite_path", lambda uri: None)
    slow_alias_reads(monkeypatch, {"better": 0.05, "worse": 0.6})
    for round_ in range(3):
        name = f"m{round_}"
        promote_if_better(name, candidate(client, name, 0.5), "val_accuracy", "champion")
        better, worse = candidate(client, name, 0.9), candidate(client, name, 0.7)
        results = race(client, name, better, worse)
        assert set(results) == {"better", "worse"}
        assert champion(client, name) == better, (round_, results)
    assert not [m.name for m in client.search_registered_models() if "promotion-lock" in m.name]


def test_a_registry_lock_left_by_a_dead_process_is_broken(client, monkeypatch):
    monkeypatch.setattr(registry.store, "sqlite_path", lambda uri: None)
    client.create_registered_model("m.promotion-lock.champion",
                                   tags={"trackflow.lock_since": str(time.time() - registry.STALE_LOCK - 1)})
    p = promote_if_better("m", candidate(client, "m", 0.5), "val_accuracy", "champion")
    assert p.promoted and [m.name for m in client.search_registered_models()] == ["m"]


def test_a_lock_released_while_the_registry_reports_the_clash_is_taken_on_the_next_try(client, monkeypatch):
    """MLflow answers a taken name by reading the model that holds it; if the holder deleted it in between, the
    answer is RESOURCE_DOES_NOT_EXIST (a race seen through `mlflow server`), which is no error for the lock."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    monkeypatch.setattr(registry.store, "sqlite_path", lambda uri: None)
    create, answered = MlflowClient.create_registered_model, []

    def released_meanwhile(self, name, *args, **kwargs):
        if name == "m.promotion-lock.champion" and not answered:
            answered.append(name)
            raise MlflowException(f"Registered Model with name={name} not found", RESOURCE_DOES_NOT_EXIST)
        return create(self, name, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_registered_model", released_meanwhile)
    p = promote_if_better("m", candidate(client, "m", 0.5), "val_accuracy", "champion")
    assert answered and p.promoted and [m.name for m in client.search_registered_models()] == ["m"]


def test_a_sweeps_ranking_breaks_ties_by_val_loss_then_grid_order():
    from types import SimpleNamespace

    from flows.sweep import SweepResult, Trial
    from trackflow.config import TrainConfig

    def trial(lr, acc, loss):
        outcome = SimpleNamespace(history={"val_accuracy": [0.1, acc], "val_loss": [9.0, loss]})
        return Trial(TrainConfig(lr=lr), f"run-{lr}", outcome)

    grid = [trial(0.1, 0.8, 0.3), trial(0.2, 0.9, 0.5), trial(0.3, 0.9, 0.4), trial(0.4, 0.9, 0.4)]
    ranked = SweepResult("parent", "0", "val_accuracy", trials=grid).ranked()
    assert [t.config.lr for t in ranked] == [0.3, 0.4, 0.2, 0.1]
    by_loss = SweepResult("parent", "0", "val_loss", trials=grid).ranked()
    assert [t.config.lr for t in by_loss] == [0.1, 0.3, 0.4, 0.2]

