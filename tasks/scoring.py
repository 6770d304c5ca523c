"""Scoring tables with a registered classifier: one Parquet file per input, streamed, resumable.

The model is named by a registry URI; an alias (`models:/classifier@champion`) is resolved
to a version once, before anything is scored, and that version is loaded once and written
into every record, so a promotion during the job never mixes two models.

Each table is read in pieces (Parquet by record batches, CSV in blocks with pyarrow), the
model's columns are converted to the types its signature declares (a value that does not
convert is an error naming the column, row and value), and the model's `label` and
`proba_<class>` columns are written next to the kept input columns with a ParquetWriter
into a temporary file that is renamed when complete. Memory holds one batch at a time,
whatever the file's size. The results log (`tasks.results`) holds one record per input
file; a rerun skips files whose content and model version are unchanged.
"""

from __future__ import annotations

import csv
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.batch import MAX_FAILURES_KEPT, record
from tasks.data import FORMATS
from tasks.inputs import InputError, Item, Loaded, escape_name, file_digest, list_inputs, open_input, unescape_name
from tasks.models import ModelSourceError
from tasks.results import ResultsLog
from trackflow import runs
from trackflow.naming import param

TABLE_GLOB = "**/*.{" + ",".join(sorted(s.lstrip(".") for s in FORMATS)) + "}"
CSV_COLUMNS = ["input", "status", "output", "error", "rows", "seconds", "model", "model_version", "digest",
               "finished_at", "gone"]
LABEL, PROBA = "label", "proba_"
# Bytes of CSV parsed at a time. pyarrow's streaming CSV reader holds ~40 blocks in its memory
# pool (parsing ahead): 8 MB blocks held ~350 MB here, 1 MB blocks ~40 MB, at the same speed.
CSV_BLOCK = 1 << 20
# Bytes of a Parquet column chunk read at a time: without it, every column chunk of a row group
# is read whole (206 MB of Arrow memory for a 1M-row row group of 20 columns here; 70 MB with it).
PARQUET_BUFFER = 1 << 20


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model version, and how the user named it."""

    requested: str  # models:/classifier@champion
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_model(model: str) -> RegisteredModel:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> the version it names now; ModelSourceError otherwise."""
    from mlflow.exceptions import MlflowException

    from tasks.tracking import client
    from trackflow import store

    if not model.startswith("models:/") or not model[len("models:/"):].strip("/"):
        raise ModelSourceError(f"{param('model')} {model!r} is not a registered model; pass models:/NAME@ALIAS "
                               "(e.g. models:/classifier@champion) or models:/NAME/VERSION")
    rest = model[len("models:/"):].strip("/")
    name, alias, version = rest, None, None
    if "@" in rest:
        name, alias = rest.split("@", 1)
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
    else:
        raise ModelSourceError(f"{param('model')} {model!r} names no version; pass models:/{rest}@ALIAS "
                               f"(e.g. models:/{rest}@champion) or models:/{rest}/VERSION")
    c = client()
    where = store.redact(store.tracking_uri())
    try:
        versions = sorted(int(v.version) for v in c.search_model_versions(f"name = '{name}'"))
    except MlflowException as exc:
        raise ModelSourceError(f"cannot look up model {name!r} in {where} ({store.redact_text(str(exc))})") from None
    if not versions:
        raise ModelSourceError(f"no registered model {name!r} in {where}; train one first (trackflow train) "
                               f"or check {param('model')}")
    try:
        if alias is not None:
            version = str(c.get_model_version_by_alias(name, alias).version)
        else:
            version = str(c.get_model_version(name, version).version)
    except MlflowException:
        what = f"alias {alias!r}" if alias is not None else f"version {version!r}"
        raise ModelSourceError(
            f"registered model {name!r} has no {what} (its versions: {', '.join(map(str, versions))}); pass "
            f"models:/{name}/{versions[-1]}, or promote a version to the alias first"
        ) from None
    return RegisteredModel(model, name, version)


