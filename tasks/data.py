"""The training data: the user's table (CSV or Parquet) or the tutorial's generated set, checked and split.

Every problem a table can have is a `DataError` whose one-line message names the file
or column and the fix, raised before any run is tracked. Preprocessing is scikit-learn's
(`ColumnTransformer`), fitted on the training split only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trackflow.naming import param

if TYPE_CHECKING:  # torch loads with these: `trackflow train --skip-unchanged` lists a table's files without it
    from tasks.training import TrialData, TrialOutcome
    from trackflow.classifier import FittedClassifier

FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
# Compressed text tables pandas reads by their extension (.csv.gz, .tsv.xz, ...).
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
GENERATED_TARGET = "target"
# A text column whose non-empty values nearly all parse as numbers is a numeric column
# with typos in it, not a category: the odd values are reported instead of being one-hot encoded.
NUMERIC_SHARE = 0.95
# So is one whose values are mostly numbers (at least half, with many distinct ones, so that
# category codes such as "1", "2", "small" stay a category) besides a few placeholder strings
# such as "-" or "n/a": it is refused with the --na-values fix rather than one-hot encoded.
PLACEHOLDER_NUMERIC_SHARE, PLACEHOLDER_MIN_NUMBERS, PLACEHOLDER_MAX_STRINGS = 0.5, 10, 3
# A text column with a distinct value in nearly every row (an ID, free text) carries nothing a
# one-hot encoding can learn from: it is left out, with a warning recorded on the run.
ID_SHARE, ID_MIN_ROWS = 0.9, 50
# One-hot width per categorical column: the most frequent categories, the rest share one column.
MAX_CATEGORIES = 100
# The network computes in float32: a magnitude beyond its range becomes inf once encoded (and
# its square overflows float64 in the scaler's variance long before 1e308).
FLOAT32_MAX = float(np.finfo(np.float32).max)
# At most this many classes (and never more than the rows can fill, see check_classes).
MAX_CLASSES = 1000


class DataError(ValueError):
    """The training data cannot be used; the message names the file or column and the fix."""


@dataclass(frozen=True)
class Table:
    """Features (named columns, as read) and the target column, with where they came from."""

    X: pd.DataFrame
    y: pd.Series
    source: str  # the file's or folder's path, or "generated"
    name: str
    n_dropped_rows: int = 0  # rows without a target value
    rows_per_file: Mapping[str, int] = field(default_factory=dict)  # as read, by name relative to a folder
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why it was left out (IDs)

    @property
    def classes(self) -> list:
        return sorted(self.y.unique().tolist(), key=str)

    @property
    def numeric(self) -> list[str]:
        return [c for c in self.X.columns if pd.api.types.is_numeric_dtype(self.X[c]) and not
                pd.api.types.is_bool_dtype(self.X[c])]

    @property
    def categorical(self) -> list[str]:
        return [c for c in self.X.columns if c not in set(self.numeric)]


@dataclass
class Encoded:
    """Splits run through the preprocessing fitted on the training split, and what that needs to serve."""

    preprocessor: object
    classes: list
    columns: list[str]
    data: TrialData


@dataclass(frozen=True)
class Splits:
    """Stratified train/validation/test parts of a table, features still as read."""

    X_train: pd.DataFrame
    y_train: pd.Series
    X_val: pd.DataFrame
    y_val: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series


# --------------------------------------------------------------------------- reading


def generate_table(n_samples: int, n_features: int, n_informative: int, seed: int) -> Table:
    """The tutorial's set: scikit-learn's `make_classification`, as a table with named columns."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n_samples, n_features=n_features, n_informative=n_informative,
                               n_redundant=min(2, n_features - n_informative), random_state=seed)
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"feature_{i}" for i in range(n_features)])
    return Table(frame, pd.Series(y.astype(np.int64), name=GENERATED_TARGET), "generated",
                 f"make_classification-{n_samples}x{n_features}-seed{seed}")


