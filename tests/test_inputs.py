"""Finding, reading and decoding batch-inference inputs (no Prefect, no models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tasks.inputs import (
    TARGET_RATE,
    InputError,
    InputFolderError,
    check_input_dir,
    count_items,
    decode_audio,
    glob_regex,
    iter_files,
    read_prompt_files,
    read_prompts,
)
from tests.conftest import write_audio


@pytest.mark.parametrize(
    "pattern,path,matches",
    [
        ("**/*.{txt,jsonl}", "a.txt", True),
        ("**/*.{txt,jsonl}", "d/e/A.JSONL", True),
        ("**/*.txt", "a.txt.bak", False),
        ("*.txt", "d/a.txt", False),
        ("**/*.{wav,flac,ogg,mp3}", "x y/ü.Wav", True),
        ("data/**/*.wav", "data/a.wav", True),
        ("data/**/*.wav", "other/a.wav", False),
    ],
)
def test_glob_regex(pattern, path, matches):
    assert bool(glob_regex(pattern).match(path)) is matches


def test_iter_files_sorted_skips_hidden_and_output_folder(tmp_path):
    for rel in ["b.txt", "a.txt", "sub/c.txt", ".hidden.txt", ".git/d.txt", "out/results.txt", "x.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("p")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_files(tmp_path, "**/*.txt", exclude=tmp_path / "out")]
    assert found == ["a.txt", "b.txt", "sub/c.txt"]
    assert count_items(tmp_path, "**/*.txt", exclude=tmp_path / "out") == 3


def test_check_input_dir_errors_name_the_folder(tmp_path):
    with pytest.raises(InputFolderError, match="does not exist"):
        check_input_dir(tmp_path / "nope", "**/*.txt")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InputFolderError, match="is a file"):
        check_input_dir(tmp_path / "f.txt", "**/*.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFolderError, match=r"no files matching '\*\*/\*.txt'"):
        check_input_dir(tmp_path / "empty", "**/*.txt")
    check_input_dir(tmp_path, "**/*.txt")  # has one: no error


def test_allow_empty_makes_only_an_existing_empty_folder_nothing_to_do(tmp_path):
    (tmp_path / "inbox").mkdir()
    assert check_input_dir(tmp_path / "inbox", "**/*.txt", allow_empty=True) is True
    (tmp_path / "inbox" / "a.txt").write_text("hi")
    assert check_input_dir(tmp_path / "inbox", "**/*.txt", allow_empty=True) is False
    with pytest.raises(InputFolderError, match="does not exist"):
        check_input_dir(tmp_path / "nope", "**/*.txt", allow_empty=True)
    with pytest.raises(InputFolderError, match="is a file"):
        check_input_dir(tmp_path / "inbox" / "a.txt", "**/*.txt", allow_empty=True)


def test_read_prompts_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("Hello there\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(
        "\n".join([json.dumps({"prompt": "one"}), "", json.dumps({"prompt": "two"}), '{"text": "x"}', "{bad", json.dumps({"prompt": "  "})])
    )
    a = list(read_prompts(tmp_path / "a.txt", "a.txt"))
    assert [(i.key, v) for i, v in a] == [("a.txt", "Hello there\n")]
    b = list(read_prompts(tmp_path / "b.jsonl", "b.jsonl"))
    assert [i.key for i, _ in b] == ["b.jsonl:1", "b.jsonl:3", "b.jsonl:4", "b.jsonl:5", "b.jsonl:6"]
    assert [v for _, v in b[:2]] == ["one", "two"]
    assert "no string \"prompt\" field" in str(b[2][1])
    assert "not valid JSON" in str(b[3][1])
    assert "empty prompt" in str(b[4][1])
    assert len({i.digest for i, _ in b}) == 5  # per-line content hashes


@pytest.mark.parametrize(
    "content,cause",
    [(b"", "empty prompt"), (b"  \n\t", "empty prompt"), (b"caf\xe9", "not valid UTF-8"), (b"ab\x00cd", "NUL bytes")],
)
def test_read_prompts_bad_text_gives_an_error_naming_the_cause(tmp_path, content, cause):
    (tmp_path / "p.txt").write_bytes(content)
    [(item, value)] = list(read_prompts(tmp_path / "p.txt", "p.txt"))
    assert isinstance(value, InputError) and cause in str(value)


def test_unreadable_file_is_one_error_record_not_a_crash(tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    (tmp_path / "dir.txt").mkdir()  # reading a directory raises IsADirectoryError
    out = read_prompt_files.fn(str(tmp_path), ["dir.txt", "ok.txt"])
    assert [x.error is None for x in out] == [False, True]
    assert "cannot read file" in out[0].error and out[1].value == "fine"


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("fmt,channels", [("wav", 1), ("flac", 2), ("ogg", 1), ("mp3", 2)])
def test_decode_audio_any_rate_and_channels_to_16k_mono(tmp_path, rate, fmt, channels):
    path = write_audio(tmp_path / f"a.{fmt}", rate, 1.5, channels=channels, kind="speech")
    x = decode_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    # MP3 encoders pad a frame or so at each end; the rest must be 1.5 s at 16 kHz.
    assert abs(len(x) - 1.5 * TARGET_RATE) <= (0.1 * TARGET_RATE if fmt == "mp3" else 2)


def test_decode_audio_resamples_the_signal_not_just_its_length(tmp_path):
    path = write_audio(tmp_path / "tone.wav", 44100, 1.0)  # 220 Hz
    x = decode_audio(path)
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * TARGET_RATE / len(x) - 220) < 2


def _truncated(tmp_path, fmt):
    path = write_audio(tmp_path / f"full.{fmt}", 22050, 2.0)
    data = path.read_bytes()
    out = tmp_path / f"trunc.{fmt}"
    out.write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize(
    "make,cause",
    [
        (lambda p: p.joinpath("text.wav").write_bytes(b"this is not audio at all") and p / "text.wav", "not a readable audio file"),
        (lambda p: _truncated(p, "wav"), "truncated audio"),
        (lambda p: _truncated(p, "flac"), "corrupt audio"),
        (lambda p: _truncated(p, "mp3"), "truncated audio"),
        (lambda p: _truncated(p, "ogg"), "not a readable audio file"),
        (lambda p: (sf.write(str(p / "zero.wav"), np.zeros(0, np.float32), 16000), p / "zero.wav")[1], "zero-length clip"),
        (lambda p: (sf.write(str(p / "quiet.wav"), np.zeros(16000, np.float32), 16000), p / "quiet.wav")[1], "silence"),
        (lambda p: (sf.write(str(p / "blip.wav"), np.full(800, 0.5, np.float32), 16000), p / "blip.wav")[1], "at least 100 ms"),
        (lambda p: p.joinpath("empty.mp3").write_bytes(b"") == 0 and p / "empty.mp3", "not a readable audio file"),
    ],
    ids=["not-audio", "truncated-wav", "truncated-flac", "truncated-mp3", "truncated-ogg", "zero-length", "silence",
         "too-short", "empty-file"],
)
def test_bad_audio_raises_input_error_naming_the_cause(tmp_path, make, cause):
    with pytest.raises(InputError, match=cause):
        decode_audio(make(tmp_path))


def test_decode_audio_refuses_recordings_over_max_seconds(tmp_path):
    path = write_audio(tmp_path / "long.wav", 16000, 3.0)
    with pytest.raises(InputError, match="longer than --max-seconds 2"):
        decode_audio(path, max_seconds=2)
