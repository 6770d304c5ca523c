"""Batch inference and scoring on Dask: on a LocalCluster of 2 worker processes that a job starts itself
(`--runner dask --workers 2`), and on a running cluster (`--dask-address`: `dask scheduler` and `dask worker`
processes, as the README starts them). The same results as one process, the model loaded once per worker,
exactly one record per input through worker deaths, kills and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from tests.helpers import processes as P
from tests.helpers.audio import write_audio
from tests.helpers.cli import call_main, cli_env

pytestmark = pytest.mark.usefixtures("prefect_server")
DASK = ("--runner", "dask", "--workers", "2")


@pytest.fixture(scope="module")
def running_dask_cluster(tmp_path_factory) -> str:
    """A running cluster of 2 single-threaded workers, shared by the tests that take it (tests/conftest.py sends
    them to one pytest-xdist worker); its address."""
    from tests.helpers.servers import dask_cluster

    with dask_cluster(tmp_path_factory.mktemp("dask-cluster"), workers=2) as address:
        yield address


def records(out_dir) -> dict[str, dict]:
    recs = [json.loads(line) for line in (out_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    keys = [r["input"] + (f":{r['line']}" if r.get("line") else "") for r in recs]
    assert len(keys) == len(set(keys)), "more than one record for an input"
    return dict(zip(keys, recs))


def outcome(recs: dict[str, dict], fields=("status", "output", "error", "new_tokens", "audio_seconds", "digest",
                                          "model", "rows", "model_version")) -> dict:
    return {k: {f: r.get(f) for f in fields} for k, r in recs.items()}


def last_run(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]


def prompts(folder, n: int, words: int = 6):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"p{i:03d}.txt").write_text(f"Prompt number {i} " + "about the sea and the sky " * words)
    return folder


@pytest.mark.slow
def test_text_on_two_workers_equals_one_process_and_loads_the_model_once_per_worker(tmp_path, tiny_models, client):
    d = prompts(tmp_path / "in", 14, words=1)
    (d / "batch.jsonl").write_text('{"prompt": "Once upon a time"}\nnot json\n{"prompt": "Prefect schedules"}\n')
    (d / "empty.txt").write_bytes(b"")
    (d / "long.txt").write_text("word " * 400)  # over the tiny model's context: an error record, the shard goes on
    args = ("infer", "text", d, "--model", tiny_models["text"], "--max-new-tokens", "6", "--batch-size", "2")
    here = call_main(*args, "--out", tmp_path / "here")
    assert here.returncode == 1, here.stderr
    p = call_main(*args, "--out", tmp_path / "dask", *DASK, "--shard-files", "3")
    assert p.returncode == 1, p.stderr  # the same 3 bad inputs
    assert p.stderr.splitlines()[-1] == "trackflow infer text: 3 of 19 inputs failed"
    assert outcome(records(tmp_path / "dask")) == outcome(records(tmp_path / "here"))  # greedy: the same outputs
    run = last_run(client, "batch-inference")
    m = run.data.metrics
    assert (m["n_ok"], m["n_failed"], m["n_processed"]) == (16, 3, 19)
    assert m["shards"] == 6 and m["workers"] == 2 and m["model_loads"] == 2  # once per worker, not per shard
    assert m["worker1_inputs_per_second"] > 0 and m["worker2_new_tokens_per_second"] > 0
    assert run.data.params["runner"] == "dask" and run.data.params["workers"] == "2"
    assert "on Dask: 2 workers, 6 shards, 2 model loads" in p.stdout
    assert sorted(x.name for x in (tmp_path / "dask").iterdir()) == [".trackflow.lock", "results.csv", "results.jsonl"]


@pytest.mark.slow
def test_audio_on_a_running_cluster_equals_one_process(tmp_path, tiny_models, client, running_dask_cluster):
    from flows.infer import audio_inference_pipeline
    from trackflow.config import AudioInferConfig

    d = tmp_path / "audio"
    for i, (rate, secs) in enumerate([(8000, 1.0), (22050, 1.5), (16000, 4.0), (44100, 0.7), (16000, 2.0)]):
        write_audio(d / f"clip{i}.wav", rate, secs, kind="speech", seed=i)
    (d / "fake.wav").write_bytes(b"RIFF but not really")
    base = dict(in_dir=str(d), model=str(tiny_models["audio"]), chunk_seconds=2.0, batch_size=2)
    here = audio_inference_pipeline(AudioInferConfig(out_dir=str(tmp_path / "here"), **base))
    there = audio_inference_pipeline(AudioInferConfig(out_dir=str(tmp_path / "dask"), dask_address=running_dask_cluster,
                                                      shard_files=2, **base))
    assert (here.n_ok, here.n_failed) == (there.n_ok, there.n_failed) == (5, 1)
    assert outcome(records(tmp_path / "dask")) == outcome(records(tmp_path / "here"))
    assert there.metrics["model_loads"] == 2 and there.metrics["shards"] == 3 and there.metrics["workers"] == 2
    assert there.metrics["audio_seconds"] == pytest.approx(here.metrics["audio_seconds"])
    run = last_run(client, "batch-inference")
    assert run.data.params["runner"] == "dask" and run.data.params["dask_address"] == running_dask_cluster


@pytest.mark.slow
def test_scoring_on_a_running_cluster_equals_one_process_and_a_promotion_mid_job_changes_nothing(
        tmp_path, client, monkeypatch, running_dask_cluster):
    from flows.score import score_pipeline
    from tasks import scoring
    from tests.helpers.scoring import register_classifier
    from tests.helpers.tables import wine_frame, write
    from trackflow.config import ScoreConfig

    v1 = register_classifier(write(wine_frame(), tmp_path / "train" / "wine.csv"), "cultivar", epochs=1, seed=1)
    client.set_registered_model_alias("classifier", "champion", v1)
    v2 = register_classifier(tmp_path / "train" / "wine.csv", "cultivar", epochs=8, seed=2)
    inbox, wine = tmp_path / "inbox", wine_frame()
    for i in range(6):
        write(wine.sample(frac=0.5, random_state=i), inbox / f"day{i}.{'csv' if i % 2 else 'parquet'}")
    write(wine, inbox / "day0.csv")  # day0.parquet's output too: an error record for day0.parquet
    (inbox / "broken.parquet").write_bytes(b"PAR1 not really")
    here = score_pipeline(ScoreConfig(in_dir=str(inbox), out_dir=str(tmp_path / "here")))

    publish = scoring.publish_output

    def promote_after_the_first_output(out):  # in the job's process, as a shard's results come back
        publish(out)
        client.set_registered_model_alias("classifier", "champion", v2)  # a sweep finishing mid-job

    monkeypatch.setattr(scoring, "publish_output", promote_after_the_first_output)
    there = score_pipeline(ScoreConfig(in_dir=str(inbox), out_dir=str(tmp_path / "dask"),
                                       dask_address=running_dask_cluster, shard_files=1))
    assert str(client.get_model_version_by_alias("classifier", "champion").version) == v2 != v1
    assert here.model_uri == there.model_uri == f"models:/classifier/{v1}"
    recs = records(tmp_path / "dask")
    assert {r["model_version"] for r in recs.values()} == {v1} and len(recs) == 8
    assert outcome(recs) == outcome(records(tmp_path / "here"))
    assert recs["day0.parquet"]["status"] == "error" and "already that of 'day0.csv'" in recs["day0.parquet"]["error"]
    import pandas as pd

    for rec in recs.values():
        if rec["status"] == "ok":
            pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask" / rec["output"]),
                                          pd.read_parquet(tmp_path / "here" / rec["output"]))
    assert there.metrics["model_loads"] == 2 and there.metrics["shards"] == 7
    left = sorted(x.name for x in (tmp_path / "dask").rglob("*") if x.name.startswith(".") and x.is_file())
    assert left == [".trackflow.lock"]  # no temporary output, no staged model


@pytest.mark.slow
def test_a_failed_job_on_dask_leaves_no_staged_model(tmp_path, monkeypatch, running_dask_cluster):
    from flows.score import score_pipeline
    from tasks import scoring
    from tests.helpers.scoring import register_classifier
    from tests.helpers.tables import wine_frame, write
    from trackflow.config import ScoreConfig

    version = register_classifier(write(wine_frame(), tmp_path / "train" / "wine.csv"), "cultivar", epochs=1, seed=1)
    for i in range(2):
        write(wine_frame(), tmp_path / "inbox" / f"day{i}.csv")

    def interrupted(out):  # Ctrl-C as the first shard's output is moved into place
        raise KeyboardInterrupt

    monkeypatch.setattr(scoring, "publish_output", interrupted)
    out = tmp_path / "out"
    config = ScoreConfig(in_dir=str(tmp_path / "inbox"), out_dir=str(out), model=f"models:/classifier/{version}",
                         dask_address=running_dask_cluster, shard_files=1)
    with pytest.raises(KeyboardInterrupt):
        score_pipeline(config)
    assert (out / ".trackflow.lock").exists() and not (out / ".trackflow-model").exists()


def wait_for_records(out, n: int, proc, timeout: float = 240) -> None:
    path = out / "results.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, f"the job ended (exit {proc.returncode}) before {n} records"
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} records within {timeout} s")


LONG = ("--max-new-tokens", "40", "--batch-size", "2", "--shard-files", "4")


@pytest.mark.slow
def test_a_worker_killed_mid_job_leaves_exactly_one_ok_record_per_input(tmp_path, tiny_models, client):
    d, out = prompts(tmp_path / "in", 48), tmp_path / "out"
    log = tmp_path / "job.log"
    proc = P.start(("infer", "text", d, "--out", out, "--model", tiny_models["text"], *LONG, *DASK), cli_env(), log)
    wait_for_records(out, 4, proc)  # a shard is in: the job is mid-way
    victim = P.pool_workers(proc.pid)[0]
    os.kill(victim.pid, signal.SIGKILL)
    assert proc.wait(300) == 0, log.read_text()[-3000:]
    recs = records(out)
    assert len(recs) == 48 and all(r["status"] == "ok" for r in recs.values())
    m = last_run(client, "batch-inference").data.metrics
    assert m["n_processed"] == 48 and m["n_ok"] == 48  # the killed worker's shard ran again, appended once
    # Once per worker process that returned a shard, never per shard: the two workers and the one that replaced the
    # killed worker, at most (under load the survivor can finish every shard before the replacement is up).
    assert m["shards"] == 12 and 1 <= m["model_loads"] <= 3


@pytest.mark.slow
def test_the_job_killed_with_9_takes_its_workers_along_and_a_rerun_resumes(tmp_path, tiny_models):
    d, out = prompts(tmp_path / "in", 48), tmp_path / "out"
    args = ("infer", "text", d, "--out", out, "--model", tiny_models["text"], *LONG, *DASK)
    proc = P.start(args, cli_env(), tmp_path / "job.log")
    wait_for_records(out, 8, proc)
    workers = P.pool_workers(proc.pid)
    assert len(workers) == 2
    proc.kill()  # SIGKILL to the job's process alone, as the OOM killer does
    proc.wait()
    assert P.seconds_until_gone(workers, timeout=15) < 15, "a worker outlived its job"
    done_before = (out / "results.jsonl").read_bytes().count(b"\n")
    assert 8 <= done_before < 48, done_before
    p = call_main(*args)  # the rerun: what it does, not its process
    assert p.returncode == 0, p.stderr
    skipped = int(p.stdout.split(" already done")[0].rsplit("(", 1)[1])
    assert skipped >= done_before and "48 inputs: 48 ok" in p.stdout
    assert len(records(out)) == 48


@pytest.mark.slow
def test_ctrl_c_ends_the_job_within_seconds_its_cluster_stopped_and_its_run_killed(tmp_path, tiny_models, client):
    d, out = prompts(tmp_path / "in", 48), tmp_path / "out"
    log = tmp_path / "job.log"
    proc = P.start(("infer", "text", d, "--out", out, "--model", tiny_models["text"], *LONG, *DASK), cli_env(), log)
    wait_for_records(out, 4, proc)
    rc, took, left = P.interrupt(proc, signal.SIGINT)
    assert rc == 130, log.read_text()[-3000:]
    assert took < 20, f"took {took:.1f} s to exit"
    assert left == [], f"left running: {[p.cmdline() for p in left]}"
    assert last_run(client, "batch-inference").info.status == "KILLED"


def test_an_unreachable_scheduler_exits_1_at_once_naming_it(tmp_path, tiny_models, client):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    d = prompts(tmp_path / "in", 2)
    t0 = time.monotonic()
    p = call_main("infer", "text", d, "--out", tmp_path / "out", "--model", tiny_models["text"], "--dask-address",
                  address)
    assert time.monotonic() - t0 < 30
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"trackflow infer: the Dask scheduler at {address} cannot be reached (Connection refused); start it "
        "(`dask scheduler`) or check --dask-address"]
    assert client.get_experiment_by_name("batch-inference") is None


def test_a_local_clusters_workers_are_tuned_before_their_first_task():
    import gc

    from tasks.cluster import dask_client
    from trackflow.heap import THRESHOLDS

    with dask_client(None, 1) as dask:
        assert [tuple(t) for t in dask.run(gc.get_threshold).values()] == [THRESHOLDS]  # trackflow.heap's preload