@dataclass
class Scorer:
    """A loaded pyfunc classifier and the input columns its signature declares (name, Arrow type, required)."""

    model: RegisteredModel
    pyfunc: object
    inputs: list[tuple[str, object, bool]]

    @property
    def columns(self) -> list[str]:
        return [c for c, _, _ in self.inputs]

    def predict(self, frame) -> object:
        """Labels and probabilities of `frame` (a pandas DataFrame of the input columns), as an Arrow table."""
        import pyarrow as pa

        return pa.Table.from_pandas(self.pyfunc.predict(frame), preserve_index=False)


def download_model(model: RegisteredModel, dest: str | Path) -> str:
    """The resolved version's files in the folder `dest` (replaced), from which a Dask worker loads it without
    access to the store; returns the folder."""
    import shutil

    import mlflow.artifacts

    from trackflow import store

    store.configure()
    shutil.rmtree(dest, ignore_errors=True)
    Path(dest).mkdir(parents=True)
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=model.uri, dst_path=str(dest))
    except Exception as exc:
        raise ModelSourceError(f"model {model.uri} ({model.requested}) cannot be downloaded "
                               f"({store.redact_text(str(exc))[:300]})") from None


def _arrow_type(spec):
    import pyarrow as pa
    from mlflow.types import DataType

    types = {DataType.double: pa.float64(), DataType.float: pa.float32(), DataType.long: pa.int64(),
             DataType.integer: pa.int32(), DataType.boolean: pa.bool_(), DataType.string: pa.string()}
    return types.get(getattr(spec, "type", None))


def load_scorer(model: RegisteredModel, path: str | None = None) -> Scorer:
    """Load the resolved version once (never the alias: it could move while the job runs); from `path`, a folder
    it was downloaded to, where given (a Dask worker, which needs no access to the store)."""
    import mlflow.pyfunc

    from trackflow import store

    if path is None:
        store.configure()
    try:
        with warnings.catch_warnings():  # its nudge towards type hints: the model has an explicit signature
            warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")
            pyfunc = mlflow.pyfunc.load_model(path or model.uri)
    except Exception as exc:
        raise ModelSourceError(f"model {model.uri} ({model.requested}) cannot be loaded "
                               f"({store.redact_text(str(exc))[:300]})") from None
    schema = pyfunc.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        raise ModelSourceError(f"model {model.uri} has no signature with named input columns; "
                               "log it with a signature (trackflow train does)")
    inputs = [(c.name, _arrow_type(c), bool(getattr(c, "required", True))) for c in schema.inputs]
    return Scorer(model, pyfunc, inputs)


# --------------------------------------------------------------------------- inputs and outputs


def list_tables(in_path: str | Path, out_dir: str | Path, allow_empty: bool) -> tuple[Path, list[str]]:
    """(root, escaped names under it): IN as a single table file, or the tables under the folder IN."""
    from tasks.data import table_format

    path = Path(in_path)
    if path.is_file():
        try:
            table_format(path)
        except ValueError as exc:
            from tasks.inputs import InputFolderError

            raise InputFolderError(str(exc).replace("use a", "pass a")) from None
        return path.parent, [escape_name(path.name)]
    return path, list_inputs(path, TABLE_GLOB, out_dir, allow_empty)


def output_name(rel: str) -> str:
    """`a/b.csv` -> `a/b.parquet`: where an input's scores go, relative to the output folder."""
    stem, dot, _ = rel.rpartition(".")
    return f"{stem if dot else rel}.parquet"


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def read_header(path: Path, root: Path, sep: str) -> list[str]:
    with open_input(path, root) as raw:
        first = raw.readline(1 << 20)
    if not first.strip():
        raise InputError("empty file: no header row")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the header row is not valid UTF-8; re-save the file as UTF-8") from None
    return next(csv.reader([text.rstrip("\r\n")], delimiter=sep))


