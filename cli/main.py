"""`trackflow` console script.

Options are generated from the flows' pydantic configs, so defaults, ranges and help
strings are defined once (trackflow/config.py). Exit codes: 0 ok, 2 invalid arguments
or input, 1 a failed run (or an unreachable server), 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cli import signals
from cli.options import UsageError, option_name, add_model_options, build_config
from trackflow import heap, naming, store, telemetry
from trackflow.runs import STALE_AFTER
from trackflow.config import (GENERATED_FIELDS, SWEEP_AXES, AudioInferConfig, PruneConfig, SweepConfig,
                              TextInferConfig, TrainConfig)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _reap(stale_after: float, experiment: str | None = None) -> tuple[str, list]:
    """The store made ready and probed (it answers and takes writes, to `experiment` for a tracking server), and
    runs left RUNNING by dead processes ended: (its URI, those runs)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from trackflow.runs import reap_dead_runs

    uri = store.configure()
    store.check_reachable(uri)
    store.check_writable(uri, experiment)
    try:
        reaped = reap_dead_runs(MlflowClient(tracking_uri=uri, registry_uri=store.registry_uri(uri)), stale_after)
    except MlflowException as exc:  # a tracking server that refuses to end a dead run
        raise store.StoreError(f"MLflow store {store.redact(uri)} refused to end a dead run "
                               f"({store.redact_text(exc.message)[:200]}); check its permissions") from None
    _flow_runs_to_crash.update({r.flow_run_id: f"trackflow reaper: its MLflow run {r.run_id} was ended KILLED: "
                                f"{r.reason}" for r in reaped if r.flow_run_id})
    return uri, reaped


_flow_runs_to_crash: dict[str, str] = {}  # flow run id -> why, from _reap; set Crashed once a Prefect API is at hand


def _crash_reaped_flow_runs() -> int:
    """Inside `prefect_api()`: the Prefect flow runs of the runs reaped set Crashed; returns how many.

    A failure here costs only the Prefect side (the MLflow runs are ended already): one line, no exit.
    """
    if not _flow_runs_to_crash:
        return 0
    from cli.prefect_api import crash_flow_runs

    try:
        crashed = crash_flow_runs(dict(_flow_runs_to_crash))
    except Exception as exc:
        print(f"trackflow: could not set the reaped runs' Prefect flow runs Crashed: {type(exc).__name__}: "
              f"{store.redact_text(str(exc))}", file=sys.stderr)
        return 0
    finally:
        _flow_runs_to_crash.clear()
    for flow_run_id in crashed:
        print(f"trackflow: set Prefect flow run {flow_run_id} Crashed (its process is gone)", file=sys.stderr)
    return len(crashed)


def _print_flow_run_link(run_id: str | None, one_off: bool) -> None:
    """The Prefect link the flow wrote on its MLflow run, with how to open it."""
    if not run_id:
        return
    from mlflow import MlflowClient

    from cli.prefect_api import link_line

    if url := MlflowClient().get_run(run_id).data.tags.get("prefect.flow_run_url"):
        print(link_line(url, one_off))


def _prepare_store(experiment: str | None = None) -> str:
    """Before any work: the MLflow store exists, answers and takes writes, and runs left RUNNING by dead commands
    are ended."""
    uri, reaped = _reap(STALE_AFTER, experiment)
    for r in reaped:
        print(f"trackflow: marked run {r.run_name!r} ({r.run_id}) KILLED: {r.reason}", file=sys.stderr)
    return uri


def _run(flow, config):
    """Run `flow(config)` against this command's Prefect API (the configured one, or a private temporary one).

    Called once the flow's module is imported: the heap those imports made is frozen first
    (`trackflow.heap.settle`), and bad input found inside the flow becomes exit 2, like the checks before it.
    """
    from cli.prefect_api import configured_api, prefect_api

    heap.settle()
    one_off = not configured_api()
    try:
        with prefect_api():
            _crash_reaped_flow_runs()
            result = flow(config)
    except _input_errors() as exc:
        raise UsageError(str(exc)) from None
    _print_flow_run_link(getattr(result, "run_id", None), one_off)
    return result


