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
from pydantic import ValidationError

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


class DeploymentsError(ValueError):
    """prefect.yaml cannot be used; one line naming the file, the deployment and the field."""


def _one_line(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']} (got {e['input']!r})"
                     for e in exc.errors(include_url=False))


def read_deployments(path: str | Path = PREFECT_YAML) -> list[DeploymentSpec]:
    """Every deployment in prefect.yaml, the whole file validated first: its YAML, each flow's parameters against
    its config model and each schedule (Prefect's own cron and time-zone checks)."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        spec = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise DeploymentsError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise DeploymentsError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("deployments") or [], list):
        raise DeploymentsError(f"{path} has no `deployments:` list")
    out = []
    for i, d in enumerate(spec.get("deployments") or []):
        where = f"{path}, deployment {d.get('name', i + 1) if isinstance(d, dict) else i + 1!r}"
        try:
            flow = load_flow(d["entrypoint"])
            config = config_model(flow)(**(d.get("parameters") or {}).get("config", {}))
            crons = tuple((s["cron"], s.get("timezone", "UTC")) for s in d.get("schedules") or [] if "cron" in s)
            for cron, tz in crons:
                CronSchedule(cron=cron, timezone=tz)
            out.append(DeploymentSpec(d["name"], flow, config, crons, d.get("description", ""),
                                      tuple(d.get("tags", []))))
        except ValidationError as exc:
            raise DeploymentsError(f"{where}: {_one_line(exc)}") from None
        except KeyError as exc:
            raise DeploymentsError(f"{where}: missing {exc.args[0]!r}") from None
        except (ImportError, AttributeError, TypeError) as exc:
            raise DeploymentsError(f"{where}: {type(exc).__name__}: {exc}") from None
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
