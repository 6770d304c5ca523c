"""Where runs are tracked: one resolution of the MLflow store, used by every entry point.

The default store is SQLite at ./mlruns/mlflow.db with artifacts beside it, made absolute
once so that anything that changes directory (a worker, a deployment's pull step) keeps
writing to the same place. Creating that database is atomic: MLflow's own first-use
migration is not (a `kill -9` halfway leaves a schema every later command trips over), so
the store is built in a temporary file under a lock and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DEFAULT_DIR = "mlruns"
DB_NAME = "mlflow.db"
MLFLOW_UI_PORT = 5000  # `trackflow ui` / `make ui`
MLFLOW_UI = f"http://127.0.0.1:{MLFLOW_UI_PORT}"
_SECRET_QUERY_KEYS = ("password", "passwd", "secret", "token", "key", "signature", "sig", "credential")

_verified: set[Path] = set()  # SQLite stores checked by this process


class StoreError(RuntimeError):
    """The tracking store cannot be used; the message names it (without credentials) and what to check."""


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else SQLite at ./mlruns/mlflow.db made absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path.cwd() / DEFAULT_DIR / DB_NAME).resolve()}"


def registry_uri(uri: str) -> str:
    return os.environ.get("MLFLOW_REGISTRY_URI", uri)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go in an `artifacts` folder beside its database.

    (MLflow's own default is ./mlruns relative to the working directory.) A tracking
    server decides for itself, so None.
    """
    db = sqlite_path(uri)
    return (db.parent / "artifacts").resolve().as_uri() if db else None


# MLflow's own chatter when trackflow logs a model or a dataset: a hint about an integer
# `label` output or target, and a note about its import-time agent types. Filtered
# process-wide: MLflow warns from threads and nested warning contexts that a local filter
# does not reach.
_MLFLOW_NOISE = (
    r"Hint: Inferred schema contains integer column",
    r".*Any type hint is inferred as AnyType",
)


def configure() -> str:
    """Point MLflow at the project's store (creating a SQLite one if missing) and return the URI."""
    import warnings

    import mlflow

    for message in _MLFLOW_NOISE:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    # MLflow prints the run's URL, credentials included, whenever a run ends; trackflow
    # prints its own link, without them (run_url).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars per file, in logs: noise
    uri = tracking_uri()
    if db := sqlite_path(uri):
        try:
            ensure_sqlite_store(db)
        except OSError as exc:  # a read-only folder or mount, a full disk
            raise StoreError(f"MLflow store {db} cannot be created ({exc.strerror or exc}); {_WRITABLE_FIX}") from None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry_uri(uri))
    return uri


# --------------------------------------------------------------------------- SQLite creation


