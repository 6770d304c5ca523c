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


def test_a_value_outside_the_choices_exits_2_in_one_line_naming_them():
    p = subprocess.run([TRACKFLOW, "sweep", "--runner", "threads"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert p.stderr.splitlines() == [  # no usage block above it
        "trackflow sweep: error: argument --runner: invalid choice: 'threads' (choose from 'auto', 'sequential', "
        "'processes', 'dask') (see: trackflow sweep --help)"]


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
    from cli.main import main
    from trackflow.heap import settle

    assert main(["train", "--lr", "-1"]) == 2  # a usage error, before any flow is imported
    assert "--lr" in capsys.readouterr().err
    assert restore_gc.isenabled() and restore_gc.get_freeze_count() > 0

    restore_gc.unfreeze()
    restore_gc.disable()
    settle()
    assert restore_gc.isenabled() and restore_gc.get_freeze_count() > 0
    assert restore_gc.get_threshold()[0] == 50_000


def test_a_one_off_commands_links_point_at_the_ui_serving_its_prefect_home():
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_API_PORT, PREFECT_UI_URL, temporary_settings

    from cli.prefect_api import home_ui_url, link_line

    # A one-off command has no API URL (the UI URL derives from it): undo the session server's, if one is up.
    with temporary_settings(updates={PREFECT_SERVER_API_PORT: 4311},
                            restore_defaults={PREFECT_UI_URL, PREFECT_API_URL}):
        # `make server PREFECT_PORT=4311`
        assert home_ui_url() == "http://127.0.0.1:4311"
    with temporary_settings(updates={PREFECT_UI_URL: "https://prefect.example.org/"}):
        assert home_ui_url() == "https://prefect.example.org"
    assert link_line("http://h/runs/flow-run/1", one_off=True).endswith("(start the UI with `make server`)")
    assert link_line("http://h/runs/flow-run/1", one_off=False) == "Prefect flow run: http://h/runs/flow-run/1"


@pytest.mark.parametrize("args", [["runs", "reap"], ["train", "--n-samples", "300", "--epochs", "1"]])
def test_a_read_only_store_fails_before_any_work_with_one_line(mlflow_store, capsys, restore_gc, args):
    from cli.main import main
    from tests.helpers.store import all_runs, read_only
    from trackflow import store

    db = store.sqlite_path(mlflow_store)
    with read_only(db):
        assert main(args) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"trackflow {args[0]}: MLflow store {db} cannot be written "
                                "(attempt to write a readonly database); make the file and its folder writable by "
                                "this user (permissions, `lsattr` for the immutable flag, a read-only mount), or "
                                "point MLFLOW_TRACKING_URI at a writable store"]
    assert "run(s)" not in out  # `runs reap` no longer reports "0 runs" on a store it could not have written
    assert all_runs(mlflow_store) == []


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    from cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"trackflow {version('trackflow')}\n"


@pytest.mark.parametrize("kind", ["text", "audio"])
def test_infer_help_describes_the_command_not_the_config_class(kind):
    from cli.main import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["infer"]._subparsers._group_actions[0].choices[kind]
    assert "Parameters of" not in sub.description and "(`trackflow infer" not in sub.description
    assert "IN_DIR" in sub.description and "--out to resume" in sub.description


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf"])
def test_runs_reap_refuses_a_stale_after_that_would_reap_live_runs(value, capsys, restore_gc, mlflow_store):
    from cli.main import main
    from tests.helpers.store import all_runs

    assert main(["runs", "reap", "--stale-after", value]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("trackflow runs: --stale-after must be a number of minutes above 0 (got ")
    assert len(err.splitlines()) == 1 and out == ""


BAD_SERVE_FILES = {
    "yaml syntax": ("deployments: [\n  - name: x\n", "is not valid YAML"),
    "bad cron": None,  # built from prefect.yaml below
    "bad timezone": None,
    "bad parameter": None,
    "no deployments list": ("deployments: 3\n", "has no `deployments:` list"),
    "missing file": (None, "cannot read"),
}


@pytest.mark.parametrize("case", list(BAD_SERVE_FILES))
def test_serve_refuses_a_bad_file_with_one_line_before_printing_anything(case, tmp_path, capsys, restore_gc,
                                                                          monkeypatch):
    import yaml

    from cli.main import main
    from flows.deployments import PREFECT_YAML

    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # the file is checked before the server is asked for
    path = tmp_path / "prefect.yaml"
    raw = yaml.safe_load(PREFECT_YAML.read_text())
    first = raw["deployments"][0]
    if case == "bad cron":
        first["schedules"][0]["cron"] = "61 * * * *"
        text, says = yaml.safe_dump(raw), f"deployment '{first['name']}': cron: Value error, Invalid cron string"
    elif case == "bad timezone":
        first["schedules"][0]["timezone"] = "Mars/Base"
        text, says = yaml.safe_dump(raw), "timezone: Value error, Invalid timezone"
    elif case == "bad parameter":
        first["parameters"]["config"]["lr"] = -1
        text, says = yaml.safe_dump(raw), "lr: Input should be greater than 0 (got -1)"
    else:
        text, says = BAD_SERVE_FILES[case]
    if text is not None:
        path.write_text(text)
    assert main(["serve", "--file", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no deployment or schedule listed
    [line] = err.splitlines()
    assert line.startswith(f"trackflow serve: ") and str(path) in line and says in line, line


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
                                     "available; use cpu or auto"]
    assert not (tmp_path / "store").exists() and not (tmp_path / "OUT").exists()  # no store made, no Prefect


def test_a_bad_promote_alias_is_refused_before_the_sweep():
    p = subprocess.run([TRACKFLOW, "sweep", "--promote-alias", "a b"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    assert p.stderr.splitlines()[1:] == ["  --promote-alias: an alias may only contain letters, digits, underscores "
                                         "(_) and dashes (-) (got 'a b')"]


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


def test_the_sweep_parses_a_grid_of_network_shapes_and_the_new_axes():
    from cli.main import build_parser

    args = build_parser().parse_args(["sweep", "--hidden-layers-grid", "64,64/128/32,32,32", "--batch-sizes", "32,128",
                                      "--activations", "relu,tanh", "--l1s", "0,0.001", "--weight-decays", "0,0.01",
                                      "--optimizers", "sgd,adagrad,adam,adamw"])
    assert args.hidden_layers_grid == [[64, 64], [128], [32, 32, 32]] and args.batch_sizes == [32, 128]
    assert (args.activations, args.l1s, args.weight_decays) == (["relu", "tanh"], [0.0, 0.001], [0.0, 0.01])
    assert args.optimizers == ["sgd", "adagrad", "adam", "adamw"]
    assert "Network shapes to try, '/' between shapes and ',' within one (64,64/128/32,32,32)" in _help("sweep")


@pytest.mark.parametrize("args, says", [
    (["--hidden-layers-grid", "64,,/"], "argument --hidden-layers-grid: expected int lists like 64,64/128"),
    (["--hidden-layers-grid", "64/"], "argument --hidden-layers-grid: expected int lists like 64,64/128"),
    (["--hidden-layers-grid", "64,x"], "argument --hidden-layers-grid: expected int values separated by commas"),
    (["--optimizers", "rmsprop"], "argument --optimizers: invalid choice(s) ['rmsprop']"),
    (["--activations", "relu,gelu"], "argument --activations: invalid choice(s) ['gelu']"),
])
def test_a_bad_axis_exits_2_with_one_line_naming_the_option(args, says, capsys):
    from cli.main import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["sweep", *args])
    assert exc.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("trackflow sweep: error: ") and says in line and line.endswith("(see: trackflow sweep --help)")


@pytest.mark.parametrize("args, line", [
    (["train", "--momentum", "0.5"],
     "trackflow train: --momentum applies to the sgd optimizer only; add sgd to --optimizer (got adam) or leave "
     "--momentum out"),
    (["sweep", "--momentum", "0.5", "--optimizers", "adam,adamw"],
     "trackflow sweep: --momentum applies to the sgd optimizer only; add sgd to --optimizers (got adam,adamw) or "
     "leave --momentum out"),
    (["sweep", "--batch-size", "64", "--batch-sizes", "32,128"],
     "trackflow sweep: --batch-size and --batch-sizes both set the trials' batch_size; give one"),
    (["sweep", "--hidden-layers", "64", "--hidden-layers-grid", "32/16"],
     "trackflow sweep: --hidden-layers and --hidden-layers-grid both set the trials' hidden_layers; give one"),
    (["sweep", "--batch-sizes", "0,32"],
     "  --batch-sizes: value 0: Input should be greater than or equal to 1 (got [0, 32])"),
])
def test_options_that_would_change_nothing_or_conflict_are_refused_before_any_work(args, line, capsys, restore_gc,
                                                                                   mlflow_store):
    from cli.main import main

    assert main(args) == 2
    assert line in capsys.readouterr().err.splitlines()


def test_momentum_goes_with_sgd(capsys, restore_gc, monkeypatch):
    """--momentum with sgd passes the option checks and reaches the data check (here, refused for its size)."""
    from cli.main import main

    assert main(["train", "--optimizer", "sgd", "--momentum", "0.5", "--hidden-layers", "65536,65536"]) == 2
    assert "needs ~" in capsys.readouterr().err
    assert main(["sweep", "--optimizers", "sgd,adam", "--momentum", "0.5", "--hidden-layers-grid", "64/65536,65536"]) == 2
    err = capsys.readouterr().err
    assert "the largest trial (hidden layers 65536,65536, batch 32, adam) needs ~" in err
    assert "narrow --hidden-layers-grid or --hidden-layers (or lower --batch-sizes or --batch-size)" in err


@pytest.mark.parametrize("args, says", [
    (["--trials", "5"], "--trials goes with --search random or tpe"),
    (["--lr-range", "1e-4,1e-1"], "--lr-range goes with --search random or tpe"),
    (["--search", "tpe", "--lr-range", "1e-4,1e-1", "--lrs", "0.1"], "either --lrs or --lr-range"),
    (["--search", "random", "--lr-range", "0.1,0.01"], "0 < LOW < HIGH <= 10"),
    (["--search", "tpe", "--trials", "0"], "--trials: Input should be greater than or equal to 1"),
])
def test_search_options_are_refused_before_any_work(restore_gc, capsys, args, says):
    from cli.main import main

    assert main(["sweep", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_a_command_run_in_the_test_process_leaves_mlflow_pointing_where_it_was(tmp_path):
    """call_main puts back the URIs a command sets (and exports) through store.configure, so a later in-process
    MLflow call in the same pytest worker reads its own store, not the last command's."""
    import os

    import mlflow

    from tests.helpers.cli import _process_state_kept
    from trackflow import store

    before, exported = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with _process_state_kept():
        os.environ["MLFLOW_TRACKING_URI"] = other
        store.configure()
        assert mlflow.get_tracking_uri() == other
    assert mlflow.get_tracking_uri() == before != other
    assert os.environ.get("MLFLOW_TRACKING_URI") == exported


@pytest.mark.parametrize("argv, line", [
    (["train", "--bogus"], "trackflow train: error: unrecognized arguments: --bogus (see: trackflow train --help)"),
    (["infer", "text", "in", "--out", "o", "x"],
     "trackflow infer text: error: unrecognized arguments: x (see: trackflow infer text --help)"),
    (["runs", "show", "a", "b"], "trackflow runs show: error: unrecognized arguments: b (see: trackflow runs show --help)"),
    (["--bogus"], "trackflow: error: unrecognized arguments: --bogus (see: trackflow --help)"),
    (["ui", "--port", "99999"],
     "trackflow ui: error: argument --port: expected a TCP port from 1 to 65535, got '99999' (see: trackflow ui --help)"),
])
def test_an_argument_no_command_takes_is_refused_by_the_command_it_was_given_to(argv, line, capsys):
    from cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_reset_cancels_the_watchdog_a_first_signal_started():
    """A process that goes on after `main()` (this suite) must not be ended GRACE s later by its watchdog."""
    import os
    import signal

    from cli import signals

    signals.install()  # the handlers are put back after the test (tests/conftest.py)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
    [watchdog] = signals._watchdogs
    assert watchdog.is_alive() and signals._received == [signal.SIGINT]
    signals.reset()
    watchdog.join(5)
    assert not watchdog.is_alive() and watchdog.finished.is_set()
    assert signals._received == [] and signals._watchdogs == []
