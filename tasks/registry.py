"""Registry step: promote a model version to an alias only when it beats the holder."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.tracking import client


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    version: str
    value: float
    previous_version: str | None
    previous_value: float | None
    reason: str


def is_better(value: float, than: float, direction: str) -> bool:
    if direction not in ("max", "min"):
        raise ValueError(f"direction must be 'max' or 'min', got {direction!r}")
    return value > than if direction == "max" else value < than


def promote_if_better(name: str, version: str, metric: str, value: float, direction: str, alias: str) -> Promotion:
    """Point `alias` of registered model `name` at `version` if its `metric` beats the current holder's.

    The holder's value is read from the run that produced it. The alias is only ever set
    to a version that exists (it was registered before this call).
    """
    from mlflow.exceptions import MlflowException

    c = client()
    c.get_model_version(name, version)  # raises if the version does not exist
    try:
        holder = c.get_model_version_by_alias(name, alias)
    except MlflowException:
        holder = None
    if holder is None:
        c.set_registered_model_alias(name, alias, version)
        return Promotion(True, version, value, None, None, f"no model held alias {alias!r}")
    prev = c.get_run(holder.run_id).data.metrics.get(metric) if holder.run_id else None
    if prev is None or is_better(value, prev, direction):
        c.set_registered_model_alias(name, alias, version)
        why = f"{metric} {value:.4f} beats version {holder.version}'s" + (f" {prev:.4f}" if prev is not None else " (unknown)")
        return Promotion(True, version, value, str(holder.version), prev, why)
    why = f"{metric} {value:.4f} does not beat version {holder.version}'s {prev:.4f}"
    return Promotion(False, version, value, str(holder.version), prev, why)
