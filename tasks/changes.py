"""What a training would train, as one key, and what changed since the last one.

The key is made of four parts, each a SHA-256:
- data: the table's file names (relative to its folder) and bytes; nothing for the generated set,
  which the config and the code determine;
- config: every TrainConfig field that changes the model (all but `NOT_MODEL_FIELDS`; with
  --data, also all but the generated set's fields). `device` is in it as written: CPU and CUDA
  give slightly different weights. `auto` is compared as written, not resolved (resolving
  it loads torch, which the fast path avoids); the torch version is in the key anyway;
- code: the bytes of the source files that read, split, encode, train and serve (`CODE_MODULES`);
- versions: torch, scikit-learn and trackflow.

A training run is tagged with the key and its parts (`KEY_TAG`, `PART_TAGS`), and logs the
parts' contents (per-file digests, config values, code files) as `DETAIL_ARTIFACT`, which
the next run reads to say what changed. File digests are cached by path, size, mtime and
inode (DVC's approach), and a folder's list of table files by the mtimes of its folders, in
a JSON file outside the store (`cache_file`), replaced atomically; a corrupt one is ignored.

Nothing here imports MLflow, torch or Prefect (nor pandas, while a folder's listing is
cached): `trackflow train --skip-unchanged` decides before they load (on a SQLite store
the runs are read with one SQL query).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from trackflow import store
from trackflow.config import GENERATED_FIELDS, NOT_MODEL_FIELDS, TrainConfig

KEY_TAG = "trackflow.key"
PARTS = ("data", "config", "code", "versions")
PART_TAGS = {part: f"{KEY_TAG}.{part}" for part in PARTS}
DETAIL_ARTIFACT = "trackflow/key.json"
CODE_MODULES = ("tasks.data", "tasks.training", "trackflow.model", "trackflow.classifier", "trackflow.served_model")
VERSIONED = ("torch", "scikit-learn", "trackflow")
CHUNK = 1 << 20
MAX_NAMES = 5  # file names listed in the one-line summary of changes


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass(frozen=True)
class TrainingKey:
    """The parts of what a training would train, each as plain values, and their digests."""

    files: Mapping[str, str] = field(default_factory=dict)  # relative name -> sha256 of its bytes
    config: Mapping[str, object] = field(default_factory=dict)
    code: Mapping[str, str] = field(default_factory=dict)  # source file -> sha256
    versions: Mapping[str, str] = field(default_factory=dict)

    def parts(self) -> dict[str, str]:
        return {part: _digest(getattr(self, part if part != "data" else "files")) for part in PARTS}

    @property
    def key(self) -> str:
        return _digest(self.parts())

    def tags(self) -> dict[str, str]:
        return {KEY_TAG: self.key} | {PART_TAGS[p]: d for p, d in self.parts().items()}

    def detail(self) -> dict:
        return {"key": self.key, "files": dict(self.files), "config": dict(self.config), "code": dict(self.code),
                "versions": dict(self.versions)}

    @classmethod
    def from_detail(cls, detail: Mapping) -> "TrainingKey":
        return cls(*(dict(detail.get(k) or {}) for k in ("files", "config", "code", "versions")))


# --------------------------------------------------------------------------- the key


def training_key(config: TrainConfig, cache: str | Path | None = None) -> TrainingKey:
    """The key of what `config` would train (a DataError for a --data path that holds no table)."""
    files = file_digests(config.data, cache) if config.data else {}
    return TrainingKey(files, model_config(config), code_digests(), library_versions())


def model_config(config: TrainConfig) -> dict[str, object]:
    """The config fields that change the model; a field added to TrainConfig counts unless excluded by name."""
    values = config.model_dump(mode="json")
    skip = set(NOT_MODEL_FIELDS) | (set(GENERATED_FIELDS) if config.data else set())
    return {k: v for k, v in values.items() if k not in skip}


def code_digests() -> dict[str, str]:
    """SHA-256 of each source file the training runs (found where Python would import it from)."""
    out = {}
    for module in CODE_MODULES:
        origin = Path(find_spec(module).origin)
        out[f"{module.replace('.', '/')}.py"] = hashlib.sha256(origin.read_bytes()).hexdigest()
    return out


def library_versions() -> dict[str, str]:
    out = {}
    for dist in VERSIONED:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "(not installed)"
    return out


# --------------------------------------------------------------------------- file digests, cached


def cache_file() -> Path:
    """Where digests are cached: $TRACKFLOW_CACHE_DIR, else the user's cache folder (never the MLflow store)."""
    root = os.environ.get("TRACKFLOW_CACHE_DIR") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trackflow"
    return Path(root) / "digests.json"