def table_format(path: str | Path) -> str:
    """"csv", "tsv" or "parquet", from the file's extension (a compressed .csv.gz or .tsv.bz2 is its text format)."""
    suffixes = [x.lower() for x in Path(path).suffixes]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in COMPRESSIONS and len(suffixes) > 1 and FORMATS.get(suffixes[-2]) in ("csv", "tsv"):
        return FORMATS[suffixes[-2]]
    if suffix not in FORMATS:
        raise DataError(f"{str(path)!r}: unknown table format {suffix or '(no extension)'!r}; "
                        f"use a .csv, .tsv or .parquet file (.csv and .tsv may be compressed: "
                        f"{', '.join(COMPRESSIONS)})")
    return FORMATS[suffix]


def read_table(path: str | Path, nrows: int | None = None, *, sep: str | None = None, thousands: str | None = None,
               na_values: Sequence[str] = ()) -> pd.DataFrame:
    """The whole file (or its first `nrows` rows) with pandas; a DataError for what cannot be read.

    `sep`, `thousands` and `na_values` are pandas' CSV options (the column separator, the
    thousands separator in numbers, the extra strings that mean a missing value); on a
    Parquet file the last two apply to its text columns.
    """
    path = Path(path)
    fmt = table_format(path)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist; check {param('data')}")
    if not path.is_file():
        raise DataError(f"data {str(path)!r} is not a regular file; pass a .csv or .parquet file with {param('data')}")
    if path.stat().st_size == 0:
        raise DataError(f"data file {str(path)!r} is empty; it needs a header row and data rows")
    sep = sep or ("\t" if fmt == "tsv" else ",")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            frame = pq.read_table(path).to_pandas() if nrows is None else \
                next(pq.ParquetFile(path).iter_batches(batch_size=max(nrows, 1))).to_pandas()
            frame = _parse_text_columns(frame, thousands, na_values)
        else:
            frame = pd.read_csv(path, sep=sep, nrows=nrows, encoding="utf-8-sig", thousands=thousands,
                                na_values=list(na_values) or None)
    except ImportError as exc:  # a compression whose module is not installed (.zst: zstandard)
        raise DataError(f"data file {str(path)!r} cannot be read here ({exc}); decompress it, "
                        "or save it as .csv, .csv.gz or .parquet") from None
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"data file {str(path)!r} cannot be read ({exc}); check the file and its permissions "
                        "(text must be UTF-8)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, StopIteration) as exc:
        raise DataError(f"data file {str(path)!r} is not a valid {fmt} table ({' '.join(str(exc).split())[:200]}); "
                        "check the file") from None
    if frame.empty:
        raise DataError(f"data file {str(path)!r} has a header but no data rows; add rows")
    if fmt != "parquet":
        _check_header(frame, path, sep)
    if dups := sorted({str(c) for c in frame.columns[frame.columns.duplicated()]}):
        raise DataError(f"data file {str(path)!r} has duplicate column names {', '.join(map(repr, dups))}; "
                        "rename them so each column has its own name")
    return frame


def _check_header(frame: pd.DataFrame, path: Path, sep: str) -> None:
    """A text table read with the wrong separator, or with a header pandas renamed (`a`, `a` -> `a`, `a.1`)."""
    if frame.shape[1] == 1:
        header = str(frame.columns[0])
        for other, option in ((";", f"{param('sep')} ';'"), ("\t", f"{param('sep')} $'\\t' (or name the file .tsv)"),
                              ("|", f"{param('sep')} '|'")):
            if other != sep and other in header:
                raise DataError(f"data file {str(path)!r} reads as one column {header[:80]!r}: it looks separated "
                                f"by {other!r}, not {sep!r}; pass {option}")
    columns = [str(c) for c in frame.columns]
    if any(c.rpartition(".")[0] in columns and c.rpartition(".")[2].isdigit() for c in columns):
        raw = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, encoding="utf-8-sig").iloc[0]
        if dups := sorted({str(c) for c in raw[raw.duplicated()]}):
            raise DataError(f"data file {str(path)!r} has duplicate column names {', '.join(map(repr, dups))} "
                            "in its header; rename them so each column has its own name")


