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
    decode_audio,
    glob_matcher,
    iter_files,
    list_inputs,
    read_prompt_file,
    read_prompts,
    read_recording,
    text_digest,
)
from tests.helpers.audio import write_audio


def read_prompt_files(root, rels):
    return [x for rel in rels for x in read_prompt_file(root, rel)]


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
def test_glob_patterns(pattern, path, matches):
    assert bool(glob_matcher(pattern).match(path)) is matches


def test_iter_files_sorted_skips_hidden_and_output_folder(tmp_path):
    for rel in ["b.txt", "a.txt", "sub/c.txt", ".hidden.txt", ".git/d.txt", "out/results.txt", "x.md"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("p")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_files(tmp_path, "**/*.txt", exclude=tmp_path / "out")]
    assert found == ["a.txt", "b.txt", "sub/c.txt"]
    assert list_inputs(tmp_path, "**/*.txt", tmp_path / "out", allow_empty=False) == ["a.txt", "b.txt", "sub/c.txt"]


@pytest.mark.parametrize("glob", ["*", "**/*.{txt,jsonl}", "**/*.jsonl"])
def test_an_output_folder_equal_to_the_input_folder_never_yields_the_jobs_own_files(tmp_path, glob):
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "results.jsonl").write_text('{"prompt": "a user file of that name, elsewhere"}\n')
    for own in ["results.jsonl", "results.csv", "results.jsonl.tmp", "results.csv.tmp", ".trackflow.lock"]:
        (tmp_path / own).write_text('{"input": "prompts.jsonl", "line": 1, "status": "ok"}\n')
    expected = ["prompts.jsonl"] + (["sub/results.jsonl"] if "**" in glob else [])
    for exclude in (tmp_path, str(tmp_path) + "/", tmp_path / "sub" / ".."):  # the same folder, spelt three ways
        assert list_inputs(tmp_path, glob, exclude, allow_empty=False) == expected
    assert list_inputs(tmp_path, glob, None, allow_empty=False) != expected  # without --out they are ordinary files
    (tmp_path / "prompts.jsonl").unlink()
    (tmp_path / "sub" / "results.jsonl").unlink()
    with pytest.raises(InputFolderError, match="has no files matching"):  # the job's files alone are not inputs
        check_input_dir(tmp_path, glob, tmp_path, allow_empty=False)


def test_check_input_dir_errors_name_the_folder(tmp_path):
    with pytest.raises(InputFolderError, match="does not exist"):
        check_input_dir(tmp_path / "nope", "**/*.txt", None, allow_empty=False)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InputFolderError, match="is a file"):
        check_input_dir(tmp_path / "f.txt", "**/*.txt", None, allow_empty=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFolderError, match=r"no files matching '\*\*/\*.txt'"):
        check_input_dir(tmp_path / "empty", "**/*.txt", None, allow_empty=False)
    check_input_dir(tmp_path, "**/*.txt", None, allow_empty=False)  # has one: no error


def test_allow_empty_makes_a_missing_or_empty_folder_nothing_to_do(tmp_path):
    (tmp_path / "inbox").mkdir()
    assert check_input_dir(tmp_path / "inbox", "**/*.txt", None, allow_empty=True) is True
    (tmp_path / "inbox" / "a.txt").write_text("hi")
    assert check_input_dir(tmp_path / "inbox", "**/*.txt", None, allow_empty=True) is False
    # a scheduled inbox on a fresh clone: its folder is not there yet
    assert check_input_dir(tmp_path / "nope", "**/*.txt", None, allow_empty=True) is True
    assert list_inputs(tmp_path / "nope", "**/*.txt", None, allow_empty=True) == []
    with pytest.raises(InputFolderError, match="does not exist"):
        list_inputs(tmp_path / "nope", "**/*.txt", None, allow_empty=False)
    with pytest.raises(InputFolderError, match="is a file"):
        check_input_dir(tmp_path / "inbox" / "a.txt", "**/*.txt", None, allow_empty=True)


def test_read_prompts_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("Hello there\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(
        "\n".join([json.dumps({"prompt": "one"}), "", json.dumps({"prompt": "two"}), '{"text": "x"}', "{bad", json.dumps({"prompt": "  "})])
    )
    a = list(read_prompts(tmp_path / "a.txt", "a.txt", tmp_path))
    assert [(i.key, v) for i, v in a] == [("a.txt", "Hello there\n")]
    b = list(read_prompts(tmp_path / "b.jsonl", "b.jsonl", tmp_path))
    assert [i.key for i, _ in b] == ["b.jsonl:1", "b.jsonl:3", "b.jsonl:4", "b.jsonl:5", "b.jsonl:6"]
    assert [v for _, v in b[:2]] == ["one", "two"]
    assert "no string \"prompt\" field" in str(b[2][1])
    assert "not valid JSON" in str(b[3][1])
    assert "empty prompt" in str(b[4][1])
    assert len({i.digest for i, _ in b}) == 5  # per-line content hashes


