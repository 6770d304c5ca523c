"""Worker processes for a sweep's trials: each dies with the command, and a death fails only its own trial.

`WorkerPool` is a concurrent.futures Executor over `workers` spawned processes, each in a
one-process ProcessPoolExecutor of its own (a "slot"). A ProcessPoolExecutor breaks as a
whole when any of its processes dies (killed, or out of memory), failing every call it
holds; with one process per pool, a death fails only the call that process was running.
That call runs once more on a fresh worker; a second death fails it with `WorkerDied`.
Workers start as a pool's do, at their first call (~7 s here, flows.sweep's WORKER_START_SECONDS).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from trackflow import heap

# How often a worker checks that the command that started it is alive: about the longest it outlives it.
PARENT_POLL_SECONDS = 0.25


class WorkerDied(RuntimeError):
    """The worker process running a call died on every try (a kill, or the kernel's out-of-memory killer)."""


def init_worker(parent_pid: int) -> None:
    """In a worker, before its first call: exit as soon as `parent_pid` (the command) is gone, kill -9 included;
    ignore Ctrl-C, which a terminal sends to the whole process group: the command ends its workers itself;
    tune the garbage collector for the imports to come (trackflow/heap.py).

    A daemon thread polls getppid(): when the parent dies, however it dies, the kernel hands
    this process to init (or a subreaper) and the parent pid changes. The parent-death signal
    (prctl PR_SET_PDEATHSIG, as cli/child.py uses for the Prefect server) would be immediate,
    but the kernel sends it when the *thread* that started the process ends, not the process:
    a pool starts its worker from whichever thread submits to it first, and such a thread
    ending while the command lives on would kill a healthy worker mid-trial. Polling costs a
    system call every PARENT_POLL_SECONDS; a worker inside a long C call that holds the GIL
    notices when it returns (torch's kernels release it).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != parent_pid:  # already gone before this ran
        os._exit(1)
    heap.tune()  # before the first call imports torch and the trial's other modules

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="trackflow-parent-watch", daemon=True).start()


def describe_exit(exitcode: int | None) -> str:
    """How a worker process ended, from multiprocessing's exitcode (-N: killed by signal N)."""
    if exitcode is None:
        return "for an unknown reason"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class WorkerPool(Executor):
    """`workers` worker processes, one call each at a time; a call whose worker dies is retried `retries` times,
    each on a fresh worker. A thread per worker waits on the call it runs (submit() returns at once)."""

    def __init__(self, workers: int, retries: int = 1):
        self._retries = retries
        self._context = multiprocessing.get_context("spawn")  # forking would copy Prefect's and MLflow's threads
        self._lock = threading.Lock()
        self._closed = False
        self._slots: list[ProcessPoolExecutor] = []  # every slot made, for shutdown
        self._idle: queue.SimpleQueue[ProcessPoolExecutor] = queue.SimpleQueue()
        for _ in range(workers):
            self._idle.put(self._new_slot())
        # As many waiting threads as slots, and each holds at most one slot: a free slot is always there for it.
        self._waiters = ThreadPoolExecutor(workers, thread_name_prefix="trackflow-worker")

    def _new_slot(self) -> ProcessPoolExecutor:
        slot = ProcessPoolExecutor(1, mp_context=self._context, initializer=init_worker, initargs=(os.getpid(),))
        self._slots.append(slot)
        return slot

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._waiters.submit(self._call, fn, args, kwargs)

    def _call(self, fn, args, kwargs):
        deaths: list[str] = []
        while True:
            slot = self._idle.get()
            future = None
            try:
                future = slot.submit(fn, *args, **kwargs)
                result = future.result()
            except BrokenProcessPool:
                how = self._replace(slot)
                if future is None:  # its worker had died while idle: not this call's death
                    continue
                deaths.append(how)
                if len(deaths) > self._retries:
                    times = "twice" if len(deaths) == 2 else f"{len(deaths)} times"
                    oom = " (a kill -9, or out of memory)" if "killed by SIGKILL" in deaths else ""
                    raise WorkerDied(f"its worker process died {times} ({', then '.join(deaths)}){oom}") from None
                print(f"trackflow: a worker process died ({how}) during a trial; "
                      "running that trial once more on a fresh worker", file=sys.stderr, flush=True)
                continue
            except BaseException:
                self._idle.put(slot)
                raise
            self._idle.put(slot)
            return result

    def _replace(self, slot: ProcessPoolExecutor) -> str:
        """A fresh slot in place of `slot`, whose worker died; returns how it died."""
        # ProcessPoolExecutor has no public handle on its processes; _processes is there from 3.8 to 3.14.
        procs = list((getattr(slot, "_processes", None) or {}).values())
        slot.shutdown(wait=True)  # at once: its manager thread has already reaped the dead worker
        with self._lock:
            if self._closed:  # a worker stopped by shutdown (or by the command's exit): no new one
                self._idle.put(slot)  # so that no thread waits for a slot forever; submitting to it raises
                raise RuntimeError("the worker pool is shut down: the command is ending")
            self._idle.put(self._new_slot())
        return describe_exit(procs[0].exitcode) if procs else describe_exit(None)

    def terminate(self) -> None:
        """Stop now (the command is ending): calls not started are cancelled, workers running one are terminated."""
        procs = [p for slot in list(self._slots) for p in (getattr(slot, "_processes", None) or {}).values()]
        self.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.terminate()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            slots = list(self._slots)
        self._waiters.shutdown(wait=False, cancel_futures=cancel_futures)
        for slot in slots:
            slot.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:
            self._waiters.shutdown(wait=True)
