"""Fixtures for every layer: an MLflow store per test, never the repo's mlruns/; small configs and models.

Server fixtures live in tests/integration/conftest.py; helpers to import live in tests/helpers/.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from trackflow import telemetry

telemetry.quiet()
# Flow runs here do not send their log lines to the test Prefect servers (measured: ~10% of an in-process flow's
# CPU, and the servers' own): what tests check is in MLflow, artifacts, states and stderr. Commands run without
# PREFECT_* settings (one-off servers, deploy + worker) send them as users' do; the credentials test checks them.
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]

# `make test` runs the suite on pytest-xdist workers (`--dist loadgroup`). These modules start process trees that
# take GBs of memory and both cores (pool and Dask workers, hostile tables): their tests share one group, so they
# run one after another on one worker while the others take the rest. Each worker has its own session fixtures
# (Prefect server, MLflow template, tiny models).
ONE_AT_A_TIME = {"test_memory.py", "test_fault_injection.py", "test_sweep.py::test_trials_on_two_worker_processes"}


def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist sends a group's tests to one worker")


_template_builder: threading.Thread | None = None


def pytest_sessionstart(session):
    """In the pytest-xdist controller, which runs no test itself: start building the run's migrated PREFECT_HOME
    (`prefect_home_template`) at once, beside the workers' start and collection. Built by the first worker that
    needs it instead, it took ~13 s after collection while the other worker, needing it too, sat idle. A worker
    that needs it before it is done waits on its lock; if this build fails, that worker builds it."""
    global _template_builder
    config = session.config
    if hasattr(config, "workerinput") or not config.pluginmanager.has_plugin("dsession"):
        return  # a worker, or a run without workers: the fixture builds it when a test first needs it
    from tests.helpers.servers import prefect_home_template_in, selects_integration_tests

    if not selects_integration_tests(config.args, config.invocation_params.dir):
        return
    root = config._tmp_path_factory.getbasetemp()  # the workers' basetemps are its subfolders (pytest-xdist)
    _template_builder = threading.Thread(target=prefect_home_template_in, args=(root,), daemon=True,
                                         name="prefect-home-template")
    _template_builder.start()


def pytest_unconfigure(config):
    if _template_builder is not None:
        _template_builder.join(timeout=120)  # it stops the server it started once the database is migrated


def pytest_collection_modifyitems(config, items):
    from tests.helpers.xdist_groups import put_in_group

    loadgroup = bool(getattr(config.option, "loadgroup", False))
    for item in items:
        if item.path.name in ONE_AT_A_TIME or f"{item.path.name}::{item.originalname}" in ONE_AT_A_TIME:
            put_in_group(item, "heavy-processes", loadgroup)
        elif "running_dask_cluster" in getattr(item, "fixturenames", ()):  # one module-scoped cluster for them all
            put_in_group(item, "dask-cluster", loadgroup)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """A migrated, empty MLflow SQLite database: migrating costs seconds, copying it does not."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path, monkeypatch, mlflow_template) -> str:
    """Each test gets its own SQLite store (artifacts beside it) under tmp_path; never the repo's mlruns/."""
    store = tmp_path / "mlruns"
    store.mkdir()
    shutil.copy(mlflow_template, store / "mlflow.db")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("TRACKFLOW_CACHE_DIR", str(tmp_path / "trackflow-cache"))  # file digests (tasks/changes.py)
    # A flow or command run earlier in this process set MLflow's process-wide URIs (store.configure), which win
    # over the environment: unset them, so that MLflow reads this test's store.
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    monkeypatch.setattr(tracking, "_tracking_uri", None)
    monkeypatch.setattr(registry, "_registry_uri", None)
    return uri


@pytest.fixture(autouse=True)
def signal_handlers_kept():
    """Every test starts with this process's own SIGINT/SIGTERM handlers, and ends with them back.

    `cli.main.main` called in this process installs trackflow's handlers, whose first signal starts a
    watchdog that ends the process GRACE seconds later (cli/signals.py). Left in place, a later test that
    signals itself ended the pytest-xdist worker: "node down: Not properly terminated", then a hang.
    """
    from tests.helpers.cli import signal_handlers_kept

    with signal_handlers_kept():
        yield


@pytest.fixture(autouse=True, scope="session")
def repo_mlruns_untouched():
    """Fail the session if any test wrote into the repository's own mlruns/."""
    before = sorted(p.name for p in (REPO / "mlruns").iterdir()) if (REPO / "mlruns").exists() else []
    yield
    after = sorted(p.name for p in (REPO / "mlruns").iterdir()) if (REPO / "mlruns").exists() else []
    assert after == before, f"tests wrote into the repository's mlruns/: {set(after) - set(before)}"


@pytest.fixture
def client(mlflow_store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)


@pytest.fixture
def tiny_config():
    """A training config that runs in well under a second."""
    from trackflow.config import TrainConfig

    return TrainConfig(n_samples=300, epochs=3, batch_size=32)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Small GPT-2 and Wav2Vec2 models built from configs and saved locally (no download)."""
    from tasks.models import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("models"))