def _parse_text_columns(frame: pd.DataFrame, thousands: str | None, na_values: Sequence[str]) -> pd.DataFrame:
    """What pandas' CSV reader does with `na_values` and `thousands`, for a Parquet file's text columns."""
    for col in frame.columns:
        values = frame[col]
        if not (values.dtype == object or pd.api.types.is_string_dtype(values)):
            continue
        if na_values:
            values = values.mask(values.isin(list(na_values)))
        if thousands:
            stripped = values.map(lambda v: v.replace(thousands, "") if isinstance(v, str) else v)
            if pd.to_numeric(stripped.dropna(), errors="coerce").notna().all():
                values = stripped
        frame[col] = values
    return frame


def table_files(path: str | Path) -> list[Path]:
    """The files of the table at `path`: the file itself, or the folder's CSV/TSV/Parquet files, sorted.

    A folder is searched recursively (partitions like `day=2026-11-30/part-0.parquet`);
    hidden files and folders (a name starting with '.') and files of other kinds are left out.
    """
    path = Path(path)
    if not path.is_dir():
        return [path]
    files = sorted(f for f in path.rglob("*") if _is_table_file(f)
                   and not any(part.startswith(".") for part in f.relative_to(path).parts))
    if not files:
        raise DataError(f"data folder {str(path)!r} holds no .csv, .tsv or .parquet files; "
                        f"put the table's files in it or pass a file with {param('data')}")
    return files


def _is_table_file(file: Path) -> bool:
    try:
        table_format(file)
    except DataError:
        return False
    return file.is_file()


def part_name(root: str | Path, file: Path) -> str:
    """How a file of the table at `root` is named in records: relative to the folder, or its own name."""
    root = Path(root)
    return file.relative_to(root).as_posix() if root.is_dir() else file.name


def _file_columns(file: Path) -> list[str]:
    """The header of one file of a folder table (Parquet: from its footer, without reading rows)."""
    if table_format(file) == "parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(file).names
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"data file {str(file)!r} is not a valid parquet table "
                            f"({' '.join(str(exc).split())[:200]}); check the file") from None
        return [n for n in names if not n.startswith("__index_level_")]  # pandas' stored index
    return [str(c) for c in read_table(file, nrows=1).columns]


def check_same_columns(root: str | Path, files: Sequence[Path]) -> None:
    """Every file of a folder table has the same columns as most of them; else a DataError naming the odd file."""
    headers = {f: _file_columns(f) for f in files}
    sets = [frozenset(h) for h in headers.values()]
    usual = max(sets, key=sets.count)  # the most common header (the first file's on a tie)
    odd = [f for f, h in headers.items() if frozenset(h) != usual]
    if odd:
        f = odd[0]
        missing = [c for c in headers[files[sets.index(usual)]] if c not in headers[f]]
        extra = [c for c in headers[f] if c not in usual]
        what = "; ".join(bit for bit in (f"missing {', '.join(map(repr, missing))}" if missing else "",
                                         f"extra {', '.join(map(repr, extra))}" if extra else "") if bit)
        more = f" (and {len(odd) - 1} more file{'s' if len(odd) > 2 else ''})" if len(odd) > 1 else ""
        raise DataError(f"data file {part_name(root, f)!r} of folder {str(root)!r}{more} has other columns than the "
                        f"rest of the table ({what}); every file of a folder table needs the same columns: fix the "
                        "file or move it out of the folder")