def _load_cache(path: Path) -> dict:
    """The cache's entries; an unreadable or corrupt cache counts as empty (it only saves time)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"files": {}, "folders": {}}
    ok = isinstance(entries, dict) and all(isinstance(entries.get(k), dict) for k in ("files", "folders"))
    return entries if ok else {"files": {}, "folders": {}}


def _save_cache(path: Path, entries: dict) -> None:
    """Written to a temporary file and renamed: a kill leaves the old cache or the new one, never half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:  # a read-only home: no cache, digests are recomputed next time
        return
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _folder_stamp(root: Path) -> dict[str, int]:
    """The mtime (ns) of the folder and of each folder below it: adding, removing or renaming a file changes one."""
    stamp = {}
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        stamp[dirpath] = os.stat(dirpath).st_mtime_ns
    return stamp


def _table_files(data: Path, folders: dict) -> list[Path]:
    """tasks.data.table_files, or the listing cached for this folder while no folder in it changed.

    Which files make a table is tasks/data.py's to say, but importing it loads pandas
    (~0.4 s of CPU): the cached listing keeps the unchanged case to a walk over the folders.
    """
    if not data.is_dir():
        return [data]
    root, stamp = str(data.resolve()), _folder_stamp(data)
    cached = folders.get(root)
    if isinstance(cached, dict) and cached.get("stamp") == stamp and isinstance(cached.get("files"), list):
        return [data / name for name in cached["files"]]
    from tasks.data import table_files

    files = table_files(data)
    folders[root] = {"stamp": stamp, "files": [f.relative_to(data).as_posix() for f in files]}
    return files


def file_digests(data: str | Path, cache: str | Path | None = None) -> dict[str, str]:
    """SHA-256 of each file of the table at `data`, by name relative to the folder.

    A file whose path, size, mtime (ns) and inode match the cache's entry is not read
    again. Entries of files of this table that are gone are dropped; others are kept.
    """
    data = Path(data)
    cache = Path(cache) if cache else cache_file()
    entries = _load_cache(cache)
    before = json.dumps(entries["folders"], sort_keys=True)
    files = _table_files(data, entries["folders"])
    known = entries["files"]
    out, dirty = {}, json.dumps(entries["folders"], sort_keys=True) != before
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError:
            from tasks.data import DataError
            from trackflow.naming import param

            raise DataError(f"data file {str(f)!r} does not exist; check {param('data')}") from None
        path = str(f.resolve())
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = known.get(path)
        if isinstance(entry, list) and len(entry) == 4 and entry[:3] == stamp and isinstance(entry[3], str):
            digest = entry[3]
        else:
            digest = sha256_file(f)
            known[path] = stamp + [digest]
            dirty = True
        out[f.relative_to(data).as_posix() if data.is_dir() else f.name] = digest
    if data.is_dir():
        root, seen = str(data.resolve()) + os.sep, {str(f.resolve()) for f in files}
        gone = [p for p in known if p.startswith(root) and p not in seen]
        for p in gone:
            del known[p]
        dirty = dirty or bool(gone)
    if dirty:
        _save_cache(cache, entries)
    return out


# --------------------------------------------------------------------------- earlier runs


@dataclass(frozen=True)
class KeyedRun:
    """A FINISHED run that carries a training key, and the model version registered from it (if any)."""

    run_id: str
    key: str
    model: str | None = None  # "models:/<name>/<version>"


def find_keyed_runs(uri: str, experiment: str, key: str, model_name: str) -> tuple[KeyedRun | None, KeyedRun | None]:
    """(the latest FINISHED run of `experiment` with this key, the latest FINISHED run with any key)."""
    db = store.sqlite_path(uri)
    if db is not None:
        return _find_in_sqlite(db, experiment, key, model_name)
    return _find_with_client(uri, experiment, key, model_name)


