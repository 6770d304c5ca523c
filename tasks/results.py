"""The results of a batch-inference job: `results.jsonl` (the record) and `results.csv`.

Crash safety: records are appended one batch at a time, flushed and fsynced, so a
crash loses at most the batch in flight. Opening the log repairs a torn last line
and compacts the file to one record per input (the latest), writing a temporary file
and renaming it over the old one; `results.csv` is written the same way. Rerunning a
job skips inputs whose latest record is `ok` for the same content (sha256) and the
same model settings (the fingerprint), so a rerun is idempotent.

A line that is not a record of the schema below (torn by a crash, or edited by hand)
is dropped when the log is compacted, and its input is redone. Records of inputs that
no longer exist (deleted files, lines gone from a .jsonl) stay in the log, marked
`"gone": true`, and are counted apart from the inputs that exist.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from trackflow.naming import param

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
CSV_COLUMNS = [
    "input", "line", "status", "output", "error", "seconds", "new_tokens", "audio_seconds", "model", "digest",
    "finished_at", "gone",
]
# The job's own files in its output folder: never inputs, even when the output folder is the input folder.
JOB_FILES = frozenset({RESULTS_JSONL, RESULTS_CSV, f"{RESULTS_JSONL}.tmp", f"{RESULTS_CSV}.tmp", ".trackflow.lock"})
STATUSES = ("ok", "error")
# Optional fields of a record and their types (None is always allowed); `input` (str) and `status` are required.
_FIELD_TYPES = {"line": int, "error": str, "seconds": (int, float), "new_tokens": (int, float),
                "audio_seconds": (int, float), "model": str, "digest": str, "finished_at": str, "fingerprint": str,
                "gone": bool, "rows": int, "model_version": str}
INT_COLUMNS = {"line", "rows"}  # whole numbers, or empty


class OutputBusyError(RuntimeError):
    """Another job holds the output folder."""


class OutputFolderError(OSError):
    """The output folder cannot be created or written; the message names it and the fix."""


def prepare_out_dir(out_dir: str | Path) -> Path:
    """The output folder, created if missing and probed by writing a file; OutputFolderError if it cannot be."""
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create output folder {str(path)!r}: {exc.strerror or exc}; "
                                f"pass another {param('out_dir')}") from None
    try:  # a read-only folder or mount, or a full disk, fails here rather than after the first batch
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise OutputFolderError(f"cannot write to output folder {str(path)!r}: {exc.strerror or exc}; "
                                f"make it writable or pass another {param('out_dir')}") from None
    return path


def fingerprint(settings: Mapping[str, object]) -> str:
    """A short hash of the settings that decide an output (model and generation parameters)."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True, default=str).encode()).hexdigest()[:16]


def item_key(input: str, line: int | None) -> str:
    """How an input is named in a job: its file, and for a .jsonl prompt its line (`file.jsonl:3`)."""
    return input if line is None else f"{input}:{line}"


def record_key(record: Mapping[str, object]) -> str:
    return item_key(str(record["input"]), record.get("line"))