class ParseAsText(Exception):
    """A CSV value did not parse as its model column's type: the file is to be read again as text."""


def read_batches(path: Path, root: Path, batch_rows: int, types: dict | None = None) -> tuple[list[str], Iterator]:
    """The file's column names and an iterator over its record batches.

    CSV columns are read as text, except those of `types` (column -> Arrow type), parsed as
    those types; ParseAsText if a value of one of those does not parse.
    """
    import pyarrow as pa

    fmt = FORMATS[path.suffix.lower()]
    if os.stat(path).st_size == 0:
        raise InputError("empty file (0 bytes)")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            with open_input(path, root):  # the same checks as every input (regular file, inside the folder)
                pass
            pf = pq.ParquetFile(path, buffer_size=PARQUET_BUFFER, pre_buffer=False)
            # One row group at a time: a single iter_batches over the whole file keeps what it
            # read in Arrow's memory pool (865 MB after 5M rows here), one per row group frees it.
            batches = (b for i in range(pf.num_row_groups)
                       for b in pf.iter_batches(batch_size=batch_rows, row_groups=[i]))
            return pf.schema_arrow.names, batches
        import pyarrow.csv as pacsv

        sep = "\t" if fmt == "tsv" else ","
        names = read_header(path, root, sep)
        # The columns the model does not take are kept as written (text). The model's columns are
        # parsed as its types while reading, which costs less than reading them as text and
        # converting them; if a value does not parse, pyarrow names neither its row nor its column
        # (only a column number), so the caller reads the file again as text and `convert` does.
        present = set(names)
        column_types = {n: pa.string() for n in names} | {n: t for n, t in (types or {}).items()
                                                          if t is not None and n in present}
        reader = pacsv.open_csv(
            path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK),
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=True),
        )
        return reader.schema.names, reader
    except pa.ArrowInvalid as exc:
        if types:
            raise ParseAsText() from exc
        raise InputError(f"not a readable {fmt} table ({_short(exc)})") from None
    except (pa.ArrowException, OSError, StopIteration) as exc:
        raise InputError(f"not a readable {fmt} table ({_short(exc)})") from None


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def rebatch(batches, n: int) -> Iterator:
    """Arrow tables of exactly `n` rows (the last one shorter) from record batches of any size."""
    import pyarrow as pa

    buf, size = [], 0
    for b in batches:
        if not b.num_rows:
            continue
        buf.append(b)
        size += b.num_rows
        while size >= n:
            table = pa.Table.from_batches(buf)
            yield table.slice(0, n)
            rest = table.slice(n)
            buf, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(buf)