_RUNS_SQL = """
SELECT r.run_uuid, t.value FROM runs r
JOIN experiments e ON e.experiment_id = r.experiment_id
JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ?
WHERE e.name = ? AND e.lifecycle_stage = 'active' AND r.lifecycle_stage = 'active' AND r.status = 'FINISHED'
ORDER BY r.end_time DESC
"""
_VERSION_SQL = """
SELECT name, version FROM model_versions WHERE run_id = ? AND current_stage != 'Deleted_Internal'
ORDER BY name = ? DESC, version DESC LIMIT 1
"""


def _find_in_sqlite(db: Path, experiment: str, key: str, model_name: str):
    """One read-only query of MLflow's tables: importing MLflow alone takes ~2 s, longer than the whole answer."""
    if not db.exists():
        return None, None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None, None
    try:
        rows = con.execute(_RUNS_SQL, (KEY_TAG, experiment)).fetchall()
        found = [None, None]
        for i, row in enumerate((next((r for r in rows if r[1] == key), None), rows[0] if rows else None)):
            if row:
                version = con.execute(_VERSION_SQL, (row[0], model_name)).fetchone()
                found[i] = KeyedRun(row[0], row[1], f"models:/{version[0]}/{version[1]}" if version else None)
        return tuple(found)
    except sqlite3.OperationalError:  # a store MLflow has not set up yet: no runs
        return None, None
    finally:
        con.close()


def _find_with_client(uri: str, experiment: str, key: str, model_name: str):
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=uri, registry_uri=store.registry_uri(uri))
    exp = c.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage != "active":
        return None, None

    def latest(condition: str) -> KeyedRun | None:
        runs = c.search_runs([exp.experiment_id], f"attributes.status = 'FINISHED' and {condition}",
                             order_by=["attributes.end_time DESC"], max_results=1)
        if not runs:
            return None
        run = runs[0]
        versions = sorted(c.search_model_versions(f"run_id = '{run.info.run_id}'"),
                          key=lambda v: (v.name == model_name, int(v.version)), reverse=True)
        model = f"models:/{versions[0].name}/{versions[0].version}" if versions else None
        return KeyedRun(run.info.run_id, run.data.tags[KEY_TAG], model)

    return latest(f"tags.`{KEY_TAG}` = '{key}'"), latest(f"tags.`{KEY_TAG}` LIKE '%'")


def unchanged_line(run: KeyedRun) -> str:
    return f"Unchanged since run {run.run_id} ({run.model or 'no registered model'}): nothing to train"


# --------------------------------------------------------------------------- what changed


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f", ... {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


def _files(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''}"


def describe_changes(before: TrainingKey, after: TrainingKey) -> str:
    """What differs between two keys, in one line: data files, config fields, code, versions."""
    bits = []
    data = []
    for what, names in (("added", sorted(after.files.keys() - before.files.keys())),
                        ("removed", sorted(before.files.keys() - after.files.keys())),
                        ("changed", sorted(n for n in after.files.keys() & before.files.keys()
                                           if after.files[n] != before.files[n]))):
        if names:
            data.append(f"{_files(len(names))} {what} ({_names(names)})")
    if data:
        bits.append("data: " + ", ".join(data))
    fields = [k for k in dict.fromkeys([*after.config, *before.config]) if before.config.get(k) != after.config.get(k)]
    if fields:
        bits.append("config: " + ", ".join(
            f"{k} {json.dumps(before.config.get(k))} -> {json.dumps(after.config.get(k))}" for k in fields))
    code = sorted(k for k in after.code.keys() | before.code.keys() if before.code.get(k) != after.code.get(k))
    if code:
        bits.append(f"code changed ({', '.join(code)})")
    libs = [k for k in after.versions if before.versions.get(k) != after.versions.get(k)]
    if libs:
        bits.append("versions: " + ", ".join(f"{k} {before.versions.get(k)} -> {after.versions[k]}" for k in libs))
    return "; ".join(bits) if bits else "nothing (same key)"
