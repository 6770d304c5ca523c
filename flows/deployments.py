"""The deployments in prefect.yaml, for `trackflow serve` (one process, no worker).

prefect.yaml stays the one place deployments, schedules and their parameters are
written; this module reads it, validates each deployment's parameters against its
flow's config model, and builds the same deployments for `prefect.serve`.
"""

from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    flow: object  # a prefect Flow
    config: object  # the validated pydantic config
    crons: tuple[tuple[str, str], ...]  # (cron, timezone)
    description: str = ""
    tags: tuple[str, ...] = ()


def load_flow(entrypoint: str):
    """`flows/train.py:training_pipeline` -> the flow object (imported as the installed package)."""
    path, _, attr = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, attr)


def config_model(flow) -> type:
    """The pydantic model the flow takes as its `config` parameter."""
    return typing.get_type_hints(flow.fn)["config"]


def read_deployments(path: str | Path = PREFECT_YAML) -> list[DeploymentSpec]:
    """Every deployment in prefect.yaml, its parameters validated (pydantic errors name the field)."""
    spec = yaml.safe_load(Path(path).read_text())
    out = []
    for d in spec.get("deployments", []):
        flow = load_flow(d["entrypoint"])
        config = config_model(flow)(**(d.get("parameters") or {}).get("config", {}))
        crons = tuple((s["cron"], s.get("timezone", "UTC")) for s in d.get("schedules") or [] if "cron" in s)
        out.append(DeploymentSpec(d["name"], flow, config, crons, d.get("description", ""), tuple(d.get("tags", []))))
    return out


def serve_all(path: str | Path = PREFECT_YAML, limit: int | None = None) -> None:
    """Serve every deployment of prefect.yaml with its schedules until interrupted."""
    from prefect import serve
    from prefect.schedules import Cron

    deployments = [
        s.flow.to_deployment(
            name=s.name,
            parameters={"config": s.config.model_dump(mode="json")},
            schedules=[Cron(cron, timezone=tz) for cron, tz in s.crons],
            description=s.description,
            tags=list(s.tags),
        )
        for s in read_deployments(path)
    ]
    serve(*deployments, limit=limit)
