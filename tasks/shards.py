"""Batch jobs on a Dask cluster: the folder in shards, the model once per worker process, one writer.

The job's process lists the inputs once and cuts them into shards of `shard_files` files
(a few batches each); each shard is one Dask task. A worker reads its shard's files itself
from the input folder (shared, on a multi-machine cluster), skips the inputs the results
log holds as done (the job hands each shard its part of that map), runs the rest through
the very engine a one-process job uses (`tasks.batch.run_job`, `tasks.scoring.score_files`)
and returns the records. The job's process appends a shard's records to the results log when
its result comes back: it is the only writer of results.jsonl and results.csv, and for
scoring it renames each output from its temporary name into place, so a shard that Dask runs
again (its worker died) never leaves a duplicate record or a half-written file.

Each worker process keeps the model it loaded (`_cached`), keyed by the resolved model
(a folder every worker can read, or a registry version staged as one, with its files' sizes
and times) and device: it is
loaded once per worker, not once per shard. Dask actors would hold it too, but an actor is
lost with its worker; a cache is simply filled again by the replacement worker.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.batch import MAX_FAILURES_KEPT, JobStats, run_job
from tasks.results import ResultsLog

# A shard is retried this many times when it raises (a worker that dies is Dask's to reschedule:
# `distributed.scheduler.allowed-failures`, 3 by default).
SHARD_RETRIES = 2
# Shards submitted ahead per worker: one running, one waiting, so a worker never idles on a round trip.
IN_FLIGHT_PER_WORKER = 2
# Where a registry model is staged for the workers: inside the output folder, which every worker shares.
STAGED_MODELS = ".trackflow-model"


# --------------------------------------------------------------------------- on a worker


_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()  # a worker with several threads loads once, and runs one shard at a time


def _unpin_malloc() -> None:
    """Undo what Dask's nanny does to a worker's malloc, where it did it (Linux, glibc).

    The nanny starts each worker with MALLOC_TRIM_THRESHOLD_=65536, to hand freed memory back
    to the OS. Setting it also stops glibc from raising its mmap threshold, so every array over
    128 KiB (an audio batch, a logits tensor) is mapped and unmapped afresh, page faults and all:
    audio shards ran ~1.5-2x slower here. The thresholds are set where glibc's own adjustment
    would take them (mmap 32 MiB, trim twice that), as in a process the nanny did not start.
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 64 << 20)


def _cached(key: tuple, load: Callable[[], object]) -> tuple[object, bool]:
    """The object `load()` made for `key` in this process, and whether it was loaded now.

    One model is kept (the last one asked for): a long-lived worker serving jobs of different
    models holds one at a time, so its memory stays that of the largest model."""
    if key not in _cache:
        _cache.clear()
        _unpin_malloc()
        _cache[key] = load()
        # torch and transformers leave ~400k long-lived objects (FACTS.md): frozen, the collector skips them, in
        # every shard and when the worker exits (that walk made a worker miss Dask's 4 s to close, and be killed).
        gc.freeze()
        return _cache[key], True
    return _cache[key], False


def folder_signature(path: str) -> tuple:
    """Names, sizes and modification times of a model folder's files: a model rewritten in place between two
    jobs is loaded again by a long-lived worker (a hub id, not a folder, has none)."""
    if not os.path.isdir(path):
        return ()
    return tuple(sorted((str(p.relative_to(path)), st.st_size, st.st_mtime_ns)
                        for p in Path(path).rglob("*") if p.is_file() and (st := p.stat())))


class _Collect:
    """What a shard's engine writes to instead of the results log: the records, in memory, for the job."""

    def __init__(self, done: dict[str, str]):
        self.done = done
        self.records: list[dict] = []

    def is_done(self, key: str, digest: str) -> bool:  # as ResultsLog.is_done
        return self.done.get(key) == digest and bool(digest)

    def append(self, records: Iterable[dict]) -> None:
        self.records.extend(records)


class _Quiet:
    def update(self, n: int) -> None:
        pass


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class InferSpec:
    """How a worker runs an inference shard: everything resolved by the job, nothing looked up again."""

    kind: str  # "text" or "audio"
    model_path: str  # a folder every worker can read
    model: str  # what --model named, for the records
    device: str
    settings: dict  # text: generation settings (tasks.generation); audio: chunk_seconds, max_seconds
    root: str  # the input folder
    batch_size: int


@dataclass
class ShardResult:
    records: list[dict]
    stats: object  # JobStats or ScoreStats of the shard
    worker: str
    model_loaded: bool  # this shard loaded the worker's model
    seconds: float  # the shard's wall time on its worker
    files: int = 0


def _infer_kind(spec: InferSpec):
    from tasks import models

    def load():
        if spec.kind == "text":
            return models.load_text_model(spec.model_path, spec.device)
        return models.load_speech_model(spec.model_path, spec.device)

    loaded, now = _cached((spec.kind, spec.model_path, spec.device, folder_signature(spec.model_path)), load)
    if spec.kind == "text":
        from tasks.generation import TextGeneration

        return TextGeneration(loaded, spec.settings, spec.model), now
    from tasks.transcription import Transcription

    s = spec.settings
    return Transcription(loaded, s["chunk_seconds"], s["max_seconds"], spec.model), now


