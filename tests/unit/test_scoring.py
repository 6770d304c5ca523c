"""Scoring tables (tasks/scoring.py): the model resolved once, every table streamed to Parquet, bad files recorded."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import scoring
from tasks.inputs import InputError
from tasks.models import ModelSourceError
from tasks.results import ResultsLog
from tests.helpers.scoring import register_classifier
from tests.helpers.tables import wine_frame, write

TARGET = "cultivar"


class NoProgress:
    def update(self, n):
        pass


@pytest.fixture(scope="module")
def scorer(tmp_path_factory, mlflow_template):
    """Version 1 of a wine classifier, registered in a store of this module's own and loaded once."""
    d = tmp_path_factory.mktemp("scorer")
    shutil.copy(mlflow_template, d / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        version = register_classifier(write(wine_frame(), d / "wine.csv"), TARGET)
        yield scoring.load_scorer(scoring.resolve_model(f"models:/classifier/{version}"))


def expected(scorer, frame: pd.DataFrame) -> pd.DataFrame:
    return scorer.pyfunc.predict(frame[scorer.columns])


def assert_scores_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got["label"]) == list(want["label"])
    proba = [c for c in want.columns if c.startswith("proba_")]
    assert proba and [c for c in got.columns if c.startswith("proba_")] == proba
    np.testing.assert_allclose(got[proba].to_numpy(), want[proba].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", ["wine.csv", "wine.tsv", "wine.parquet"])
def test_a_table_scores_like_the_model_in_memory_in_batches(tmp_path, scorer, name):
    src = write(wine_frame(), tmp_path / "in" / name)
    out = tmp_path / "out" / "wine.parquet"
    rows = scoring.score_file(src, src.parent, out, scorer, 50, None)  # 178 rows: 4 model calls
    got = pd.read_parquet(out)
    assert rows == len(got) == 178
    assert list(got.columns) == list(wine_frame().columns) + ["label", "proba_barbera", "proba_barolo",
                                                              "proba_grignolino"]
    assert_scores_equal(got, expected(scorer, wine_frame()))
    assert list(got[TARGET]) == list(wine_frame()[TARGET])  # a column the model does not take, kept as written
    assert pq.ParquetFile(out).metadata.num_row_groups == 4
    assert [p.name for p in out.parent.iterdir()] == ["wine.parquet"]  # no temporary file left


def test_keep_chooses_the_input_columns_of_the_output(tmp_path, scorer):
    src = write(wine_frame(), tmp_path / "wine.parquet")
    out = tmp_path / "out.parquet"
    scoring.score_file(src, tmp_path, out, scorer, 1000, [TARGET, "alcohol"])
    got = pd.read_parquet(out)
    assert list(got.columns)[:2] == [TARGET, "alcohol"] and "ash" not in got
    assert_scores_equal(got, expected(scorer, wine_frame()))


def bad(tmp_path, name: str, content) -> tuple:
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, pd.DataFrame):
        write(content, path)
    else:
        path.write_bytes(content)
    return path, tmp_path / "out" / "x.parquet"


@pytest.mark.parametrize("name, content, message", [
    ("empty.csv", b"", "empty file (0 bytes)"),
    ("header.csv", wine_frame().head(0).to_csv(index=False).encode(), "no data rows"),
    ("garbage.parquet", b"PAR1 this is not parquet", "not a readable parquet table"),
    ("missing.csv", wine_frame().drop(columns=["ash", "hue"]), "missing required columns 'ash', 'hue'"),
    ("clash.csv", wine_frame().assign(label="x"), "column 'label' would clash with the model's output"),
], ids=["empty", "header-only", "unreadable", "missing-columns", "clash"])
def test_a_bad_table_raises_an_input_error_naming_the_problem(tmp_path, scorer, name, content, message):
    path, out = bad(tmp_path, name, content)
    with pytest.raises(InputError, match=re.escape(message)):
        scoring.score_file(path, path.parent, out, scorer, 64, None)
    assert not out.parent.exists() or not list(out.parent.iterdir())  # nothing half-written is left


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_value_that_does_not_convert_names_column_row_and_value(tmp_path, scorer, fmt):
    frame = wine_frame()
    frame["magnesium"] = frame["magnesium"].astype(str)  # numbers as text, as a Parquet export may hold them
    frame.loc[130, "magnesium"] = "12O"  # a letter O: data row 131, in the third 64-row batch
    path, out = bad(tmp_path, f"typo.{fmt}", frame)
    with pytest.raises(InputError, match=r"column 'magnesium', row 131: '12O' does not convert to a number"):
        scoring.score_file(path, path.parent, out, scorer, 64, None)
    assert not list(out.parent.iterdir())  # the partial output of the first batches is removed


