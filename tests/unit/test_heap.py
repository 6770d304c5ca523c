"""trackflow.heap: the collector's thresholds in commands and workers, and the heap frozen before shutdown walks it."""

from __future__ import annotations

import gc
import subprocess
import sys

from tasks.workers import WorkerPool
from tests.conftest import REPO
from trackflow.heap import THRESHOLDS


def test_a_tuned_process_collects_with_the_larger_thresholds_and_exits_with_its_heap_frozen():
    # atexit runs its callbacks last-registered first: the probe, registered before tune(), runs after its freeze
    script = ("import atexit, gc\n"
              "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count()))\n"
              "from trackflow import heap\n"
              "print('default:', gc.get_threshold())\n"
              "heap.tune()\n"
              "print('tuned:', gc.get_threshold())\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    default, tuned, frozen = p.stdout.splitlines()
    assert default == "default: (700, 10, 10)" and tuned == f"tuned: {THRESHOLDS}"
    assert int(frozen.removeprefix("frozen at exit: ")) > 1000  # the interpreter's own modules at least


def test_pool_workers_are_tuned_before_their_first_call():
    pool = WorkerPool(1)
    try:
        assert pool.submit(gc.get_threshold).result(timeout=60) == THRESHOLDS
    finally:
        pool.shutdown()


def test_a_process_that_imports_the_flows_is_tuned_as_a_deployments_flow_run_is():
    # Under a Prefect worker, a deployment's flow run imports its entrypoint (flows/train.py) in a fresh process.
    script = "import gc\nprint(gc.get_threshold())\nimport flows\nprint(gc.get_threshold())\n"
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["(700, 10, 10)", str(THRESHOLDS)]
