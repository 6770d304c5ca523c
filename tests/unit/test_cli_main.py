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


@pytest.mark.parametrize("command", [("train",), ("sweep",), ("infer", "text", "IN", "--out", "OUT")],
                         ids=["train", "sweep", "infer"])
def test_device_cuda_without_cuda_is_refused_before_any_work(command, tmp_path):
    import os

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "IN").mkdir()
    (tmp_path / "IN" / "a.txt").write_text("a prompt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    p = subprocess.run([TRACKFLOW, *command, "--device", "cuda"], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL, cwd=tmp_path, env=env)
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.splitlines() == [f"trackflow {command[0]}: --device cuda was asked for but CUDA is not "
                                     "available; use --device cpu or auto"]
    assert not (tmp_path / "store").exists() and not (tmp_path / "OUT").exists()  # no store made, no Prefect


def test_a_bad_promote_alias_is_refused_before_the_sweep():
    p = subprocess.run([TRACKFLOW, "sweep", "--promote-alias", "a b"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert p.stderr.splitlines()[1:] == ["  --promote-alias: an alias may only contain letters, digits, underscores "
                                         "(_) and dashes (-) (got 'a b')"]
