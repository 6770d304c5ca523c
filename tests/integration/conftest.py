"""Fixtures for tests that run flows and commands against real servers (opt in per module)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_server(prefect_home_template):
    """One temporary Prefect server (a real one, with its own database) for the session's flow tests.

    Opt in with `pytestmark = pytest.mark.usefixtures("prefect_server")`: flows called in
    the test process, and `trackflow` commands run with `cli_env()`, use it.
    """
    import shutil
    import tempfile
    from contextlib import ExitStack
    from unittest import mock

    import prefect.testing.utilities as harness
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    def migrated_database_folder() -> str:
        # The harness's server starts on the folder mkdtemp gives it, with its database in prefect-test.db: a copy
        # of the migrated template's spares it the migrations (measured: 10 against 18-19 CPU-s for its start).
        folder = tempfile.mkdtemp()
        shutil.copy(prefect_home_template / "prefect.db", Path(folder) / "prefect-test.db")
        return folder

    with ExitStack() as stack:
        with mock.patch.object(harness, "mkdtemp", migrated_database_folder):
            stack.enter_context(harness.prefect_test_harness(server_startup_timeout=120))
        # No flow run heartbeats for flows run in this process: a sync flow joins its heartbeat thread, which sleeps
        # in 1 s steps, so each flow run ended ~1 s later (measured: 1.13 s against 0.17 s for a one-task flow). No
        # test reads them; commands run as processes keep Prefect's default (every 180 s).
        stack.enter_context(temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        yield


@pytest.fixture(scope="session")
def prefect_home_template(tmp_path_factory) -> Path:
    """A PREFECT_HOME whose database is migrated, built once per run and shared by the xdist workers (the controller
    starts building it when the run starts: tests/conftest.py). Tests (and `prefect_server`) copy it, never use it."""
    from tests.helpers.servers import prefect_home_template_in

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    return prefect_home_template_in(root)