def ensure_sqlite_store(db: Path) -> None:
    """Make `db` a complete MLflow database: create it atomically if missing, rebuild it if half-made.

    Several commands may get here at once on a fresh checkout: one builds the store while
    the others wait on the lock, then find it complete. A store left half-migrated by a
    killed command (or an older version of this code) is rebuilt only when it holds no
    runs, registered models or experiments of its own, so nothing can be lost; a store
    with data and an old schema is left to MLflow, whose error says to run `mlflow db upgrade`.
    """
    db = db.resolve()
    if db in _verified:
        return
    from filelock import FileLock

    if not db.exists() or not _is_complete(db):
        db.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(db.with_name(db.name + ".lock"))):
            if not db.exists():
                _create_sqlite_store(db)
            elif not _is_complete(db):
                if not _holds_nothing(db):
                    _verified.add(db)  # an older schema with data in it: MLflow's upgrade message applies
                    return
                aside = db.with_name(f"{db.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(db, aside)
                _forget_engines(db)
                print(f"trackflow: the MLflow store {db} was left half-created (no runs in it); "
                      f"rebuilt it, the old file is {aside.name}", file=sys.stderr, flush=True)
                _create_sqlite_store(db)
    _verified.add(db)


def _forget_engines(db: Path) -> None:
    """Drop MLflow's cached engines for `db`: their pooled connections still point at the file moved aside."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for uri in list(SqlAlchemyStore._engine_map):
        if (path := sqlite_path(uri)) and path.resolve() == db:
            SqlAlchemyStore._engine_map.pop(uri).dispose()


def _create_sqlite_store(db: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in db.parent.glob(db.name + ".creating-*"):  # left by a killed creator
        stale.unlink(missing_ok=True)
    tmp = db.with_name(f"{db.name}.creating-{os.getpid()}")
    store = SqlAlchemyStore(f"sqlite:///{tmp}", artifact_location(f"sqlite:///{db}"))
    store.engine.dispose()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, db)
    dir_fd = os.open(db.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _schema_head() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _query(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _is_complete(db: Path) -> bool:
    """The database is at MLflow's current schema revision."""
    try:
        rows = _query(db, "SELECT version_num FROM alembic_version")
    except sqlite3.DatabaseError:  # no such table, or not a database at all
        return False
    return len(rows) == 1 and rows[0][0] == _schema_head()


def _holds_nothing(db: Path) -> bool:
    """No runs, registered models or experiments beyond MLflow's Default (id 0)."""
    for sql in ("SELECT count(*) FROM runs", "SELECT count(*) FROM registered_models",
                "SELECT count(*) FROM experiments WHERE experiment_id != 0"):
        try:
            if _query(db, sql)[0][0]:
                return False
        except sqlite3.OperationalError:  # the table was never created: nothing in it
            continue
        except sqlite3.DatabaseError:
            return False  # not an SQLite file: not ours to replace
    return True


# --------------------------------------------------------------------------- reachability


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """Fail within seconds, naming the store, when a tracking server or database does not answer.

    MLflow's own client retries an unreachable server for minutes (7 retries, doubling
    back-off), so this probe runs once, before any work, with retries off.
    """
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        from mlflow import MlflowClient

        try:
            with _no_retries(timeout):
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as exc:
            raise StoreError(
                f"MLflow tracking server {redact(uri)} is not usable ({_reason(exc)}); check that it is running "
                "and reachable at that address, and its credentials, or unset MLFLOW_TRACKING_URI to use ./mlruns"
            ) from None
    elif scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        import sqlalchemy

        args = {"connect_timeout": int(timeout)} if scheme.startswith(("postgresql", "mysql")) else {}
        try:
            engine = sqlalchemy.create_engine(uri, connect_args=args)
            with engine.connect():
                pass
            engine.dispose()
        except Exception as exc:
            raise StoreError(
                f"MLflow database {redact(uri)} is not usable ({_reason(exc)}); check that it is running and "
                "reachable, and its credentials"
            ) from None


# --------------------------------------------------------------------------- writability

WRITE_CHECK_TAG = "trackflow.write_check"
_WRITABLE_FIX = ("make the file and its folder writable by this user (permissions, `lsattr` for the immutable "
                 "flag, a read-only mount), or point MLFLOW_TRACKING_URI at a writable store")


def check_writable(uri: str, experiment: str | None = None) -> None:
    """Fail before any work, naming the store, when it answers but refuses writes.

    A read-only store passes every read, so `check_reachable` cannot tell; the first write
    would come only at the run's start, inside the flow, after the servers are up. SQLite:
    a write transaction rolled back (it needs the database file and a journal beside it),
    and a file made and removed in the artifacts folder. A tracking server: a tag set and
    removed on `experiment` (the one the command writes to; created if missing, as the flow
    would), the same permission the run needs: a probe on another experiment could be
    refused by an authenticating server that lets this user write its own.
    """
    if db := sqlite_path(uri):
        _check_sqlite_writable(db)
    elif urlsplit(uri).scheme in ("http", "https") and experiment:
        _check_server_writable(uri, experiment)


def _check_sqlite_writable(db: Path) -> None:
    import tempfile

    try:
        con = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                # A real page change (a no-op UPDATE can be skipped): the journal must be created.
                con.execute(f"CREATE TABLE trackflow_write_check_{os.getpid()} (x)")
            finally:
                con.execute("ROLLBACK")
        finally:
            con.close()
        artifacts = db.parent / "artifacts"
        artifacts.mkdir(exist_ok=True)
        tempfile.TemporaryFile(dir=artifacts).close()
    except (sqlite3.Error, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StoreError(f"MLflow store {db} cannot be written ({reason}); {_WRITABLE_FIX}") from None


def _check_server_writable(uri: str, experiment: str) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    try:
        with _no_retries(10.0):
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                try:
                    client.create_experiment(experiment)
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # made at the same moment by another command
                        raise
            elif exp.lifecycle_stage == "active":  # a deleted one is refused later, with its own message
                client.set_experiment_tag(exp.experiment_id, WRITE_CHECK_TAG, str(int(time.time())))
                client.delete_experiment_tag(exp.experiment_id, WRITE_CHECK_TAG)
    except MlflowException as exc:
        raise StoreError(f"MLflow tracking server {redact(uri)} refuses writes to experiment {experiment!r} "
                         f"({_reason(exc)}); check the server's store and this user's permissions, or unset "
                         "MLFLOW_TRACKING_URI to use ./mlruns") from None


@contextlib.contextmanager
def _no_retries(timeout: float):
    """MLflow's HTTP client without its retries (minutes of back-off on 5xx answers), for a probe."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ |= {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout))}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _reason(exc: BaseException) -> str:
    """A short cause: the network error, or the HTTP status a non-MLflow answer came with."""
    import re

    text = " ".join(str(exc).split())
    if m := re.search(r"error code (\d{3})|too many (\d{3}) error responses", text):
        code = m.group(1) or m.group(2)
        return f"it answered HTTP {code}" + (", credentials rejected" if code in ("401", "403") else "")
    for marker in ("Connection refused", "Name or service not known", "timed out", "Read timed out",
                   "password authentication failed", "Max retries exceeded"):
        if marker.lower() in text.lower():
            return marker.lower()
    return redact_text(text)[:200]


# --------------------------------------------------------------------------- credentials


def redact(url: str) -> str:
    """`url` without the user and password, and with secret-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if any(s in k.lower() for s in _SECRET_QUERY_KEYS) else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL-looking word in `text` with its credentials removed."""
    import re

    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+", lambda m: redact(m.group(0)), text)


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """A link to the run in the MLflow UI: the tracking server's own for http stores, else `make ui`'s."""
    base = redact(uri).rstrip("/") if urlsplit(uri).scheme in ("http", "https") else MLFLOW_UI
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
