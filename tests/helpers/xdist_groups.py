"""Putting tests in one pytest-xdist group (`--dist loadgroup`) so that they run one after another on one worker.

pytest-xdist 3.8 names a grouped test by writing `item._nodeid`; pytest 9.2 reads node ids from `item._id`
instead, so the group is silently lost and the tests spread over all workers (pytest-dev/pytest-xdist#1386,
fix pending in #1388). `put_in_group` adds the mark and writes the id pytest 9.2 reads, as that fix does.
"""

from __future__ import annotations

import pytest


def put_in_group(item: pytest.Item, name: str, loadgroup: bool) -> None:
    """Mark `item` as in group `name`; under `--dist loadgroup` also name its node `ID@name`, which is how the
    scheduler finds the group."""
    item.add_marker(pytest.mark.xdist_group(name))
    if not loadgroup or item.nodeid.endswith(f"@{name}"):
        return
    if hasattr(item, "_id"):  # pytest >= 9.2: structured node ids
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(f"{item.nodeid}@{name}")
    else:
        item._nodeid = f"{item.nodeid}@{name}"
