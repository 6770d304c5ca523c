"""How a message names a parameter: `--data` to someone at the CLI, `config.data` in a flow run.

The same flows run from the `trackflow` command and as deployments, and a message that
says what to fix must use the name the reader set: the command's option, or the
deployment's parameter (prefect.yaml's `parameters.config`). Messages say `param("data")`;
the CLI runs its commands inside `names("cli")`. The style is a context variable, so it
follows the command into its flow and task runs (Prefect copies the context into its
task threads) and never leaks into a flow run started elsewhere: a deployment's run, in
a worker or `trackflow serve`'s process, names `config.<field>`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

Style = Literal["cli", "config"]
_style: ContextVar[Style] = ContextVar("trackflow_param_style", default="config")

# Options of the CLI that are not spelled `--<field>`.
_CLI_SPELLINGS = {"out_dir": "--out", "in_dir": "IN_DIR", "n_trials": "--trials"}


def flag(field: str) -> str:
    """The CLI's option for config field `field`."""
    return _CLI_SPELLINGS.get(field, "--" + field.replace("_", "-"))


def param(field: str) -> str:
    """Config field `field` as the reader of this message set it: `--field-name` or `config.field_name`."""
    return flag(field) if _style.get() == "cli" else f"config.{field}"


@contextlib.contextmanager
def names(style: Style) -> Iterator[None]:
    """Messages made inside name parameters in `style`."""
    token = _style.set(style)
    try:
        yield
    finally:
        _style.reset(token)
