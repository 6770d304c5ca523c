"""A Dask cluster for a job: a running one (`--dask-address`) or a local one started for the job.

One place for what sweeps, batch inference and scoring share: checking that a scheduler
answers (before any work starts), connecting, starting a local cluster of single-threaded
worker processes, and stopping it all on the way out, Ctrl-C included.

A local cluster's worker processes die with the command, kill -9 included: each is started
by distributed's Nanny (in this process) through `distributed.process.AsyncProcess`, which
gives the child a pipe from its parent and exits the child as soon as that pipe closes,
however the parent died (tests/integration/test_dask_jobs.py checks it).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

from trackflow.naming import param

# How long connecting to a running scheduler may take before the job gives up (Dask's own default is 30 s).
CONNECT_SECONDS = 10.0


class ClusterError(RuntimeError):
    """The Dask scheduler cannot be reached; the message names its address."""


def _unreachable(address: str, why: object) -> ClusterError:
    return ClusterError(f"the Dask scheduler at {address} cannot be reached ({why}); start it (`dask scheduler`) "
                        f"or check {param('dask_address')}")


def check_reachable(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """ClusterError unless something accepts a TCP connection at `address` (tcp:// and tls:// addresses; others
    are left to the client). Cheap: no Dask import, so a command can refuse early, before Prefect or MLflow."""
    url = urlparse(address)
    if url.scheme not in ("tcp", "tls") or not url.hostname:
        return
    try:
        socket.create_connection((url.hostname, url.port or 8786), timeout=timeout).close()
    except OSError as exc:
        raise _unreachable(address, exc.strerror or type(exc).__name__) from None


@contextlib.contextmanager
def dask_client(address: str | None, workers: int) -> Iterator[object]:
    """A distributed.Client on the scheduler at `address`, or on a local cluster of `workers` single-threaded
    worker processes started here (stopped on the way out, however the body ends)."""
    import logging

    from distributed import Client, LocalCluster

    # Dask's INFO lines (every worker started, every connection) would drown the job's own log.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = None
    if address:
        try:
            client = Client(address, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise _unreachable(address, f"{type(exc).__name__}: {exc}"[:200]) from None
    else:
        # preload: each worker tunes its garbage collector before its tasks import torch (trackflow/heap.py)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, preload=["trackflow.heap"])
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close(timeout=5)
        if cluster is not None:
            cluster.close(timeout=5)


def n_workers(client) -> int:
    """Worker processes the cluster has now (at least 1: a cluster whose workers have not joined yet gets them)."""
    return max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