def test_jsonl_lines_end_at_newline_only_so_unicode_separators_stay_in_the_prompt(tmp_path):
    prompts = ["one\u2028two", "para\u2029graph", "next\u0085line"]
    # ensure_ascii=False writes U+2028, U+2029 and U+0085 unescaped, as JSON allows; the last line ends in \r\n
    text = "\n".join(json.dumps({"prompt": p}, ensure_ascii=False) for p in prompts) + "\n\n"
    (tmp_path / "p.jsonl").write_text(text + json.dumps({"prompt": "plain"}) + "\r\n", encoding="utf-8")
    got = list(read_prompts(tmp_path / "p.jsonl", "p.jsonl", tmp_path))
    assert [(i.key, v) for i, v in got] == [("p.jsonl:1", prompts[0]), ("p.jsonl:2", prompts[1]),
                                            ("p.jsonl:3", prompts[2]), ("p.jsonl:5", "plain")]
    assert "\u2028" in (tmp_path / "p.jsonl").read_text(encoding="utf-8")  # written raw, not as \\u2028
    assert got[3][0].digest == text_digest(json.dumps({"prompt": "plain"}))  # the \r is not part of the line


@pytest.mark.parametrize(
    "content,cause",
    [(b"", "empty prompt"), (b"  \n\t", "empty prompt"), (b"caf\xe9", "not valid UTF-8"), (b"ab\x00cd", "NUL bytes")],
)
def test_read_prompts_bad_text_gives_an_error_naming_the_cause(tmp_path, content, cause):
    (tmp_path / "p.txt").write_bytes(content)
    [(item, value)] = list(read_prompts(tmp_path / "p.txt", "p.txt", tmp_path))
    assert isinstance(value, InputError) and cause in str(value)


def test_unreadable_file_is_one_error_record_not_a_crash(tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    (tmp_path / "dir.txt").mkdir()  # reading a directory raises IsADirectoryError
    out = read_prompt_files(tmp_path, ["dir.txt", "ok.txt"])
    assert [x.error is None for x in out] == [False, True]
    assert "not a regular file (a folder)" in out[0].error and out[1].value == "fine"


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("fmt,channels", [("wav", 1), ("flac", 2), ("ogg", 1), ("mp3", 2)])
def test_decode_audio_any_rate_and_channels_to_16k_mono(tmp_path, rate, fmt, channels):
    path = write_audio(tmp_path / f"a.{fmt}", rate, 1.5, channels=channels, kind="speech")
    x = decode_audio(path, tmp_path)
    assert x.dtype == np.float32 and x.ndim == 1
    # MP3 encoders pad a frame or so at each end; the rest must be 1.5 s at 16 kHz.
    assert abs(len(x) - 1.5 * TARGET_RATE) <= (0.1 * TARGET_RATE if fmt == "mp3" else 2)


def test_decode_audio_resamples_the_signal_not_just_its_length(tmp_path):
    path = write_audio(tmp_path / "tone.wav", 44100, 1.0)  # 220 Hz
    x = decode_audio(path, tmp_path)
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
        (lambda p: p.joinpath("empty.mp3").write_bytes(b"") == 0 and p / "empty.mp3", "not a readable audio file"),
    ],
    ids=["not-audio", "truncated-wav", "truncated-flac", "truncated-mp3", "truncated-ogg", "zero-length", "empty-file"],
)
def test_bad_audio_raises_input_error_naming_the_cause(tmp_path, make, cause):
    with pytest.raises(InputError, match=cause):
        decode_audio(make(tmp_path), tmp_path)


def test_decode_audio_refuses_recordings_over_max_seconds(tmp_path):
    path = write_audio(tmp_path / "long.wav", 16000, 3.0)
    with pytest.raises(InputError, match="longer than --max-seconds 2"):
        decode_audio(path, tmp_path, max_seconds=2)


