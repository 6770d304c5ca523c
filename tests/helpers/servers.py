"""Starting and stopping real servers for integration tests: Prefect, MLflow, PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def spawn(cmd: list[str], log: Path, env: dict, cwd: str | Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in cmd], env=env, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def prefect_api(base: str, path: str, body: dict | None = None, *, missing_ok: bool = False):
    """A Prefect REST call (POST with `body`, else GET) to the API at `base`: its JSON, or None for a 404 when
    `missing_ok`. Retried on 503 and on a read timeout or dropped connection, as Prefect's own client does
    (prefect/client/base.py, PREFECT_CLIENT_MAX_RETRIES): a server answers 503 while its SQLite database stays
    locked, and once left a GET unanswered for 30 s while a worker's flow runs and another test's processes
    loaded both cores."""
    import httpx

    transient = (httpx.ReadTimeout, httpx.PoolTimeout, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError,
                 httpx.RemoteProtocolError)
    for attempt in range(6):
        try:
            r = (httpx.post(f"{base}{path}", json=body, timeout=30) if body is not None
                 else httpx.get(f"{base}{path}", timeout=30))
        except transient:
            if attempt == 5:
                raise
        else:
            if r.status_code != 503 or attempt == 5:
                break
        time.sleep(2 ** attempt * 0.5)
    if missing_ok and r.status_code == 404:
        return None
    r.raise_for_status()
    return r.json()


@contextmanager
def prefect_server(home: Path, port: int | None = None, template: Path | None = None):
    """`prefect server start` on loopback (a free port unless given) with its own database; yields the API URL.

    `template`: a PREFECT_HOME with a migrated database (the `prefect_home_template` fixture), copied to `home`.
    """
    if template is not None:
        shutil.copytree(template, home)
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",  # the UI calls the API at this address
    }
    log = home / "server.log"
    proc = spawn([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", port], log, env)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", proc, log, timeout=180)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        stop(proc)


def prefect_home_template_in(root: Path) -> Path:
    """`ROOT/prefect-home-template`: a PREFECT_HOME whose database is migrated (a server on a fresh database spends
    ~14 CPU-s here migrating it, one on a copy ~5 s), built once per run. The first caller builds it under a file
    lock and it appears in one rename; other callers (the run's other processes) wait for it, then reuse it."""
    from filelock import FileLock

    home = root / "prefect-home-template"
    with FileLock(f"{home}.lock"):
        if not (home / "prefect.db").exists():
            building = root / f"prefect-home-building-{os.getpid()}"
            shutil.rmtree(building, ignore_errors=True)
            with prefect_server(building):  # migrates building/prefect.db
                pass
            assert (building / "prefect.db").exists(), f"no database in {building}"
            building.rename(home)
    return home


def selects_integration_tests(args: list[str], invocation_dir: str | Path) -> bool:
    """Whether pytest's arguments (paths, node ids; `testpaths` when none are given) take in tests/integration/."""
    integration = Path(__file__).resolve().parents[1] / "integration"
    for arg in args:
        path = (Path(invocation_dir) / arg.split("::")[0]).resolve()
        if path == integration or integration in path.parents or path in integration.parents:
            return True
    return False


def pg_bin(name: str) -> str | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


@contextmanager
def postgres(data: Path):
    """A throwaway PostgreSQL cluster on a free loopback port; yields a SQLAlchemy URL.

    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user the
    Debian package creates.
    """
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql); .ci/run installs it")
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        data.parent.mkdir(parents=True, exist_ok=True)
        os.chown(data.parent, pw.pw_uid, pw.pw_gid)
        for p in data.parents:  # the postgres user must reach the folder
            if p == Path("/"):
                break
            os.chmod(p, os.stat(p).st_mode | 0o005)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    sock_dir = data.parent
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "trackflow", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    log = data.parent / "postgres.log"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                    f"-p {port} -k {sock_dir} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_user, pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U",
                        "trackflow", "mlflow"], check=True, capture_output=True)
        yield f"postgresql://trackflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)


def sqlite_from(template: Path, path: Path) -> str:
    """A SQLite MLflow database at `path`, copied from the session's migrated one (`mlflow_template`): a server
    on a fresh file would spend seconds migrating it."""
    shutil.copy(template, path)
    return f"sqlite:///{path}"


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path):
    """`mlflow server` on loopback, serving artifacts itself, as the README starts it (no GenAI job runner); yields
    its URL."""
    port = free_port()
    env = dict(os.environ) | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = spawn([BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", port, "--backend-store-uri", backend_uri,
                  "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(), "--workers", "1"], log, env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, log, timeout=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextmanager
def dask_cluster(folder: Path, workers: int = 2):
    """`dask scheduler` and `dask worker --nworkers N --nthreads 1` on loopback, as the README's scale-out section
    starts them (each in a session of its own, stopped with its processes); yields the scheduler's address once
    all N workers have joined. The worker and the client retry until the scheduler listens."""
    from distributed import Client

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = spawn([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
                      folder / "scheduler.log", dict(os.environ))
    worker = spawn([BIN / "dask", "worker", address, "--nworkers", workers, "--nthreads", "1", "--host", "127.0.0.1",
                    "--no-dashboard"], folder / "worker.log", dict(os.environ))
    try:
        try:
            with Client(address, timeout=120) as client:
                client.wait_for_workers(workers, timeout=120)
        except (OSError, TimeoutError) as exc:
            logs = "\n".join((folder / f"{n}.log").read_text()[-2000:] for n in ("scheduler", "worker"))
            raise RuntimeError(f"no Dask cluster of {workers} workers at {address} ({exc}):\n{logs}") from None
        yield address
    finally:
        stop(worker)
        stop(scheduler)


@contextmanager
def scoring_server(model_uri: str, log: Path, env: dict | None = None):
    """`mlflow models serve` on loopback, from this environment (--env-manager local); yields its URL.

    The server starts `uvicorn` by name, so the environment's bin folder goes first on PATH.
    """
    port = free_port()
    env = (env or dict(os.environ)) | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = spawn([BIN / "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1",
                  "--port", port], log, env)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, log, timeout=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