def convert(values, to, name: str, first_row: int):
    """Column `values` as Arrow type `to`; an InputError naming the row and value that does not convert."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if to is None or values.type == to:
        return values

    def cast(v):
        try:
            return pc.cast(v, to)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            if pa.types.is_string(v.type) or pa.types.is_large_string(v.type):
                try:  # " 1.5" is a number with a stray space
                    return pc.cast(pc.utf8_trim_whitespace(v), to)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    pass
            return None

    out = cast(values)
    if out is not None:
        return out
    lo, hi = 0, len(values)  # halve until the one value that does not convert
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if cast(values.slice(lo, mid - lo)) is None else (mid, hi)
    what = "a number" if pa.types.is_floating(to) or pa.types.is_integer(to) else str(to)
    raise InputError(f"column {name!r}, row {first_row + lo + 1}: {values[lo].as_py()!r} does not convert to {what}; "
                     "fix the value or leave the cell empty")


def _prepared(tables, types: dict) -> Iterator[tuple]:
    """(table, its model columns converted, those as a pandas frame) per batch; InputError on a bad value."""
    import pyarrow as pa

    rows = 0
    for table in tables:
        model_cols = {c: convert(table.column(c), to, c, rows) for c, to in types.items()}
        yield table, model_cols, pa.table(model_cols).to_pandas()
        rows += table.num_rows


def read_ahead(items: Iterator) -> Iterator:
    """The items of `items`, the next one produced in a thread while the caller works on the current one.

    Reading and converting a batch (pyarrow, mostly outside the GIL) overlaps the model's
    work on the previous one; one batch ahead keeps memory at two batches.
    """
    from concurrent.futures import ThreadPoolExecutor

    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="trackflow-read") as pool:
        pending = pool.submit(next, items, done)
        while (item := pending.result()) is not done:
            pending = pool.submit(next, items, done)
            yield item


def score_file(path: Path, root: Path, out: Path, scorer: Scorer, batch_rows: int,
               keep: Sequence[str] | None, publish: bool = True) -> int:
    """Score one table into the Parquet file `out` (written under a temporary name, then renamed); its rows.

    With `publish=False` the complete file is left under its temporary name (`_partial(out)`), for
    the job's process to rename (`publish_output`) when it records it: a Dask worker's case."""
    rows = None
    if FORMATS[path.suffix.lower()] != "parquet":
        try:
            rows = _score_file(path, root, out, scorer, batch_rows, keep, parse_types=True)
        except ParseAsText:
            pass  # read again as text, where `convert` names the value that does not parse (or accepts it)
    if rows is None:
        rows = _score_file(path, root, out, scorer, batch_rows, keep, parse_types=False)
    if publish:
        publish_output(out)
    return rows


def publish_output(out: Path) -> None:
    """Rename the complete file written under `_partial(out)` to `out`, its data on disk first."""
    tmp = _partial(out)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)  # the data is on disk before the name says the file is complete
    finally:
        os.close(fd)
    os.replace(tmp, out)


def _score_file(path: Path, root: Path, out: Path, scorer: Scorer, batch_rows: int, keep: Sequence[str] | None,
                parse_types: bool) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names, batches = read_batches(path, root, batch_rows,
                                  {c: t for c, t, _ in scorer.inputs} if parse_types else None)
    present = set(names)
    missing = [c for c, _, required in scorer.inputs if required and c not in present]
    if missing:
        raise InputError(f"missing required column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(repr, missing))}: the model {scorer.model.uri} takes "
                         f"{len(scorer.columns)} columns (see its signature)")
    kept = list(keep) if keep else names
    if absent := [c for c in kept if c not in present]:
        raise InputError(f"no column {', '.join(map(repr, absent))} to keep (--keep); its columns are: "
                         f"{', '.join(map(repr, names))}")
    types = {c: t for c, t, _ in scorer.inputs if c in present}
    tmp = _partial(out)
    writer, rows = None, 0
    try:
        for table, model_cols, frame in read_ahead(_prepared(rebatch(batches, batch_rows), types)):
            scores = scorer.predict(frame)
            if writer is None:
                if clash := [c for c in kept if c in set(scores.column_names)]:
                    raise InputError(f"column {', '.join(map(repr, clash))} would clash with the model's output "
                                     f"of the same name; leave it out with {param('keep')} or rename it")
            cols = [model_cols[c] if c in model_cols else table.column(c) for c in kept]
            piece = pa.Table.from_arrays(cols + scores.columns, names=kept + scores.column_names)
            if writer is None:
                out.parent.mkdir(parents=True, exist_ok=True)
                # Dictionary encoding only where values repeat (text, labels): tried on every float
                # column, it made writing 6x slower here, for a larger file.
                writer = pq.ParquetWriter(tmp, piece.schema, use_dictionary=[
                    f.name for f in piece.schema if not (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))])
            elif piece.schema != writer.schema:
                piece = piece.cast(writer.schema)
            writer.write_table(piece)
            rows += table.num_rows
        if rows == 0:
            raise InputError("no data rows (a header only)")
    except BaseException as exc:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        if parse_types and isinstance(exc, pa.ArrowInvalid):
            raise ParseAsText() from None
        if isinstance(exc, pa.ArrowException):
            raise InputError(f"not a readable {FORMATS[path.suffix.lower()]} table after row {rows} "
                             f"({_short(exc)})") from None
        raise
    writer.close()
    return rows


# --------------------------------------------------------------------------- the job


@dataclass
class ScoreStats:
    files: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    rows: int = 0
    seconds: float = 0.0  # spent scoring (reading, predicting, writing)
    digests: dict[str, str] = field(default_factory=dict)  # input -> sha256, for the datasets of the run
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, error), the first few


def clash_error(out_rel: str, owner: str) -> str:
    return f"its output {out_rel!r} is already that of {owner!r}; rename one of them"


def score_files(root: Path, files: Sequence[str], out_dir: Path, scorer: Scorer, log: ResultsLog, batch_rows: int,
                keep: Sequence[str] | None, progress, publish: bool = True) -> ScoreStats:
    """Every table of `files` (escaped names under `root`) not yet scored by this model version, into `out_dir`
    (with `publish=False`, each output left under its temporary name: see `score_file`)."""
    stats = ScoreStats(files=len(files))
    owner: dict[str, str] = {}
    for rel in files:
        t0 = time.perf_counter()
        out_rel = output_name(rel)
        path, out = root / unescape_name(rel), out_dir / unescape_name(out_rel)
        digest, error, rows = "", None, None
        try:
            if out_rel in owner:  # a.csv and a.parquet side by side
                raise InputError(clash_error(out_rel, owner[out_rel]))
            owner[out_rel] = rel
            digest = file_digest(path, root)
            stats.digests[rel] = digest
            if log.is_done(rel, digest) and out.is_file():
                stats.skipped += 1
                progress.update(1)
                continue
            rows = score_file(path, root, out, scorer, batch_rows, keep, publish)
        except (InputError, OSError) as exc:
            error = str(exc) if isinstance(exc, InputError) else f"cannot read or write: {exc}"
        except Exception as exc:  # the model refused this table: the other files still run
            error = f"scoring failed: {type(exc).__name__}: {_short(exc)}"
        seconds = round(time.perf_counter() - t0, 3)
        stats.seconds += seconds
        item = Loaded(Item(rel, None, digest))
        if error is None:
            stats.ok += 1
            stats.rows += rows
            rec = record(item, scorer.model.requested, "ok", output=out_rel, seconds=seconds, rows=rows,
                         model_version=scorer.model.version)
        else:
            stats.failed += 1
            if len(stats.failures) < MAX_FAILURES_KEPT:
                stats.failures.append((rel, error))
            rec = record(item, scorer.model.requested, "error", error=error, seconds=seconds,
                         model_version=scorer.model.version)
        log.append([rec])
        progress.update(1)
    return stats


def job_metrics(stats: ScoreStats, wall_seconds: float) -> dict[str, float]:
    return {"files": stats.files, "files_ok": stats.ok, "files_failed": stats.failed, "files_skipped": stats.skipped,
            "rows_scored": stats.rows, "rows_per_second": stats.rows / stats.seconds if stats.seconds > 0 else 0.0,
            "scoring_seconds": stats.seconds, "wall_seconds": wall_seconds}


@runs.uninterruptible
def log_inputs(run_id: str, root: Path, digests: dict[str, str], limit: int = 1000) -> None:
    """The job's input files as MLflow datasets (name, source, content digest): nothing is read to log them."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    from tasks.tracking import client

    inputs = []
    for rel, digest in list(digests.items())[:limit]:
        with warnings.catch_warnings():  # MLflow registers its local-file source class twice and warns about it
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str((root / unescape_name(rel)).resolve()))
        ds = MetaDataset(source, name=rel, digest=digest[:16])
        inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "scoring")]))
    c = client()
    for i in range(0, len(inputs), 100):
        c.log_inputs(run_id, datasets=inputs[i : i + 100])
