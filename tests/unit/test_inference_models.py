"""Model loading, generation and transcription on tiny local models (no Prefect flow, no download)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tasks.generation import check_prompt_lengths, generate_batch
from tasks.models import ModelSourceError, load_speech_model, load_text_model, resolve_model_source
from tasks.transcription import plan_windows, transcribe_clips

SETTINGS = {"max_new_tokens": 10, "do_sample": False}


@pytest.fixture(scope="module")
def lm(tiny_models):
    return load_text_model(str(tiny_models["text"]), "cpu")


@pytest.fixture(scope="module")
def sm(tiny_models):
    return load_speech_model(str(tiny_models["audio"]), "cpu")


def test_tiny_models_are_safetensors_folders(tiny_models):
    for folder in tiny_models.values():
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
        assert not list(folder.glob("*.bin"))


def test_batched_greedy_generation_equals_one_at_a_time(lm):
    prompts = ["Hello world", "The quick brown fox jumps over the lazy", "Once", "Prefect schedules the flows and"]
    batched = [g.text for g in generate_batch(lm, prompts, SETTINGS)]
    single = [generate_batch(lm, [p], SETTINGS)[0].text for p in prompts]
    assert batched == single
    assert len(set(batched)) > 1  # the prompts really lead to different continuations


def test_generation_counts_new_tokens_and_is_deterministic(lm):
    a = generate_batch(lm, ["Hello world"], SETTINGS)
    b = generate_batch(lm, ["Hello world"], SETTINGS)
    assert a == b and 0 < a[0].new_tokens <= 10


def test_sampling_is_seeded(lm):
    kw = {"max_new_tokens": 12, "do_sample": True, "temperature": 1.5, "top_k": 0, "top_p": 1.0}
    a = generate_batch(lm, ["Hello"], kw | {"seed": 1})[0].text
    assert a == generate_batch(lm, ["Hello"], kw | {"seed": 1})[0].text
    assert any(generate_batch(lm, ["Hello"], kw | {"seed": s})[0].text != a for s in range(2, 6))


def test_too_long_prompt_is_an_input_error_naming_the_limit(lm):
    ok, long = check_prompt_lengths(lm, ["short", "word " * 500], max_new_tokens=10)
    assert isinstance(ok, int)
    assert "prompt too long" in str(long) and "128" in str(long) and "--max-new-tokens" in str(long)


def test_batched_transcripts_equal_one_at_a_time(sm):
    rng = np.random.default_rng(0)
    # Equal lengths share a batch; the odd one out runs alone, unpadded.
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 16000, 24000, 16000, 16000)]
    batched = transcribe_clips(sm, clips, chunk_seconds=30.0)
    single = [transcribe_clips(sm, [c], chunk_seconds=30.0)[0] for c in clips]
    assert batched == single
    assert len(set(batched)) > 1


def test_zero_padding_would_change_a_group_norm_model(sm):
    """Why only equal lengths share a batch: padding a clip changes wav2vec2-base's output."""
    import torch

    x = (0.1 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32)
    x = (x - x.mean()) / x.std()
    with torch.inference_mode():
        alone = sm.model(torch.from_numpy(x)[None]).logits[0]
        padded = sm.model(torch.from_numpy(np.concatenate([x, np.zeros(8000, np.float32)]))[None]).logits[0]
    assert not torch.allclose(alone, padded[: len(alone)], atol=1e-3)


def test_plan_windows_tile_the_clip():
    ws = plan_windows(1000, chunk=300, stride=50)
    kept = [(w.start + w.drop_left, w.stop - w.drop_right) for w in ws]
    assert kept[0][0] == 0 and kept[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))
    assert all(w.stop - w.start <= 300 for w in ws)
    assert plan_windows(200, chunk=300, stride=50)[0].stop == 200


def test_long_recording_is_chunked_and_stitched(sm):
    rng = np.random.default_rng(2)
    clip = (0.1 * rng.standard_normal(16000 * 9)).astype(np.float32)
    whole = transcribe_clips(sm, [clip], chunk_seconds=30)[0]
    chunked = transcribe_clips(sm, [clip], chunk_seconds=3)[0]
    assert whole and chunked
    # The stitched frames cover the clip: transcripts have comparable length.
    assert 0.7 < len(chunked) / len(whole) < 1.3


def test_local_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelSourceError, match="has no config.json"):
        resolve_model_source(str(tmp_path))
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model_source(str(tmp_path / "missing"))


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable endpoint"])
def test_uncached_hub_id_offline_fails_at_once_naming_both_ways_out(monkeypatch, tmp_path, how):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    t0 = time.perf_counter()
    with pytest.raises(ModelSourceError) as err:
        load_text_model("gpt2", "cpu")
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert "'gpt2'" in msg and "local folder" in msg and "network access" in msg


def test_model_from_an_mlflow_uri(tiny_models, client, tmp_path):
    exp = client.create_experiment("models", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(tiny_models["text"]), "tiny-gpt2")
    lm = load_text_model(f"runs:/{run.info.run_id}/tiny-gpt2", "cpu")
    assert lm.source.kind == "mlflow"
    assert generate_batch(lm, ["Hello"], SETTINGS)[0].text  # it generates
    with pytest.raises(ModelSourceError, match="cannot be fetched"):
        resolve_model_source(f"runs:/{'0' * 32}/nothing")


def test_a_speech_folder_is_not_a_text_model(tiny_models):
    with pytest.raises(ModelSourceError, match="cannot be loaded as a text-generation model"):
        load_text_model(str(tiny_models["audio"]), "cpu")