def read_data(path: str | Path, *, sep: str | None = None, thousands: str | None = None,
              na_values: Sequence[str] = ()) -> tuple[pd.DataFrame, dict[str, int]]:
    """The table at `path` (one file, or a folder of same-schema files) and its rows per file.

    A folder of Parquet files is read as one pyarrow dataset (its column types unified:
    an integer column in one file and a float one in another become floats). CSV/TSV files
    are read one by one (each with its own type inference) and concatenated.
    """
    path = Path(path)
    reading = dict(sep=sep, thousands=thousands, na_values=na_values)
    if not path.is_dir():
        frame = read_table(path, **reading)
        return frame, {path.name: len(frame)}
    files = table_files(path)
    check_same_columns(path, files)
    if all(table_format(f) == "parquet" for f in files):
        import pyarrow as pa
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        try:
            schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
            dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
            rows = {part_name(path, Path(frag.path)): frag.count_rows() for frag in dataset.get_fragments()}
            frame = _parse_text_columns(dataset.to_table().to_pandas().reset_index(drop=True), thousands, na_values)
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # types no promotion reconciles: pandas' concat below does
            frame = None
    else:
        frame = None
    if frame is None:
        frames = [read_table(f, **reading) for f in files]
        rows = {part_name(path, f): len(p) for f, p in zip(files, frames)}
        frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise DataError(f"data folder {str(path)!r} has no data rows; add rows")
    return frame, rows


def select_columns(frame: pd.DataFrame, source: str, target: str, features: Sequence[str] | None,
                   drop: Sequence[str]) -> tuple[list[str], pd.Series]:
    """The feature columns to use and the target column, checked against the table's header."""
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if target not in columns:
        raise DataError(f"{param('target')} {target!r} is not a column of {source!r}; its columns are: "
                        f"{', '.join(map(repr, columns))}")
    for option, names in ((param("features"), features or []), (param("drop"), drop)):
        unknown = [c for c in names if c not in columns]
        if unknown:
            raise DataError(f"{option} names {', '.join(map(repr, unknown))}, not columns of {source!r}; "
                            f"its columns are: {', '.join(map(repr, columns))}")
    if features:
        chosen = [c for c in features if c not in drop]
    else:
        chosen = [c for c in columns if c != target and c not in drop]
    if target in chosen:
        raise DataError(f"{param('target')} {target!r} is also listed in {param('features')}; a column cannot predict "
                        "itself")
    if not chosen:
        raise DataError(f"no feature columns left in {source!r} (all dropped); check {param('features')} and "
                        f"{param('drop')}")
    return chosen, frame[target]


_loaded: dict[tuple, Table] = {}  # the last table read in this process, by file identity and columns


def load_table(path: str, target: str, features: Sequence[str] | None, drop: Sequence[str], *,
               sep: str | None = None, thousands: str | None = None, na_values: Sequence[str] = ()) -> Table:
    """The user's table, read and checked: its features and target, ready to split.

    The command checks the table before Prefect starts and the flow loads it again in the
    same process: the second call reuses the first's result while the file is unchanged.
    """
    reading = dict(sep=sep, thousands=thousands, na_values=tuple(na_values))
    try:
        files = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in table_files(path))
        key = (str(Path(path).resolve()), files, target, tuple(features or ()), tuple(drop), *reading.values())
    except (OSError, DataError):
        key = None
    if key in _loaded:
        return _loaded[key]
    table = _read_and_check(path, target, features, drop, reading)
    if key is not None:
        _loaded.clear()
        _loaded[key] = table
    return table


def _read_and_check(path: str, target: str, features: Sequence[str] | None, drop: Sequence[str],
                    reading: dict) -> Table:
    frame, rows_per_file = read_data(path, **reading)
    chosen, y = select_columns(frame, path, target, features, drop)
    missing_target = y.isna()
    X = frame.loc[~missing_target, chosen].reset_index(drop=True)
    y = _check_target(y[~missing_target].reset_index(drop=True), path)
    X = _check_features(X, path)
    left_out = {c: why for c in X.columns if (why := id_like(X[c]))}
    if len(left_out) == X.shape[1]:
        raise DataError(f"no feature columns left in {path!r}: {', '.join(map(repr, left_out))} "
                        f"{'look like IDs' if len(left_out) > 1 else 'looks like an ID'} (a distinct value in nearly "
                        "every row), which cannot be learnt from; add feature columns")
    return Table(X.drop(columns=list(left_out)), y, str(Path(path).resolve()), Path(path).name,
                 int(missing_target.sum()), rows_per_file=rows_per_file, left_out=left_out)


def _show(value) -> str:
    """A cell as the user wrote it: `inf`, `1e+308`, `'forty'`, not `np.float64(inf)`."""
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value.tolist() if isinstance(value, np.ndarray) else value)


