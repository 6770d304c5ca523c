"""Runs that die without a word: who owns a run, a heartbeat, and the reaper that ends dead ones.

A command killed with `kill -9`, by the OOM killer or with its machine cannot end its
MLflow runs, which would then stay RUNNING forever (mlflow/mlflow#3932). So every run
trackflow opens carries its owner (host, pid, the process's start time, the machine's
boot time and PID namespace) and a heartbeat tag refreshed while the owner lives. The
next command against the store, or `trackflow runs reap`, ends a RUNNING run `KILLED`,
with a `trackflow.reaped` tag saying why, only on evidence that its owner is gone:

- on the owner's machine (same host, boot and PID namespace): no process has that pid
  with that start time (a reused pid has another start time);
- anywhere else: the heartbeat is older than `STALE_AFTER`.

Runs without an owner tag (made by other tools) are never touched. The Prefect flow run of
a reaped top-level run is set Crashed by the CLI (cli/main.py), which can reach Prefect.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

OWNER_TAG = "trackflow.owner"
HEARTBEAT_TAG = "trackflow.heartbeat"
REAPED_TAG = "trackflow.reaped"
FLOW_RUN_TAG = "prefect.flow_run_id"  # the Prefect flow run that opened the MLflow run (flows/common.py)
PARENT_TAG = "mlflow.parentRunId"
HEARTBEAT_EVERY = 60.0  # seconds between heartbeats of a live run
STALE_AFTER = 10 * 60.0  # a heartbeat this old means the owner (on another machine) is gone
F = TypeVar("F", bound=Callable[..., Any])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: float  # the process's start time (epoch seconds)
    boot: float  # the machine's boot time
    pidns: str

    @classmethod
    def this_process(cls) -> "Owner":
        import psutil

        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time(), psutil.boot_time(),
                   _pid_namespace())

    def tag(self) -> str:
        return f"host={self.host} pid={self.pid} started={self.started:.3f} boot={self.boot:.0f} pidns={self.pidns}"

    @classmethod
    def parse(cls, tag: str) -> "Owner | None":
        try:
            f = dict(part.split("=", 1) for part in tag.split())
            return cls(f["host"], int(f["pid"]), float(f["started"]), float(f["boot"]), f["pidns"])
        except (KeyError, ValueError):
            return None

    def same_machine(self, other: "Owner") -> bool:
        # Boot times read at different moments can differ by a second of clock adjustment.
        return self.host == other.host and abs(self.boot - other.boot) < 5 and self.pidns == other.pidns


def _interrupt_behind(exc: BaseException) -> int | None:
    """The signal of the first interrupt in `exc`'s chain of causes and contexts, or None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if getattr(e, "signal", None) in (signal.SIGINT, signal.SIGTERM):
            return int(e.signal)
        if isinstance(e, KeyboardInterrupt):
            return int(signal.SIGINT)
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C or SIGTERM: KeyboardInterrupt, Prefect's TerminationSignal, trackflow's Terminated, or an error raised
    while one unwound (its cause or context is one).

    The last case is met in use: a SIGTERM that lands while Prefect starts a task run makes Prefect's own crash
    handling raise `ValueError: Task run is not set`, with the TerminationSignal as its context.
    """
    return _interrupt_behind(exc) is not None


def interrupt_signal(exc: BaseException) -> int:
    """The signal behind an interrupt (`is_interrupt`): SIGTERM for a termination, else SIGINT."""
    return _interrupt_behind(exc) or int(signal.SIGINT)


def uninterrupted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` on a thread of its own, waited for: a signal's exception cannot land inside it.

    For store writes. Ctrl-C and SIGTERM raise in the main thread, wherever it is (Prefect's SIGTERM handler
    raises at every signal); raised inside a SQLite write, the exception leaves that write's transaction open,
    holding the database's lock, so that nothing in this process could end its run KILLED any more ("database is
    locked", met in use). On its own thread the write completes or fails whole; an interrupt stops only the
    wait for it. The thread sees the caller's context (Prefect's run context, settings).
    """
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller, on its own thread
            outcome["error"] = exc

    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(call,), name=f"trackflow-{getattr(fn, '__name__', 'call')}",
                              daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def uninterruptible(fn: F) -> F:
    """Decorator: every call of `fn` is `uninterrupted`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return uninterrupted(fn, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for a short block that must not be cut in two, then deliver them.

    Creating a run and watching it is such a block: an interrupt between the two left a
    RUNNING run that nothing in this process knew to end. In the main thread only (signal
    handlers run there); elsewhere a no-op. A second signal while held stops holding and is
    delivered at once, with the first, so a block stuck on a store cannot make Ctrl-C wait.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: h for s in (signal.SIGINT, signal.SIGTERM) if (h := signal.getsignal(s)) is not None}

    def release() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)
        pending, held[:] = list(held), []
        for s in pending:  # to the handlers in place before the block (trackflow's, or Prefect's in a flow)
            signal.raise_signal(s)

    def hold(signum, frame) -> None:
        held.append(signum)
        if len(held) > 1:
            release()

    for s in previous:
        signal.signal(s, hold)
    try:
        yield
    finally:
        if any(signal.getsignal(s) is hold for s in previous):  # still holding: nothing, or one signal, came
            release()


def owner_tags() -> dict[str, str]:
    """Tags a new run gets: its owner and a first heartbeat."""
    return {OWNER_TAG: Owner.this_process().tag(), HEARTBEAT_TAG: str(int(time.time()))}


def why_dead(tags: dict[str, str], here: Owner, now: float, stale_after: float = STALE_AFTER) -> str | None:
    """Why the owner of a run with these tags is known to be gone, or None (alive, or not ours to judge)."""
    owner = Owner.parse(tags.get(OWNER_TAG, ""))
    if owner is None:
        return None
    if owner.same_machine(here):
        import psutil

        try:
            alive = abs(psutil.Process(owner.pid).create_time() - owner.started) < 1.0
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            alive = False
        if alive:
            return None
        return (f"its process {owner.pid} on {owner.host} (started {_iso(owner.started)}) is gone; "
                f"checked by process {here.pid} at {_iso(now)}")
    if owner.host == here.host and owner.pidns == here.pidns and owner.boot < here.boot - 5:
        return f"{owner.host} rebooted since its process {owner.pid} started ({_iso(owner.started)})"
    try:
        beat = float(tags.get(HEARTBEAT_TAG, ""))
    except ValueError:
        beat = owner.started
    if now - beat <= stale_after:
        return None
    return (f"no heartbeat from {owner.host} (process {owner.pid}) since {_iso(beat)}, "
            f"{(now - beat) / 60:.0f} min ago; a live owner writes one every {HEARTBEAT_EVERY:.0f} s")


@dataclass(frozen=True)
class Reaped:
    run_id: str
    run_name: str
    experiment_id: str
    reason: str
    # The Prefect flow run its dead process ran (`prefect.flow_run_id`), for a top-level run only:
    # a sweep's trials carry their parent's flow run id, and a trial's worker process can die
    # while the flow itself lives on.
    flow_run_id: str | None = None


def reap_dead_runs(client, stale_after: float = STALE_AFTER) -> list[Reaped]:
    """End `KILLED` every RUNNING run whose owner is known to be gone; fail its unfinished logged models."""
    from mlflow.entities import LoggedModelStatus, ViewType

    here, now = Owner.this_process(), time.time()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    reaped: list[Reaped] = []
    for i in range(0, len(experiments), 100):  # search_runs takes at most 100 experiments
        exps, token = experiments[i : i + 100], None
        while True:
            page = client.search_runs(exps, "attributes.status = 'RUNNING'", ViewType.ALL, 1000, page_token=token)
            for run in page:
                reason = why_dead(run.data.tags, here, now, stale_after)
                if reason is None:
                    continue
                client.set_tag(run.info.run_id, REAPED_TAG, reason)
                client.set_terminated(run.info.run_id, "KILLED")
                for model in client.search_logged_models(
                    [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
                ):
                    if str(model.status) == "PENDING":
                        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
                top_level = PARENT_TAG not in run.data.tags
                reaped.append(Reaped(run.info.run_id, run.info.run_name, run.info.experiment_id, reason,
                                     run.data.tags.get(FLOW_RUN_TAG) if top_level else None))
            token = page.token
            if not token:
                break
    return reaped


class Heartbeat:
    """One daemon thread per process refreshing the heartbeat tag of the runs it owns while they are open."""

    def __init__(self, every: float = HEARTBEAT_EVERY):
        self.every = every
        self._runs: dict[str, object] = {}  # run id -> MlflowClient
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, client, run_id: str) -> None:
        with self._lock:
            self._runs[run_id] = client
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="trackflow-heartbeat", daemon=True)
                self._thread.start()

    def unwatch(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def watched(self) -> list[str]:
        """The runs this process has open (a run leaves the list once it is ended)."""
        with self._lock:
            return list(self._runs)

    def _beat(self) -> None:
        while True:
            time.sleep(self.every)
            with self._lock:
                runs = list(self._runs.items())
            for run_id, client in runs:
                try:
                    client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))
                except Exception:  # a missed beat only makes the run look older; the next one retries
                    pass


heartbeat = Heartbeat()
