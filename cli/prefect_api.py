"""The Prefect API a command reports to: `PREFECT_API_URL` when set, else a private temporary server.

`PREFECT_API_URL` is read from Prefect's settings: the environment, or the active profile
(`prefect config set PREFECT_API_URL=...`), which then spares each command a temporary server.
A temporary server has no UI and is gone when the command ends, so the links a one-off
command writes point at the UI that serves the same PREFECT_HOME (`make server`): PREFECT_UI_URL
when set, else Prefect's server address settings (PREFECT_SERVER_API_HOST/PORT, 127.0.0.1:4200).

Prefect's own temporary server has three flaws for a command-line tool, all met in use:
two commands started together can pick the same port (one then reports to the other's
server, which vanishes when that command ends); it sits in the command's process group,
so a terminal's Ctrl-C stops it while the flow still needs it to record the interrupt;
and a command killed with `kill -9` leaves it running. The server started here is the
same application (Prefect's API, no UI) with those three fixed:

- the port comes from the kernel and is checked to belong to this server, and start-ups
  on one PREFECT_HOME take turns under a file lock, so database migrations never race;
- it runs in its own session, so only this command stops it;
- it dies with the command (`cli.child`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

from trackflow.store import redact

START_TIMEOUT = 120.0  # seconds; a first start on a new PREFECT_HOME migrates its database


class PrefectApiError(RuntimeError):
    """The Prefect API cannot be reached or started; the message names it and what to check."""


def check_reachable(url: str, timeout: float = 10.0) -> None:
    import httpx

    try:
        r = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise PrefectApiError(
            f"Prefect API {redact(url)} did not answer ({type(exc).__name__}: {exc}); start it (`make server`) "
            "or unset PREFECT_API_URL to let each command start a temporary one"
        ) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listens_on(pid: int, port: int) -> bool:
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def _spawn(port: int, log) -> subprocess.Popen:
    import prefect
    from prefect.settings import get_current_settings

    env = {
        **os.environ,
        # As Prefect's own temporary server: the API only, no UI.
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
               "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "error", "--lifespan", "on"]
    return subprocess.Popen([sys.executable, "-m", "cli.child", str(os.getpid()), *uvicorn], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left."""
    import signal

    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    """A private Prefect API server on a loopback port; returns (process, API URL)."""
    import httpx
    from filelock import FileLock

    home.mkdir(parents=True, exist_ok=True)
    log = tempfile.TemporaryFile()
    with FileLock(str(home / ".trackflow-server-start.lock"), timeout=START_TIMEOUT * 2):
        for _ in range(3):
            port = _free_port()
            proc = _spawn(port, log)
            url = f"http://127.0.0.1:{port}/api"
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200 and _listens_on(proc.pid, port):
                        return proc, url
                time.sleep(0.1)
            if proc.poll() is None:
                stop(proc)
                break
            # exit code 3 is uvicorn's "address in use": someone took the port; pick another
            if proc.returncode != 3:
                break
    log.seek(0)
    tail = log.read().decode(errors="replace")[-2000:]
    raise PrefectApiError(f"the temporary Prefect server did not start (PREFECT_HOME={home}):\n{tail}")


def configured_api() -> str | None:
    """The configured Prefect API (environment or active profile), or None: commands then start a temporary one."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def home_ui_url() -> str:
    """The UI that serves this PREFECT_HOME's database once `make server` (`prefect server start`) runs."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.ui_url:
        return str(settings.ui_url).rstrip("/")
    host = settings.server.api.host
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"http://{host}:{settings.server.api.port}"


def link_line(url: str, one_off: bool) -> str:
    """The line a command prints about its flow run; a one-off command's UI must be started first."""
    return f"Prefect flow run: {url}" + (" (start the UI with `make server`)" if one_off else "")


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the API URL this command reports to, for the duration of the block."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_UI_URL, temporary_settings

    url = configured_api()
    if url:
        check_reachable(url)
        yield url
        return
    from cli import signals

    proc, url = start_server(Path(PREFECT_HOME.value()))
    forget = signals.on_forced_exit(lambda: stop(proc, timeout=2))
    try:
        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_UI_URL: home_ui_url()}):
            try:
                yield url
            finally:
                _drain()
    finally:
        stop(proc)
        forget()


def _drain(timeout: float = 5.0) -> None:
    """Send the logs and events still queued for the server, before it stops (as Prefect's test harness does)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout)


def crash_flow_runs(reasons: dict[str, str]) -> list[str]:
    """Set each flow run (id -> why) Crashed, unless it already ended; returns those changed.

    Called inside `prefect_api()`, for flow runs whose owning process trackflow's reaper found
    gone (trackflow.runs.why_dead): a flow run still Running there can never end by itself.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    changed = []
    with get_client(sync_client=True) as client:
        for flow_run_id, reason in reasons.items():
            try:
                run = client.read_flow_run(UUID(flow_run_id))
            except ObjectNotFound:
                continue
            if run.state is not None and run.state.is_final():
                continue
            client.set_flow_run_state(flow_run_id, Crashed(message=reason), force=True)
            changed.append(flow_run_id)
    return changed

