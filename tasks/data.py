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
GENERATED_TARGET = "target"
# A text column whose non-empty values nearly all parse as numbers is a numeric column
# with typos in it, not a category: the odd values are reported instead of being one-hot encoded.
NUMERIC_SHARE = 0.95


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
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{str(path)!r}: unknown table format {suffix or '(no extension)'!r}; "
                        f"use a .csv, .tsv or .parquet file")
    return FORMATS[suffix]


def read_table(path: str | Path, nrows: int | None = None) -> pd.DataFrame:
    """The whole file (or its first `nrows` rows) with pandas; a DataError for what cannot be read."""
    path = Path(path)
    fmt = table_format(path)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist; check {param('data')}")
    if not path.is_file():
        raise DataError(f"data {str(path)!r} is not a regular file; pass a .csv or .parquet file with {param('data')}")
    if path.stat().st_size == 0:
        raise DataError(f"data file {str(path)!r} is empty; it needs a header row and data rows")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            frame = pq.read_table(path).to_pandas() if nrows is None else \
                next(pq.ParquetFile(path).iter_batches(batch_size=max(nrows, 1))).to_pandas()
        else:
            frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", nrows=nrows, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"data file {str(path)!r} cannot be read ({exc}); check the file and its permissions "
                        "(text must be UTF-8)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, StopIteration) as exc:
        raise DataError(f"data file {str(path)!r} is not a valid {fmt} table ({' '.join(str(exc).split())[:200]}); "
                        "check the file") from None
    if frame.empty:
        raise DataError(f"data file {str(path)!r} has a header but no data rows; add rows")
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


def read_data(path: str | Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """The table at `path` (one file, or a folder of same-schema files) and its rows per file.

    A folder of Parquet files is read as one pyarrow dataset (its column types unified:
    an integer column in one file and a float one in another become floats). CSV/TSV files
    are read one by one (each with its own type inference) and concatenated.
    """
    path = Path(path)
    if not path.is_dir():
        frame = read_table(path)
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
            frame = dataset.to_table().to_pandas().reset_index(drop=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # types no promotion reconciles: pandas' concat below does
            frame = None
    else:
        frame = None
    if frame is None:
        frames = [read_table(f) for f in files]
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


def load_table(path: str, target: str, features: Sequence[str] | None, drop: Sequence[str]) -> Table:
    """The user's table, read and checked: its features and target, ready to split.

    The command checks the table before Prefect starts and the flow loads it again in the
    same process: the second call reuses the first's result while the file is unchanged.
    """
    try:
        files = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in table_files(path))
        key = (str(Path(path).resolve()), files, target, tuple(features or ()), tuple(drop))
    except (OSError, DataError):
        key = None
    if key in _loaded:
        return _loaded[key]
    table = _read_and_check(path, target, features, drop)
    if key is not None:
        _loaded.clear()
        _loaded[key] = table
    return table


def _read_and_check(path: str, target: str, features: Sequence[str] | None, drop: Sequence[str]) -> Table:
    frame, rows_per_file = read_data(path)
    chosen, y = select_columns(frame, path, target, features, drop)
    missing_target = y.isna()
    X = frame.loc[~missing_target, chosen].reset_index(drop=True)
    y = y[~missing_target].reset_index(drop=True)
    X = _check_features(X, path)
    return Table(X, y, str(Path(path).resolve()), Path(path).name, int(missing_target.sum()), rows_per_file)


def _check_features(X: pd.DataFrame, source: str) -> pd.DataFrame:
    """Checked feature columns; integers become float64, so that a served request may leave a cell empty."""
    for col in X.columns:
        values = X[col]
        if values.isna().all():
            raise DataError(f"column {col!r} of {source!r} is empty in every row; fill it or pass {param('drop')} {col!r}")
        text = values.dtype == object or pd.api.types.is_string_dtype(values)
        if text and not values.map(lambda v: isinstance(v, bool) or v is None).all():
            present = values.dropna()
            parsed = pd.to_numeric(present, errors="coerce")
            bad = parsed.isna()
            if bad.any() and (~bad).mean() >= NUMERIC_SHARE:
                row = int(present.index[bad.argmax()])
                raise DataError(f"column {col!r} of {source!r} is numeric but row {row + 1} holds "
                                f"{present[bad].iloc[0]!r}; fix the value (or leave it empty: missing values are "
                                f"imputed), or pass {param('drop')} {col!r}")
            if not bad.any():  # numbers stored as text (e.g. a Parquet string column): treat as numbers
                X = X.assign(**{col: pd.to_numeric(values, errors="coerce")})
        elif pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values):
            X = X.assign(**{col: values.astype("float64")})
    return X


def check_classes(y: pd.Series, source: str, test_size: float, val_size: float) -> None:
    """At least two classes, each large enough to appear in every part of the stratified split."""
    counts = y.value_counts()
    if len(counts) < 2:
        raise DataError(f"target of {source!r} has a single class ({counts.index[0]!r}); a classifier needs at "
                        f"least two: check {param('target')}")
    n = len(y)
    smallest = counts.idxmin()
    need = max(3, int(np.ceil(1 / min(test_size, val_size))))
    if counts.min() < need:
        raise DataError(f"class {smallest!r} of {source!r} has only {counts.min()} rows; the stratified "
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
    """Numbers: median-imputed and standardised; everything else: one-hot, ignoring unseen categories."""
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
                                   ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]),
          list(categorical))],
        sparse_threshold=0.0,
    )


def load_data(data: str | None, target: str | None, features: Sequence[str] | None, drop: Sequence[str],
              n_samples: int, n_features: int, n_informative: int, seed: int, test_size: float,
              val_size: float) -> Table:
    """The user's table (with `data`) or the generated set, checked: a DataError here means no run is made."""
    if data:
        table = load_table(data, target, features, drop)
    else:
        table = generate_table(n_samples, n_features, n_informative, seed)
    check_classes(table.y, table.source, test_size, val_size)
    return table


def profile_table(table: Table) -> dict:
    """What the run records about its data: size, class counts, missing values per column."""
    return {
        "source": table.source,
        "rows": int(len(table.y)),
        "rows_without_target": table.n_dropped_rows,
        "rows_per_file": dict(table.rows_per_file),
        "columns": int(table.X.shape[1]),
        "numeric_columns": table.numeric,
        "categorical_columns": table.categorical,
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
