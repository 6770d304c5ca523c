"""Command-line options generated from the flows' pydantic configs.

One option per field, with the field's description, default and allowed range as its
help; a bad value is one line naming the option, the value and the allowed range. So
defaults, ranges and help are written once, in trackflow/config.py. (pydantic-settings'
CLI was considered: it would rename a sweep's training options to `--base.*` and format
errors its own way; the generator below is what keeps the commands as they are.)
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence

from pydantic import BaseModel, ValidationError

from trackflow.naming import flag


class UsageError(Exception):
    """Invalid arguments or input: reported in one line, exit code 2."""


def option_name(name: str) -> str:
    return flag(name)


def _describe_range(field) -> str:
    bits = []
    for m in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                bits.append(f"{sym} {getattr(m, attr)}")
    return f" (allowed: {', '.join(bits)})" if bits else ""


def add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel], skip: Sequence[str] = ()) -> None:
    """One option per field of `model`; unset options keep the model's default."""
    group = parser.add_argument_group(f"{model.__name__} options")
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        ann = field.annotation
        if typing.get_origin(ann) in (typing.Union, types.UnionType):  # X | None: an option that may be left out
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        help_ = f"{field.description} Default: {field.default!r}.{_describe_range(field)}"
        kw: dict = dict(dest=name, default=argparse.SUPPRESS, help=help_)
        if ann is bool:
            group.add_argument(option_name(name), action=argparse.BooleanOptionalAction, **kw)
            continue
        if typing.get_origin(ann) is list and typing.get_origin(typing.get_args(ann)[0]) is list:
            kw["type"] = _nested_list(typing.get_args(typing.get_args(ann)[0])[0])
        elif typing.get_origin(ann) is list:
            kw["type"] = _comma_list(typing.get_args(ann)[0])
            kw["metavar"] = "A,B,..."
        elif typing.get_origin(ann) is typing.Literal:
            kw["choices"] = list(typing.get_args(ann))
        elif ann in (int, float):
            kw["type"] = ann
        if "choices" not in kw:
            kw["metavar"] = name.upper()
        group.add_argument(option_name(name), **kw)


def _comma_list(item_type):
    choices = typing.get_args(item_type) if typing.get_origin(item_type) is typing.Literal else None
    convert = str if choices else item_type

    def parse(text: str) -> list:
        items = [p.strip() for p in text.split(",") if p.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        try:
            values = [convert(p) for p in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {item_type.__name__} values separated by commas, got {text!r}")
        bad = [v for v in values if choices and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"invalid choice(s) {bad} (choose from {', '.join(choices)})")
        return values

    parse.__name__ = "list"
    return parse


def _nested_list(item_type):
    """Lists of lists: '/' between the lists, ',' within one (64,64/128); no list or item may be empty."""
    inner = _comma_list(item_type)

    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split("/")]
        if not all(parts) or any(not item.strip() for p in parts for item in p.split(",")):
            raise argparse.ArgumentTypeError(f"expected {item_type.__name__} lists like 64,64/128 ('/' between lists, "
                                             f"',' within one, none empty), got {text!r}")
        return [inner(p) for p in parts]

    parse.__name__ = "list of lists"
    return parse


def build_config(model: type[BaseModel], args: argparse.Namespace):
    """The validated config from the parsed options; a UsageError naming each bad option otherwise."""
    values = {k: v for k, v in vars(args).items() if k in model.model_fields}
    try:
        return model(**values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if isinstance(p, str)]
            where = option_name(loc[0]) if loc else "options"
            got = f" (got {err['input']!r})" if loc and "input" in err else ""
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg}{got}")
        raise UsageError("invalid arguments:\n  " + "\n  ".join(lines)) from None
