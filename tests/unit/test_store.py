"""The MLflow store: where it is, reachability, credentials (creation: tests/integration/test_store_creation.py)."""

from __future__ import annotations

import pytest

from trackflow import store


def test_store_defaults_to_sqlite_under_cwd_mlruns(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    uri = store.tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert store.artifact_location(uri) == (tmp_path / "mlruns" / "artifacts").resolve().as_uri()
    assert store.artifact_location("http://127.0.0.1:5000") is None


@pytest.mark.parametrize("url, shown", [
    ("http://user:secret@host:5000/x", "http://host:5000/x"),
    ("https://tok@host/api", "https://host/api"),
    ("postgresql://mlflow:pw@127.0.0.1:5432/db", "postgresql://127.0.0.1:5432/db"),
    ("http://host/x?token=abc&experiment=1", "http://host/x?token=%2A%2A%2A&experiment=1"),
    ("sqlite:////tmp/mlruns/mlflow.db", "sqlite:////tmp/mlruns/mlflow.db"),
    ("models:/classifier/1", "models:/classifier/1"),
])
def test_redact_removes_credentials(url, shown):
    assert store.redact(url) == shown


def test_redact_text_and_run_url_hide_credentials():
    assert "secret" not in store.redact_text("failed: http://u:secret@h:1/api and postgresql://a:secret@db/x")
    assert store.run_url("http://u:secret@h:5000", "1", "abc") == "http://h:5000/#/experiments/1/runs/abc"
    assert store.run_url("sqlite:////x/mlflow.db", "1", "abc") == "http://127.0.0.1:5000/#/experiments/1/runs/abc"


@pytest.mark.parametrize("uri", ["http://user:secret@127.0.0.1:9", "postgresql://u:secret@127.0.0.1:9/db"])
def test_an_unreachable_store_fails_at_once_naming_it(uri):
    with pytest.raises(store.StoreError) as err:
        store.check_reachable(uri, timeout=5)
    msg = str(err.value)
    assert "127.0.0.1:9" in msg and "secret" not in msg and "connection refused" in msg


def test_a_reachable_sqlite_store_needs_no_probe(mlflow_store):
    store.check_reachable(mlflow_store)  # nothing to reach: no error


def test_a_writable_sqlite_store_passes_the_write_check_and_keeps_nothing_of_it(mlflow_store):
    import sqlite3

    db = store.sqlite_path(mlflow_store)
    before = sorted(p.name for p in db.parent.iterdir())
    store.check_writable(mlflow_store)
    tables = [r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE name LIKE 'trackflow%'")]
    assert tables == []
    assert sorted(p.name for p in db.parent.iterdir()) == sorted(before + ["artifacts"])
    assert list((db.parent / "artifacts").iterdir()) == []


@pytest.mark.parametrize("what, reason", [("file", "attempt to write a readonly database"),
                                          ("folder", "unable to open database file"),
                                          ("artifacts", "Operation not permitted|Permission denied")])
def test_a_read_only_sqlite_store_fails_the_write_check_naming_it(mlflow_store, what, reason):
    import re

    from tests.helpers.store import read_only

    db = store.sqlite_path(mlflow_store)
    (db.parent / "artifacts").mkdir()
    target = {"file": db, "folder": db.parent, "artifacts": db.parent / "artifacts"}[what]
    store.check_reachable(mlflow_store)  # it answers reads: only a write tells
    with read_only(target), pytest.raises(store.StoreError) as err:
        store.check_writable(mlflow_store)
    msg = str(err.value)
    assert msg.startswith(f"MLflow store {db} cannot be written (") and re.search(reason, msg), msg
    assert "MLFLOW_TRACKING_URI" in msg and "\n" not in msg


def test_a_store_that_cannot_be_created_fails_naming_it(tmp_path, monkeypatch):
    from tests.helpers.store import read_only

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'ro' / 'mlruns' / 'mlflow.db'}")
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro"), pytest.raises(store.StoreError) as err:
        store.configure()
    assert str(err.value).startswith(f"MLflow store {tmp_path / 'ro' / 'mlruns' / 'mlflow.db'} cannot be created (")


def test_each_test_starts_with_mlflow_reading_its_own_store(mlflow_store):
    """The autouse fixture unsets the URIs an earlier in-process flow set, so MLflow reads this test's store."""
    import mlflow

    assert mlflow.get_tracking_uri() == mlflow_store and mlflow.get_registry_uri() == mlflow_store
