"""Day two: Prefect links that outlive the command, dead runs cleaned on both sides, retention.

Against real Prefect servers: the `trackflow` console script where a process is killed or has no configured
Prefect API (its own temporary server); cli.main in this process (call_main) for the rest.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time

import pytest

from tests.helpers import processes as P
from tests.helpers.cli import call_main, cli_env
from tests.helpers.servers import free_port, mlflow_server, prefect_api, prefect_server, sqlite_from
from tests.helpers.store import all_runs
from tests.integration.test_ui import browser, screenshot, wait_for_text  # noqa: F401 (browser is a fixture)
from trackflow import telemetry
from tasks.tracking import ensure_experiment

pytestmark = pytest.mark.usefixtures("prefect_server")

SMALL_TRAIN = ("train", "--n-samples", "300", "--epochs", "2", "--no-register-model")
LINK = re.compile(r"^Prefect flow run: (http://\S+/runs/flow-run/([0-9a-f-]{36}))(.*)$", re.M)


def no_prefect_env(**extra: str) -> dict[str, str]:
    """The environment without any PREFECT_* setting (no configured API), plus `extra`."""
    return telemetry.quiet({k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | extra)


def session_api() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def flow_run(api: str, flow_run_id: str) -> dict | None:
    return prefect_api(api, f"/flow_runs/{flow_run_id}", missing_ok=True)


# --------------------------------------------------------------------------- links


@pytest.mark.slow
def test_a_one_off_commands_link_opens_its_flow_run_once_the_ui_serves_its_prefect_home(tmp_path, client, browser,
                                                                                        prefect_home_template):
    """No PREFECT_API_URL: the command's temporary server is gone when it exits; `make server` shows the run."""
    home, port = tmp_path / "prefect-home", free_port()
    shutil.copytree(prefect_home_template, home)  # migrated once per run (a fresh home: test_reliability)
    env = no_prefect_env(PREFECT_HOME=str(home), PREFECT_SERVER_API_PORT=str(port),
                         MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"])
    p = P.run(SMALL_TRAIN, env)
    assert p.returncode == 0, p.stderr[-3000:]
    [(link, flow_run_id, hint)] = LINK.findall(p.stdout)
    assert link == f"http://127.0.0.1:{port}/runs/flow-run/{flow_run_id}"
    assert hint == " (start the UI with `make server`)"
    [run] = all_runs(os.environ["MLFLOW_TRACKING_URI"])
    assert run.data.tags["prefect.flow_run_url"] == link  # the tag and the summary artifact hold the same link

    with prefect_server(home, port) as api:  # what `make server PREFECT_PORT=port` starts on this PREFECT_HOME
        [artifact] = prefect_api(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["training-summary"]}}})
        assert f"[{link}]" in artifact["data"] and artifact["flow_run_id"] == flow_run_id
        fr = flow_run(api, flow_run_id)
        assert fr["state"]["type"] == "COMPLETED"
        browser.get(link)  # the link the command printed, tagged and wrote into its summary
        wait_for_text(browser, [fr["name"], "Completed", "train-classifier"])
        screenshot(browser, tmp_path, "prefect-flow-run")
        browser.get(f"{api.removesuffix('/api')}/artifacts/artifact/{artifact['id']}")  # the summary, as markdown
        wait_for_text(browser, ["Test metrics", "test_accuracy", "MLflow run"])
        screenshot(browser, tmp_path, "prefect-artifact")


