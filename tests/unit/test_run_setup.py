"""What the xdist controller builds for the workers when a run starts (tests/conftest.py): only for runs that take
in integration tests, which need the migrated PREFECT_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.servers import selects_integration_tests

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args, cwd, expected", [
    (["tests"], REPO, True),  # `make test`: testpaths
    (["."], REPO, True),
    (["tests/integration/test_cli.py::test_train_end_to_end"], REPO, True),
    (["integration"], REPO / "tests", True),
    (["tests/unit"], REPO, False),  # `pytest -n 2 tests/unit`: no Prefect server, nothing to build
    (["tests/unit/test_data.py", "tests/helpers"], REPO, False),
    (["test_cli.py"], REPO / "tests" / "integration", True),
])
def test_only_runs_that_take_in_integration_tests_build_the_prefect_home(args, cwd, expected):
    assert selects_integration_tests(args, cwd) is expected