def _nested(values: pd.Series) -> pd.Series:
    """Which cells hold a list, an array or a mapping (Parquet list and struct columns)."""
    return values.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray)))


def _check_target(y: pd.Series, source: str) -> pd.Series:
    """The target's class names as written: a category dtype as its values, whole floats as integers
    (a blank cell makes pandas read a column of integers as floats), and no inf or nested values."""
    name = y.name
    if isinstance(y.dtype, pd.CategoricalDtype):
        y = y.astype(y.cat.categories.dtype)
    if y.dtype == object and (nested := _nested(y)).any():
        raise DataError(f"target column {name!r} of {source!r} holds lists or records (row {nested.argmax() + 1}: "
                        f"{_show(y[nested].iloc[0])[:60]}); choose a column of class names with {param('target')}")
    if pd.api.types.is_float_dtype(y):
        values = y.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            row = int(np.argmin(np.isfinite(values)))
            raise DataError(f"target column {name!r} of {source!r} holds {_show(values[row])} (row {row + 1}); "
                            "a class must be a finite number or a name: fix the cell or leave it empty "
                            "(rows without a target are left out)")
        if (values == np.round(values)).all() and np.abs(values).max() < 2**53:
            y = y.astype(np.int64)
    elif pd.api.types.is_integer_dtype(y) and not pd.api.types.is_bool_dtype(y):
        y = y.astype(np.int64)  # nullable Int64 without its missing cells
    return y.rename(name)


def _check_features(X: pd.DataFrame, source: str) -> pd.DataFrame:
    """Checked feature columns; integers become float64, so that a served request may leave a cell empty."""
    for col in X.columns:
        values = X[col]
        if values.isna().all():
            raise DataError(f"column {col!r} of {source!r} is empty in every row; fill it or pass {param('drop')} {col!r}")
        if isinstance(values.dtype, pd.CategoricalDtype):  # pandas' category dtype: an ordinary category
            values = values.astype(object).map(lambda v: np.nan if pd.isna(v) else str(v))
            X = X.assign(**{col: values})
            continue
        text = values.dtype == object or pd.api.types.is_string_dtype(values)
        if text and (nested := _nested(values)).any():
            raise DataError(f"column {col!r} of {source!r} holds lists or records (row {nested.argmax() + 1}: "
                            f"{_show(values[nested].iloc[0])[:60]}); trackflow learns from numbers and categories: "
                            f"spread it into columns of its own, or pass {param('drop')} {col!r}")
        if text and not values.map(lambda v: isinstance(v, bool) or v is None).all():
            present = values.dropna()
            parsed = pd.to_numeric(present, errors="coerce")
            bad = parsed.isna()
            if bad.any():
                _check_mostly_numeric(col, present, bad, source)
            else:  # numbers stored as text (e.g. a Parquet string column): treat as numbers
                X = X.assign(**{col: pd.to_numeric(values, errors="coerce")})
                _check_finite(col, X[col], source)
        elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            if pd.api.types.is_integer_dtype(values):
                X = X.assign(**{col: values.astype("float64")})
            _check_finite(col, X[col], source)
    return X


def _check_finite(col: str, values: pd.Series, source: str) -> None:
    """No inf, and no magnitude beyond float32's range (the network's precision), in a numeric column."""
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isnan(numbers) & ~(np.abs(numbers) <= FLOAT32_MAX)
    if not bad.any():
        return
    row = int(bad.argmax())
    value = numbers[row]
    if np.isinf(value):
        what = f"holds {_show(value)} in row {row + 1}; replace it with a number (or leave the cell empty: missing " \
               "values are imputed)"
    else:
        what = f"holds {_show(value)} in row {row + 1}, beyond the float32 range (±{FLOAT32_MAX:.3g}) the network " \
               "computes in; rescale the column (other units, or its log)"
    raise DataError(f"column {col!r} of {source!r} {what}, or pass {param('drop')} {col!r}")


