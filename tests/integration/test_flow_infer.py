"""Batch inference end to end: the commands on tiny local models, a real Prefect server, a real MLflow store.

The commands run through cli.main in this process (call_main); the console script where the process matters:
a kill mid-batch, and Hugging Face settings read at import."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pandas as pd
import pytest

from flows.infer import text_inference_pipeline
from tasks.models import ModelSourceError
from tests.helpers.audio import write_audio
from tests.helpers.cli import TRACKFLOW, call_main, cli_env, run_cli
from tests.helpers.files import read_only_folder
from trackflow.config import TextInferConfig

pytestmark = pytest.mark.usefixtures("prefect_server")


def records(out_dir):
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def by_key(recs):
    keys = [r["input"] + (f":{r['line']}" if r["line"] else "") for r in recs]
    assert len(keys) == len(set(keys)), "more than one record for an input"
    return dict(zip(keys, recs))


def only_run(client, experiment="batch-inference"):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    return runs


@pytest.fixture
def prompts(tmp_path):
    d = tmp_path / "prompts"
    (d / "sub dir").mkdir(parents=True)
    (d / "a.txt").write_text("Hello world", encoding="utf-8")
    (d / "sub dir" / "odd name, ü [1].txt").write_text("The quick brown fox", encoding="utf-8")
    (d / "batch.jsonl").write_text(
        json.dumps({"prompt": "Once upon a time"}) + "\n" + json.dumps({"prompt": "Prefect schedules"}) + "\n"
    )
    return d


def test_text_end_to_end_with_mlflow_run(prompts, tmp_path, tiny_models, client):
    out = tmp_path / "out"
    p = call_main("infer", "text", prompts, "--out", out, "--model", tiny_models["text"], "--max-new-tokens", "6",
                  "--batch-size", "2")
    assert p.returncode == 0, p.stderr
    recs = by_key(records(out))
    assert set(recs) == {"a.txt", "sub dir/odd name, ü [1].txt", "batch.jsonl:1", "batch.jsonl:2"}
    assert all(r["status"] == "ok" and r["output"] and r["error"] is None for r in recs.values())
    assert all(0 < r["new_tokens"] <= 6 and r["model"] == str(tiny_models["text"]) for r in recs.values())
    assert "4 inputs: 4 ok, 0 failed" in p.stdout
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 4 and set(csv["status"]) == {"ok"}

    [run] = only_run(client)
    assert run.info.status == "FINISHED" and run.info.run_id in p.stdout
    assert run.data.params["model"] == str(tiny_models["text"]) and run.data.params["max_new_tokens"] == "6"
    m = run.data.metrics
    assert (m["n_inputs"], m["n_ok"], m["n_failed"]) == (4, 4, 0)
    assert m["new_tokens"] == sum(r["new_tokens"] for r in recs.values()) and m["new_tokens_per_second"] > 0
    assert run.data.tags.get("prefect.flow_run_id")
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "results")}
    assert arts == {"results/results.jsonl", "results/results.csv"}


def test_text_rerun_is_idempotent_and_redoes_only_changed_inputs(prompts, tmp_path, tiny_models, client):
    out = tmp_path / "out"
    args = ("infer", "text", prompts, "--out", out, "--model", tiny_models["text"], "--max-new-tokens", "4")
    assert call_main(*args).returncode == 0
    first = by_key(records(out))
    (prompts / "a.txt").write_text("Changed prompt", encoding="utf-8")
    p = call_main(*args)
    assert p.returncode == 0, p.stderr
    assert "(3 already done, skipped)" in p.stdout
    second = by_key(records(out))
    assert set(second) == set(first)
    assert second["a.txt"]["digest"] != first["a.txt"]["digest"]
    assert second["batch.jsonl:1"] == first["batch.jsonl:1"]  # untouched, not recomputed
    assert only_run(client)[0].data.metrics["n_skipped"] == 3


def test_bad_text_inputs_never_stop_the_batch(tmp_path, tiny_models):
    d = tmp_path / "in"
    d.mkdir()
    (d / "good.txt").write_text("Hello world")
    (d / "empty.txt").write_bytes(b"")
    (d / "latin1.txt").write_bytes("café".encode("latin-1"))
    (d / "binary.txt").write_bytes(b"\x00\x01\x02")
    (d / "long.txt").write_text("word " * 400)  # the tiny model's context is 128 tokens
    (d / "lines.jsonl").write_text('{"prompt": "fine"}\nnot json\n{"prompt": ""}\n')
    out = tmp_path / "out"
    p = call_main("infer", "text", d, "--out", out, "--model", tiny_models["text"], "--max-new-tokens", "4")
    assert p.returncode == 1, p.stderr
    assert p.stderr.splitlines()[-1] == "trackflow infer text: 6 of 8 inputs failed"
    recs = by_key(records(out))
    status = {k: r["status"] for k, r in recs.items()}
    assert status == {"good.txt": "ok", "lines.jsonl:1": "ok", "empty.txt": "error", "latin1.txt": "error",
                      "binary.txt": "error", "long.txt": "error", "lines.jsonl:2": "error", "lines.jsonl:3": "error"}
    assert "empty prompt" in recs["empty.txt"]["error"]
    assert "not valid UTF-8" in recs["latin1.txt"]["error"]
    assert "NUL bytes" in recs["binary.txt"]["error"]
    assert "prompt too long" in recs["long.txt"]["error"]
    assert "2 ok, 6 failed" in p.stdout and "FAILED latin1.txt" in p.stdout
    assert "Traceback" not in p.stderr


def test_audio_end_to_end_any_rate_and_channels_and_bad_files(tmp_path, tiny_models, client):
    d = tmp_path / "audio"
    write_audio(d / "tone8k.wav", 8000, 1.0)
    write_audio(d / "speech22k.flac", 22050, 1.5, kind="speech")
    write_audio(d / "stereo44k.ogg", 44100, 1.2, channels=2, kind="speech", seed=1)
    write_audio(d / "stereo48k.mp3", 48000, 1.0, channels=2)
    write_audio(d / "long16k.wav", 16000, 7.0, kind="speech", seed=2)  # > --chunk-seconds: chunked
    (d / "fake.wav").write_bytes(b"RIFF but not really")
    write_audio(d / "silent.wav", 16000, 0.0 + 1.0, kind="tone").write_bytes(
        (d / "silent.wav").read_bytes()[:44] + bytes(32000))  # header kept, samples zeroed
    full = write_audio(d / "cut.wav", 16000, 2.0).read_bytes()
    (d / "cut.wav").write_bytes(full[: len(full) // 3])
    write_audio(d / "blip.wav", 16000, 0.02)  # 20 ms: shorter than the model's 25 ms receptive field
    out = tmp_path / "out"
    p = call_main("infer", "audio", d, "--out", out, "--model", tiny_models["audio"], "--chunk-seconds", "3",
                  "--batch-size", "4")
    assert p.returncode == 1, p.stderr
    recs = by_key(records(out))
    ok = {k for k, r in recs.items() if r["status"] == "ok"}
    assert ok == {"tone8k.wav", "speech22k.flac", "stereo44k.ogg", "stereo48k.mp3", "long16k.wav", "silent.wav"}
    assert recs["silent.wav"]["output"] == ""  # no speech: an empty transcript, not an error
    assert abs(recs["long16k.wav"]["audio_seconds"] - 7.0) < 0.01
    assert abs(recs["speech22k.flac"]["audio_seconds"] - 1.5) < 0.01
    assert "not a readable audio file" in recs["fake.wav"]["error"]
    assert "truncated audio" in recs["cut.wav"]["error"]
    assert "shorter than the model's 25 ms receptive field" in recs["blip.wav"]["error"]
    [run] = only_run(client)
    assert run.info.status == "FINISHED"
    assert (run.data.metrics["n_ok"], run.data.metrics["n_failed"]) == (6, 3)
    assert run.data.metrics["audio_seconds_per_second"] > 0


def test_out_equal_to_the_input_folder_never_reads_the_jobs_own_files(tmp_path, tiny_models):
    d = tmp_path / "inbox"
    d.mkdir()
    (d / "a.txt").write_text("Hello world")
    lines = [{"prompt": "Once upon\u2028a time"}, {"prompt": "Next\u0085line"}]  # separators JSON leaves raw
    (d / "p.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    args = ("infer", "text", d, "--out", d, "--model", tiny_models["text"], "--max-new-tokens", "3", "--glob", "*")
    for run in (1, 2):
        p = call_main(*args)
        assert p.returncode == 0, p.stderr
        assert "3 inputs: 3 ok, 0 failed" in p.stdout, p.stdout
        assert set(by_key(records(d))) == {"a.txt", "p.jsonl:1", "p.jsonl:2"}
    assert "(3 already done, skipped)" in p.stdout


def test_inputs_that_are_gone_stop_counting_and_an_odd_record_is_redone(tmp_path, tiny_models, client):
    d = tmp_path / "inbox"
    d.mkdir()
    for name, text in [("good.txt", "Hello world"), ("other.txt", "Fine prompt"), ("empty.txt", "")]:
        (d / name).write_text(text)
    (d / "p.jsonl").write_text('{"prompt": "one"}\n{"prompt": "two"}\n')
    out = tmp_path / "out"
    args = ("infer", "text", d, "--out", out, "--model", tiny_models["text"], "--max-new-tokens", "3")
    p = call_main(*args)
    assert p.returncode == 1 and "1 of 5 inputs failed" in p.stderr, p.stderr
    (d / "empty.txt").unlink()  # the failed input, and an ok one, deleted; a .jsonl line removed
    (d / "other.txt").unlink()
    (d / "p.jsonl").write_text('{"prompt": "one"}\n')
    odd = [dict(r, line="one") if r["line"] == 1 else r for r in records(out)]  # p.jsonl:1's line as text
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in odd))
    for skipped in (1, 2):  # p.jsonl:1 is redone once
        p = call_main(*args)
        assert p.returncode == 0, p.stderr
        assert f"2 inputs: 2 ok, 0 failed ({skipped} already done, skipped)" in p.stdout, p.stdout
        assert "3 inputs of earlier runs no longer exist" in p.stdout and "FAILED" not in p.stdout
        m = only_run(client)[0].data.metrics
        assert (m["n_inputs"], m["n_ok"], m["n_failed"], m["n_gone"]) == (2, 2, 0, 3)
    recs = by_key(records(out))
    assert {k for k, r in recs.items() if r.get("gone")} == {"empty.txt", "other.txt", "p.jsonl:2"}
    assert recs["empty.txt"]["status"] == "error" and recs["other.txt"]["output"]  # kept as they were
    assert all(isinstance(r["line"], int | None) for r in recs.values())
    csv = pd.read_csv(out / "results.csv")
    assert sorted(csv.loc[csv["gone"], "input"]) == ["empty.txt", "other.txt", "p.jsonl"]
    assert not list(out.glob("*.tmp"))


def test_a_read_only_output_folder_exits_2_before_any_work(tmp_path, tiny_models, prompts, client):
    folder = read_only_folder(tmp_path)
    p = call_main("infer", "text", prompts, "--out", folder, "--model", tiny_models["text"])
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (f"trackflow infer: cannot write to output folder {str(folder)!r}: Permission denied; "
                                "make it writable or pass another --out")
    assert client.get_experiment_by_name("batch-inference") is None


def test_max_new_tokens_beyond_the_models_context_exits_2_before_any_work(tmp_path, tiny_models, prompts, client):
    """The tiny GPT-2's context is 128 tokens: 128 new ones leave no room for any prompt."""
    p = call_main("infer", "text", prompts, "--out", tmp_path / "out", "--model", tiny_models["text"],
                  "--max-new-tokens", "128")
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (f"trackflow infer: --max-new-tokens 128 leaves no room for a prompt in the context "
                                f"of model {str(tiny_models['text'])!r} (128 tokens); pass a value below 128")
    assert client.get_experiment_by_name("batch-inference") is None and not (tmp_path / "out").exists()
    # a deployment, which has no CLI in front: the flow refuses it before a run or a results log is made
    with pytest.raises(ModelSourceError, match="config.max_new_tokens 128 leaves no room"):
        text_inference_pipeline(TextInferConfig(in_dir=str(prompts), out_dir=str(tmp_path / "out"),
                                                model=str(tiny_models["text"]), max_new_tokens=128))
    assert client.get_experiment_by_name("batch-inference") is None and not (tmp_path / "out").exists()


