"""The paths users meet in their first week: reruns, odd files, interrupts, kills, two commands at once,
unreachable servers, credentials in URLs. What a process shows (signals, kills, commands at once, its own Prefect
server) runs the `trackflow` console script as a user does; the rest runs cli.main in this process (call_main)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time

import pytest

from tests.helpers.cli import call_main, cli_env
from tests.helpers import processes as P
from tests.helpers.servers import free_port, prefect_api
from tests.helpers.store import all_runs, wait_for_running_run
from trackflow import telemetry

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def own_server_env(tmp_path, prefect_home_template, mlflow_store) -> dict[str, str]:
    """A command with no PREFECT_API_URL: it starts its own temporary Prefect server."""
    home = tmp_path / "prefect-home"
    shutil.copytree(prefect_home_template, home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return telemetry.quiet(env | {"PREFECT_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_store})


def records(out_dir) -> dict[str, dict]:
    recs = [json.loads(x) for x in (out_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    keyed = {r["input"] + (f":{r['line']}" if r["line"] else ""): r for r in recs}
    assert len(keyed) == len(recs), "more than one record for an input"
    return keyed


# --------------------------------------------------------------------------- reruns


def test_rerun_of_a_finished_job_is_a_quiet_success(tmp_path, tiny_models):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text("hi")
    args = ("infer", "text", d, "--out", tmp_path / "out", "--model", tiny_models["text"], "--max-new-tokens", "4")
    first = call_main(*args)
    assert first.returncode == 0, first.stderr
    again = call_main(*args)
    assert again.returncode == 0, again.stderr
    assert "1 inputs: 1 ok, 0 failed (1 already done, skipped)" in again.stdout
    assert (tmp_path / "out" / "results.csv").exists()


def test_rerun_whose_first_window_is_all_done_finishes_the_rest(tmp_path, tiny_models):
    """As after a kill past the first window: 16 inputs done (a whole window at --batch-size 2), 3 new ones."""
    d = tmp_path / "in"
    d.mkdir()
    for i in range(16):
        (d / f"p{i:02d}.txt").write_text(f"prompt {i}")
    args = ("infer", "text", d, "--out", tmp_path / "out", "--model", tiny_models["text"], "--max-new-tokens", "2",
            "--batch-size", "2")
    assert call_main(*args).returncode == 0
    for i in range(16, 19):
        (d / f"p{i:02d}.txt").write_text(f"prompt {i}")
    p = call_main(*args)
    assert p.returncode == 0, p.stderr
    assert "19 inputs: 19 ok, 0 failed (16 already done, skipped)" in p.stdout
    assert all(r["status"] == "ok" for r in records(tmp_path / "out").values())


# --------------------------------------------------------------------------- odd files


def test_fifo_symlinks_and_undecodable_names_in_a_job(tmp_path, tiny_models):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text("hello")
    os.mkfifo(d / "pipe.txt")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", d / "link.txt")
    os.symlink(d / "a.txt", d / "inside.txt")
    (d / os.fsdecode(b"bad\xffname.txt")).write_text("a name that is not UTF-8")
    (d / "empty.txt").write_bytes(b"")
    out = tmp_path / "out"
    p = P.run(("infer", "text", d, "--out", out, "--model", tiny_models["text"], "--max-new-tokens", "3"), cli_env(),
              timeout=180)  # a FIFO read blocking would hang here
    assert p.returncode == 1, p.stderr  # some inputs failed, the job finished
    recs = records(out)
    assert {k: r["status"] for k, r in recs.items()} == {
        "a.txt": "ok", "inside.txt": "ok", "bad\\xffname.txt": "ok", "pipe.txt": "error", "link.txt": "error",
        "empty.txt": "error"}
    assert recs["pipe.txt"]["error"] == "not a regular file (a FIFO); only regular files are read"
    assert "outside the input folder" in recs["link.txt"]["error"]
    import pandas as pd

    assert len(pd.read_csv(out / "results.csv")) == 6


# --------------------------------------------------------------------------- interrupts and kills

LONG_TRAIN = ("train", "--n-samples", "200000", "--epochs", "50", "--experiment", "long")


@pytest.mark.parametrize("sig, code, times", [(signal.SIGINT, 130, 1), (signal.SIGTERM, 143, 1),
                                              (signal.SIGINT, 130, 2), (signal.SIGTERM, 143, 2)],
                         ids=["ctrl-c", "sigterm", "ctrl-c-twice", "sigterm-twice"])
def test_an_interrupt_ends_the_command_within_seconds_with_its_run_killed(tmp_path, request, mlflow_store,
                                                                        sig, code, times):
    """SIGINT to the whole process group (a terminal's Ctrl-C), or SIGTERM (a supervisor), during training; twice
    as a second Ctrl-C, or `timeout` forwarding the terminal's one, sends it. Once: a one-off command, whose
    temporary Prefect server must go with it; twice: against the session's server (the second signal's path)."""
    log = tmp_path / "cmd.log"
    env = request.getfixturevalue("own_server_env") if times == 1 else cli_env()
    proc = P.start(LONG_TRAIN, env, log)
    wait_for_running_run(mlflow_store, proc)
    rc, took, left = P.interrupt(proc, sig, group=(sig == signal.SIGINT), times=times)
    text = log.read_text()
    assert rc == code, text[-3000:]
    assert took < 30, f"took {took:.1f} s to exit"
    if times == 1:  # a second signal may end the process before the unwinding prints its line
        assert text.rstrip().endswith("trackflow train: interrupted")
    assert left == [], f"left running: {[p.cmdline() for p in left]}"
    [run] = all_runs(mlflow_store)
    assert run.info.status == "KILLED"


def test_kill_9_takes_its_server_along_and_the_next_command_reaps_the_run(tmp_path, own_server_env, mlflow_store):
    log = tmp_path / "cmd.log"
    proc = P.start(LONG_TRAIN, own_server_env, log)
    wait_for_running_run(mlflow_store, proc)
    rc, _, left = P.interrupt(proc, signal.SIGKILL, group=False)  # the process alone, as the OOM killer does
    assert rc == -9
    assert left == [], f"outlived the command: {[p.cmdline() for p in left]}"
    [run] = all_runs(mlflow_store)
    assert run.info.status == "RUNNING"  # nobody could end it

    p = P.run(("runs", "reap"), own_server_env)
    assert p.returncode == 0, p.stderr
    assert f"KILLED {run.info.run_id}" in p.stdout
    # no configured Prefect API: a temporary server on the same PREFECT_HOME sets the flow run Crashed
    assert "1 of their Prefect flow run(s) set Crashed" in p.stdout
    [run] = all_runs(mlflow_store)
    assert run.info.status == "KILLED" and "is gone" in run.data.tags["trackflow.reaped"]


def test_the_next_command_reaps_runs_of_a_killed_one(tmp_path, mlflow_store):
    log = tmp_path / "cmd.log"
    proc = P.start(LONG_TRAIN, cli_env(), log)
    run = wait_for_running_run(mlflow_store, proc)
    P.interrupt(proc, signal.SIGKILL, group=False)
    p = call_main("train", "--n-samples", "300", "--epochs", "1")
    assert p.returncode == 0, p.stderr
    assert "trackflow: marked run 'train-adam-lr0.001'" in p.stderr and "KILLED" in p.stderr
    assert f"trackflow: set Prefect flow run {run.data.tags['prefect.flow_run_id']} Crashed" in p.stderr
    assert sorted(r.info.status for r in all_runs(mlflow_store)) == ["FINISHED", "KILLED"]


def test_kill_9_while_the_store_is_created_leaves_it_usable(tmp_path):
    env = cli_env()
    env.pop("MLFLOW_TRACKING_URI")  # the default store, ./mlruns, made by this first command
    work = tmp_path / "project"
    work.mkdir()
    log = tmp_path / "first.log"
    proc = P.start(("train", "--n-samples", "300", "--epochs", "1"), env, log, cwd=work)
    deadline = time.monotonic() + 120
    while not list((work / "mlruns").glob("mlflow.db.creating-*")) and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        time.sleep(0.01)
    time.sleep(0.3)  # inside MLflow's migrations
    P.interrupt(proc, signal.SIGKILL, group=False)
    assert not (work / "mlruns" / "mlflow.db").exists()
    p = call_main("train", "--n-samples", "300", "--epochs", "1", cwd=work, MLFLOW_TRACKING_URI=None)  # the rerun
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    assert [r.info.status for r in all_runs(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")] == ["FINISHED"]


# --------------------------------------------------------------------------- several commands at once


@pytest.mark.slow
def test_commands_started_together_on_a_fresh_home_all_succeed(tmp_path, tiny_models):
    """A training and a batch job started together on a fresh PREFECT_HOME and a fresh store: first use by two
    commands at once (migrations, ports), each with its own temporary Prefect server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env = telemetry.quiet(env | {"PREFECT_HOME": str(tmp_path / "fresh-home")})
    env.pop("MLFLOW_TRACKING_URI")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a prompt")
    commands = [("train", "--n-samples", "300", "--epochs", "1"),
                ("infer", "text", "in", "--out", "out", "--model", tiny_models["text"], "--max-new-tokens", "3")]
    procs = []
    for i, args in enumerate(commands):
        procs.append((P.start(args, env, tmp_path / f"{i}.log", cwd=tmp_path), tmp_path / f"{i}.log"))
        time.sleep(0.5)
    for proc, log in procs:
        assert proc.wait(600) == 0, log.read_text()[-3000:]
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    runs = all_runs(uri)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 2
    assert {MlflowClient(uri).get_experiment(r.info.experiment_id).name for r in runs} == {"classifier",
                                                                                          "batch-inference"}
    assert len({r.data.tags["prefect.flow_run_id"] for r in runs}) == 2
    assert records(tmp_path / "out")["a.txt"]["status"] == "ok"