def _exit_code(command: str, failed: int, total: int, what: str) -> int:
    """0, or 1 with one line on stderr when some of the job's `what` failed (the rest finished)."""
    if failed:
        print(f"trackflow {command}: {failed} of {total} {what} failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _refuse_generated_options(config: TrainConfig, args: argparse.Namespace) -> None:
    """Options that shape the generated set do not go with --data."""
    given = [option_name(f) for f in GENERATED_FIELDS if f in vars(args)]
    if config.data and given:
        raise UsageError(f"{', '.join(given)} {'shapes' if len(given) == 1 else 'shape'} the generated set; "
                         "leave it out with --data")


def _refuse_unused_momentum(args: argparse.Namespace, optimizers: Sequence[str], option: str) -> None:
    """--momentum is SGD's: given without sgd among the optimizers, it would change nothing."""
    if "momentum" in vars(args) and "sgd" not in optimizers:
        raise UsageError(f"--momentum applies to the sgd optimizer only; add sgd to {option} "
                         f"(got {','.join(optimizers)}) or leave --momentum out")


def _check_data(config: TrainConfig, trainings: Sequence[TrainConfig] = ()) -> None:
    """Before any work: the whole table checked (the flow reuses it) and the memory of each training estimated
    (`trainings`, a sweep's trials; by default `config`'s own); columns left out as IDs are named on stderr."""
    from tasks.data import DataError, check_fits_in_memory, load_data, networks_of

    networks = networks_of(trainings or [config])
    try:
        if not config.data:
            check_fits_in_memory(config.n_samples, config.n_features, 2, networks)
            return
        table = load_data(config.data, config.target, config.features, config.drop, config.n_samples,
                          config.n_features, config.n_informative, config.seed, config.test_size, config.val_size,
                          sep=config.sep, thousands=config.thousands, na_values=config.na_values, networks=networks)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    for column, why in table.left_out.items():
        print(f"trackflow: warning: column {column!r} of {config.data!r} looks like an ID ({why}): left out; "
              f"pass --drop {column!r} to silence this", file=sys.stderr)


def _unchanged_since(config: TrainConfig) -> str | None:
    """With --skip-unchanged: "Unchanged since run ..." when the experiment holds a finished run of the same key.

    The fast path: the folder's listing and its files' digests come from their cache, and a
    SQLite store is read with one query, before the table is read and before MLflow, torch,
    Prefect (or, when the listing is cached, pandas) are imported.
    """
    from tasks.changes import find_keyed_runs, training_key, unchanged_line

    try:
        key = training_key(config)
    except Exception as exc:
        from tasks.data import DataError  # not before: it loads pandas

        if isinstance(exc, DataError):
            raise UsageError(str(exc)) from None
        raise
    same, _ = find_keyed_runs(store.tracking_uri(), config.experiment, key.key, config.model_name)
    return unchanged_line(same) if same else None


def _check_device(device: str) -> None:
    """Before any work: `--device cuda` on a machine without CUDA is refused (auto and cpu always run)."""
    if device != "cuda":
        return
    from trackflow.devices import DeviceError, resolve_device

    try:
        resolve_device(device)
    except DeviceError as exc:
        raise UsageError(str(exc)) from None


def _check_cluster(address: str | None) -> None:
    """Before any work: the Dask scheduler at --dask-address answers (exit 1 naming it, within seconds)."""
    if address:
        from tasks.cluster import check_reachable

        check_reachable(address)


def cmd_train(args: argparse.Namespace) -> int:
    config = build_config(TrainConfig, args)
    _check_device(config.device)
    _refuse_generated_options(config, args)
    _refuse_unused_momentum(args, [config.optimizer], "--optimizer")
    if config.skip_unchanged and (line := _unchanged_since(config)):
        print(line)
        return EXIT_OK
    _check_data(config)
    _prepare_store(config.experiment)
    from flows.train import training_pipeline

    result = _run(training_pipeline, config)
    if result.unchanged:  # a run of the same key finished while this command started
        print(result.unchanged)
        return EXIT_OK
    print(f"\n{result.changes}")
    names = ", ".join(map(str, result.classes[:20])) + (f", ... ({len(result.classes) - 20} more)"
                                                        if len(result.classes) > 20 else "")
    print(f"\nTest metrics ({len(result.classes)} classes: {names}):")
    for k, v in result.metrics.items():
        print(f"  {k:<22} {v:.4f}")
    print(f"MLflow run:   {result.run_id} (experiment {config.experiment!r})")
    if result.model_version:
        print(f"Registered:   models:/{config.model_name}/{result.model_version}")
        print(f"Promotion:    {result.promotion_reason or 'not considered (--no-promote)'}")
    print(f"Open it:      make ui, then {result.run_url}")
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    base = build_config(TrainConfig, args)
    values = {k: v for k, v in vars(args).items() if k in SweepConfig.model_fields and k != "base"}
    config = build_config(SweepConfig, argparse.Namespace(base=base, **values))
    _check_device(base.device)
    _refuse_generated_options(base, args)
    _refuse_unused_momentum(args, config.optimizers, "--optimizers")
    for axis, field in SWEEP_AXES.items():
        if axis in vars(args) and field in vars(args):
            raise UsageError(f"{option_name(field)} and {option_name(axis)} both set the trials' {field}; give one")
    _check_data(base, config.trials())
    _check_cluster(config.dask_address)
    _prepare_store(base.experiment)
    from flows.sweep import sweep_pipeline

    result = _run(sweep_pipeline, config)
    print(f"\nTrials ran {result.plan.reason}.")
    print(f"Trials ranked by {result.metric} (validation, last epoch):")
    for t in result.ranked():
        print(f"  {t.label:<36} {result.metric} {t.value(result.metric):.4f}"
              f"  test_accuracy {t.evaluation.metrics['test_accuracy']:.4f}  run {t.run_id}")
    for t in result.pruned:
        print(f"  {t.label:<36} pruned after epoch {t.pruned_at}  run {t.run_id}")
    for t in result.failed:
        print(f"  {t.label:<36} FAILED: {t.error}")
    if result.search is not None:
        trained = sum(t.epochs_trained for t in result.trials)
        grid = "" if config.lr_range else f" (the full grid: {len(config.trials()) * base.epochs})"
        print(f"Search ({config.search}, prune {config.prune}): {len(result.ranked())} completed, "
              f"{len(result.pruned)} pruned, {len(result.failed)} failed; {trained} epochs trained{grid}; "
              f"stopped: {result.search.stop_reason}")
    if result.model_version:
        print(f"Best registered as models:/{base.model_name}/{result.model_version}")
        print(f"Promotion: {result.promotion_reason or 'not considered (--no-promote)'}")
    print(f"MLflow parent run: {result.run_id} (experiment {base.experiment!r})")
    print(f"Open it:           make ui, then {store.run_url(store.tracking_uri(), result.experiment_id, result.run_id)}")
    return _exit_code("sweep", len(result.failed), len(result.trials), "trials")


def _input_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad arguments or input (exit 2), not a failed run."""
    from tasks.data import DataError
    from tasks.inputs import InputFolderError
    from tasks.models import ModelSourceError
    from tasks.results import OutputBusyError, OutputFolderError
    from trackflow.devices import DeviceError

    return InputFolderError, ModelSourceError, OutputBusyError, OutputFolderError, DataError, DeviceError


def cmd_infer(args: argparse.Namespace) -> int:
    model = TextInferConfig if args.kind == "text" else AudioInferConfig
    config = build_config(model, args)
    _check_device(config.device)
    from tasks.inputs import check_input_dir
    from tasks.models import check_generation_room, resolve_model_source
    from tasks.results import prepare_out_dir

    try:  # refuse bad input before Prefect or MLflow start (the flow checks again, for deployments)
        check_input_dir(config.in_dir, config.glob, exclude=config.out_dir, allow_empty=config.allow_empty)
        _check_cluster(config.dask_address)
        _prepare_store(config.experiment)
        source = resolve_model_source(config.model)
        if args.kind == "text":
            check_generation_room(source, config.max_new_tokens)
        prepare_out_dir(config.out_dir)  # created, and writable
    except _input_errors() as exc:
        raise UsageError(str(exc)) from None
    from flows.infer import audio_inference_pipeline, text_inference_pipeline

    result = _run(text_inference_pipeline if args.kind == "text" else audio_inference_pipeline, config)
    if result.nothing_to_do:
        print(f"Nothing to do: no files matching {config.glob!r} in {config.in_dir}")
        return EXIT_OK
    print(f"\n{result.n_inputs} inputs: {result.n_ok} ok, {result.n_failed} failed "
          f"({result.n_skipped} already done, skipped)")
    if result.n_gone:
        print(f"  {result.n_gone} inputs of earlier runs no longer exist: their records are kept, marked gone")
    for name in ("new_tokens_per_second", "audio_seconds_per_second", "inputs_per_second"):
        if name in result.metrics:
            print(f"  {name:<26} {result.metrics[name]:.2f}")
    _print_cluster(result.metrics)
    for where, error in result.failures:
        print(f"  FAILED {where}: {error}")
    if result.n_failed > len(result.failures):
        print(f"  ... and {result.n_failed - len(result.failures)} more")
    print(f"Results:    {result.out_dir}/results.jsonl (and results.csv)")
    print(f"MLflow run: {result.run_id} (experiment {config.experiment!r}); open it: make ui, then {result.run_url}")
    return _exit_code(f"infer {args.kind}", result.n_failed, result.n_inputs, "inputs")


def _print_cluster(metrics: dict[str, float]) -> None:
    if "shards" in metrics:
        print(f"  on Dask: {metrics['workers']:.0f} workers, {metrics['shards']:.0f} shards, "
              f"{metrics['model_loads']:.0f} model loads")


def cmd_score(args: argparse.Namespace) -> int:
    from trackflow.config import ScoreConfig

    config = build_config(ScoreConfig, args)
    from tasks.results import prepare_out_dir
    from tasks.scoring import list_tables, resolve_model

    try:  # refuse bad input before Prefect or MLflow start (the flow checks again, for deployments)
        _, files = list_tables(config.in_dir, config.out_dir, config.allow_empty)
        if files:
            _check_cluster(config.dask_address)
            _prepare_store(config.experiment)
            resolve_model(config.model)
            prepare_out_dir(config.out_dir)  # created, and writable
    except _input_errors() as exc:
        raise UsageError(str(exc)) from None
    if not files:
        print(f"Nothing to do: no tables in {config.in_dir}")
        return EXIT_OK
    from flows.score import score_pipeline

    result = _run(score_pipeline, config)
    m = result.metrics
    print(f"\n{m['files']:.0f} files: {m['files_ok']:.0f} scored, {m['files_failed']:.0f} failed, "
          f"{m['files_skipped']:.0f} unchanged since they were scored by this model (skipped)")
    print(f"  model {result.model_uri} ({config.model}); {m['rows_scored']:.0f} rows, "
          f"{m['rows_per_second']:.0f} rows/s")
    _print_cluster(m)
    for where, error in result.failures:
        print(f"  FAILED {where}: {error}")
    if m["files_failed"] > len(result.failures):
        print(f"  ... and {m['files_failed'] - len(result.failures):.0f} more")
    print(f"Results:    {result.out_dir} (one .parquet per table; results.jsonl and results.csv)")
    print(f"MLflow run: {result.run_id} (experiment {config.experiment!r}); open it: make ui, then {result.run_url}")
    return _exit_code("score", int(m["files_failed"]), int(m["files"]), "files")


def cmd_models_tiny(args: argparse.Namespace) -> int:
    from tasks.models import make_tiny_models

    heap.settle()

    paths = make_tiny_models(args.dest)
    print(f"text model:  {paths['text']}  (trackflow infer text IN_DIR --out OUT --model {paths['text']})")
    print(f"audio model: {paths['audio']}  (trackflow infer audio IN_DIR --out OUT --model {paths['audio']})")
    print("Both have random weights: their outputs are gibberish, their cost and behaviour are real.")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.deployments import PREFECT_YAML, DeploymentsError, read_deployments, serve_all
    from prefect.settings import PREFECT_API_URL

    from cli.prefect_api import check_reachable

    heap.settle()
    path = args.file or PREFECT_YAML
    try:  # the whole file, crons included, before anything is printed or any server is asked
        with naming.names("config"):  # prefect.yaml sets the configs' fields, not options
            specs = read_deployments(path)
    except DeploymentsError as exc:
        raise UsageError(str(exc)) from None
    if not PREFECT_API_URL.value():
        raise UsageError("serving schedules needs a running Prefect server: start one (`make server`) and set "
                         "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
    check_reachable(PREFECT_API_URL.value())

    for s in specs:
        print(f"  {s.name:<22} {', '.join(c for c, _ in s.crons) or 'no schedule'}  ({s.flow.name})")
    serve_all(path, limit=args.limit)
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    uri = store.configure()
    cmd = ["mlflow", "ui", "--host", args.host, "--port", str(args.port), "--backend-store-uri", uri,
           "--workers", str(args.workers)]
    artifacts = store.artifact_location(uri)
    if artifacts:
        cmd += ["--default-artifact-root", artifacts]
    print(f"MLflow UI on http://{args.host}:{args.port} over {store.redact(uri)}")
    exe = Path(sys.executable).parent / "mlflow"
    # MLflow's job runner serves its GenAI jobs (scorers, prompt optimization), which trackflow never submits: off,
    # it is 2 processes instead of 10, and a third of the CPU to start (measured: 6.3 s against 19.5 s).
    os.execve(str(exe), cmd, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | dict(os.environ))


def cmd_runs_reap(args: argparse.Namespace) -> int:
    import math

    if not (math.isfinite(args.stale_after) and args.stale_after > 0):  # 0 or less would reap live runs elsewhere
        raise UsageError(f"--stale-after must be a number of minutes above 0 (got {args.stale_after:g}); "
                         f"the default is {STALE_AFTER / 60:g}")
    uri, reaped = _reap(args.stale_after * 60)
    for r in reaped:
        print(f"KILLED {r.run_id} ({r.run_name}, experiment {r.experiment_id}): {r.reason}")
    print(f"{len(reaped)} run(s) left RUNNING by a dead process marked KILLED in {store.redact(uri)}")
    if _flow_runs_to_crash:
        from cli.prefect_api import prefect_api

        with prefect_api():
            print(f"{_crash_reaped_flow_runs()} of their Prefect flow run(s) set Crashed")
    return EXIT_OK


def cmd_runs_list(args: argparse.Namespace) -> int:
    from cli.views import runs_list

    return runs_list(args.experiment, args.limit)


def cmd_runs_show(args: argparse.Namespace) -> int:
    from cli.views import runs_show

    return runs_show(args.run_id)


def cmd_models_list(args: argparse.Namespace) -> int:
    from cli.views import models_list

    return models_list(args.name)


def cmd_runs_prune(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    from cli.views import experiment_ids, prune_lines, sized
    from trackflow.retention import plan_prune, prune

    config = build_config(PruneConfig, args)
    uri = _prepare_store()  # runs of dead commands end KILLED first, so that they can go too
    client = MlflowClient(tracking_uri=uri, registry_uri=store.registry_uri(uri))
    plan = plan_prune(client, config.older_than, experiment_ids(client, config.experiment))
    for line in prune_lines(plan):
        print(line)
    kept = "".join(f"; kept {n}: {why}" for why, n in plan.kept.items())
    what = f"{len(plan.doomed)} run(s) started over {config.older_than:g} days ago, {sized(plan.bytes)} of artifacts"
    if not args.yes:
        print(f"Would delete {what}, and their {len(plan.flow_run_ids)} Prefect flow run(s){kept}. "
              "Nothing deleted: rerun with --yes.")
        return EXIT_OK
    runs, freed = prune(client, plan)
    flows = 0
    if plan.flow_run_ids or _flow_runs_to_crash:
        from cli.prefect_api import prefect_api
        from flows.prune import delete_flow_runs

        with prefect_api():
            _crash_reaped_flow_runs()
            flows = delete_flow_runs(plan.flow_run_ids)
    print(f"Deleted {runs} run(s) and {sized(freed)} of artifacts from {store.redact(uri)}, "
          f"and {flows} Prefect flow run(s){kept}")
    return EXIT_OK


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 (got {text!r})")
    return int(text)


def _version() -> str:
    """The installed trackflow's version (its package metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trackflow")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


class Parser(argparse.ArgumentParser):
    """argparse, with a bad option answered in one line that says where the options are listed, not with the
    whole usage block above it; its subcommands' parsers are of this class too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.set_defaults(_parser=self)  # the innermost command's parser wins: main() blames leftovers on it

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _parse(parser: Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`; an argument no command takes is refused by the command it was given to."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        parser.error(f"unrecognized arguments: {argv[0]}")  # else argparse only says COMMAND is missing
    args, extra = parser.parse_known_args(argv)
    if extra:
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 1 to 65535, got {text!r}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="trackflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="Run the training pipeline once.", description="Run the training pipeline once.")
    add_model_options(p, TrainConfig)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sweep", help="Run a learning-rate sweep and promote the best model.",
                       description="Run a grid of training trials concurrently; the train options set the base.")
    add_model_options(p, SweepConfig, skip=("base",))
    add_model_options(p, TrainConfig, skip=("lr", "optimizer", "dropout", "skip_unchanged"))
    p.set_defaults(func=cmd_sweep)

    infer = sub.add_parser("infer", help="Run a Hugging Face model over a folder of files.",
                           description="Batch inference over a folder; rerun with the same --out to resume.")
    kinds = infer.add_subparsers(dest="kind", required=True, metavar="KIND")
    resume = ("One record per input goes to OUT_DIR/results.jsonl (and results.csv); rerun with the same --out to "
              "resume: inputs already done are skipped.")
    for kind, model, what, how in (
        ("text", TextInferConfig, "Generate a continuation of every prompt file",
         "in IN_DIR with a causal language model (GPT-2 style): a .txt file is one prompt, a .jsonl file one "
         "{\"prompt\": ...} per line."),
        ("audio", AudioInferConfig, "Transcribe every recording",
         "in IN_DIR with a Wav2Vec2-style CTC speech model (WAV, FLAC, OGG or MP3, decoded to 16 kHz mono)."),
    ):
        p = kinds.add_parser(kind, help=what + ".", description=f"{what} {how} {resume}")
        p.add_argument("in_dir", metavar="IN_DIR", help=model.model_fields["in_dir"].description)
        p.add_argument("--out", "-o", dest="out_dir", metavar="OUT_DIR", required=True,
                       help=model.model_fields["out_dir"].description)
        add_model_options(p, model, skip=("in_dir", "out_dir"))
        if kind == "text":
            p.add_argument("--greedy", dest="do_sample", action="store_false", default=argparse.SUPPRESS,
                           help="Greedy decoding (the default); same as --no-do-sample.")
        p.set_defaults(func=cmd_infer)

    from trackflow.config import ScoreConfig

    p = sub.add_parser("score", help="Score a table or a folder of tables with a registered model.",
                       description="Score CSV/TSV/Parquet tables with a registered classifier: one Parquet file per "
                                   "table (its rows, label, proba_<class>); rerun with the same --out to resume.")
    p.add_argument("in_dir", metavar="IN", help=ScoreConfig.model_fields["in_dir"].description)
    p.add_argument("--out", "-o", dest="out_dir", metavar="OUT_DIR", required=True,
                   help=ScoreConfig.model_fields["out_dir"].description)
    add_model_options(p, ScoreConfig, skip=("in_dir", "out_dir"))
    p.set_defaults(func=cmd_score)

    models = sub.add_parser("models", help="Model utilities.", description="Model utilities.")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = msub.add_parser("tiny", help="Write small local GPT-2 and Wav2Vec2 models for offline demos and tests.",
                        description="Build small GPT-2 and Wav2Vec2 models from configs (random weights) and save "
                                    "them with their tokenizer/processor under DEST.")
    p.add_argument("dest", metavar="DEST", help="Folder to write tiny-gpt2/ and tiny-wav2vec2/ into.")
    p.set_defaults(func=cmd_models_tiny)
    p = msub.add_parser("list", help="Registered models: versions, aliases, source run, data, target, columns.",
                        description="Registered model versions with their aliases, the run each comes from, and that "
                                    "run's data, target and input columns.")
    p.add_argument("name", metavar="NAME", nargs="?", help="Only this registered model.")
    p.set_defaults(func=cmd_models_list)

    p = sub.add_parser("serve", help="Serve the deployments of prefect.yaml with their schedules (no worker).",
                       description="Serve every deployment in prefect.yaml, with its cron schedule and parameters, "
                                   "in this process until interrupted. Needs a Prefect server (PREFECT_API_URL).")
    p.add_argument("--file", metavar="PREFECT_YAML", help="Deployments file (default: the project's prefect.yaml).")
    p.add_argument("--limit", type=int, metavar="N", help="At most N flow runs at once.")
    p.set_defaults(func=cmd_serve)

    runs = sub.add_parser("runs", help="MLflow run upkeep.", description="MLflow run upkeep.")
    rsub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    p = rsub.add_parser("reap", help="Mark runs whose process died (kill -9, OOM, lost machine) KILLED.",
                        description="End KILLED every RUNNING run whose owning process is gone: on this machine, "
                                    "no process with its pid and start time; elsewhere, no heartbeat for "
                                    "--stale-after minutes. Live runs are never touched. Every command does this "
                                    "at start; this does it on demand.")
    stale = STALE_AFTER / 60
    p.add_argument("--stale-after", type=float, default=stale, metavar="MINUTES",
                   help=f"Heartbeat age after which a run owned by another machine counts as dead (default {stale:g}).")
    p.set_defaults(func=cmd_runs_reap)
    p = rsub.add_parser("list", help="Recent runs: status, start, duration, key metrics, model version and alias.",
                        description="Runs of the store, newest first, with their key metrics and the registered "
                                    "model versions (and aliases) that come from them.")
    p.add_argument("--experiment", metavar="NAME", help="Only this experiment (default: all).")
    p.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="At most N runs (default 20).")
    p.set_defaults(func=cmd_runs_list)
    p = rsub.add_parser("show", help="One run: params, final metrics, artifacts, links; a sweep's ranked trials.",
                        description="A run's params, final metrics, artifacts and Prefect link; for a sweep's "
                                    "parent run, its trials ranked as the sweep ranked them.")
    p.add_argument("run_id", metavar="RUN_ID")
    p.set_defaults(func=cmd_runs_show)
    p = rsub.add_parser("prune", help="Delete runs older than DAYS with their artifacts (lists them without --yes).",
                        description="Delete MLflow runs started more than DAYS ago, with their artifacts and logged "
                                    "models, and their Prefect flow runs. Never a RUNNING run, a run a registered "
                                    "model version comes from (aliases included), or a sweep with such a trial. "
                                    "The results logs of inference jobs (your --out folders) are not touched. "
                                    "Without --yes, only lists what would go.")
    add_model_options(p, PruneConfig)
    p.add_argument("--yes", action="store_true", help="Delete (without it, only list).")
    p.set_defaults(func=cmd_runs_prune)

    p = sub.add_parser("ui", help="MLflow UI over the project's store (127.0.0.1).",
                       description="MLflow UI over the store trackflow writes to (MLFLOW_TRACKING_URI or mlruns/).")
    p.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1: this machine only).")
    p.add_argument("--port", type=_port, default=store.MLFLOW_UI_PORT, help=f"Port (default {store.MLFLOW_UI_PORT}).")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="Server processes (default 1: one user's browser; MLflow's own default is 4).")
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    telemetry.quiet()
    gc.disable()  # through the imports; each command calls heap.settle() once its flow is imported
    parser = build_parser()
    args = _parse(parser, argv)
    signals.install()
    try:
        with naming.names("cli"):  # messages name options (--data), not config fields (config.data)
            return args.func(args)
    except UsageError as exc:
        print(f"trackflow {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BaseException as exc:
        from cli.prefect_api import PrefectApiError
        from tasks.cluster import ClusterError
        from trackflow.runs import interrupt_signal, is_interrupt

        if is_interrupt(exc):
            # Runs are marked KILLED and servers stopped by now; worker threads still
            # busy with a trial must not hold the exit.
            signals.exit_now(signals.exit_code(interrupt_signal(exc)), f"trackflow {args.command}: interrupted")
        if isinstance(exc, (store.StoreError, PrefectApiError, ClusterError)):
            print(f"trackflow {args.command}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        if isinstance(exc, Exception):  # the flow's own logs already hold the traceback
            print(f"trackflow {args.command}: run failed: {type(exc).__name__}: {store.redact_text(str(exc))}",
                  file=sys.stderr)
            return EXIT_FAILED
        raise
    finally:
        # Interpreter shutdown runs a full collection over the whole heap (~2.5 s here after a
        # training run); nothing left at exit needs it, and frozen objects are skipped.
        gc.freeze()
        gc.enable()


if __name__ == "__main__":
    sys.exit(main())