def infer_shard(spec: InferSpec, files: list[str], done: dict[str, str]) -> ShardResult:
    """On a worker: one shard of an inference job through the one-process engine; its records, not written."""
    t0 = time.perf_counter()
    with _cache_lock:
        kind, loaded = _infer_kind(spec)
        out = _Collect(done)
        stats = run_job(files, Path(spec.root), kind, out, spec.batch_size, _Quiet())
    return ShardResult(out.records, stats, worker_name(), loaded, time.perf_counter() - t0, len(files))


@dataclass(frozen=True)
class ScoreSpec:
    model: object  # tasks.scoring.RegisteredModel: the version resolved by the job
    model_path: str  # that version staged in a folder every worker can read
    root: str
    out_dir: str
    batch_rows: int
    keep: tuple[str, ...] | None


def score_shard(spec: ScoreSpec, files: list[str], done: dict[str, str]) -> ShardResult:
    """On a worker: one shard of a scoring job; outputs left under their temporary names for the job to rename."""
    from tasks.scoring import load_scorer, score_files

    t0 = time.perf_counter()
    with _cache_lock:
        scorer, loaded = _cached(("score", spec.model_path, folder_signature(spec.model_path)),
                                 lambda: load_scorer(spec.model, spec.model_path))
        out = _Collect(done)
        stats = score_files(Path(spec.root), files, Path(spec.out_dir), scorer, out, spec.batch_rows, spec.keep,
                            _Quiet(), publish=False)
    return ShardResult(out.records, stats, worker_name(), loaded, time.perf_counter() - t0, len(files))


# --------------------------------------------------------------------------- in the job's process


@dataclass
class ClusterStats:
    """What the cluster did for a job: shards, model loads, and each worker's share."""

    workers: int = 0  # worker processes when the job started
    shards: int = 0
    model_loads: int = 0
    per_worker: dict[str, list[float]] = field(default_factory=dict)  # worker -> [records, measure, busy seconds]
    shard_seconds: float = 0.0  # summed wall time of the shards on their workers

    def add(self, result: ShardResult, n_records: int, measure: float) -> None:
        self.shards += 1
        self.model_loads += result.model_loaded
        self.shard_seconds += result.seconds
        w = self.per_worker.setdefault(result.worker, [0, 0.0, 0.0])
        w[0] += n_records
        w[1] += measure
        w[2] += result.seconds

    def metrics(self, measure: str) -> dict[str, float]:
        """`model_loads`, `workers`, `shards`, and per worker (numbered in order of first result) its records
        per second and `measure` per second of its busy time."""
        out = {"model_loads": self.model_loads, "workers": self.workers, "shards": self.shards,
               "workers_used": len(self.per_worker)}
        for i, (records, total, busy) in enumerate(self.per_worker.values(), start=1):
            out[f"worker{i}_inputs_per_second"] = records / busy if busy > 0 else 0.0
            out[f"worker{i}_{measure}_per_second"] = total / busy if busy > 0 else 0.0
        return out

    def names(self) -> dict[str, str]:
        """worker1, worker2, ... -> host:pid, as the metrics number them."""
        return {f"worker{i}": w for i, w in enumerate(self.per_worker, start=1)}


def done_by_file(log: ResultsLog, files: Sequence[str]) -> dict[str, dict[str, str]]:
    """The results log's done map (key -> digest) grouped by input file: each shard gets its files' part."""
    names = set(files)
    out: dict[str, dict[str, str]] = {}
    for key, digest in log.done_items():
        rel = key if key in names else key.rpartition(":")[0]  # `file.jsonl:3` belongs to `file.jsonl`
        if rel in names:
            out.setdefault(rel, {})[key] = digest
    return out


def run_shards(client, fn: Callable, spec, files: Sequence[str], log: ResultsLog, shard_files: int,
               on_result: Callable[[list[str], ShardResult], None], cluster: ClusterStats) -> None:
    """Submit `fn(spec, shard, its done map)` per shard of `shard_files` files, a few per worker at a time, and
    hand each result to `on_result` as it comes back. Raises once every shard is in if some shard failed (after
    its retries); on Ctrl-C (or any error) the shards still queued or running are cancelled."""
    from distributed import as_completed

    done = done_by_file(log, files)
    shards = (list(files[i : i + shard_files]) for i in range(0, len(files), shard_files))
    cluster.workers = cluster.workers or _workers(client)
    futures: dict[object, list[str]] = {}

    def submit():
        shard = next(shards, None)
        if shard is None:
            return None
        part = {k: d for rel in shard for k, d in done.get(rel, {}).items()}
        future = client.submit(fn, spec, shard, part, retries=SHARD_RETRIES, pure=False)
        futures[future] = shard
        return future

    first = [f for f in (submit() for _ in range(IN_FLIGHT_PER_WORKER * cluster.workers)) if f is not None]
    failed: list[str] = []
    try:
        pending = as_completed(first)
        for future in pending:
            shard = futures.pop(future)
            if future.status == "finished":
                on_result(shard, future.result())
            else:  # raised on every try, or lost with its workers too often (KilledWorker), or cancelled
                error = future.exception() if future.status == "error" else future.status
                failed.append(f"{shard[0]} and {len(shard) - 1} more files: {type(error).__name__}: {error}")
            if (nxt := submit()) is not None:
                pending.add(nxt)
    except BaseException:
        client.cancel(list(futures), force=True)
        raise
    if failed:
        raise RuntimeError(f"{len(failed)} shard(s) failed on the cluster (their inputs are not done; a rerun "
                           f"retries them); the first: {failed[0]}")


