"""Running `trackflow` as a user does: as a subprocess, interrupted as a terminal or a supervisor would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

TRACKFLOW = shutil.which("trackflow", path=str(Path(sys.executable).parent))


def terminal_child() -> None:
    """In the child: SIGINT back to its default, which a non-interactive parent shell leaves ignored (FACTS)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args, env: dict, log: Path, cwd: str | Path | None = None) -> subprocess.Popen:
    """`trackflow ARGS` in a process group of its own (as a terminal's foreground job), output to `log`."""
    return subprocess.Popen([TRACKFLOW, *map(str, args)], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=terminal_child)


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before printing {text!r}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not printed within {timeout} s:\n{log.read_text()[-3000:]}")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def interrupt(proc: subprocess.Popen, sig: int, group: bool = True, timeout: float = 60,
              times: int = 1) -> tuple[int, float, list]:
    """Send `sig` (to the whole process group, as a terminal does, or to the process alone), `times` times 50 ms
    apart (twice: a second Ctrl-C, or `timeout` forwarding the terminal's one).

    Returns (exit code, seconds until it exited, processes it had started that outlive it by 3 s).
    """
    kids = descendants(proc.pid)
    t0 = time.monotonic()
    for i in range(times):
        if i:
            time.sleep(0.05)
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
    rc = proc.wait(timeout)
    took = time.monotonic() - t0
    deadline = time.monotonic() + 3
    while alive(kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return rc, took, alive(kids)


def run(args, env: dict, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([TRACKFLOW, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def pool_workers(pid: int) -> list[psutil.Process]:
    """The multiprocessing (spawn) workers among `pid`'s descendants."""
    out = []
    for p in descendants(pid):
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def wait_for_training_workers(proc: subprocess.Popen, n: int, cpu_seconds: float = 2.0,
                              timeout: float = 300) -> list[psutil.Process]:
    """Block until `proc` has `n` pool workers that each used `cpu_seconds` of CPU (imports done, training).

    CPU time rather than wall time: it does not stretch on a busy machine. Returns them, busiest first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {n} pool workers trained")
        busy = []
        for w in pool_workers(proc.pid):
            try:
                t = w.cpu_times()
                busy.append((t.user + t.system, w))
            except psutil.Error:
                pass
        if sum(1 for cpu, _ in busy if cpu >= cpu_seconds) >= n:
            return [w for _, w in sorted(busy, key=lambda x: -x[0])]
        time.sleep(0.1)
    raise AssertionError(f"{n} pool workers did not train within {timeout} s")


def seconds_until_gone(procs: list[psutil.Process], timeout: float = 30) -> float:
    """How long until every one of `procs` has exited (zombies count as gone); `timeout` if some never do."""
    t0 = time.monotonic()
    while alive(procs) and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    return time.monotonic() - t0


def tree_rss(pid: int) -> int:
    """Resident bytes of process `pid` and all its descendants now (0 for those gone meanwhile)."""
    try:
        procs = [psutil.Process(pid), *descendants(pid)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def peak_rss(proc: subprocess.Popen, timeout: float, every: float = 0.1) -> int:
    """Wait for `proc` (killing its group past `timeout` s), sampling its process tree's RSS every `every` s;
    returns the peak in bytes. A spike shorter than `every` can be missed (RLIMIT_AS is no substitute: torch
    reserves far more address space than it uses)."""
    deadline, peak = time.monotonic() + timeout, 0
    while proc.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"still running after {timeout} s (peak RSS so far {peak / 2**20:.0f} MiB)")
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(every)
    return peak
