"""What README.md shows a command printing is what the command prints: run here, numbers included.

The convention (tests/helpers/readme.py reads it):
- Put `<!-- output: NAME -->` on its own line before a fenced block that shows output. Every
  such block is checked by a test here (test_every_output_block_is_checked fails otherwise).
- A ```console block is a session: its `$ COMMAND` lines run in order, in one folder the test
  prepares (with `.venv` linked there, so `.venv/bin/trackflow` works as written, and
  `.venv/bin` first on PATH); the lines under it must appear, contiguously, in what that
  command printed on stdout. Each `trackflow ARGS` (a line, or a part of one between `&&`)
  runs in this process (`call_main`), sparing a process start (~5 s of imports); the
  console script itself is `make run`'s test. Anything else runs in bash. Run one with
  `run_session(name, folder)`.
- Any other output block is compared with the printed lines by the test that runs its command.
- Only what differs from run to run becomes a placeholder: `<run-id>`, `<flow-run-id>`,
  `<path>`, `<rate>` (tests/helpers/readme.py PLACEHOLDERS). Metrics are deterministic on the same seed
  here, so they are compared as printed.
- A `<!-- measured: benchmarks/SCRIPT.py -->` block holds a benchmark's dated figures, which
  no test reproduces (tests/unit/test_readme.py checks only that its script exists).
To add a checked block: mark it, then add a test below (or to the test of the same command)
that prepares the folder and calls `run_session`, or compares the block's lines itself.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import readme
from tests.helpers.cli import cli_env

BLOCKS = readme.output_blocks()
VENV_BIN = Path(sys.executable).parent
CHECKED: set[str] = set()  # the blocks a test here checks; each test adds its names


def checks(*names):
    """Decorate the test that checks these output blocks."""
    CHECKED.update(names)
    return lambda test: test


def session_env() -> dict[str, str]:
    return cli_env(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


TRACKFLOW_AS_WRITTEN = ("trackflow", ".venv/bin/trackflow")
SHELL_SYNTAX = set("|&;<>()$`*?[]{}~")


def run_step(command: str, folder: Path) -> subprocess.CompletedProcess:
    """One `$ COMMAND` line, in `folder`: its parts between `&&` in order, up to the first that fails, their stdout
    joined. A plain `trackflow ARGS` part runs through `call_main` in this process; any other part in bash."""
    from tests.helpers.cli import call_main

    stdout, stderr, p = [], [], None
    for part in command.split(" && "):
        words = shlex.split(part)
        if words[0] in TRACKFLOW_AS_WRITTEN and not SHELL_SYNTAX & set(part):
            assert (folder / words[0]).exists() or words[0] == "trackflow", f"{words[0]} is not in {folder}"
            p = call_main(*words[1:], cwd=folder)
        else:
            p = subprocess.run(["bash", "-c", part], cwd=folder, env=session_env(), capture_output=True, text=True,
                               timeout=300, stdin=subprocess.DEVNULL)
        stdout.append(p.stdout)
        stderr.append(p.stderr)
        if p.returncode:
            break
    return subprocess.CompletedProcess(command, p.returncode, "".join(stdout), "".join(stderr))


def run_session(name: str, folder: Path) -> list[str]:
    """Run the console block `name` in `folder` and compare; returns each command's stdout."""
    if not (folder / ".venv").exists():  # `.venv/bin/...` as the README writes it
        (folder / ".venv").symlink_to(VENV_BIN.parent)
    outputs = []
    for command, expected in BLOCKS[name].session():
        p = run_step(command, folder)
        assert p.returncode == 0, f"README {name}: `{command}` exited {p.returncode}:\n{p.stderr[-3000:]}"
        got = p.stdout.splitlines()
        assert readme.appears_in(expected, got), (f"README {name}: `{command}` printed\n{p.stdout}\n"
                                                  f"not the README's\n" + "\n".join(expected))
        outputs.append(p.stdout)
    return outputs


def _without_prefect_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}