def _workers(client) -> int:
    from tasks.cluster import n_workers

    return n_workers(client)


def merge_stats(total, part, skip: tuple[str, ...] = ()) -> None:
    """Add a shard's stats into the job's (JobStats, ScoreStats alike): numbers summed, sets and dicts joined,
    failures kept up to MAX_FAILURES_KEPT; the fields in `skip` are the job's own."""
    for f in dataclasses.fields(total):
        if f.name in skip:
            continue
        mine, theirs = getattr(total, f.name), getattr(part, f.name)
        if isinstance(mine, list):
            mine += theirs[: MAX_FAILURES_KEPT - len(mine)]
        elif isinstance(mine, (set, dict)):
            mine |= theirs
        else:
            setattr(total, f.name, mine + theirs)


def run_job_on_cluster(client, spec: InferSpec, files: Sequence[str], log: ResultsLog, shard_files: int,
                       progress, measure: str) -> tuple[JobStats, ClusterStats]:
    """`tasks.batch.run_job` on a Dask cluster: the same records, appended here as each shard comes back."""
    stats, cluster = JobStats(), ClusterStats()

    def on_result(shard: list[str], result: ShardResult) -> None:
        log.append(result.records)
        merge_stats(stats, result.stats)
        cluster.add(result, len(result.records), result.stats.measure_total)
        progress.update(len(shard))

    run_shards(client, infer_shard, spec, files, log, shard_files, on_result, cluster)
    return stats, cluster


def stage_model(folder: str | Path, out_dir: str | Path, name: str) -> str:
    """A copy of the model folder `folder` (downloaded from MLflow by the job) inside the output folder, where
    every worker can read it without access to the MLflow store (a copy left by an earlier job is replaced)."""
    dest = Path(out_dir).resolve() / STAGED_MODELS / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(folder, dest)
    return str(dest)


def unstage_models(out_dir: str | Path) -> None:
    shutil.rmtree(Path(out_dir) / STAGED_MODELS, ignore_errors=True)


def score_job_on_cluster(client, spec: ScoreSpec, files: Sequence[str], log: ResultsLog, shard_files: int,
                         progress):
    """`tasks.scoring.score_files` on a Dask cluster: each shard's outputs renamed into place here, then its
    records appended; returns (ScoreStats, ClusterStats)."""
    from tasks.batch import record
    from tasks.inputs import Item, Loaded, unescape_name
    from tasks.scoring import ScoreStats, clash_error, output_name, publish_output

    stats, cluster = ScoreStats(files=len(files)), ClusterStats()
    model = spec.model
    owner: dict[str, str] = {}
    send = []
    for rel in files:  # two inputs with one output (a.csv, a.parquet) may sit in different shards: decided here
        out_rel = output_name(rel)
        if out_rel not in owner:
            owner[out_rel] = rel
            send.append(rel)
            continue
        error = clash_error(out_rel, owner[out_rel])
        log.append([record(Loaded(Item(rel, None, "")), model.requested, "error", error=error, seconds=0.0,
                           model_version=model.version)])
        stats.failed += 1
        stats.failures += [(rel, error)][: MAX_FAILURES_KEPT - len(stats.failures)]
        progress.update(1)

    def on_result(shard: list[str], result: ShardResult) -> None:
        records = []
        for rec in result.records:
            if rec["status"] == "ok":
                try:
                    publish_output(Path(spec.out_dir) / unescape_name(rec["output"]))
                except OSError as exc:  # its temporary file is gone (removed by hand): the input is redone next time
                    rec = dict(rec, status="error", output=None, error=f"its output could not be renamed into "
                               f"place: {exc}")
                    result.stats.ok -= 1
                    result.stats.failed += 1
                    result.stats.rows -= rec.get("rows") or 0
            records.append(rec)
        log.append(records)
        merge_stats(stats, result.stats, skip=("files",))  # files: counted once, by the job
        cluster.add(result, len(records), result.stats.rows)
        progress.update(len(shard))

    run_shards(client, score_shard, spec, send, log, shard_files, on_result, cluster)
    return stats, cluster
