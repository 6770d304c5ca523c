"""The `trackflow` commands against the test Prefect server: the console script as a user runs it (a subprocess)
once, the rest through cli.main in this process (tests/helpers/cli.py)."""

import pytest

from tests.helpers.cli import call_main, run_cli

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_train_end_to_end(client):
    p = run_cli("train", "--n-samples", "300", "--epochs", "2", "--experiment", "cli-exp", "--optimizer", "adamw")
    assert p.returncode == 0, p.stderr
    runs = client.search_runs([client.get_experiment_by_name("cli-exp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["optimizer"] == "adamw" and run.data.params["epochs"] == "2"
    assert run.info.run_id in p.stdout
    assert f"test_accuracy          {run.data.metrics['test_accuracy']:.4f}" in p.stdout
    assert "models:/classifier/1" in p.stdout and "#/experiments/" in p.stdout


@pytest.mark.parametrize(
    "command, args, message",
    [
        ("train", ["--lr", "0"], "--lr: Input should be greater than 0 (got 0.0)"),
        ("train", ["--epochs", "0"], "--epochs: Input should be greater than or equal to 1"),
        ("train", ["--test-size", "1.5"], "--test-size: Input should be less than 1"),
        ("train", ["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
        ("train", ["--n-features", "3"], "n_informative (5) must be <= n_features (3)"),
        ("train", ["--epochs", "ten"], "invalid int value: 'ten'"),
        ("sweep", ["--lrs", "0.1,-1"], "lrs must all be in (0, 10]"),
        ("sweep", ["--lrs", "abc"], "expected float values separated by commas"),
        ("sweep", ["--optimizers", "adam,rmsprop"], "invalid choice(s) ['rmsprop']"),
        ("sweep", ["--hidden-layers-grid", "64,,/"], "argument --hidden-layers-grid: expected int lists"),
        ("sweep", ["--metric", "test_accuracy"], "invalid choice: 'test_accuracy'"),
        ("sweep", ["--workers", "0"], "--workers: Input should be greater than or equal to 1"),
        ("sweep", ["--dask-address", "localhost:8786"], "must look like tcp://HOST:PORT"),
        ("sweep", ["--epochs", "0"], "--epochs: Input should be greater than or equal to 1"),
    ],
)
def test_bad_arguments_exit_2_with_no_run(client, command, args, message):
    p = call_main(command, *args)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr
    assert "Traceback" not in p.stderr
    assert client.search_experiments(filter_string="name = 'classifier'") == []


def test_sweep_end_to_end(client):
    p = call_main("sweep", "--lrs", "0.001,0.05", "--n-samples", "300", "--epochs", "2", "--metric", "val_loss")
    assert p.returncode == 0, p.stderr
    exp = client.get_experiment_by_name("classifier").experiment_id
    parent = client.search_runs([exp], filter_string="tags.`trackflow.kind` = 'sweep'")[0]
    assert parent.data.params["metric"] == "val_loss" and parent.data.params["base_epochs"] == "2"
    assert parent.info.run_id in p.stdout and "Trials ranked by val_loss" in p.stdout
    assert "models:/classifier/1" in p.stdout


def test_train_on_a_real_table_end_to_end(client, tmp_path):
    from tests.helpers.tables import wine_frame, write

    path = write(wine_frame(), tmp_path / "wine.csv")
    p = call_main("train", "--data", path, "--target", "cultivar", "--epochs", "20", "--hidden-layers", "32,16")
    assert p.returncode == 0, p.stderr
    assert "Test metrics (3 classes: barbera, barolo, grignolino)" in p.stdout and "test_f1_macro" in p.stdout
    [run] = client.search_runs([client.get_experiment_by_name("classifier").experiment_id])
    assert run.data.params["hidden_layers"] == "[32, 16]" and run.data.params["target"] == "cultivar"


@pytest.mark.parametrize(
    "table, args, message",
    [
        (None, ["--data", "missing.csv", "--target", "y"], "data file 'missing.csv' does not exist; check --data"),
        ("ok", ["--target", "nope"], "--target 'nope' is not a column of"),
        ("ok", ["--target", "y", "--n-samples", "500"], "--n-samples shapes the generated set; leave it out with --data"),
        ("one-class", ["--target", "y"], "has a single class ('same'); a classifier needs at least two"),
        ("typo", ["--target", "y"], "column 'age' of"),
    ],
    ids=["missing-file", "unknown-target", "generated-option", "single-class", "bad-number"],
)
def test_bad_data_exits_2_with_one_line_and_no_run(client, tmp_path, table, args, message):
    import pandas as pd

    frames = {
        "ok": pd.DataFrame({"a": range(40), "y": [0, 1] * 20}),
        "one-class": pd.DataFrame({"a": range(40), "y": ["same"] * 40}),
        "typo": pd.DataFrame({"age": [str(20 + i) for i in range(40)] + ["forty"], "y": [0, 1] * 20 + [0]}),
    }
    if table:
        frames[table].to_csv(tmp_path / "t.csv", index=False)
        args = ["--data", tmp_path / "t.csv", *args]
    p = call_main("train", *args)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("trackflow train: ") and message in p.stderr
    assert "Traceback" not in p.stderr
    assert client.search_experiments(filter_string="name = 'classifier'") == []
    assert client.search_registered_models() == []


def test_sweep_on_a_table_promotes_the_champion(client, tmp_path):
    from tests.helpers.tables import breast_cancer_frame, write

    path = write(breast_cancer_frame(), tmp_path / "bc.parquet")
    p = call_main("sweep", "--data", path, "--target", "target", "--drop", "patient id", "--lrs", "0.001,0.01",
                  "--epochs", "3")
    assert p.returncode == 0, p.stderr
    champion = client.get_model_version_by_alias("classifier", "champion")
    assert client.get_run(champion.run_id).data.params["data"] == str(path)
