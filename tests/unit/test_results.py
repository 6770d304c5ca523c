"""results.jsonl / results.csv: durable appends, torn-line repair, one record per input, resume keys."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.results import OutputBusyError, OutputFolderError, ResultsLog, fingerprint, prepare_out_dir
from tests.helpers.files import read_only_folder


def rec(name, status="ok", digest="d1", line=None, output="out"):
    return {"input": name, "line": line, "status": status, "output": output if status == "ok" else None,
            "error": None if status == "ok" else "boom", "digest": digest}


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_append_then_reopen_knows_what_is_done(tmp_path):
    with ResultsLog(tmp_path, "fp") as log:
        log.append([rec("a.txt"), rec("b.txt", "error"), rec("c.jsonl", line=2)])
    with ResultsLog(tmp_path, "fp") as log:
        assert log.is_done("a.txt", "d1")
        assert not log.is_done("a.txt", "d2")  # content changed
        assert not log.is_done("b.txt", "d1")  # failed last time: retried
        assert log.is_done("c.jsonl:2", "d1") and not log.is_done("c.jsonl", "d1")
    with ResultsLog(tmp_path, "other-model") as log:
        assert not log.is_done("a.txt", "d1")  # other settings: redone


def test_torn_last_line_is_dropped_and_later_records_win(tmp_path):
    with ResultsLog(tmp_path, "fp") as log:
        log.append([rec("a.txt", "error"), rec("b.txt")])
        log.append([rec("a.txt", output="second try")])
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"input": "c.txt", "status": "o')  # a crash mid-write
    with ResultsLog(tmp_path, "fp") as log:
        assert log.n_previous == 2
        assert log.is_done("a.txt", "d1") and not log.is_done("c.txt", "d1")
    got = lines(tmp_path / "results.jsonl")
    assert [(r["input"], r["output"]) for r in got] == [("b.txt", "out"), ("a.txt", "second try")]


def test_finalize_writes_csv_with_one_row_per_input_and_counts(tmp_path):
    with ResultsLog(tmp_path, "fp") as log:
        log.append([rec("a.txt", "error"), rec("odd, \"name\"\n.txt"), rec("c.jsonl", line=1)])
        log.append([rec("a.txt")])
        counts = log.finalize()
    assert counts == {"ok": 3}
    frame = pd.read_csv(tmp_path / "results.csv")
    assert sorted(frame["input"]) == sorted(["a.txt", "odd, \"name\"\n.txt", "c.jsonl"])
    assert list(frame.columns[:5]) == ["input", "line", "status", "output", "error"]
    assert not (tmp_path / "results.csv.tmp").exists() and not (tmp_path / "results.jsonl.tmp").exists()


def test_a_second_writer_on_the_same_folder_is_refused(tmp_path):
    with ResultsLog(tmp_path, "fp"):
        with pytest.raises(OutputBusyError, match="in use by another trackflow job"):
            ResultsLog(tmp_path, "fp")
    ResultsLog(tmp_path, "fp").close()  # released on close


def test_fingerprint_depends_on_settings_only():
    assert fingerprint({"model": "gpt2", "n": 1}) == fingerprint({"n": 1, "model": "gpt2"})
    assert fingerprint({"model": "gpt2"}) != fingerprint({"model": "distilgpt2"})


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="cannot create output folder"):
        ResultsLog(tmp_path / "file" / "out", "fp")


def test_a_read_only_output_folder_is_refused_naming_it_and_the_fix(tmp_path):
    folder = read_only_folder(tmp_path)
    for attempt in (lambda: prepare_out_dir(folder), lambda: ResultsLog(folder, "fp")):
        with pytest.raises(OutputFolderError) as exc:
            attempt()
        assert f"cannot write to output folder {str(folder)!r}" in str(exc.value)
        assert "make it writable or pass another config.out_dir" in str(exc.value) and "\n" not in str(exc.value)
    assert prepare_out_dir(tmp_path / "new" / "out").is_dir()  # a missing one is created


@pytest.mark.parametrize("odd", [
    {"input": "c.jsonl", "line": "three", "status": "ok", "digest": "d1"},  # the line as text
    {"input": "c.jsonl", "line": 3.0, "status": "ok", "digest": "d1"},
    {"input": "c.jsonl", "line": True, "status": "ok", "digest": "d1"},
    {"input": "c.jsonl", "line": 0, "status": "ok", "digest": "d1"},
    {"input": "c.jsonl", "line": 2**64, "status": "ok", "digest": "d1"},
    {"input": 7, "status": "ok", "digest": "d1"},
    {"input": "c.jsonl", "status": "done", "digest": "d1"},
    {"input": "c.jsonl", "status": "ok", "digest": 5},
    {"input": "c.jsonl", "status": "ok", "digest": "d1", "seconds": "fast"},
    {"input": "c.jsonl", "status": "ok", "digest": "d1", "gone": "no"},
    ["c.jsonl", 3, "ok"],
    "c.jsonl",
], ids=lambda odd: json.dumps(odd)[:40])
def test_a_record_that_does_not_fit_the_schema_is_dropped_like_a_torn_line(tmp_path, odd):
    with ResultsLog(tmp_path, "fp") as log:
        log.append([rec("a.txt")])
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write(json.dumps(dict(odd, fingerprint="fp") if isinstance(odd, dict) else odd) + "\n")
    with ResultsLog(tmp_path, "fp") as log:
        assert log.n_previous == 1
        assert log.is_done("a.txt", "d1")
        assert not log.is_done("c.jsonl:3", "d1") and not log.is_done("c.jsonl", "d1")  # redone
        assert log.finalize() == {"ok": 1}
    assert [r["input"] for r in lines(tmp_path / "results.jsonl")] == ["a.txt"]
    assert list(pd.read_csv(tmp_path / "results.csv")["input"]) == ["a.txt"]
    assert not list(tmp_path.glob("*.tmp"))


def test_records_of_inputs_that_are_gone_are_kept_marked_and_counted_apart(tmp_path):
    with ResultsLog(tmp_path, "fp") as log:
        log.append([rec("a.txt"), rec("b.txt", "error"), rec("c.jsonl", line=1), rec("c.jsonl", "error", line=2)])
        assert log.finalize({"a.txt", "b.txt", "c.jsonl:1", "c.jsonl:2"}) == {"ok": 2, "error": 2}
    with ResultsLog(tmp_path, "fp") as log:  # b.txt deleted, c.jsonl cut to one line
        assert log.finalize({"a.txt", "c.jsonl:1"}) == {"ok": 2, "gone": 2}
    got = {(r["input"], r["line"]): r for r in lines(tmp_path / "results.jsonl")}
    assert len(got) == 4  # kept
    assert got[("b.txt", None)]["gone"] is True and got[("b.txt", None)]["error"] == "boom"
    assert got[("c.jsonl", 2)]["gone"] is True and "gone" not in got[("a.txt", None)]
    csv = pd.read_csv(tmp_path / "results.csv", dtype={"line": "Int64"})
    assert {(r.input, r.line if pd.notna(r.line) else None): r.gone for r in csv.itertuples()} == {
        ("a.txt", None): False, ("b.txt", None): True, ("c.jsonl", 1): False, ("c.jsonl", 2): True}
    with ResultsLog(tmp_path, "fp") as log:  # b.txt is back, unchanged: still known, and no longer gone
        assert log.is_done("a.txt", "d1") and not log.is_done("b.txt", "d1")
        assert log.finalize({"a.txt", "b.txt", "c.jsonl:1"}) == {"ok": 2, "error": 1, "gone": 1}
        assert log.finalize() == {"ok": 2, "error": 1, "gone": 1}  # without `present`, the marks stay as they are
    assert "gone" not in {(r["input"], r["line"]): r for r in lines(tmp_path / "results.jsonl")}[("b.txt", None)]
