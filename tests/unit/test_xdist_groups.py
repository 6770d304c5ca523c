"""The suite's one-at-a-time group holds under pytest-xdist (tests/helpers/xdist_groups.py works around
pytest-dev/pytest-xdist#1386), and a crashed worker cannot hang `make test`: real `pytest -n 2 --dist loadgroup`
runs over generated folders of tests."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO

CONFTEST = '''
from tests.helpers.xdist_groups import put_in_group

def pytest_collection_modifyitems(config, items):
    for item in items:
        if "heavy" in item.name:
            put_in_group(item, "heavy", bool(getattr(config.option, "loadgroup", False)))
'''
TESTS = '''
import os
import time
import pytest

@pytest.mark.parametrize("i", range(6))
def test_heavy(i):
    time.sleep(0.2)

@pytest.mark.parametrize("i", range(6))
def test_light(i):
    time.sleep(0.2)
'''


def test_grouped_tests_all_run_on_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text(TESTS)
    p = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
                        "no:cacheprovider", "-c", "/dev/null", "--rootdir", str(tmp_path), str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ran = re.findall(r"\[(gw\d)\] \[\s*\d+%\] PASSED (\S+)", p.stdout)
    heavy = {worker for worker, test in ran if "test_heavy" in test}
    assert len(ran) == 24 and len(heavy) == 1, p.stdout[-3000:]
    assert all(test.endswith("@heavy") for _, test in ran if "test_heavy" in test)
    assert len({worker for worker, _ in ran}) == 2  # the rest spread over both


def _make_test_options() -> list[str]:
    """The pytest-xdist options `make test` passes (the Makefile's XDIST), with TEST_WORKERS at its default 2."""
    makefile = (REPO / "Makefile").read_text()
    options = re.search(r"^XDIST = (.*)$", makefile, re.M).group(1)
    assert "$(XDIST)" in makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0], "make test no longer passes $(XDIST)"
    return options.replace("$(TEST_WORKERS)", "2").split()


CRASHING = TESTS + '''    if i == 3:
        os._exit(1)  # as a test that ends its worker does (a watchdog's os._exit, a segfault)
'''


def test_a_crashed_worker_fails_its_test_and_the_run_still_ends(tmp_path):
    """pytest-xdist 3.8 replaces a crashed worker under --dist loadgroup and then waits for good
    (pytest-dev/pytest-xdist#1323, #1378): CI ran out its 90 minutes. `make test` does not replace it."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_a.py").write_text(CRASHING)
    p = subprocess.run([sys.executable, "-m", "pytest", *_make_test_options(), "-p", "no:cacheprovider",
                        "-c", "/dev/null", "--rootdir", str(tmp_path), str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    assert re.search(r"worker 'gw\d' crashed while running 'test_a.py::test_light\[3\]", p.stdout), p.stdout[-3000:]
    # The crashed worker's queued tests are not run; the session ends (within the timeout above) and says why.
    assert "worker restarting disabled" in p.stdout and re.search(r"\b1 failed, \d+ passed in\b", p.stdout), \
        p.stdout[-3000:]
