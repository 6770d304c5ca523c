"""The command line without running a flow: options generated from the config models, exit codes, start-up."""

import subprocess

import pytest

from tests.helpers.cli import TRACKFLOW
from trackflow.config import SweepConfig, TextInferConfig, TrainConfig


def test_console_script_is_installed():
    assert TRACKFLOW, "the trackflow console script is not installed in this environment"


def _help(*args: str) -> str:
    p = subprocess.run([TRACKFLOW, *args, "--help"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    return " ".join(p.stdout.split())


def test_help_shows_every_field_with_the_config_models_default():
    train = _help("train")
    for name, field in TrainConfig.model_fields.items():
        assert f"--{name.replace('_', '-')}" in train, name
    assert f"Passes over the training split. Default: {TrainConfig().epochs}. (allowed: >= 1" in train
    text = _help("infer", "text")
    assert TextInferConfig.model_fields["glob"].default in text
    assert "--lrs" in _help("sweep") and "--runner" in _help("sweep")
    assert set(SweepConfig.model_fields["runner"].annotation.__args__) == {"auto", "sequential", "processes", "dask"}


@pytest.mark.parametrize("args, lines", [
    (["train", "--lr", "-1"], ["--lr: Input should be greater than 0 (got -1.0)"]),
    (["train", "--lr", "-1", "--epochs", "0"],
     ["--epochs: Input should be greater than or equal to 1 (got 0)", "--lr: Input should be greater than 0 (got -1.0)"]),
])
def test_bad_options_exit_2_with_one_line_each_naming_the_allowed_range(args, lines):
    p = subprocess.run([TRACKFLOW, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert p.stderr.splitlines() == [f"trackflow {args[0]}: invalid arguments:", *(f"  {line}" for line in lines)]


def test_a_value_outside_the_choices_exits_2_naming_them():
    p = subprocess.run([TRACKFLOW, "sweep", "--runner", "threads"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert p.stderr.splitlines()[-1].endswith(
        "argument --runner: invalid choice: 'threads' (choose from 'auto', 'sequential', 'processes', 'dask')")


@pytest.fixture
def restore_gc():
    import gc

    threshold = gc.get_threshold()
    yield gc
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.enable()


def test_main_hands_back_an_enabled_collector_after_any_outcome(restore_gc, capsys):
    """main() turns the cyclic GC off through the imports; no exit path may leave it off."""
    from cli.main import _settle_heap, main

    assert main(["train", "--lr", "-1"]) == 2  # a usage error, before any flow is imported
    assert "--lr" in capsys.readouterr().err
    assert restore_gc.isenabled() and restore_gc.get_freeze_count() > 0

    restore_gc.unfreeze()
    restore_gc.disable()
    _settle_heap()
    assert restore_gc.isenabled() and restore_gc.get_freeze_count() > 0
    assert restore_gc.get_threshold()[0] == 50_000


def _semicolons(path):
    from tests.helpers.tables import wine_frame

    path.write_text(wine_frame().to_csv(index=False, sep=";"))
    return ["--target", "cultivar"]


def _duplicates(path):
    path.write_text("a,a,y\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(40)))
    return ["--target", "y"]


def _inf(path):
    path.write_text("a,y\n" + "".join(f"{'inf' if i == 6 else i},{i % 2}\n" for i in range(40)))
    return ["--target", "y"]


def _continuous(path):
    import numpy as np

    path.write_text("a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(np.random.default_rng(0).random(3000))))
    return ["--target", "y"]


def _huge_network(path):
    path.write_text("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    return ["--target", "y", "--hidden-layers", "65536,65536"]


@pytest.mark.parametrize("make, message", [
    (_semicolons, "looks separated by ';', not ','; pass --sep ';'"),
    (_duplicates, "has duplicate column names 'a' in its header"),
    (_inf, "column 'a' of '{path}' holds inf in row 7"),
    (_continuous, "target column 'y' of '{path}' has 3,000 classes in 3,000 rows (is it a continuous number?)"),
    (_huge_network, "this training needs ~"),
], ids=["semicolons", "duplicate-header", "inf", "continuous-target", "huge-network"])
def test_bad_tables_exit_2_with_one_line_before_any_run(restore_gc, capsys, tmp_path, monkeypatch, make, message):
    """In process: the command refuses the table before the store or Prefect are touched."""
    import cli.main

    def no_store():
        raise AssertionError("the store was prepared for a table that is refused")

    monkeypatch.setattr(cli.main, "_prepare_store", no_store)
    path = tmp_path / "t.csv"
    args = make(path)
    assert cli.main.main(["train", "--data", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trackflow train: ")
    assert message.replace("{path}", str(path)) in err


def test_the_generated_set_is_checked_for_memory_too(restore_gc, capsys):
    from cli.main import main

    assert main(["train", "--hidden-layers", "65536,65536"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trackflow train: this training needs ~") and "GB available; narrow --hidden-layers" in err


def test_reading_options_need_data(restore_gc, capsys):
    from cli.main import main

    assert main(["train", "--na-values", "-"]) == 2
    assert "give --data too" in capsys.readouterr().err