# --------------------------------------------------------------------------- unreachable servers


@pytest.mark.parametrize("var, address, says, hint", [
    ("MLFLOW_TRACKING_URI", "http://user:secret@127.0.0.1:{port}", "MLflow tracking server http://127.0.0.1:{port} ",
     "connection refused"),
    ("PREFECT_API_URL", "http://127.0.0.1:{port}/api", "Prefect API http://127.0.0.1:{port}/api did not answer",
     "make server"),
], ids=["tracking-server", "prefect-api"])
def test_an_unreachable_server_fails_at_once_naming_it(own_server_env, var, address, says, hint):
    port = free_port()
    t0 = time.monotonic()
    p = P.run(("train",), own_server_env | {var: address.format(port=port)}, timeout=120)
    assert p.returncode == 1
    assert time.monotonic() - t0 < 30
    [line] = [x for x in p.stderr.splitlines() if x.startswith("trackflow train: ")]
    assert line.startswith(f"trackflow train: {says.format(port=port)}") and hint in line
    assert "secret" not in p.stdout + p.stderr


def test_a_tracking_server_that_refuses_writes_fails_before_any_work(tmp_path, mlflow_template):
    """A server whose database is read-only answers every read; the command must stop at its first write, not
    in the flow with pages of tracebacks."""
    from tests.helpers.servers import mlflow_server
    from tests.helpers.store import read_only

    import dataclasses

    import psutil
    from mlflow import MlflowClient

    from trackflow.runs import OWNER_TAG, Owner

    db = tmp_path / "server.db"
    shutil.copy(mlflow_template, db)
    with mlflow_server(f"sqlite:///{db}", tmp_path / "artifacts", tmp_path / "mlflow.log") as url:
        dead_pid = next(pid for pid in range(4_000_000, 4_100_000) if not psutil.pid_exists(pid))
        dead = dataclasses.replace(Owner.this_process(), pid=dead_pid)
        MlflowClient(url).create_run("0", tags={OWNER_TAG: dead.tag()})  # a run whose process is gone
        with read_only(db):
            t0 = time.monotonic()
            p = call_main("train", "--n-samples", "300", "--epochs", "1", MLFLOW_TRACKING_URI=url)
            took = time.monotonic() - t0
            # MLflow's own retries (minutes of back-off) off, as a user may set them: the answer, not the wait.
            reap = call_main("runs", "reap", MLFLOW_TRACKING_URI=url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    assert reap.returncode == 1 and "run(s)" not in reap.stdout, reap.stdout + reap.stderr
    [line] = reap.stderr.splitlines()
    # Once a write failed, this server answers reads with 503 too: "not usable", or "refused to end a dead run".
    assert re.match(rf"trackflow runs: MLflow (tracking server|store) {url} (is not usable|refused to end)", line), line
    assert p.returncode == 1, p.stdout + p.stderr
    [line] = p.stderr.splitlines()
    assert re.fullmatch(  # MLflow answers 500 or 503 ("database is locked") for a write its database refuses
        rf"trackflow train: MLflow tracking server {url} refuses writes to experiment 'classifier' \(it answered "
        r"HTTP 50\d\); check the server's store and this user's permissions, or unset MLFLOW_TRACKING_URI to use "
        r"\./mlruns", line), line
    assert "Flow run" not in p.stdout + p.stderr and took < 30


# --------------------------------------------------------------------------- the model, before any work


def test_a_bad_model_is_refused_before_prefect_starts(tmp_path, tiny_models, mlflow_store):
    import torch
    from safetensors.torch import load_file

    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text("hi")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(tiny_models["text"] / "config.json", pickled)
    torch.save(load_file(tiny_models["text"] / "model.safetensors"), pickled / "pytorch_model.bin")
    for model, message in ((pickled, "holds only pickle weights (pytorch_model.bin); trackflow loads safetensors only"),
                           ("models:/nothing/1", "MLflow model 'models:/nothing/1' cannot be fetched")):
        p = call_main("infer", "text", d, "--out", tmp_path / "out", "--model", model)
        assert p.returncode == 2, p.stderr
        assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1
        assert "Flow run" not in p.stdout + p.stderr  # no flow was started
    from mlflow import MlflowClient

    assert [e.name for e in MlflowClient(mlflow_store).search_experiments()] == ["Default"]


# --------------------------------------------------------------------------- credentials


@pytest.mark.slow
def test_credentials_in_the_tracking_uri_are_never_printed_or_stored(tmp_path, mlflow_template):
    """Basic-auth credentials in MLFLOW_TRACKING_URI, as for a server behind an authenticating proxy."""
    from prefect.settings import PREFECT_API_URL

    from tests.helpers.servers import mlflow_server, sqlite_from

    db = sqlite_from(mlflow_template, tmp_path / "server.db")
    with mlflow_server(db, tmp_path / "artifacts", tmp_path / "mlflow.log") as url:
        secret_uri = url.replace("http://", "http://alice:s3cr3t@")
        p = P.run(("train", "--n-samples", "300", "--epochs", "1"),
                  cli_env(MLFLOW_TRACKING_URI=secret_uri, PREFECT_LOGGING_TO_API_ENABLED="true"))
        assert p.returncode == 0, p.stderr
        assert "s3cr3t" not in p.stdout + p.stderr and "alice" not in p.stdout + p.stderr
        assert f"{url}/#/experiments/" in p.stdout  # the link is printed, without the credentials
        [run] = all_runs(url)
        assert not [v for v in run.data.tags.values() if "s3cr3t" in v]
        flow_run_id = run.data.tags["prefect.flow_run_id"]
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 10, "offset": 0, "artifacts": {}, "task_runs": {}}
    arts = prefect_api(PREFECT_API_URL.value(), "/artifacts/filter", body)
    assert arts and all("s3cr3t" not in json.dumps(a) for a in arts)
    assert any(url in a["data"] for a in arts)
    logs = prefect_api(PREFECT_API_URL.value(), "/logs/filter",
                       {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    assert any("Finished in state Completed" in x["message"] for x in logs), logs  # the flow run's log lines
    assert all("s3cr3t" not in x["message"] and "alice" not in x["message"] for x in logs)
