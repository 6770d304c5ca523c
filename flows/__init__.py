"""Prefect flows: they only wire the tasks in :mod:`tasks` together."""

# Imported before any flow's torch, MLflow and Prefect: skops (the model's preprocessor format), when it is imported,
# finds where each of scipy's ~230 ufuncs lives by walking sys.modules in import order (skops.io._utils.whichmodule).
# With scipy.special ahead of those ~3,000 modules, importing skops costs ~1.4 s instead of ~2.6 s in a training
# command (python -X importtime); tests/unit/test_layers.py keeps the order.
import scipy.special  # noqa: F401

from trackflow import heap

# A process that imports the flows runs them (a command, a deployment's flow run under a worker, `trackflow serve`):
# the collector's larger thresholds through the imports that follow, and no walk of the heap at exit.
heap.tune()