@pytest.mark.slow
@checks("quickstart-train", "one-off-link")
def test_make_run_prints_what_the_quickstart_shows(tmp_path, prefect_home_template):
    # As `make run` runs it: one-off, with its own temporary Prefect server, on a PREFECT_HOME of its own (migrated
    # beforehand: a fresh one's first use is test_reliability's).
    shutil.copytree(prefect_home_template, tmp_path / "prefect-home")
    env = _without_prefect_settings() | {"PREFECT_HOME": str(tmp_path / "prefect-home")}
    p = subprocess.run([VENV_BIN / "trackflow", "train"], env=env, capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    got = p.stdout.splitlines()
    shown = list(BLOCKS["quickstart-train"].lines)
    assert readme.matches(shown, got), f"`trackflow train` printed\n{p.stdout}\nnot the README's\n" + "\n".join(shown)
    assert readme.appears_in(list(BLOCKS["one-off-link"].lines), got)


def _served_request() -> dict:
    """The body of the README's curl request to the served model."""
    for block in readme.blocks(readme.README.read_text()):
        text = "\n".join(block.lines)
        if "curl" in text and "/invocations" in text:
            words = shlex.split(text.split("curl", 1)[1])
            return json.loads(words[words.index("-d") + 1])
    raise AssertionError("README.md shows no curl request to /invocations")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@checks("wine-train", "wine-served", "wine-score")
def test_the_wine_example_prints_served_and_scores_what_the_readme_shows(tmp_path):
    run_session("wine-train", tmp_path)

    # The served answer, from MLflow's own scoring app (what `mlflow models serve` runs under uvicorn;
    # tests/integration/test_serving.py checks that the real server answers as the loaded model does).
    import mlflow
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    app = scoring_server.init(mlflow.pyfunc.load_model("models:/wine@champion"))
    answer = TestClient(app).post("/invocations", json=_served_request())
    assert answer.status_code == 200, answer.text
    # The label exactly; the probabilities (float32, printed with float64's 17 digits) to 1e-5: another CPU's
    # kernels sum in another order and move the last bits (1 ULP of 0.99 on the CI machine against the README's).
    [shown] = BLOCKS["wine-served"].lines
    got, want = answer.json()["predictions"], json.loads(shown)["predictions"]
    assert [sorted(p) for p in got] == [sorted(p) for p in want], answer.text
    assert [p["label"] for p in got] == [p["label"] for p in want], answer.text
    assert [{k: v for k, v in p.items() if k != "label"} for p in got] == [
        pytest.approx({k: v for k, v in p.items() if k != "label"}, rel=1e-5, abs=1e-9) for p in want], answer.text

    run_session("wine-score", tmp_path)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@checks("skip-unchanged")
def test_skip_unchanged_prints_what_the_readme_shows(tmp_path):
    from sklearn.datasets import load_wine

    from flows.train import training_pipeline
    from tests.helpers.tables import write
    from trackflow.config import TrainConfig

    wine = load_wine(as_frame=True).frame
    for i in range(3):
        write(wine.iloc[i::3], (tmp_path / "wine" if i < 2 else tmp_path) / f"part-{i + 1}.parquet")
    # The run the README's first command finds (the same key as the command's: config, data, code, versions),
    # trained in this process to spare a command's start-up.
    training_pipeline(TrainConfig(data=str(tmp_path / "wine"), target="target", model_name="wine",
                                  skip_unchanged=True))
    run_session("skip-unchanged", tmp_path)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@checks("offline-infer")
def test_the_offline_inference_quickstart_prints_what_the_readme_shows(tmp_path):
    run_session("offline-infer", tmp_path)


def test_every_output_block_is_checked():
    assert set(BLOCKS) <= CHECKED, f"README output blocks no test checks: {sorted(set(BLOCKS) - CHECKED)}"
    assert CHECKED <= set(BLOCKS), f"tests check README blocks that are gone: {sorted(CHECKED - set(BLOCKS))}"
