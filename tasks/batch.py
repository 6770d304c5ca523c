"""The batch-job engine: a folder of inputs through a model, one durable record per input.

One loop for every kind of input: the folder's files (walked once, by the caller) are read
a window ahead in a thread; inputs the results log holds as done are skipped; the rest go
through the model in batches of `batch_size` inputs; each batch's records are appended to
the log, durably, before the next batch starts. What differs between kinds (text prompts,
recordings) is one small object each (`InputKind`): how a file is read, what the model
would refuse, how inputs are ordered into batches, and the model call itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from tasks.inputs import Loaded
from tasks.results import ResultsLog, item_key

# Files read ahead, in batches: reading (decoding audio) overlaps the model's work.
READ_AHEAD_BATCHES = 4
MAX_FAILURES_KEPT = 20


class InputKind(Protocol):
    """What the engine needs to know about one kind of input."""

    name: str  # "text", "audio"
    measure: str  # the per-input quantity whose total and rate are reported: "new_tokens", "audio_seconds"
    model: str  # what --model named, for the records

    def read(self, root: Path, rel: str, is_done) -> list[Loaded]:
        """The inputs in file `rel` (escaped name), read or with the error that prevented it.
        `is_done(key, digest)` lets a kind skip expensive decoding of what is already done."""

    def check(self, items: list[Loaded]) -> list[Loaded]:
        """The same items, with an error on those the model would refuse (too long, too short)."""

    def size(self, item: Loaded) -> int:
        """Items of similar size share a batch (less padding)."""

    def infer(self, values: list) -> list:
        """The model on one batch of values; raises if it fails."""

    def fields(self, item: Loaded, output) -> dict:
        """A successful record's output and measure."""


@dataclass
class JobStats:
    n_skipped: int = 0
    n_processed: int = 0
    measure_total: float = 0.0
    compute_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input key, error), the first few
    present: set[str] = field(default_factory=set)  # the keys of every input read: those that exist now


def record(item: Loaded, model: str, status: str, output=None, error=None, seconds=None, **extra) -> dict:
    """One line of results.jsonl."""
    return {"input": item.item.input, "line": item.item.line, "status": status, "output": output, "error": error,
            "seconds": seconds, "model": model, "digest": item.item.digest,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}


def _run_batch(kind: InputKind, batch: list[Loaded]) -> list[dict]:
    """One batch through the model; if it raises, its inputs one by one, so only the culprit gets an error."""
    t0 = time.perf_counter()
    try:
        outputs = kind.infer([x.value for x in batch])
        each = round((time.perf_counter() - t0) / len(batch), 4)
        return [record(x, kind.model, "ok", seconds=each, **kind.fields(x, out)) for x, out in zip(batch, outputs)]
    except Exception as exc:
        if len(batch) == 1:
            return [record(batch[0], kind.model, "error", error=f"model failed on this input: {type(exc).__name__}: {exc}")]
    out = []
    for x in batch:
        out += _run_batch(kind, [x])
    return out


def run_job(files: Sequence[str], root: Path, kind: InputKind, log: ResultsLog, batch_size: int, progress) -> JobStats:
    """Every input of `files` (escaped names under `root`) not yet done, through `kind`'s model, into `log`."""
    stats = JobStats()
    window = batch_size * READ_AHEAD_BATCHES
    chunks = [files[i : i + window] for i in range(0, len(files), window)]

    def read(chunk: Sequence[str]) -> list[Loaded]:
        return [x for rel in chunk for x in kind.read(root, rel, log.is_done)]

    with ThreadPoolExecutor(1, thread_name_prefix="trackflow-read") as reader:
        pending = reader.submit(read, chunks[0]) if chunks else None
        for i in range(len(chunks)):
            loaded = pending.result()
            pending = reader.submit(read, chunks[i + 1]) if i + 1 < len(chunks) else None  # read ahead
            stats.present.update(x.item.key for x in loaded)
            todo = [x for x in loaded if x.error is not None or not log.is_done(x.item.key, x.item.digest)]
            stats.n_skipped += len(loaded) - len(todo)
            checked = kind.check([x for x in todo if x.error is None])
            failed = [x for x in todo if x.error is not None] + [x for x in checked if x.error is not None]
            ready = sorted((x for x in checked if x.error is None), key=kind.size)
            t0 = time.perf_counter()
            if failed:
                _append(log, [record(x, kind.model, "error", error=x.error) for x in failed], stats, kind)
            for b in range(0, len(ready), batch_size):
                _append(log, _run_batch(kind, ready[b : b + batch_size]), stats, kind)
            stats.compute_seconds += time.perf_counter() - t0
            progress.update(len(chunks[i]))
    return stats


def _append(log: ResultsLog, records: list[dict], stats: JobStats, kind: InputKind) -> None:
    log.append(records)
    stats.n_processed += len(records)
    for r in records:
        stats.measure_total += r.get(kind.measure) or 0
        if r["status"] != "ok" and len(stats.failures) < MAX_FAILURES_KEPT:
            stats.failures.append((item_key(r["input"], r["line"]), r["error"]))


def job_metrics(stats: JobStats, counts: dict[str, int], wall_seconds: float, measure: str) -> dict[str, float]:
    """A job's counts and throughput: the results log's `counts` (the inputs that exist now, and those gone
    since an earlier run) and this run's `stats`."""
    n_ok, n_failed = counts.get("ok", 0), counts.get("error", 0)
    busy = stats.compute_seconds
    return {
        "n_inputs": n_ok + n_failed, "n_ok": n_ok, "n_failed": n_failed, "n_gone": counts.get("gone", 0),
        "n_skipped": stats.n_skipped, "n_processed": stats.n_processed,
        "wall_seconds": wall_seconds, "compute_seconds": busy,
        "inputs_per_second": stats.n_processed / wall_seconds if wall_seconds > 0 else 0.0,
        measure: stats.measure_total, f"{measure}_per_second": stats.measure_total / busy if busy > 0 else 0.0,
    }