def test_silence_and_short_clips_decode_they_are_the_models_to_judge(tmp_path):
    """A recording without speech is a valid input (its transcript is empty), not an error."""
    quiet = tmp_path / "quiet.wav"
    sf.write(str(quiet), np.zeros(16000, np.float32), 16000)
    assert np.abs(decode_audio(quiet, tmp_path)).max() == 0
    blip = tmp_path / "blip.wav"
    sf.write(str(blip), np.full(800, 0.5, np.float32), 16000)
    assert len(decode_audio(blip, tmp_path)) == 800


# --------------------------------------------------------------------------- odd files


def test_a_fifo_is_an_error_and_never_blocks(tmp_path):
    import os
    import threading

    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "ok.txt").write_text("fine")
    result = {}
    t = threading.Thread(target=lambda: result.update(out=read_prompt_files(tmp_path, ["pipe.txt", "ok.txt"])),
                         daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a FIFO blocked"
    pipe, ok = result["out"]
    assert pipe.error == "not a regular file (a FIFO); only regular files are read"
    assert ok.value == "fine"
    assert list_inputs(tmp_path, "**/*.txt", None, False) == ["ok.txt", "pipe.txt"]  # listed, never opened


def test_a_fifo_named_like_audio_is_an_error_too(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.wav")
    x = read_recording(tmp_path, "pipe.wav", 60.0, is_done=lambda key, digest: False)
    assert "not a regular file (a FIFO)" in x.error


def test_a_unix_socket_is_an_error(tmp_path):
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock.txt"))
        [x] = read_prompt_files(tmp_path, ["sock.txt"])
    assert "not a regular file (a socket)" in x.error


def test_symlinks_are_followed_only_to_regular_files_inside_the_folder(tmp_path):
    import os

    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "real.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(root / "real.txt", root / "sub" / "link.txt")
    os.symlink(tmp_path / "secret.txt", root / "out.txt")
    os.symlink("/dev/null", root / "dev.txt")
    os.symlink(root / "missing.txt", root / "dangling.txt")
    out = {x.item.input: x for x in read_prompt_files(root, ["sub/link.txt", "out.txt", "dev.txt", "dangling.txt"])}
    assert out["sub/link.txt"].value == "inside"
    assert "outside the input folder" in out["out.txt"].error and "secret" not in (out["out.txt"].value or "")
    assert "outside the input folder" in out["dev.txt"].error
    assert "cannot read file" in out["dangling.txt"].error


@pytest.mark.parametrize("name", [b"bad\xffname.txt", b"caf\xe9.txt", b"back\\slash.txt", b"both\\\xfe.txt",
                                  "ünïcode.txt".encode(), b"plain.txt"])
def test_names_that_are_not_utf8_are_escaped_losslessly(name):
    import json
    import os

    from tasks.inputs import escape_name, unescape_name

    fs_name = os.fsdecode(name)
    shown = escape_name(fs_name)
    json.dumps(shown, ensure_ascii=False).encode("utf-8")  # writable as UTF-8
    assert unescape_name(shown) == fs_name
    assert os.fsencode(unescape_name(shown)) == name
    if name in (b"plain.txt", "ünïcode.txt".encode()):
        assert shown == fs_name  # valid names are recorded as they are
    if name == b"bad\xffname.txt":
        assert shown == "bad\\xffname.txt"


def test_escaping_keeps_distinct_names_distinct():
    import os

    from tasks.inputs import escape_name

    names = [b"a\xff.txt", b"a\\xff.txt", b"a\\\\xff.txt", b"a\xc3\xbf.txt"]
    assert len({escape_name(os.fsdecode(n)) for n in names}) == len(names)


def test_a_file_with_a_non_utf8_name_is_read(tmp_path):
    import os

    from tasks.inputs import escape_name

    raw = os.fsdecode(b"bad\xffname.txt")
    (tmp_path / raw).write_text("hello")
    [path] = iter_files(tmp_path, "**/*.txt")
    rel = escape_name(path.relative_to(tmp_path).as_posix())
    [x] = read_prompt_files(tmp_path, [rel])
    assert x.value == "hello" and x.item.input == "bad\\xffname.txt"


def test_a_huge_prompt_file_is_refused_without_reading_it_all(tmp_path):
    from tasks.inputs import MAX_PROMPT_FILE

    with open(tmp_path / "huge.txt", "wb") as f:
        f.truncate(MAX_PROMPT_FILE * 50)  # sparse: 50 MiB of zeros
    [(_, value)] = list(read_prompts(tmp_path / "huge.txt", "huge.txt", tmp_path))
    assert isinstance(value, InputError) and "split it into a .jsonl" in str(value)
