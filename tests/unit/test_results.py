"""results.jsonl / results.csv: durable appends, torn-line repair, one record per input, resume keys."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.results import OutputBusyError, ResultsLog, fingerprint


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
