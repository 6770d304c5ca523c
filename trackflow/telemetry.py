"""Telemetry off by default: the variables that keep Prefect, MLflow and the rest from phoning home.

Every entry point (the CLI, the tests, the benchmarks, `make server|worker|deploy` via
`python -m trackflow.telemetry`) takes them from here; a value the user set wins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}


def quiet(environ: MutableMapping[str, str] = os.environ) -> MutableMapping[str, str]:
    """`environ` with telemetry off wherever it does not say otherwise."""
    for k, v in QUIET.items():
        environ.setdefault(k, v)
    return environ


if __name__ == "__main__":  # for `env $(python -m trackflow.telemetry) CMD` in the Makefile
    print(" ".join(f"{k}={os.environ.get(k, v)}" for k, v in QUIET.items()))
