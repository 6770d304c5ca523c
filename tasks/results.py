"""The results of a batch-inference job: `results.jsonl` (the record) and `results.csv`.

Crash safety: records are appended one batch at a time, flushed and fsynced, so a
crash loses at most the batch in flight. Opening the log repairs a torn last line
and compacts the file to one record per input (the latest), writing a temporary file
and renaming it over the old one; `results.csv` is written the same way. Rerunning a
job skips inputs whose latest record is `ok` for the same content (sha256) and the
same model settings (the fingerprint), so a rerun is idempotent.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
CSV_COLUMNS = [
    "input", "line", "status", "output", "error", "seconds", "new_tokens", "audio_seconds", "model", "digest",
    "finished_at",
]
INT_COLUMNS = {"line", "rows"}  # whole numbers, or empty


class OutputBusyError(RuntimeError):
    """Another job holds the output folder."""


def fingerprint(settings: Mapping[str, object]) -> str:
    """A short hash of the settings that decide an output (model and generation parameters)."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True, default=str).encode()).hexdigest()[:16]


def item_key(input: str, line: int | None) -> str:
    """How an input is named in a job: its file, and for a .jsonl prompt its line (`file.jsonl:3`)."""
    return input if line is None else f"{input}:{line}"


def record_key(record: Mapping[str, object]) -> str:
    return item_key(str(record["input"]), record.get("line"))


class ResultsLog:
    """Append-only, crash-safe record of a job's results in `out_dir`, one writer at a time."""

    def __init__(self, out_dir: str | Path, fingerprint: str, csv_columns: Sequence[str] = CSV_COLUMNS):
        self.dir = Path(out_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create output folder {str(self.dir)!r}: {exc.strerror or exc}") from None
        self.path = self.dir / RESULTS_JSONL
        self.fingerprint = fingerprint
        self.csv_columns = list(csv_columns)
        self._lock = open(self.dir / ".trackflow.lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise OutputBusyError(
                f"output folder {str(self.dir)!r} is in use by another trackflow job; wait for it or pass another --out"
            ) from None
        self._done: dict[str, str] = {}  # key -> digest of inputs with an ok record for this fingerprint
        self.n_previous = self.compact()
        self._file = open(self.path, "a", encoding="utf-8")

    # -- reading ---------------------------------------------------------------------

    def _scan(self) -> tuple[dict[str, int], int]:
        """Line number of the latest valid record per key, and the count of torn/invalid lines."""
        latest: dict[str, int] = {}
        bad = 0
        if not self.path.exists():
            return latest, bad
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f):
                try:
                    rec = json.loads(line)
                    key = record_key(rec)
                except (json.JSONDecodeError, KeyError, TypeError):
                    bad += 1  # a line torn by a crash mid-write
                    continue
                latest[key] = n
                if rec.get("status") == "ok" and rec.get("fingerprint") == self.fingerprint:
                    self._done[key] = rec.get("digest", "")
                else:
                    self._done.pop(key, None)
        return latest, bad

    def compact(self) -> int:
        """Rewrite the log with one record per input (the latest); return how many it holds."""
        self._done.clear()
        latest, bad = self._scan()
        if not self.path.exists():
            return 0
        keep = set(latest.values())
        if bad == 0 and len(keep) == sum(1 for _ in open(self.path, "rb")):
            return len(keep)  # already compact
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(self.path, encoding="utf-8", errors="replace") as src, open(tmp, "w", encoding="utf-8") as dst:
            for n, line in enumerate(src):
                if n in keep:
                    dst.write(line if line.endswith("\n") else line + "\n")
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, self.path)
        return len(keep)

    def is_done(self, key: str, digest: str) -> bool:
        """True when `key` already has an ok record for this content and these settings."""
        return self._done.get(key) == digest and bool(digest)

    # -- writing ---------------------------------------------------------------------

    def append(self, records: Iterable[Mapping[str, object]]) -> None:
        """Write one batch of records and make it durable before returning."""
        lines = []
        for rec in records:
            rec = dict(rec, fingerprint=self.fingerprint)
            lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
            if rec["status"] == "ok":
                self._done[record_key(rec)] = str(rec.get("digest", ""))
            else:
                self._done.pop(record_key(rec), None)
        self._file.write("".join(lines))
        self._file.flush()
        os.fsync(self._file.fileno())

    def finalize(self) -> dict[str, int]:
        """Compact the log, write results.csv next to it, and return the counts by status."""
        self._file.close()
        self.compact()
        counts = write_csv(self.path, self.dir / RESULTS_CSV, columns=self.csv_columns)
        self._file = open(self.path, "a", encoding="utf-8")
        return counts

    def close(self) -> None:
        self._file.close()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def __enter__(self) -> "ResultsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_csv(jsonl: Path, csv: Path, chunk: int = 5000, columns: Sequence[str] = CSV_COLUMNS) -> dict[str, int]:
    """results.csv from results.jsonl with pandas, in chunks (memory stays flat), via an atomic rename."""
    import pandas as pd

    counts: dict[str, int] = {}
    tmp = csv.with_suffix(".csv.tmp")
    header = True
    with open(tmp, "w", encoding="utf-8", newline="") as out:
        if jsonl.exists() and jsonl.stat().st_size:
            for frame in pd.read_json(jsonl, lines=True, chunksize=chunk, dtype=False):
                for col in columns:
                    if col not in frame:
                        frame[col] = None
                frame = frame[list(columns)]
                for col in INT_COLUMNS & set(columns):
                    frame[col] = frame[col].astype("Int64")
                frame.to_csv(out, index=False, header=header)
                header = False
                for status, n in frame["status"].value_counts().items():
                    counts[status] = counts.get(status, 0) + int(n)
        if header:
            pd.DataFrame(columns=list(columns)).to_csv(out, index=False)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, csv)
    return counts