def _check_mostly_numeric(col: str, present: pd.Series, bad: pd.Series, source: str) -> None:
    """A text column that is really numbers with thousands separators, typos or placeholders is refused
    with the fix; any other text column is a category."""
    strings = present[bad].astype(str)
    separated = strings.str.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")
    if separated.mean() >= 0.5 and (~bad).sum() + separated.sum() >= NUMERIC_SHARE * len(present):
        row = int(present.index[bad.to_numpy()][separated.to_numpy().argmax()])
        raise DataError(f"column {col!r} of {source!r} holds numbers with thousands separators (row {row + 1}: "
                        f"{strings[separated].iloc[0]!r}); pass {param('thousands')} ',' to read them as "
                        f"numbers, or {param('drop')} {col!r}")
    share = (~bad).mean()
    odd = strings.value_counts()
    placeholders = share >= PLACEHOLDER_NUMERIC_SHARE and len(odd) <= PLACEHOLDER_MAX_STRINGS and \
        present[~bad].nunique() >= PLACEHOLDER_MIN_NUMBERS
    if share >= NUMERIC_SHARE or placeholders:
        row = int(present.index[bad.argmax()])
        marks = ",".join(odd.index[:PLACEHOLDER_MAX_STRINGS])
        raise DataError(f"column {col!r} of {source!r} is numeric but row {row + 1} holds {strings.iloc[0]!r} "
                        f"({bad.sum()} of {len(present)} cells hold text: {', '.join(map(repr, odd.index[:3]))}); "
                        f"fix the values (or leave them empty: missing values are imputed), pass {param('na_values')} "
                        f"{marks!r} if they mark missing values, or pass {param('drop')} {col!r}")


def id_like(values: pd.Series) -> str | None:
    """Why a text column looks like an ID (a distinct value in nearly every row), or None."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    present = values.dropna()
    if len(present) < ID_MIN_ROWS:
        return None
    distinct = present.astype(str).nunique()
    if distinct < ID_SHARE * len(present):
        return None
    return f"{distinct:,} distinct values in {len(present):,} rows"


def check_classes(y: pd.Series, source: str, test_size: float, val_size: float) -> None:
    """At least two classes, each large enough to appear in every part of the stratified split.

    The rule for how many classes a table can hold: every class needs `need` rows (enough for
    one in each split part), so at most rows / need classes, and never more than MAX_CLASSES.
    A target over that (typically a continuous number) is refused as a whole, by its column.
    """
    counts = y.value_counts()
    if len(counts) < 2:
        raise DataError(f"target of {source!r} has a single class ({_show(counts.index[0])}); a classifier needs at "
                        f"least two: check {param('target')}")
    n = len(y)
    smallest = counts.idxmin()
    need = max(3, int(np.ceil(1 / min(test_size, val_size))))
    most = min(MAX_CLASSES, n // need)
    if len(counts) > most:
        continuous = " (is it a continuous number?)" if pd.api.types.is_float_dtype(y) else ""
        raise DataError(f"target column {y.name!r} of {source!r} has {len(counts):,} classes in {n:,} rows"
                        f"{continuous}; "
                        f"a classifier here takes at most {most:,} ({need} rows per class, at most {MAX_CLASSES:,}): "
                        f"choose a column of classes with {param('target')}, or bin this one into fewer classes")
    if counts.min() < need:
        raise DataError(f"class {_show(smallest)} of {source!r} has only {counts.min()} rows; the stratified "
                        f"train/validation/test split needs at least {need} per class: add rows or merge the class")
    for part, size in (("test", test_size), ("validation", val_size)):
        if round(n * size) < len(counts):
            raise DataError(f"the {part} split of {source!r} would hold {round(n * size)} rows for {len(counts)} "
                            f"classes; add rows or raise {param('test_size' if part == 'test' else 'val_size')}")


# --------------------------------------------------------------------------- splitting and preprocessing


def split_table(table: Table, test_size: float, val_size: float, seed: int) -> Splits:
    """Stratified, seeded train/validation/test split; `test_size` and `val_size` are fractions of the whole."""
    from sklearn.model_selection import train_test_split

    X_rest, X_test, y_rest, y_test = train_test_split(table.X, table.y, test_size=test_size, stratify=table.y,
                                                      random_state=seed)
    X_train, X_val, y_train, y_val = train_test_split(X_rest, y_rest, test_size=val_size / (1 - test_size),
                                                      stratify=y_rest, random_state=seed)
    return Splits(X_train, y_train, X_val, y_val, X_test, y_test)


def build_preprocessor(numeric: Sequence[str], categorical: Sequence[str]):
    """Numbers: median-imputed and standardised; everything else: one-hot, ignoring unseen categories.

    A categorical column gets at most MAX_CATEGORIES columns: its most frequent categories,
    and one for all the others (unseen ones included, once the training split had any), so the
    encoded width is bounded whatever the column holds.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    from trackflow.classifier import as_text

    return ColumnTransformer(
        [("numeric", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                               ("scale", StandardScaler())]), list(numeric)),
         ("categorical", Pipeline([("as_text", FunctionTransformer(as_text, feature_names_out="one-to-one")),
                                   ("impute", SimpleImputer(strategy="constant", fill_value="(missing)")),
                                   ("one_hot", OneHotEncoder(handle_unknown="infrequent_if_exist",
                                                             max_categories=MAX_CATEGORIES, sparse_output=False))]),
          list(categorical))],
        sparse_threshold=0.0,
    )


