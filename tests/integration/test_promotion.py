"""@champion across commands: a train promotes like a sweep, only a model of the same data takes the alias."""

import pytest
from mlflow.exceptions import MlflowException

from flows.sweep import sweep_pipeline
from flows.train import training_pipeline
from tests.helpers.cli import call_main
from tests.helpers.tables import breast_cancer_frame, wine_frame, write
from trackflow.config import SweepConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("prefect_server")

GENERATED = TrainConfig(n_samples=300, epochs=2)


def champion(client, name="classifier"):
    return client.get_model_version_by_alias(name, "champion")


def test_a_train_on_an_empty_registry_becomes_champion_with_its_schema(client):
    result = training_pipeline(GENERATED)
    assert result.promoted and result.model_version == "1"
    assert result.promotion_reason == "models:/classifier/1 is now @champion: no version held the alias"
    mv = champion(client)
    assert str(mv.version) == "1" and mv.run_id == result.run_id
    assert mv.tags["trackflow.inputs"].startswith("10 columns, sha256 ")
    assert (mv.tags["trackflow.target"], mv.tags["trackflow.classes"]) == ("target", '["0", "1"]')
    assert client.get_run(result.run_id).data.tags["trackflow.promotion"] == "promoted"
    again = training_pipeline(GENERATED)  # the same model again: a tie on both metrics keeps the champion
    assert not again.promoted and str(champion(client).version) == "1"
    assert "ties version 1's" in again.promotion_reason


def test_no_promote_registers_only(client):
    result = training_pipeline(GENERATED.model_copy(update={"promote": False}))
    assert result.model_version == "1" and not result.promoted and result.promotion_reason == ""
    with pytest.raises(MlflowException, match="alias champion not found"):
        champion(client)


def test_the_weekly_sweep_on_the_generated_set_never_replaces_a_champion_of_the_users_table(client, tmp_path):
    wine = write(wine_frame(), tmp_path / "wine.parquet")
    users = training_pipeline(TrainConfig(data=str(wine), target="cultivar", epochs=2))
    assert users.promoted
    weekly = sweep_pipeline(SweepConfig(lrs=[0.01], base=GENERATED))  # prefect.yaml's weekly-sweep, one trial
    assert weekly.model_version == "2" and not weekly.promoted
    assert weekly.promotion_reason == ("@champion stays version 1: this model's input columns, target and classes "
                                       "differ from it, so requests made for it would fail here; to keep both, pass "
                                       "another config.model_name")
    assert champion(client).run_id == users.run_id
    assert client.get_run(weekly.run_id).data.tags["trackflow.promotion"] == "kept"
    own = sweep_pipeline(SweepConfig(lrs=[0.01], base=GENERATED.model_copy(update={"model_name": "generated"})))
    assert own.promoted and champion(client, "generated").run_id == own.best.run_id


def test_the_cli_says_in_one_line_whether_it_promoted_and_why(client, tmp_path):
    p = call_main("train", "--n-samples", "300", "--epochs", "2")
    assert p.returncode == 0, p.stderr
    assert "Promotion:    models:/classifier/1 is now @champion: no version held the alias\n" in p.stdout
    table = write(breast_cancer_frame(), tmp_path / "bc.csv")  # same target name and classes, other columns
    p = call_main("train", "--data", table, "--target", "target", "--drop", "patient id", "--epochs", "2")
    assert p.returncode == 0, p.stderr
    [line] = [s for s in p.stdout.splitlines() if s.startswith("Promotion:")]
    assert line == ("Promotion:    @champion stays version 1: this model's input columns differ from it, so requests "
                    "made for it would fail here; to keep both, pass another --model-name")
    assert str(champion(client).version) == "1"
