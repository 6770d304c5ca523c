"""Creating the default SQLite store: atomic, shared by concurrent first commands, repaired when half made.

These start real processes and migrate real databases (seconds each), so they sit with the integration tests.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trackflow import store


def tables(db: Path) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()


def test_a_new_store_appears_complete_in_one_rename(tmp_path):
    db = tmp_path / "s" / "mlflow.db"
    store.ensure_sqlite_store(db)
    assert store._is_complete(db) and {"runs", "experiments", "webhooks", "alembic_version"} <= tables(db)
    assert [p.name for p in db.parent.iterdir() if p.name.startswith("mlflow.db.creating")] == []


CREATE = """
import sys
from pathlib import Path
from trackflow import store
store.ensure_sqlite_store(Path(sys.argv[1]))
from mlflow import MlflowClient
c = MlflowClient(tracking_uri="sqlite:///" + sys.argv[1])
c.create_run(c.get_experiment_by_name("Default").experiment_id)
"""


def test_concurrent_first_use_builds_one_store(tmp_path):
    db = tmp_path / "mlflow.db"
    procs = [subprocess.Popen([sys.executable, "-c", CREATE, str(db)], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 4  # no run written to a replaced file


def test_a_kill_during_creation_leaves_no_store_and_a_rerun_builds_it(tmp_path):
    """kill -9 while the store is being built: at any moment there is either no store or a complete one."""
    db = tmp_path / "mlflow.db"
    p = subprocess.Popen([sys.executable, "-c", CREATE, str(db)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("mlflow.db.creating-*")) and time.monotonic() < deadline:
        assert p.poll() is None, "finished before it could be killed"
        time.sleep(0.01)
    time.sleep(0.3)  # inside MLflow's migrations
    p.kill()
    p.wait()
    assert not db.exists()  # the half-built file never took the store's name
    store._verified.clear()
    store.ensure_sqlite_store(db)
    assert store._is_complete(db) and not list(tmp_path.glob("mlflow.db.creating-*"))


def half_created(db: Path, stop_at: str) -> None:
    """What a `kill -9` inside MLflow's own first migration leaves: an early revision, a later table already made."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config, create_sqlalchemy_engine_with_retry
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    engine = create_sqlalchemy_engine_with_retry(f"sqlite:///{db}")
    InitialBase.metadata.create_all(engine)
    with engine.begin() as conn:
        config = _get_alembic_config(str(engine.url))
        config.attributes["connection"] = conn
        command.upgrade(config, stop_at)
        conn.exec_driver_sql("CREATE TABLE webhooks (webhook_id VARCHAR(256) PRIMARY KEY)")
    engine.dispose()


def test_a_half_created_store_is_rebuilt_when_it_holds_nothing(tmp_path, capsys):
    from mlflow import MlflowClient

    db = tmp_path / "mlflow.db"
    half_created(db, "3500859a5d39")
    with pytest.raises(Exception, match="already exists"):  # what every command hit before
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    store._verified.discard(db.resolve())
    store.ensure_sqlite_store(db)
    assert "half-created" in capsys.readouterr().err
    assert store._is_complete(db)
    assert MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()[0].name == "Default"
    assert len(list(tmp_path.glob("mlflow.db.incomplete-*"))) == 1  # kept, not deleted


def test_an_old_store_with_runs_in_it_is_left_alone(tmp_path):
    db = tmp_path / "mlflow.db"
    half_created(db, "3500859a5d39")
    con = sqlite3.connect(db)
    con.execute("INSERT INTO experiments (experiment_id, name, lifecycle_stage) VALUES (7, 'mine', 'active')")
    con.commit()
    con.close()
    before = db.read_bytes()
    store._verified.discard(db.resolve())
    store.ensure_sqlite_store(db)
    assert db.read_bytes() == before and not list(tmp_path.glob("mlflow.db.incomplete-*"))
