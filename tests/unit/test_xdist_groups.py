"""The suite's one-at-a-time group holds under pytest-xdist (tests/helpers/xdist_groups.py works around
pytest-dev/pytest-xdist#1386): a real `pytest -n 2 --dist loadgroup` over a generated folder of tests."""

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