def parse_record(line: str) -> dict | None:
    """The record on one line of results.jsonl, or None for a line that is not one (torn, or not of the schema)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if _fits_schema(record) else None


def _fits_schema(record: object) -> bool:
    """True when a parsed line is a record as this log writes them (what resuming and results.csv rely on)."""
    if not isinstance(record, dict) or not isinstance(record.get("input"), str) or record.get("status") not in STATUSES:
        return False
    for name, types in _FIELD_TYPES.items():
        value = record.get(name)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool) is not (types is bool)):
            return False
    line = record.get("line")
    return line is None or 1 <= line < 2**63


class ResultsLog:
    """Append-only, crash-safe record of a job's results in `out_dir`, one writer at a time."""

    def __init__(self, out_dir: str | Path, fingerprint: str, csv_columns: Sequence[str] = CSV_COLUMNS):
        self.dir = prepare_out_dir(out_dir)
        self.path = self.dir / RESULTS_JSONL
        self.fingerprint = fingerprint
        self.csv_columns = list(csv_columns)
        self._lock = open(self.dir / ".trackflow.lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise OutputBusyError(
                f"output folder {str(self.dir)!r} is in use by another trackflow job; wait for it or pass another "
                f"{param('out_dir')}"
            ) from None
        self._done: dict[str, str] = {}  # key -> digest of inputs with an ok record for this fingerprint
        self.n_previous = self.compact()
        self._file = open(self.path, "a", encoding="utf-8")

    # -- reading ---------------------------------------------------------------------

    def _scan(self) -> tuple[dict[str, int], set[str], int]:
        """Line number of the latest record per key, the keys whose latest record is marked gone,
        and the count of lines that are not records (torn by a crash, or not of the schema)."""
        latest: dict[str, int] = {}
        gone: set[str] = set()
        bad = 0
        if not self.path.exists():
            return latest, gone, bad
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f):
                rec = parse_record(line)
                if rec is None:
                    bad += 1
                    continue
                key = record_key(rec)
                latest[key] = n
                if rec.get("gone"):
                    gone.add(key)
                else:
                    gone.discard(key)
                if rec["status"] == "ok" and rec.get("fingerprint") == self.fingerprint:
                    self._done[key] = rec.get("digest") or ""
                else:
                    self._done.pop(key, None)
        return latest, gone, bad

    def compact(self, present: Collection[str] | None = None) -> int:
        """Rewrite the log with one record per input (the latest); return how many it holds.

        With `present` (the keys of the inputs that exist now), the records of every other
        input are marked `"gone": true`, and a record of an input that came back is unmarked.
        """
        self._done.clear()
        latest, gone, bad = self._scan()
        if not self.path.exists():
            return 0
        keep = set(latest.values())
        flip = {} if present is None else {n: key for key, n in latest.items() if (key not in present) != (key in gone)}
        if bad == 0 and not flip and len(keep) == sum(1 for _ in open(self.path, "rb")):
            return len(keep)  # already compact
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(self.path, encoding="utf-8", errors="replace") as src, open(tmp, "w", encoding="utf-8") as dst:
            for n, line in enumerate(src):
                if n in flip:
                    rec = json.loads(line)
                    if flip[n] in gone:
                        rec.pop("gone", None)
                    else:
                        rec["gone"] = True
                    line = json.dumps(rec, ensure_ascii=False)
                if n in keep:
                    dst.write(line if line.endswith("\n") else line + "\n")
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, self.path)
        return len(keep)

    def is_done(self, key: str, digest: str) -> bool:
        """True when `key` already has an ok record for this content and these settings."""
        return self._done.get(key) == digest and bool(digest)

    def done_items(self):
        """(key, digest) of every input with an ok record for these settings (what `is_done` answers from)."""
        return self._done.items()

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

    def finalize(self, present: Collection[str] | None = None) -> dict[str, int]:
        """Compact the log, write results.csv next to it, and return the counts by status.

        With `present` (the keys of the inputs that exist now), records of other inputs are
        marked gone (see `compact`): they are counted as "gone", not by their status.
        """
        self._file.close()
        self.compact(present)
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
    """results.csv (`columns`) from a compacted results.jsonl, in chunks (memory stays flat), via an atomic rename.

    Returns the counts by status, records marked gone counted as "gone" instead.
    """
    import pandas as pd

    counts: dict[str, int] = {}

    def write(records: list[dict], header: bool) -> None:
        frame = pd.DataFrame.from_records(records, columns=list(columns))
        for col in INT_COLUMNS & set(columns):
            frame[col] = frame[col].astype("Int64")
        if "gone" in frame:
            frame["gone"] = frame["gone"].eq(True)
        frame.to_csv(out, index=False, header=header)

    tmp = csv.with_suffix(".csv.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as out:
        header, records = True, []
        with open(jsonl, encoding="utf-8", errors="replace") if jsonl.exists() else open(os.devnull) as f:
            for line in f:
                if (rec := parse_record(line)) is None:  # none once compacted
                    continue
                status = "gone" if rec.get("gone") else rec["status"]
                counts[status] = counts.get(status, 0) + 1
                records.append(rec)
                if len(records) == chunk:
                    write(records, header)
                    header, records = False, []
        if records or header:
            write(records, header)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, csv)
    return counts
