"""Fault injection: `kill -9` at random points of train, sweep and infer, then a rerun.

Bounded in count and time: a seeded schedule of `KILLS` kills per command, each at a
random moment of its first `WINDOW` seconds (from interpreter start-up to the end of the
run, store creation included for the first command on a fresh store), then one rerun
to completion. Afterwards the store holds no RUNNING run, the inference results hold
exactly one ok record per input, nothing the killed commands started is still running,
and the store takes a new run. TRACKFLOW_FAULT_SEED replays another schedule.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest

from tests.helpers.cli import call_main, cli_env
from tests.helpers import processes as P
from tests.helpers.store import statuses

pytestmark = pytest.mark.usefixtures("prefect_server")

SEED = int(os.environ.get("TRACKFLOW_FAULT_SEED", "20261126"))
KILLS = 1  # each run kills at the same seeded moments; TRACKFLOW_FAULT_SEED draws others
WINDOW = 14.0  # seconds; a full run of each command below takes ~10-20 s here


@pytest.fixture
def project(tmp_path, tiny_models):
    """A fresh project folder (its ./mlruns store not yet created) with an inbox of prompts."""
    inbox = tmp_path / "project" / "inbox"
    inbox.mkdir(parents=True)
    for i in range(40):
        (inbox / f"p{i:02d}.txt").write_text(f"Prompt {i} about the sea")
    (inbox / "batch.jsonl").write_text("\n".join(json.dumps({"prompt": f"line {i}"}) for i in range(10)) + "\n")
    return tmp_path / "project"


@pytest.mark.slow
def test_kill_9_anywhere_then_rerun(project, tiny_models):
    env = cli_env()
    env.pop("MLFLOW_TRACKING_URI")  # the project's own ./mlruns, created by the first command
    commands = {
        "train": ("train", "--n-samples", "20000", "--epochs", "5"),
        "sweep": ("sweep", "--lrs", "0.001,0.01", "--n-samples", "5000", "--epochs", "3"),
        "infer": ("infer", "text", "inbox", "--out", "outbox", "--model", tiny_models["text"], "--max-new-tokens", "8",
                  "--batch-size", "2"),
    }
    rng = random.Random(SEED)
    schedule = []
    for name, args in commands.items():
        for k in range(KILLS):
            delay = rng.uniform(0.5, WINDOW)
            log = project / f"{name}-{k}.log"
            proc = P.start(args, env, log, cwd=project)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            if proc.poll() is None:
                rc, _, left = P.interrupt(proc, signal.SIGKILL, group=False)
                assert left == [], f"{name} killed at {delay:.1f} s left {[p.cmdline() for p in left]} running"
            else:
                rc = proc.returncode
                assert rc == 0, log.read_text()[-3000:]
            schedule.append(f"{name} killed at {delay:.1f} s (rc {rc})")
        # The rerun: what it finds and finishes, not its process (the killed one was the process under test).
        p = call_main(*args, cwd=project, MLFLOW_TRACKING_URI=None)
        assert p.returncode == 0, f"{schedule}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"

    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"  # what follows is the store's state, not a process's
    assert call_main("runs", "reap", MLFLOW_TRACKING_URI=uri).returncode == 0
    assert "RUNNING" not in statuses(uri), f"{statuses(uri)} after {schedule}"
    recs = [json.loads(x) for x in (project / "outbox" / "results.jsonl").read_text().splitlines()]
    keys = [r["input"] + (f":{r['line']}" if r["line"] else "") for r in recs]
    assert len(keys) == len(set(keys)) == 50 and all(r["status"] == "ok" for r in recs), schedule
    p = call_main("train", "--n-samples", "300", "--epochs", "1", MLFLOW_TRACKING_URI=uri)
    assert p.returncode == 0, p.stderr


# A sweep on two pool workers whose trials train for several seconds each (~4 s of CPU), so that a kill lands mid-trial.
POOL_SWEEP = ("sweep", "--runner", "processes", "--workers", "2", "--lrs", "0.001,0.01,0.1", "--n-samples", "20000",
              "--epochs", "15")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_killed_or_interrupted_processes_sweep_leaves_no_pool_worker(tmp_path, mlflow_store, sig):
    log = tmp_path / "sweep.log"
    proc = P.start(POOL_SWEEP, cli_env(), log)
    workers = P.wait_for_training_workers(proc, 2)
    kids = P.descendants(proc.pid)  # the workers and multiprocessing's resource tracker
    if sig == signal.SIGKILL:
        os.kill(proc.pid, sig)  # the command alone, as the OOM killer does
    else:
        os.killpg(proc.pid, sig)  # a terminal's Ctrl-C: the whole process group
    t0 = time.monotonic()
    assert proc.wait(60) == (-9 if sig == signal.SIGKILL else 130), log.read_text()[-3000:]
    exited = time.monotonic() - t0
    took = P.seconds_until_gone(workers)
    print(f"{signal.Signals(sig).name}: command exited in {exited:.2f} s; pool workers gone {took:.2f} s after that")
    assert exited < 30 and took < 3, f"pool workers outlived the command by {took:.1f} s"
    assert P.seconds_until_gone(kids, timeout=5) < 5, [p.cmdline() for p in P.alive(kids)]
    if sig == signal.SIGINT:
        assert log.read_text().rstrip().endswith("trackflow sweep: interrupted")
        assert "RUNNING" not in statuses(mlflow_store)
        return
    assert statuses(mlflow_store).get("RUNNING")  # nobody could end them: the next command reaps them
    # The same sweep on the same pool, with trials of a fraction of a second: the next command reaps the killed one's runs
    rerun = ("sweep", "--runner", "processes", "--workers", "2", "--lrs", "0.001,0.01,0.1", "--n-samples", "2000",
             "--epochs", "2")
    p = call_main(*rerun)  # what the next command does, not its process
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "trackflow: marked run" in p.stderr
    assert "RUNNING" not in statuses(mlflow_store)


@pytest.mark.slow
def test_a_killed_pool_worker_costs_only_a_retry_of_its_own_trial(tmp_path, client):
    log = tmp_path / "sweep.log"
    proc = P.start(POOL_SWEEP, cli_env(), log)
    victim = P.wait_for_training_workers(proc, 1)[0]  # the busiest: mid-trial
    victim.kill()
    assert proc.wait(600) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert text.count("a worker process died (killed by SIGKILL) during a trial; running that trial once more "
                      "on a fresh worker") == 1, text[-3000:]
    [parent] = client.search_runs([client.get_experiment_by_name("classifier").experiment_id],
                                  filter_string="tags.`trackflow.kind` = 'sweep'")
    trials = client.search_runs([parent.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_failed"] == 0
    assert sorted(float(t.data.params["lr"]) for t in trials) == [0.001, 0.01, 0.1]
    assert all(t.info.status == "FINISHED" for t in trials)
    workers = {t.data.tags["trackflow.worker"].rsplit(":", 1)[1] for t in trials}
    assert str(victim.pid) not in workers and len(workers) >= 2  # the killed trial ran again on a fresh worker
    [version] = client.search_model_versions("name='classifier'")
    assert version.run_id == parent.data.params["best_run_id"]
    assert client.get_model_version_by_alias("classifier", "champion").version == version.version