def test_a_csv_value_that_does_not_parse_mid_file_is_named_and_leaves_no_output(tmp_path, scorer, monkeypatch):
    # The model's columns are parsed as numbers while reading; a value that fails in a later
    # block (after batches were written) makes the file read again as text, naming the value.
    monkeypatch.setattr(scoring, "CSV_BLOCK", 2048)  # the 20 kB file in ~10 blocks
    frame = wine_frame()
    frame["magnesium"] = frame["magnesium"].astype(object)
    frame.loc[150, "magnesium"] = "1O1"
    path, out = bad(tmp_path, "late.csv", frame)
    with pytest.raises(InputError, match=r"column 'magnesium', row 151: '1O1' does not convert to a number"):
        scoring.score_file(path, path.parent, out, scorer, 32, None)
    assert not list(out.parent.iterdir())


def test_model_columns_of_a_csv_are_parsed_as_the_model_types_and_the_others_kept_as_text(tmp_path, scorer):
    path = write(wine_frame(), tmp_path / "wine.csv")
    names, batches = scoring.read_batches(path, tmp_path, 64, {c: t for c, t, _ in scorer.inputs})
    schema = pa.Table.from_batches(list(batches)).schema
    assert schema.field("alcohol").type == pa.float64() and schema.field(TARGET).type == pa.string()
    assert schema.field("colour / tint").type == pa.string()


def test_a_csv_value_only_the_text_conversion_accepts_scores_as_that_value(tmp_path, scorer, monkeypatch):
    monkeypatch.setattr(scoring, "CSV_BLOCK", 2048)
    frame = wine_frame()
    frame["magnesium"] = frame["magnesium"].astype(object)
    frame.loc[160, "magnesium"] = "101\u00a0"  # a no-break space after the number: pyarrow's CSV parser refuses it
    path = write(frame, tmp_path / "in" / "nbsp.csv")
    out = tmp_path / "out" / "nbsp.parquet"
    assert scoring.score_file(path, path.parent, out, scorer, 32, None) == 178
    got = pd.read_parquet(out)
    assert got["magnesium"][160] == 101.0 and got["magnesium"].dtype == np.float64
    want = wine_frame()
    want.loc[160, "magnesium"] = 101
    assert_scores_equal(got, expected(scorer, want))


def test_convert_accepts_stray_spaces_and_missing_values():
    col = pa.chunked_array([pa.array([" 1.5", None, "2"])])
    assert scoring.convert(col, pa.float64(), "x", 0).to_pylist() == [1.5, None, 2.0]
    with pytest.raises(InputError, match=r"column 'x', row 12: 'n/a!' does not convert"):
        scoring.convert(pa.chunked_array([pa.array(["1", "n/a!"])]), pa.float64(), "x", 10)


def test_rebatch_gives_exact_batches_across_uneven_pieces():
    pieces = [pa.record_batch({"a": list(range(i, i + k))}) for i, k in ((0, 3), (3, 0), (3, 7), (10, 5))]
    tables = list(scoring.rebatch(pieces, 4))
    assert [t.num_rows for t in tables] == [4, 4, 4, 3]
    assert sum((t.column("a").to_pylist() for t in tables), []) == list(range(15))