def test_prefect_api_url_set_in_the_active_profile_is_used_without_a_temporary_server(tmp_path, client):
    """`prefect config set PREFECT_API_URL=...` (the profile, not the environment) is honoured."""
    api = session_api()
    home, profiles = tmp_path / "prefect-home", tmp_path / "profiles.toml"
    env = no_prefect_env(PREFECT_HOME=str(home), PREFECT_PROFILES_PATH=str(profiles),
                         MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"])
    import subprocess

    from tests.helpers.servers import BIN

    subprocess.run([str(BIN / "prefect"), "config", "set", f"PREFECT_API_URL={api}"], env=env, check=True,
                   capture_output=True, timeout=120)
    assert api in profiles.read_text()

    p = P.run(SMALL_TRAIN, env)
    assert p.returncode == 0, p.stderr[-3000:]
    [(link, flow_run_id, hint)] = LINK.findall(p.stdout)
    assert link == f"{api.removesuffix('/api')}/runs/flow-run/{flow_run_id}" and hint == ""
    assert flow_run(api, flow_run_id)["state"]["type"] == "COMPLETED"  # reported to the profile's server
    assert not (home / "prefect.db").exists(), "a temporary server was started on PREFECT_HOME"


# --------------------------------------------------------------------------- the reaper, both sides


def test_kill_9_then_reap_crashes_the_dead_flow_run_and_leaves_a_live_one_alone(tmp_path, client, mlflow_store):
    api = session_api()
    # A live run: owned by this test process, with its own Running flow run.
    from trackflow.runs import owner_tags

    flow = prefect_api(api, "/flows/", {"name": "live-flow"})
    live_fr = prefect_api(api, "/flow_runs/", {"flow_id": flow["id"], "state": {"type": "RUNNING"}})
    exp = ensure_experiment("live")
    live = client.create_run(exp, tags=owner_tags() | {"prefect.flow_run_id": live_fr["id"]}).info.run_id

    log = tmp_path / "cmd.log"
    proc = P.start(("train", "--n-samples", "200000", "--epochs", "50", "--experiment", "long"), cli_env(), log)
    dead = _running_run_in(mlflow_store, proc, "long")
    rc, _, _ = P.interrupt(proc, signal.SIGKILL, group=False)
    assert rc == -9
    dead_fr = dead.data.tags["prefect.flow_run_id"]
    assert flow_run(api, dead_fr)["state"]["type"] == "RUNNING"  # nobody could end it

    p = call_main("runs", "reap")
    assert p.returncode == 0, p.stderr
    assert f"KILLED {dead.info.run_id}" in p.stdout and "1 of their Prefect flow run(s) set Crashed" in p.stdout
    state = flow_run(api, dead_fr)["state"]
    assert state["type"] == "CRASHED"
    assert dead.info.run_id in state["message"] and "is gone" in state["message"]
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    assert flow_run(api, live_fr["id"])["state"]["type"] == "RUNNING"
    assert client.get_run(live).info.status == "RUNNING"


def _running_run_in(uri: str, proc, experiment: str, timeout: float = 180):
    """The RUNNING run the command `proc` opened in `experiment` (other experiments hold other runs)."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exp := c.get_experiment_by_name(experiment):
            if running := [r for r in c.search_runs([exp.experiment_id]) if r.info.status == "RUNNING"]:
                return running[0]
        if proc.poll() is not None:
            raise AssertionError(f"the command exited {proc.returncode} before it opened a run")
        time.sleep(0.2)
    raise AssertionError(f"no RUNNING run in experiment {experiment!r} within {timeout} s")


# --------------------------------------------------------------------------- retention


def test_prune_deletes_the_run_and_its_prefect_flow_run(client, mlflow_store):
    api = session_api()
    p = call_main(*SMALL_TRAIN)
    assert p.returncode == 0, p.stderr[-3000:]
    [run] = all_runs(mlflow_store)
    fr = run.data.tags["prefect.flow_run_id"]
    assert flow_run(api, fr) is not None

    dry = call_main("runs", "prune", "--older-than", "0")
    assert dry.returncode == 0, dry.stderr
    assert run.info.run_id in dry.stdout and "Would delete 1 run(s)" in dry.stdout
    assert "and their 1 Prefect flow run(s)" in dry.stdout and flow_run(api, fr) is not None

    p = call_main("runs", "prune", "--older-than", "0", "--yes")
    assert p.returncode == 0, p.stderr
    assert "Deleted 1 run(s)" in p.stdout and "and 1 Prefect flow run(s)" in p.stdout
    assert all_runs(mlflow_store) == []
    assert flow_run(api, fr) is None


def test_the_prune_flow_deletes_old_runs_with_their_artifacts(client, tmp_path):
    from flows.prune import prune_pipeline
    from trackflow.config import PruneConfig

    exp = ensure_experiment("old")
    old = client.create_run(exp, start_time=int((time.time() - 40 * 86400) * 1000)).info.run_id
    client.log_text(old, "x" * 500, "a.txt")
    client.set_terminated(old)
    new = client.create_run(exp).info.run_id
    client.set_terminated(new)
    assert prune_pipeline(PruneConfig(older_than=30)) == (1, 500, 0)
    assert [r.info.run_id for r in all_runs(os.environ["MLFLOW_TRACKING_URI"])] == [new]


@pytest.mark.slow
def test_prune_through_an_mlflow_tracking_server_deletes_the_artifacts_it_serves(tmp_path, mlflow_template):
    from mlflow import MlflowClient

    artifacts = tmp_path / "artifacts"
    with mlflow_server(sqlite_from(mlflow_template, tmp_path / "server.db"), artifacts, tmp_path / "mlflow.log") as url:
        c = MlflowClient(tracking_uri=url)
        exp = c.create_experiment("remote")
        old = c.create_run(exp, start_time=int((time.time() - 40 * 86400) * 1000)).info.run_id
        c.log_text(old, "y" * 2000, "plots/a.txt")
        c.set_terminated(old)
        keep = c.create_run(exp).info.run_id
        c.log_text(keep, "z", "b.txt")
        on_disk = [p for p in artifacts.rglob("*") if p.is_file()]
        assert len(on_disk) == 2

        p = call_main("runs", "prune", "--older-than", "30", "--yes", MLFLOW_TRACKING_URI=url)
        assert p.returncode == 0, p.stderr
        assert "Deleted 1 run(s) and 2.0 KB (2000 bytes) of artifacts" in p.stdout
        assert [p.name for p in artifacts.rglob("*") if p.is_file()] == ["b.txt"]
        assert c.get_run(old).info.lifecycle_stage == "deleted"  # the server's `mlflow gc` removes the record
        assert c.get_run(keep).info.lifecycle_stage == "active"


# --------------------------------------------------------------------------- terminal views


def test_runs_show_ranks_a_real_sweeps_trials_as_the_sweep_did(client, mlflow_store):
    p = call_main("sweep", "--n-samples", "300", "--epochs", "3", "--lrs", "0.001,0.01,0.1", "--metric", "val_loss",
                  "--runner", "sequential", "--no-register-model")
    assert p.returncode == 0, p.stderr[-3000:]
    swept = re.findall(r"^  \S+ +val_loss (\S+) .* run ([0-9a-f]{32})$", p.stdout, re.M)
    assert len(swept) == 3
    parent = re.search(r"MLflow parent run: ([0-9a-f]{32})", p.stdout).group(1)

    shown = call_main("runs", "show", parent, COLUMNS="250")
    assert shown.returncode == 0, shown.stderr
    assert "Trials ranked by val_loss" in shown.stdout
    order = [m.group(1) for m in re.finditer(r"([0-9a-f]{32})", shown.stdout.split("Trials ranked by")[1])]
    assert order == [run_id for _, run_id in swept]
    for value, run_id in swept:  # the values the sweep printed, on the same rows
        assert any(run_id in line and value in line for line in shown.stdout.splitlines())
