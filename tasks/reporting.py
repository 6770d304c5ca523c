"""What the Prefect UI shows about a run: the text of its artifacts."""

from __future__ import annotations

from collections.abc import Mapping


def metrics_markdown(title: str, metrics: Mapping[str, float], links: Mapping[str, str]) -> str:
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    lines += [""] + [f"- {label}: [{url}]({url})" for label, url in links.items()]
    return "\n".join(lines) + "\n"
