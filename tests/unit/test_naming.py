"""Messages name a parameter as its reader set it: `--data` at the CLI, `config.data` in a flow run."""

import pytest
from pydantic import ValidationError

from tasks.data import DataError, load_table
from trackflow.config import TrainConfig
from trackflow.naming import names, param


def test_param_is_a_config_field_unless_the_cli_asks_for_options():
    assert (param("data"), param("model_name")) == ("config.data", "config.model_name")
    with names("cli"):
        assert (param("data"), param("model_name"), param("out_dir")) == ("--data", "--model-name", "--out")
        with names("config"):
            assert param("data") == "config.data"
        assert param("data") == "--data"
    assert param("data") == "config.data"


def test_a_data_error_and_a_config_error_name_the_parameter_of_the_caller(tmp_path):
    missing = str(tmp_path / "missing.csv")
    with pytest.raises(DataError, match=r"does not exist; check config\.data$"):
        load_table(missing, "y", None, [])
    with pytest.raises(ValidationError, match=r"name the column to predict with config\.target"):
        TrainConfig(data=missing)
    with names("cli"):
        with pytest.raises(DataError, match=r"does not exist; check --data$"):
            load_table(missing, "y", None, [])
        with pytest.raises(ValidationError, match=r"name the column to predict with --target"):
            TrainConfig(data=missing)


def test_the_cli_names_options_and_leaves_the_default_as_it_was(capsys):
    from cli.main import main

    assert main(["train", "--data", "t.csv"]) == 2
    assert "--target" in capsys.readouterr().err
    assert param("target") == "config.target"
