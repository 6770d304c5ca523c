"""Folder tables and the training key (tasks/changes.py): file digests and their cache, the diff, earlier runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tasks import changes, tracking
from tasks.changes import TrainingKey, describe_changes, file_digests, find_keyed_runs, model_config, training_key
from tasks.data import DataError, load_table, profile_table, read_data
from tests.helpers.cli import REPO as REPO_ROOT
from tests.helpers.tables import wine_frame, write
from trackflow.config import NOT_MODEL_FIELDS, TrainConfig


def folder(tmp_path, n=3, suffix=".csv"):
    """The wine table cut into `n` partition files, plus a hidden file and a file of another kind."""
    root = tmp_path / "table"
    df = wine_frame()
    for i in range(n):
        write(df.iloc[i::n], root / f"part-{i}{suffix}")
    (root / ".part-9.csv").write_text("other,columns\n1,2\n")
    (root / "_README.txt").write_text("not a table")
    return root


# --------------------------------------------------------------------------- folder tables


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_folder_is_one_table_with_rows_per_file(tmp_path, suffix):
    root = folder(tmp_path, suffix=suffix)
    (root / "day=2").mkdir()
    write(wine_frame().head(10), root / "day=2" / f"late{suffix}")
    table = load_table(str(root), "cultivar", None, [])
    assert dict(table.rows_per_file) == {"day=2/late" + suffix: 10, "part-0" + suffix: 60, "part-1" + suffix: 59,
                                         "part-2" + suffix: 59}  # hidden and other files left out
    assert len(table.y) == 188 and "other" not in table.X.columns
    assert profile_table(table)["rows_per_file"] == dict(table.rows_per_file)


def test_parquet_parts_with_int_and_float_columns_are_unified(tmp_path):
    root = tmp_path / "t"
    write(pd.DataFrame({"x": [1, 2, 3, 4], "y": ["a", "b", "a", "b"]}), root / "a.parquet")
    write(pd.DataFrame({"x": [0.5, 1.5], "y": ["a", "b"]}), root / "b.parquet")
    frame, rows = read_data(root)
    assert rows == {"a.parquet": 4, "b.parquet": 2}
    assert frame["x"].tolist() == [1.0, 2.0, 3.0, 4.0, 0.5, 1.5]


def test_a_file_with_other_columns_is_named_with_the_columns_that_differ(tmp_path):
    root = folder(tmp_path, n=3)
    write(wine_frame().rename(columns={"ash": "ashes"}), root / "part-5.csv")
    with pytest.raises(DataError, match=r"'part-5.csv' of folder .* \(missing 'ash'; extra 'ashes'\)"):
        load_table(str(root), "cultivar", None, [])


def test_a_folder_without_table_files_is_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no .csv, .tsv or .parquet files"):
        training_key(TrainConfig(data=str(tmp_path / "empty"), target="y"))


def test_the_logged_dataset_lists_the_folder_files(client, tmp_path):
    table = load_table(str(folder(tmp_path)), "cultivar", None, [])
    run_id = tracking.start_run(tracking.ensure_experiment("e"))
    tracking.log_dataset(run_id, table)
    source = json.loads(client.get_run(run_id).inputs.dataset_inputs[0].dataset.source)
    assert source["files"] == ["part-0.csv", "part-1.csv", "part-2.csv"] and source["uri"].endswith("/table")


# --------------------------------------------------------------------------- digests and their cache


def test_digests_are_cached_by_size_mtime_and_inode(tmp_path, monkeypatch):
    root, cache = folder(tmp_path), tmp_path / "cache.json"
    first = file_digests(root, cache)
    assert sorted(first) == ["part-0.csv", "part-1.csv", "part-2.csv"]
    calls = []
    monkeypatch.setattr(changes, "sha256_file", lambda f: calls.append(f.name) or "x")
    assert file_digests(root, cache) == first and calls == []  # nothing read again

    part = root / "part-1.csv"
    data = part.read_bytes()
    st = part.stat()
    part.write_bytes(data.replace(b"barolo", b"BAROLO", 1))  # same size, other bytes
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    monkeypatch.undo()
    second = file_digests(root, cache)
    assert second["part-1.csv"] != first["part-1.csv"] and second["part-1.csv"] == changes.sha256_file(part)
    assert {k: v for k, v in second.items() if k != "part-1.csv"} == {k: v for k, v in first.items()
                                                                       if k != "part-1.csv"}


def test_a_corrupt_cache_is_ignored_and_replaced_whole(tmp_path):
    root, cache = folder(tmp_path), tmp_path / "cache.json"
    cache.write_text('{"files": {"truncated": [1, 2')
    digests = file_digests(root, cache)
    assert digests == {n: changes.sha256_file(root / n) for n in digests}
    assert len(json.loads(cache.read_text())["files"]) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("cache.json")] == ["cache.json"]  # no temp left


def test_removed_files_leave_the_cache(tmp_path):
    root, cache = folder(tmp_path), tmp_path / "cache.json"
    file_digests(root, cache)
    (root / "part-2.csv").unlink()
    assert sorted(file_digests(root, cache)) == ["part-0.csv", "part-1.csv"]
    assert not any(p.endswith("part-2.csv") for p in json.loads(cache.read_text())["files"])


# --------------------------------------------------------------------------- the key and the diff


def test_the_key_covers_what_changes_the_model_and_nothing_else(tmp_path):
    base = TrainConfig(data=str(folder(tmp_path)), target="cultivar")
    k = training_key(base)
    assert set(k.config) & set(NOT_MODEL_FIELDS) == set() and "n_samples" not in k.config
    assert k.config["device"] == "auto" and k.config["lr"] == 0.001
    assert set(k.code) == {"tasks/data.py", "tasks/training.py", "trackflow/model.py", "trackflow/classifier.py",
                           "trackflow/served_model.py"}
    assert set(k.versions) == {"torch", "scikit-learn", "trackflow"}
    same = training_key(base.model_copy(update={"experiment": "other", "model_name": "m", "skip_unchanged": True}))
    assert same.key == k.key
    for update in ({"lr": 0.003}, {"device": "cpu"}, {"drop": ["ash"]}, {"hidden_layers": [8]}, {"optimizer": "sgd"},
                   {"momentum": 0.5}, {"activation": "tanh"}, {"l1": 0.001}):
        assert training_key(base.model_copy(update=update)).key != k.key, update
    assert set(k.tags()) == {"trackflow.key", "trackflow.key.data", "trackflow.key.config", "trackflow.key.code",
                             "trackflow.key.versions"}
    assert TrainingKey.from_detail(json.loads(json.dumps(k.detail()))).key == k.key


def test_describe_changes_names_files_fields_code_and_versions():
    before = TrainingKey({"a.parquet": "1", "b.parquet": "2", "c.parquet": "3"}, {"lr": 0.001, "epochs": 10},
                         {"tasks/training.py": "x"}, {"torch": "2.14.0"})
    after = TrainingKey({"a.parquet": "1", "b.parquet": "9", "d.parquet": "4", "e.parquet": "5"},
                        {"lr": 0.003, "epochs": 10}, {"tasks/training.py": "y"}, {"torch": "2.14.1"})
    assert describe_changes(before, after) == (
        "data: 2 files added (d.parquet, e.parquet), 1 file removed (c.parquet), 1 file changed (b.parquet); "
        "config: lr 0.001 -> 0.003; code changed (tasks/training.py); versions: torch 2.14.0 -> 2.14.1")
    assert describe_changes(after, after) == "nothing (same key)"
    many = TrainingKey({f"p{i}": "x" for i in range(8)})
    assert describe_changes(TrainingKey(), many) == "data: 8 files added (p0, p1, p2, p3, p4, ... 3 more)"


# --------------------------------------------------------------------------- earlier runs


def test_sqlite_query_and_mlflow_client_find_the_same_runs(client, mlflow_store):
    exp = tracking.ensure_experiment("keyed")
    old = tracking.start_run(exp, tags={"trackflow.key": "K1"})
    tracking.end_run(old)
    failed = tracking.start_run(exp, tags={"trackflow.key": "K2"})
    tracking.end_run(failed, "FAILED")
    new = tracking.start_run(exp, tags={"trackflow.key": "K3"})
    tracking.end_run(new)
    client.create_registered_model("m")
    client.create_model_version("m", f"runs:/{old}/model", run_id=old)
    client.create_model_version("m", f"runs:/{old}/model", run_id=old)
    for find in (changes._find_in_sqlite, changes._find_with_client):
        where = changes.store.sqlite_path(mlflow_store) if find is changes._find_in_sqlite else mlflow_store
        same, latest = find(where, "keyed", "K1", "m")
        assert (same.run_id, same.model) == (old, "models:/m/2"), find
        assert (latest.run_id, latest.key, latest.model) == (new, "K3", None), find
        assert find(where, "keyed", "K2", "m")[0] is None  # only FINISHED runs count
        assert find(where, "no-such-experiment", "K1", "m") == (None, None)
    assert find_keyed_runs(mlflow_store, "keyed", "K3", "m")[0].run_id == new


def test_the_fast_path_loads_neither_torch_mlflow_nor_prefect(tmp_path, mlflow_store):
    root = folder(tmp_path)
    code = ("import sys; from cli.main import _unchanged_since; from trackflow.config import TrainConfig; "
            f"print(_unchanged_since(TrainConfig(data={str(root)!r}, target='cultivar'))); "
            "print(sorted(m for m in ('torch', 'mlflow', 'prefect', 'pandas') if m in sys.modules))")

    def fast_path() -> list[str]:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              cwd=REPO_ROOT, env=os.environ | {"PYTHONPATH": str(REPO_ROOT)}).stdout.split("\n")

    assert fast_path()[:2] == ["None", "['pandas']"]  # the first listing of the folder is tasks/data.py's
    assert fast_path()[:2] == ["None", "[]"]  # then it is cached while no folder in it changes
    (root / "part-3.csv").write_bytes((root / "part-0.csv").read_bytes())
    assert fast_path()[:2] == ["None", "['pandas']"]


def test_the_cached_listing_follows_added_removed_and_nested_files(tmp_path):
    root, cache = folder(tmp_path), tmp_path / "cache.json"
    assert sorted(file_digests(root, cache)) == ["part-0.csv", "part-1.csv", "part-2.csv"]
    (root / "day=2").mkdir()
    write(wine_frame().head(5), root / "day=2" / "a.parquet")
    (root / "part-0.csv").unlink()
    assert sorted(file_digests(root, cache)) == ["day=2/a.parquet", "part-1.csv", "part-2.csv"]
    (root / "day=2" / "notes.txt").write_text("not a table")
    write(wine_frame().head(5), root / "day=2" / "b.csv")
    assert sorted(file_digests(root, cache)) == ["day=2/a.parquet", "day=2/b.csv", "part-1.csv", "part-2.csv"]
