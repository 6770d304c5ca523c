"""Running `trackflow` against the session's Prefect server: as the console script (a subprocess, as a user does),
or as `cli.main.main([...])` in this process, where the process itself is not what a test checks."""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRACKFLOW = shutil.which("trackflow", path=str(Path(sys.executable).parent))


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment, pointed at the session's Prefect server (the `prefect_server` fixture)."""
    from prefect.settings import PREFECT_API_URL

    return os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()} | extra


def run_cli(*args, timeout=300, **env):
    """Run the `trackflow` console script; stdin closed so nothing can wait on it."""
    return subprocess.run([TRACKFLOW, *map(str, args)], env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def call_main(*args, cwd: str | Path | None = None, **env: str | None) -> subprocess.CompletedProcess:
    """`trackflow ARGS` as `cli.main.main([...])` in this process: its exit code, stdout and stderr (Prefect's
    console log lines included), as `run_cli` returns them, without a process start and its imports (~5 s each).

    For what a command does: its checks, messages, exit codes, runs and outputs. What only a process shows stays
    with `run_cli` and tests/helpers/processes.py: signals, kill -9, the console script's own exit, the processes it
    starts, import-time behaviour. Python warnings go to pytest's summary, not to this stderr. `env` is set for
    the call (MLFLOW_TRACKING_URI=...; None unsets it); Prefect's settings are read once per process, so no PREFECT_*
    (use run_cli). `cwd`: the working folder for the call, as a shell's (relative paths, the default ./mlruns).
    """
    from cli.main import main

    if bad := [k for k in env if k.startswith("PREFECT_") or k.startswith("HF_")]:
        raise ValueError(f"{bad} are read at import or settings time: run the console script (run_cli) instead")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as undo:
        for key, value in env.items():  # set (or unset) for the call, then put back
            undo.callback(_set_env, key, os.environ.get(key))
            _set_env(key, None if value is None else str(value))
        if cwd is not None:
            undo.callback(os.chdir, os.getcwd())
            os.chdir(cwd)
        undo.enter_context(_log_streams_to(out, err))
        undo.enter_context(contextlib.redirect_stdout(out))
        undo.enter_context(contextlib.redirect_stderr(err))
        undo.enter_context(_process_state_kept())
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version, bad choices
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(["trackflow", *map(str, args)], code, out.getvalue(), err.getvalue())


def _set_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


@contextlib.contextmanager
def _log_streams_to(out: io.StringIO, err: io.StringIO):
    """Logging handlers that write to this process's stdout/stderr (Prefect's console handler among them) write to
    `out`/`err` instead, as a command's log lines reach its own stderr."""
    import prefect.main  # noqa: F401  (sets up Prefect's logging, as a flow's import would, before the swap below)
    from prefect.logging.configuration import PROCESS_LOGGING_CONFIG
    from prefect.logging.handlers import PrefectConsoleHandler

    # The root logger's level as a command has it (Prefect's config: WARNING), not pytest's log_level (INFO), which
    # would let this process's background chatter (httpx posting earlier tests' logs) into the command's stderr.
    root, root_level = logging.getLogger(), logging.getLogger().level
    root.setLevel(PROCESS_LOGGING_CONFIG.get("root", {}).get("level", "WARNING"))

    targets = {id(sys.stdout): out, id(sys.stderr): err, id(sys.__stdout__): out, id(sys.__stderr__): err}
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    swapped = []
    for handler in {h for lg in loggers for h in lg.handlers}:
        stream = getattr(handler, "stream", None)
        if isinstance(handler, PrefectConsoleHandler):  # stderr in a command; whatever stream pytest had then here
            to = err
        elif isinstance(handler, logging.StreamHandler) and id(stream) in targets:
            to = targets[id(stream)]
        else:
            continue
        console = getattr(handler, "console", None)  # Prefect's handler prints through a rich Console
        swapped.append((handler, stream, console, console.file if console is not None else None))
        handler.setStream(to)
        if console is not None:
            console.file = to
    try:
        yield
    finally:
        root.setLevel(root_level)
        for handler, stream, console, file in swapped:
            handler.setStream(stream)
            if console is not None:
                console.file = file


@contextlib.contextmanager
def signal_handlers_kept():
    """Put back this process's SIGINT/SIGTERM handlers and unraisable hook, and cancel the watchdog of any signal
    that trackflow's handlers (installed by `cli.main.main` called in this process) received: it would end the
    process GRACE s later (cli/signals.py)."""
    from cli import signals

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    unraisablehook = sys.unraisablehook  # pytest's, which install() chains to
    try:
        yield
    finally:
        signals.reset()
        for s, h in handlers.items():
            signal.signal(s, h)
        sys.unraisablehook = unraisablehook


@contextlib.contextmanager
def _process_state_kept():
    """main() sets what a process sets once (signal handlers, the collector's freeze and thresholds, MLflow's
    tracking and registry URIs, which it also exports): put back."""
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    threshold, enabled = gc.get_threshold(), gc.isenabled()
    uris = (tracking._tracking_uri, registry._registry_uri)
    exported = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        with signal_handlers_kept():
            yield
    finally:
        # A later test's in-process MLflow call must see its own store, not the last command's.
        tracking._tracking_uri, registry._registry_uri = uris
        for key, value in exported.items():
            _set_env(key, value)
        gc.unfreeze()
        gc.set_threshold(*threshold)
        if enabled:
            gc.enable()
        else:
            gc.disable()
