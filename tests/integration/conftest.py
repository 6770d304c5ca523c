"""Fixtures for tests that run flows and commands against real servers (opt in per module)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (a real one, with its own database) for the session's flow tests.

    Opt in with `pytestmark = pytest.mark.usefixtures("prefect_server")`: flows called in
    the test process, and `trackflow` commands run with `cli_env()`, use it.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