def load_data(data: str | None, target: str | None, features: Sequence[str] | None, drop: Sequence[str],
              n_samples: int, n_features: int, n_informative: int, seed: int, test_size: float,
              val_size: float, *, sep: str | None = None, thousands: str | None = None, na_values: Sequence[str] = (),
              networks: Sequence[Network] = ()) -> Table:
    """The user's table (with `data`) or the generated set, checked: a DataError here means no run is made.

    With `networks` (those of the trainings it is for, see networks_of), each training must also fit in memory
    (check_fits_in_memory).
    """
    if data:
        table = load_table(data, target, features, drop, sep=sep, thousands=thousands, na_values=na_values)
    else:
        check_fits_in_memory(n_samples, n_features, 2, networks)
        table = generate_table(n_samples, n_features, n_informative, seed)
    check_classes(table.y, table.source, test_size, val_size)
    if data:
        check_fits_in_memory(len(table.y), encoded_width(table), table.y.nunique(), networks)
    return table


def encoded_width(table: Table) -> int:
    """Columns the preprocessing will make: one per number, and per category column its (capped) categories."""
    return len(table.numeric) + sum(min(MAX_CATEGORIES, table.X[c].nunique() + int(table.X[c].isna().any()))
                                    for c in table.categorical)


Network = tuple[tuple[int, ...], int, str]
"""What a training's memory depends on besides the data: (hidden layers, batch size, optimizer)."""

OPTIMIZER_STATES = {"sgd": 1, "adagrad": 1, "adam": 2, "adamw": 2}
"""Buffers the size of the weights each optimizer keeps: SGD's momentum, Adagrad's sums, Adam's two moments."""


def networks_of(trainings) -> list[Network]:
    """The distinct networks of `trainings` (objects with hidden_layers, batch_size and optimizer: TrainConfigs)."""
    return sorted({(tuple(t.hidden_layers), t.batch_size, t.optimizer) for t in trainings})


