"""`trackflow` console script.

Options are generated from the flows' pydantic configs, so defaults, ranges and help
strings are defined once (trackflow/config.py). Exit codes: 0 ok, 2 invalid arguments
or input, 1 a failed run.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from collections.abc import Sequence

from pydantic import BaseModel, ValidationError

from trackflow import store
from trackflow.config import SweepConfig, TrainConfig

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Invalid arguments or input: reported in one line, exit code 2."""


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


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
        help_ = f"{field.description} Default: {field.default!r}.{_describe_range(field)}"
        kw: dict = dict(dest=name, default=argparse.SUPPRESS, help=help_)
        if ann is bool:
            group.add_argument(_option(name), action=argparse.BooleanOptionalAction, **kw)
            continue
        if typing.get_origin(ann) is list:
            kw["type"] = _comma_list(typing.get_args(ann)[0])
            kw["metavar"] = "A,B,..."
        elif typing.get_origin(ann) is typing.Literal:
            kw["choices"] = list(typing.get_args(ann))
        elif ann in (int, float):
            kw["type"] = ann
        elif typing.get_origin(ann) in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(ann) if a is not type(None)]
            kw["type"] = inner[0] if inner and inner[0] in (int, float) else str
        if "choices" not in kw:
            kw["metavar"] = name.upper()
        group.add_argument(_option(name), **kw)


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


def build_config(model: type[BaseModel], args: argparse.Namespace):
    """The validated config from the parsed options; a UsageError naming each bad option otherwise."""
    values = {k: v for k, v in vars(args).items() if k in model.model_fields}
    try:
        return model(**values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if isinstance(p, str)]
            where = _option(loc[0]) if loc else "options"
            got = f" (got {err['input']!r})" if loc and "input" in err else ""
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg}{got}")
        raise UsageError("invalid arguments:\n  " + "\n  ".join(lines)) from None


def _quiet_telemetry() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def cmd_train(args: argparse.Namespace) -> int:
    config = build_config(TrainConfig, args)
    from flows.train import training_pipeline

    result = training_pipeline(config)
    print("\nTest metrics:")
    for k, v in result.metrics.items():
        print(f"  {k:<16} {v:.4f}")
    print(f"MLflow run:   {result.run_id} (experiment {config.experiment!r})")
    if result.model_version:
        print(f"Registered:   models:/{config.model_name}/{result.model_version}")
    print(f"Open it:      make ui, then {result.run_url}")
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    base = build_config(TrainConfig, args)
    values = {k: v for k, v in vars(args).items() if k in SweepConfig.model_fields and k != "base"}
    config = build_config(SweepConfig, argparse.Namespace(base=base, **values))
    from flows.sweep import metric_value, sweep_pipeline

    result = sweep_pipeline(config)
    print(f"\nTrials ranked by {result.metric} (validation, last epoch):")
    for t in result.ranked():
        print(f"  {t.label:<36} {result.metric} {metric_value(t.result, result.metric):.4f}"
              f"  test_accuracy {t.result.metrics['test_accuracy']:.4f}  run {t.run_id}")
    for t in result.failed:
        print(f"  {t.label:<36} FAILED: {t.error}")
    if result.model_version:
        print(f"Best registered as models:/{base.model_name}/{result.model_version}; {result.promotion_reason}")
    print(f"MLflow parent run: {result.run_id} (experiment {base.experiment!r})")
    print(f"Open it:           make ui, then {store.run_url(store.tracking_uri(), result.experiment_id, result.run_id)}")
    if result.failed:
        print(f"trackflow sweep: {len(result.failed)} of {len(result.trials)} trials failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trackflow", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="Run the training pipeline once.", description="Run the training pipeline once.")
    add_model_options(p, TrainConfig)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sweep", help="Run a learning-rate sweep and promote the best model.",
                       description="Run a grid of training trials concurrently; the train options set the base.")
    add_model_options(p, SweepConfig, skip=("base",))
    add_model_options(p, TrainConfig, skip=("lr", "optimizer", "dropout"))
    p.set_defaults(func=cmd_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_telemetry()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"trackflow {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"trackflow {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the flow's own logs already hold the traceback
        print(f"trackflow {args.command}: run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
