"""Reporting steps: what the Prefect UI shows about a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE


def metrics_markdown(title: str, metrics: Mapping[str, float], links: Mapping[str, str]) -> str:
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    lines += [""] + [f"- {label}: [{url}]({url})" for label, url in links.items()]
    return "\n".join(lines) + "\n"


@task(retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def publish_markdown(key: str, markdown: str, description: str) -> None:
    """Attach a markdown artifact to the current Prefect flow run."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=key, description=description)


@task(retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def publish_table(key: str, rows: Sequence[Mapping[str, object]], description: str) -> None:
    """Attach a table artifact (one row per mapping) to the current Prefect flow run."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(table=[dict(r) for r in rows], key=key, description=description)
