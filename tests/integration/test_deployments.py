"""prefect.yaml, `trackflow serve`, and a real Prefect server + worker running every deployment."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime

import pytest
import yaml

from flows.deployments import PREFECT_YAML, read_deployments
from tests.helpers.audio import write_audio
from tests.helpers.cli import REPO, TRACKFLOW, cli_env
from tests.helpers.servers import BIN, prefect_api as api, prefect_server, spawn, stop
from trackflow.config import AudioInferConfig, ScoreConfig, SweepConfig, TextInferConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("prefect_server")

EXPECTED = {
    "nightly-training": ("train-classifier", "0 2 * * *", TrainConfig),
    "weekly-sweep": ("lr-sweep", "0 3 * * 1", SweepConfig),
    "hourly-inbox-text": ("infer-text", "5 * * * *", TextInferConfig),
    "hourly-inbox-audio": ("infer-audio", "35 * * * *", AudioInferConfig),
    "hourly-inbox-tables": ("score-table", "50 * * * *", ScoreConfig),
}


def test_prefect_yaml_deployments_validate_against_the_flow_configs():
    specs = {s.name: s for s in read_deployments()}
    assert set(specs) == set(EXPECTED)
    for name, (flow_name, cron, model) in EXPECTED.items():
        s = specs[name]
        assert s.flow.name == flow_name and s.crons == ((cron, "UTC"),) and isinstance(s.config, model)
    raw = yaml.safe_load(PREFECT_YAML.read_text())
    assert {d["work_pool"]["name"] for d in raw["deployments"]} == {"trackflow-process"}
    assert all(set(d["schedules"][0]) <= {"cron", "timezone", "active"} for d in raw["deployments"])


def test_a_bad_parameter_in_prefect_yaml_is_caught(tmp_path):
    from flows.deployments import DeploymentsError

    raw = yaml.safe_load(PREFECT_YAML.read_text())
    raw["deployments"][0]["parameters"]["config"]["lr"] = -1
    bad = tmp_path / "prefect.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(DeploymentsError, match="deployment 'nightly-training': lr: Input should be greater than 0"):
        read_deployments(bad)


@pytest.mark.parametrize("name", ["hourly-inbox-text", "hourly-inbox-audio"])
def test_the_inbox_deployments_complete_quietly_on_a_fresh_clone(tmp_path, monkeypatch, client, name):
    spec = next(s for s in read_deployments() if s.name == name)
    monkeypatch.chdir(tmp_path)  # a clone without inbox/: its folder is made by whoever drops files in
    state = spec.flow(spec.config, return_state=True)
    assert state.is_completed(), state.message
    assert state.result().nothing_to_do and not (tmp_path / spec.config.in_dir).exists()
    assert client.get_experiment_by_name("batch-inference") is None


def deployments_by_name(url: str) -> dict[str, dict]:
    return {d["name"]: d for d in api(url, "/deployments/filter", {"limit": 50})}


def assert_schedules(url: str, deps: dict[str, dict], scheduled_runs: bool = True) -> None:
    """Each deployment has its cron from prefect.yaml; with `scheduled_runs`, the server's
    scheduler has created upcoming runs at exactly that cron's next times."""
    import asyncio

    from prefect.server.schemas.schedules import CronSchedule

    for name, (_, cron, _) in EXPECTED.items():
        d = deps[name]
        assert [s["schedule"]["cron"] for s in d["schedules"]] == [cron]
        assert all(s["active"] for s in d["schedules"])
        if not scheduled_runs:
            continue
        runs = []
        deadline = time.monotonic() + 60
        while not runs and time.monotonic() < deadline:  # the scheduler service fills these in
            runs = api(url, "/flow_runs/filter", {"deployments": {"id": {"any_": [d["id"]]}},
                                                  "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
            time.sleep(1)
        assert runs, f"no scheduled runs for {name}"
        times = sorted(datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")) for r in runs)
        expected = asyncio.run(CronSchedule(cron=cron, timezone="UTC").get_dates(n=len(times), start=times[0]))
        assert times == [datetime.fromisoformat(d.isoformat()) for d in expected], f"{name}: {times} vs {cron}"


@pytest.mark.slow
def test_serve_registers_every_deployment_with_its_schedule(tmp_path):
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    proc = spawn([TRACKFLOW, "serve"], tmp_path / "serve.log", cli_env())
    try:
        deadline, deps = time.monotonic() + 120, {}
        while time.monotonic() < deadline and not set(EXPECTED) <= set(deps):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            deps = deployments_by_name(url)
            time.sleep(1)
        assert set(EXPECTED) <= set(deps)
        # The test harness's server runs no scheduler service; the real-server test checks the runs.
        assert_schedules(url, deps, scheduled_runs=False)
        assert deps["hourly-inbox-text"]["parameters"]["config"]["in_dir"] == "inbox/text"
    finally:
        stop(proc)


@pytest.mark.slow
def test_deploy_then_a_worker_runs_every_deployment(tmp_path, tiny_models, client, mlflow_store,
                                                    prefect_home_template):
    text_in, audio_in = tmp_path / "inbox" / "text", tmp_path / "inbox" / "audio"
    tables_in = tmp_path / "inbox" / "tables"
    text_in.mkdir(parents=True)
    tables_in.mkdir()
    (text_in / "a.txt").write_text("Hello world")
    write_audio(audio_in / "tone.wav", 22050, 1.0)
    with prefect_server(tmp_path / "prefect", template=prefect_home_template) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
            "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "prefect"), "MLFLOW_TRACKING_URI": mlflow_store,
            "TRACKFLOW_HOME": str(REPO),
        }

        def prefect(*args, timeout=180):
            p = subprocess.run([str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
            assert p.returncode == 0, p.stdout + p.stderr
            return p.stdout

        prefect("work-pool", "create", "trackflow-process", "--type", "process")
        prefect("--no-prompt", "deploy", "--all")
        deps = deployments_by_name(url)
        assert set(EXPECTED) <= set(deps)
        assert_schedules(url, deps)
        pull = deps["nightly-training"]["pull_steps"]
        assert pull == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]

        params = {
            "nightly-training": {"n_samples": 300, "epochs": 2, "experiment": "deployed"},
            "weekly-sweep": {"base": {"n_samples": 300, "epochs": 2, "experiment": "deployed"}, "lrs": [0.01, 0.1]},
            "hourly-inbox-text": {"in_dir": str(text_in), "out_dir": str(tmp_path / "out-text"),
                                  "model": str(tiny_models["text"]), "max_new_tokens": 4},
            "hourly-inbox-audio": {"in_dir": str(audio_in), "out_dir": str(tmp_path / "out-audio"),
                                   "model": str(tiny_models["audio"])},
            # an empty inbox: completes without a model (none is registered yet when it starts)
            "hourly-inbox-tables": {"in_dir": str(tables_in), "out_dir": str(tmp_path / "out-tables"),
                                    "allow_empty": True},
        }
        # The first as the README shows it (`prefect deployment run`); the others through the API, which that
        # command calls, without a Prefect CLI process each.
        out = prefect("deployment", "run", "train-classifier/nightly-training", "--params",
                      json.dumps({"config": params["nightly-training"]}))
        run_ids = {"nightly-training": next(line.split()[-1] for line in out.splitlines() if "UUID" in line)}
        for name in EXPECTED.keys() - run_ids.keys():
            run = api(url, f"/deployments/{deps[name]['id']}/create_flow_run", {"parameters": {"config": params[name]}})
            run_ids[name] = run["id"]
        # Polling every second, not every 10 s: with --limit 2 the worker takes the five runs in three polls.
        worker = spawn([BIN / "prefect", "worker", "start", "--pool", "trackflow-process", "--type", "process",
                        "--limit", "2"], tmp_path / "worker.log", env | {"PREFECT_WORKER_QUERY_SECONDS": "1"},
                       cwd=tmp_path)
        try:
            states: dict[str, str] = {}
            deadline = time.monotonic() + 420
            while time.monotonic() < deadline:
                states = {n: api(url, f"/flow_runs/{i}")["state"]["type"] for n, i in run_ids.items()}
                if all(s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states.values()):
                    break
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                time.sleep(2)
            assert set(states.values()) == {"COMPLETED"}, f"{states}\n{(tmp_path / 'worker.log').read_text()[-4000:]}"
        finally:
            stop(worker)

    deployed = client.get_experiment_by_name("deployed")
    runs = client.search_runs([deployed.experiment_id])
    flow_run_ids = {r.data.tags.get("prefect.flow_run_id") for r in runs}
    assert {run_ids["nightly-training"], run_ids["weekly-sweep"]} <= flow_run_ids
    assert all(r.info.status == "FINISHED" for r in runs) and len(runs) == 1 + 1 + 2  # train, sweep parent + 2 trials
    inference = client.search_runs([client.get_experiment_by_name("batch-inference").experiment_id])
    assert {r.data.tags["prefect.flow_run_id"] for r in inference} == {run_ids["hourly-inbox-text"],
                                                                       run_ids["hourly-inbox-audio"]}
    assert all(r.data.metrics["n_ok"] == 1 for r in inference)
    assert (tmp_path / "out-text" / "results.jsonl").exists() and (tmp_path / "out-audio" / "results.csv").exists()
    assert not (REPO / "inbox").exists() and not (REPO / "outbox").exists()


def test_the_commented_weekly_prune_deployment_validates_once_uncommented(tmp_path):
    """prefect.yaml shows retention as a deployment left commented out; uncommented as written, it must work."""
    text = PREFECT_YAML.read_text()
    block = text[text.index("  # - name: weekly-prune"):]
    uncommented = "\n".join(line.replace("  # ", "  ", 1) for line in block.splitlines())
    path = tmp_path / "prefect.yaml"
    path.write_text(text.replace(block, uncommented + "\n"))
    specs = {s.name: s for s in read_deployments(path)}
    from trackflow.config import PruneConfig

    prune = specs["weekly-prune"]
    assert prune.flow.name == "prune-runs" and prune.crons == (("0 4 * * 0", "UTC"),)
    assert prune.config == PruneConfig(older_than=90)
