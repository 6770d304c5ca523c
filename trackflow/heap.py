"""Python's cyclic garbage collector in trackflow's processes: commands, flow runs, pool and Dask workers.

torch, Prefect, MLflow and the flows' other imports leave ~400k long-lived objects. The
default collector (thresholds 700, 10, 10) walks all of them each time the heap grows by a
quarter: measured here, 11 full collections cost ~3 s of a 1k-sample `trackflow train`,
and a spawned worker spent ~1.4 s of its ~9 s in them while it imported its trial's or
job's modules. Interpreter shutdown walks the heap once more (~1-2.5 s). Frozen objects
are never walked (nor collected, which suits modules that live as long as the process),
and a larger first-generation threshold keeps lazy imports from triggering full
collections. Garbage made later is collected as usual.
"""

from __future__ import annotations

import atexit
import gc

# Python's defaults are (700, 10, 10): a young collection every 700 net allocations, an older one every 10 younger.
THRESHOLDS = (50_000, 20, 20)


def settle() -> None:
    """Once a command has imported its flow: freeze what the imports left, and collect with the larger thresholds
    (the CLI turns the collector off through its imports; this turns it back on)."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    gc.enable()


def tune() -> None:
    """Before a process imports torch and the rest (a worker before its first call, any process importing the
    flows): the larger thresholds through those imports, and the heap frozen at exit, so that shutdown does not
    walk it. Once per process: a second call changes nothing."""
    gc.set_threshold(*THRESHOLDS)
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def dask_setup(worker) -> None:
    """Dask's preload hook (`preload=["trackflow.heap"]`): `tune` in each worker of a local cluster."""
    tune()
