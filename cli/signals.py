"""Ctrl-C and SIGTERM for a command: unwind cleanly, and within seconds whatever happens.

The first SIGINT raises KeyboardInterrupt and the first SIGTERM raises `Terminated` in
the main thread, so the flow marks its runs KILLED and its servers are stopped on the
way out. (Inside a flow run Prefect swaps in its own SIGTERM handler, which raises its
`TerminationSignal` and then re-sends the signal to this one.) A watchdog then gives the
unwinding `GRACE` seconds: a thread stuck in a system call, or a trial still training on
a worker thread, cannot keep the process alive.

Python ignores an exception raised inside `__del__` or a weakref or GC callback (it prints
"Exception ignored in ..."), and a signal's handler runs wherever the main thread is, those
callbacks included. A signal's exception lost that way (this module's first, or Prefect's
TerminationSignal inside a flow run) is delivered again, to be raised where the main thread
goes next.

A second signal (a second Ctrl-C, or `timeout` forwarding the one a terminal sent to the
whole group) ends the process within seconds, without interrupting the unwinding under
way. Every forced exit (a second signal, the watchdog) first ends KILLED the MLflow runs
this process still has open, so none is left RUNNING.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

GRACE = 20.0
END_RUNS_WITHIN = 5.0  # seconds a forced exit waits for the store to take the open runs' end
_cleanups: list[Callable[[], None]] = []
_received: list[int] = []
_watchdogs: list[threading.Timer] = []
_raised: list[BaseException] = []  # the exception the first signal raised
_redelivered: list[int] = []  # that signal, delivered again because Python ignored its exception


class Terminated(BaseException):
    """SIGTERM, raised in the main thread (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"terminated by signal {signum}")
        self.signal = signum


def exit_code(signum: int) -> int:
    return 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def on_forced_exit(cleanup: Callable[[], None]) -> Callable[[], None]:
    """Run `cleanup` (e.g. stop a child server) if the watchdog has to end the process."""
    _cleanups.append(cleanup)
    return lambda: _cleanups.remove(cleanup) if cleanup in _cleanups else None


def stop_children(timeout: float = 3.0) -> None:
    """SIGTERM every process this one started (pool and Dask workers, servers), then SIGKILL the rest."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass


def end_open_runs(timeout: float = END_RUNS_WITHIN) -> None:
    """End KILLED the MLflow runs this process still has open (a forced exit skips the flows' own clean-up).

    From another thread, waited for `timeout` seconds at most: a store that does not answer
    must not hold the exit.
    """
    from trackflow.runs import heartbeat

    open_runs = heartbeat.watched()
    if not open_runs:
        return
    from tasks.tracking import end_unfinished

    def end() -> None:
        try:
            end_unfinished(open_runs, "KILLED")
        except Exception:  # the next command's reaper ends what could not be ended here
            pass

    worker = threading.Thread(target=end, name="trackflow-end-runs", daemon=True)
    worker.start()
    worker.join(timeout)


def exit_now(code: int, last_line: str | None = None) -> None:
    """End the process with `code` now: open runs ended, cleanups, children stopped, output flushed; no atexit,
    no thread joins.

    `last_line` goes to stderr last: the threads left behind (a sweep's trial waiters, whose pool is gone) log
    their failures meanwhile, so logging is turned off before it is written.
    """
    end_open_runs()
    for cleanup in list(_cleanups):
        try:
            cleanup()
        except Exception:
            pass
    stop_children()
    try:
        if last_line is not None:
            import logging

            logging.disable(logging.CRITICAL)
            print(last_line, file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
    finally:
        os._exit(code)


def _handler(signum, frame) -> None:
    if _redelivered:
        _raise(_redelivered.pop())
    if _received:
        # Not raised: that would cut short the clean-up the first signal started (ending the runs
        # KILLED). The exit comes from another thread, which ends what is still open itself.
        if len(_received) == 1:
            _received.append(signum)
            threading.Thread(target=exit_now, args=(exit_code(_received[0]),), name="trackflow-forced-exit",
                             daemon=True).start()
        return
    _received.append(signum)
    timer = threading.Timer(GRACE, exit_now, args=(exit_code(signum),))
    timer.daemon = True
    _watchdogs.append(timer)
    timer.start()
    _raise(signum)


def _raise(signum: int) -> None:
    exc = KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)
    _raised[:] = [exc]
    raise exc


def _unraisable(args) -> None:
    """`sys.unraisablehook`: a signal's exception, ignored where it was raised, is delivered again.

    The first signal's, raised by this module's handler; or Prefect's `TerminationSignal`, raised by the
    SIGTERM handler Prefect installs for the length of a flow run (lost there, a SIGTERM was ignored: the
    flow ran on to its end, and this module's watchdog never started).
    """
    exc = args.exc_value
    if _raised and exc is _raised[0]:
        if not _redelivered:
            _redelivered.append(_received[0])
            _deliver_again(_received[0])
        return
    if (signum := _signal_of(exc)) is not None:
        _deliver_again(signum)
        return
    _chained_unraisablehook[0](args)


def _signal_of(exc: BaseException | None) -> int | None:
    """SIGINT or SIGTERM, for an exception a signal handler raises (KeyboardInterrupt, Terminated, Prefect's
    TerminationSignal: BaseExceptions, the last two with a `signal`), else None."""
    if isinstance(exc, KeyboardInterrupt):
        return int(signal.SIGINT)
    if isinstance(exc, BaseException) and not isinstance(exc, Exception):
        signum = getattr(exc, "signal", None)
        if signum in (signal.SIGINT, signal.SIGTERM):
            return int(signum)
    return None


def _deliver_again(signum: int) -> None:
    # A real signal (_thread.interrupt_main would not wake a main thread blocked in sleep() or a socket), from
    # another thread a moment later (sent now, the handler would run inside this hook, which ignores exceptions
    # too). Ignored again, it is delivered again.
    timer = threading.Timer(0.05, signal.pthread_kill, args=(threading.main_thread().ident, signum))
    timer.daemon = True
    timer.start()


_chained_unraisablehook = [sys.unraisablehook]


def install() -> None:
    """Handle SIGINT and SIGTERM as above (main thread only)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    if sys.unraisablehook is not _unraisable:
        _chained_unraisablehook[0] = sys.unraisablehook
        sys.unraisablehook = _unraisable


def reset() -> None:
    """Forget the signals received and cancel their watchdogs, for a process that goes on after calling
    `cli.main.main` in itself (the test suite): a watchdog left running would end it GRACE seconds later."""
    for timer in _watchdogs:
        timer.cancel()
    _watchdogs.clear()
    _received.clear()
    _raised.clear()
    _redelivered.clear()