def test_a_model_config_that_is_not_json_exits_2_naming_the_file(tmp_path, tiny_models, prompts, client):
    import shutil

    model = tmp_path / "broken-model"
    shutil.copytree(tiny_models["text"], model)
    (model / "config.json").write_text("{n_positions: 128")
    p = call_main("infer", "text", prompts, "--out", tmp_path / "out", "--model", model)
    assert p.returncode == 2, p.stderr
    [line] = p.stderr.strip().splitlines()
    assert f"cannot read {model / 'config.json'} of model {str(model)!r} (JSONDecodeError" in line
    assert client.get_experiment_by_name("batch-inference") is None and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "has no files matching"),
        (lambda d: (d.mkdir(), (d / "notes.md").write_text("x")), "has no files matching"),
    ],
    ids=["missing", "empty", "nothing-matches"],
)
def test_missing_or_empty_folder_exits_2_with_no_run(tmp_path, tiny_models, client, setup, message):
    d = tmp_path / "in"
    setup(d)
    p = call_main("infer", "text", d, "--out", tmp_path / "out", "--model", tiny_models["text"])
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and str(d) in p.stderr and "Traceback" not in p.stderr
    assert client.get_experiment_by_name("batch-inference") is None


def test_allow_empty_inbox_is_nothing_to_do_even_when_its_folder_is_missing(tmp_path, tiny_models, client):
    d = tmp_path / "inbox"
    d.mkdir()
    p = call_main("infer", "text", d, "--out", tmp_path / "out", "--model", tiny_models["text"], "--allow-empty")
    assert p.returncode == 0, p.stderr
    assert "Nothing to do: no files matching" in p.stdout
    assert client.get_experiment_by_name("batch-inference") is None
    p = call_main("infer", "text", tmp_path / "nope", "--out", tmp_path / "out", "--model", tiny_models["text"],
                  "--allow-empty")
    assert p.returncode == 0 and "Nothing to do" in p.stdout, p.stderr
    assert client.get_experiment_by_name("batch-inference") is None