def training_bytes(rows: int, width: int, n_classes: int, hidden_layers: Sequence[int], batch_size: int,
                   optimizer: str) -> dict:
    """What one training holds at its peak, in bytes: the network and the encoded data.

    The network: float32 weights, their gradients and the optimizer's state (OPTIMIZER_STATES), and the
    dropout masks and activations of a chunk of batches (tasks.training gathers 16,384 rows at
    a time). The data: the encoded float32 arrays, the float64 array the preprocessing returns
    before the cast, and the copy training makes as tensors; plus the test probabilities.
    """
    if not hidden_layers:
        return {"network": 0, "data": 0}
    sizes = [width, *hidden_layers, n_classes]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    chunk = max(batch_size, 16_384 // batch_size * batch_size)
    network = 4 * (2 + OPTIMIZER_STATES[optimizer]) * params + 4 * 3 * min(chunk, rows) * sum(hidden_layers)
    data = 4 * rows * width * (1 + 2 + 1) + 4 * rows * n_classes
    return {"network": network, "params": params, "data": data}


def check_fits_in_memory(rows: int, width: int, n_classes: int, networks: Sequence[Network]) -> None:
    """Refuse, with the estimate, a training of any of `networks` that would not fit in the memory available now."""
    if not networks:
        return
    import psutil

    need, (hidden, batch, optimizer) = max(((training_bytes(rows, width, n_classes, *n), n) for n in networks),
                                           key=lambda pair: pair[0]["network"] + pair[0]["data"])
    available = psutil.virtual_memory().available
    if need["network"] + need["data"] > available:
        gb = 1024**3
        which = "this training" if len(networks) == 1 else (
            f"the largest trial (hidden layers {','.join(map(str, hidden))}, batch {batch}, {optimizer})")
        knobs = (f"{param('hidden_layers')} (or lower {param('batch_size')})" if len(networks) == 1 else
                 f"{param('hidden_layers_grid')} or {param('hidden_layers')} (or lower {param('batch_sizes')} or "
                 f"{param('batch_size')})")
        raise DataError(f"{which} needs ~{(need['network'] + need['data']) / gb:.1f} GB of memory "
                        f"(network {need['network'] / gb:.1f} GB: {need['params']:,} weights with gradients and "
                        f"optimizer state; data {need['data'] / gb:.1f} GB: {rows:,} rows x {width:,} encoded "
                        f"columns), more than the {available / gb:.1f} GB available; narrow {knobs}, or train on "
                        "fewer rows or columns")


def profile_table(table: Table) -> dict:
    """What the run records about its data: size, class counts, missing values per column, columns left out."""
    return {
        "source": table.source,
        "rows": int(len(table.y)),
        "rows_without_target": table.n_dropped_rows,
        "rows_per_file": dict(table.rows_per_file),
        "columns": int(table.X.shape[1]),
        "numeric_columns": table.numeric,
        "categorical_columns": table.categorical,
        "left_out_columns": dict(table.left_out),
        "class_counts": {str(k): int(v) for k, v in table.y.value_counts().sort_index().items()},
        "missing_values": {str(c): int(n) for c, n in table.X.isna().sum().items()},
    }


def encode_splits(splits: Splits) -> Encoded:
    """Fit the preprocessing on the training split and encode all three splits and their labels.

    Preprocessing does not depend on the network's knobs, so a sweep encodes once and every
    trial trains on the very same arrays.
    """
    from sklearn.preprocessing import LabelEncoder

    from tasks.training import TrialData

    X_train = splits.X_train
    numeric = [c for c in X_train.columns if pd.api.types.is_numeric_dtype(X_train[c])
               and not pd.api.types.is_bool_dtype(X_train[c])]
    categorical = [c for c in X_train.columns if c not in set(numeric)]
    pre = build_preprocessor(numeric, categorical).fit(X_train)
    labels = LabelEncoder().fit(pd.concat([splits.y_train, splits.y_val, splits.y_test]))
    data = TrialData(pre.transform(X_train).astype(np.float32), labels.transform(splits.y_train),
                     pre.transform(splits.X_val).astype(np.float32), labels.transform(splits.y_val),
                     pre.transform(splits.X_test).astype(np.float32), labels.transform(splits.y_test),
                     len(labels.classes_))
    return Encoded(pre, [_plain(c) for c in labels.classes_], list(X_train.columns), data)


def classifier_from(encoded: Encoded, outcome: TrialOutcome) -> FittedClassifier:
    """The served model of a training: the shared preprocessing and that training's network."""
    from trackflow.classifier import FittedClassifier

    return FittedClassifier(encoded.preprocessor, outcome.network, encoded.classes, encoded.columns)


def _plain(value):
    """numpy scalars as Python values (class names go to JSON)."""
    return value.item() if hasattr(value, "item") else value