def test_output_names_keep_the_relative_path():
    assert scoring.output_name("a/b.csv") == "a/b.parquet"
    assert scoring.output_name("x.tsv") == "x.parquet" and scoring.output_name("p.parquet") == "p.parquet"


def test_a_folder_job_records_every_file_and_a_rerun_skips_what_is_unchanged(tmp_path, scorer):
    root = tmp_path / "in"
    write(wine_frame().head(100), root / "a.csv")
    write(wine_frame().tail(78), root / "deep" / "b.parquet")
    write(wine_frame().drop(columns="alcohol"), root / "c.csv")
    (root / "notes.txt").write_text("not a table")
    (root / ".hidden.csv").write_text("x\n1\n")
    out = tmp_path / "out"
    _, files = scoring.list_tables(root, out, allow_empty=False)
    assert files == ["a.csv", "c.csv", "deep/b.parquet"]

    def job():
        with ResultsLog(out, "fp", scoring.CSV_COLUMNS) as log:
            stats = scoring.score_files(root, files, out, scorer, log, 64, None, NoProgress())
            log.finalize()
        return stats, {r["input"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}

    stats, recs = job()
    assert (stats.ok, stats.failed, stats.skipped, stats.rows) == (2, 1, 0, 178)
    assert recs["a.csv"]["status"] == "ok" and recs["a.csv"]["rows"] == 100 and recs["a.csv"]["output"] == "a.parquet"
    assert recs["deep/b.parquet"]["output"] == "deep/b.parquet" and len(pd.read_parquet(out / "deep/b.parquet")) == 78
    assert "missing required column 'alcohol'" in recs["c.csv"]["error"]
    assert {r["model_version"] for r in recs.values()} == {scorer.model.version}
    assert all(len(r["digest"]) == 64 for r in recs.values())
    assert list(pd.read_csv(out / "results.csv").columns) == scoring.CSV_COLUMNS

    write(wine_frame().head(90), root / "a.csv")  # changed content: scored again; b unchanged: skipped
    stats, recs = job()
    assert (stats.ok, stats.failed, stats.skipped) == (1, 1, 1)
    assert recs["a.csv"]["rows"] == 90 and len(pd.read_parquet(out / "a.parquet")) == 90


def test_a_table_file_as_input_and_outputs_that_would_collide(tmp_path, scorer):
    src = write(wine_frame(), tmp_path / "in" / "wine.csv")
    assert scoring.list_tables(src, tmp_path / "out", False) == (src.parent, ["wine.csv"])
    write(wine_frame(), tmp_path / "in" / "wine.parquet")
    out = tmp_path / "out"
    with ResultsLog(out, "fp", scoring.CSV_COLUMNS) as log:
        stats = scoring.score_files(src.parent, ["wine.csv", "wine.parquet"], out, scorer, log, 1000, None,
                                    NoProgress())
    assert (stats.ok, stats.failed) == (1, 1)
    assert "its output 'wine.parquet' is already that of 'wine.csv'" in stats.failures[0][1]


def test_the_model_is_named_by_the_registry_and_an_alias_resolves_to_its_version(tmp_path, client):
    with pytest.raises(ModelSourceError, match="not a registered model"):
        scoring.resolve_model("runs:/abc/model")
    with pytest.raises(ModelSourceError, match="no registered model 'classifier'.*trackflow train"):
        scoring.resolve_model("models:/classifier@champion")
    version = register_classifier(write(wine_frame(), tmp_path / "wine.csv"), TARGET, epochs=1)
    with pytest.raises(ModelSourceError, match=r"has no alias 'champion' \(its versions: 1\)"):
        scoring.resolve_model("models:/classifier@champion")
    with pytest.raises(ModelSourceError, match="has no version '7'"):
        scoring.resolve_model("models:/classifier/7")
    client.set_registered_model_alias("classifier", "champion", version)
    model = scoring.resolve_model("models:/classifier@champion")
    assert (model.version, model.uri, model.requested) == ("1", "models:/classifier/1", "models:/classifier@champion")