def test_uncached_hub_model_offline_exits_2_at_once(prompts, tmp_path):
    t0 = time.perf_counter()
    p = run_cli("infer", "text", prompts, "--out", tmp_path / "out", "--model", "gpt2", timeout=120,
                HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"))
    assert p.returncode == 2, p.stderr
    assert "'gpt2' is not in the local Hugging Face cache" in p.stderr and "network access" in p.stderr
    assert time.perf_counter() - t0 < 60  # transformers alone retries for ~30 s before failing


@pytest.mark.slow
def test_resumes_after_the_process_is_killed_mid_batch(tmp_path, tiny_models):
    d = tmp_path / "in"
    d.mkdir()
    n = 40  # the kill lands within ~10 ms of the 10th record: room to spare, and a short rerun
    for i in range(n):
        (d / f"p{i:03d}.txt").write_text(f"Prompt number {i} about the sea and the sky")
    out = tmp_path / "out"
    args = [TRACKFLOW, "infer", "text", str(d), "--out", str(out), "--model", str(tiny_models["text"]),
            "--max-new-tokens", "24", "--batch-size", "2"]
    proc = subprocess.Popen(args, env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if results.exists() and results.stat().st_size and results.read_bytes().count(b"\n") >= 10:
            break
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = results.read_bytes().count(b"\n")
    assert 10 <= done_before < n, f"killed too late to test resumption ({done_before} of {n} done)"
    p = call_main(*args[1:])
    assert p.returncode == 0, p.stderr
    recs = by_key(records(out))
    assert len(recs) == n and all(r["status"] == "ok" for r in recs.values())
    skipped = int(p.stdout.split(" already done")[0].rsplit("(", 1)[1])
    assert skipped >= done_before  # what the killed run finished was kept, not redone
    assert len(pd.read_csv(out / "results.csv")) == n


def test_an_error_in_a_flow_run_names_the_deployment_parameter(prompts, tmp_path, client):
    from flows.infer import text_inference_pipeline
    from trackflow.config import TextInferConfig

    config = TextInferConfig(in_dir=str(prompts), out_dir=str(tmp_path / "out"), model=str(tmp_path / "no-model"))
    state = text_inference_pipeline(config, return_state=True)  # as a deployment's run calls it
    assert state.is_failed()
    assert state.message.endswith(f"model folder {str(tmp_path / 'no-model')!r} does not exist; check config.model")
    assert "--model" not in state.message
