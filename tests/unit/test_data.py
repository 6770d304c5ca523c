"""Training data: the generated set, real tables as CSV and Parquet, splitting, preprocessing, and every bad case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.data import (
    DataError,
    build_preprocessor,
    check_classes,
    generate_table,
    load_data,
    load_table,
    profile_table,
    read_table,
    split_table,
)
from tests.helpers.tables import breast_cancer_frame, wine_frame, write


def test_generated_set_is_a_seeded_table_with_named_columns():
    a = generate_table(200, 10, 5, seed=1)
    b = generate_table(200, 10, 5, seed=1)
    c = generate_table(200, 10, 5, seed=2)
    assert list(a.X.columns) == [f"feature_{i}" for i in range(10)] and a.y.name == "target"
    assert set(a.y.unique()) == {0, 1} and a.source == "generated"
    pd.testing.assert_frame_equal(a.X, b.X)
    assert not a.X.equals(c.X)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".tsv"])
def test_a_real_table_reads_the_same_from_every_format(tmp_path, suffix):
    path = write(wine_frame(), tmp_path / f"wine{suffix}")
    table = load_table(str(path), "cultivar", None, [])
    assert table.X.shape == (178, 14) and table.y.name == "cultivar"
    assert table.classes == ["barbera", "barolo", "grignolino"]
    assert "colour / tint" in table.categorical and "prolin é" in table.numeric and "malic acid" in table.numeric
    assert table.X["alcohol"].isna().sum() == 3 and table.X["colour / tint"].isna().sum() == 2


def test_features_and_drop_choose_columns(tmp_path):
    path = str(write(breast_cancer_frame(), tmp_path / "bc.csv"))
    assert "patient id" not in load_table(path, "target", None, ["patient id"]).X.columns
    t = load_table(path, "target", ["mean radius", "mean texture", "patient id"], ["patient id"])
    assert list(t.X.columns) == ["mean radius", "mean texture"]


def test_rows_without_a_target_are_left_out_and_counted(tmp_path):
    df = breast_cancer_frame()
    df["target"] = df["target"].astype("Int64")
    df.loc[[0, 1], "target"] = pd.NA
    table = load_table(str(write(df, tmp_path / "bc.parquet")), "target", None, ["patient id"])
    assert len(table.y) == 567 and table.n_dropped_rows == 2 and profile_table(table)["rows_without_target"] == 2


def test_split_is_stratified_disjoint_and_seeded():
    table = generate_table(1000, 10, 5, seed=0)
    s = split_table(table, test_size=0.2, val_size=0.1, seed=0)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (700, 100, 200)
    assert len(set(s.X_train.index) | set(s.X_val.index) | set(s.X_test.index)) == 1000
    for y in (s.y_train, s.y_val, s.y_test):
        assert abs(y.mean() - table.y.mean()) < 0.02
    pd.testing.assert_frame_equal(s.X_test, split_table(table, 0.2, 0.1, seed=0).X_test)


def test_preprocessing_is_fitted_on_the_training_split_only():
    train = pd.DataFrame({"x": [1.0, 2.0, np.nan, 3.0], "colour": ["red", "blue", None, "red"]})
    test = pd.DataFrame({"x": [np.nan, 100.0], "colour": ["green", "blue"]})  # green never seen in training
    pre = build_preprocessor(["x"], ["colour"]).fit(train)
    out = pre.transform(test)
    names = list(pre.get_feature_names_out())
    x = out[:, names.index("numeric__x")]
    mean, std = np.mean([1, 2, 2, 3]), np.std([1, 2, 2, 3])  # the missing value imputed with train's median, 2
    assert x[0] == pytest.approx((2 - mean) / std)
    assert x[1] == pytest.approx((100 - mean) / std)
    onehot = [i for i, n in enumerate(names) if n.startswith("categorical__")]
    assert out[0, onehot].sum() == 0  # an unseen category: all zeros, no error
    assert out[1, names.index("categorical__colour_blue")] == 1


def test_profile_counts_rows_classes_and_missing_cells(tmp_path):
    table = load_table(str(write(wine_frame(), tmp_path / "w.csv")), "cultivar", None, [])
    p = profile_table(table)
    assert (p["rows"], p["columns"]) == (178, 14)
    assert p["class_counts"] == {"barbera": 48, "barolo": 59, "grignolino": 71}
    assert p["missing_values"]["alcohol"] == 3 and p["missing_values"]["colour / tint"] == 2
    assert p["missing_values"]["hue"] == 0


# --------------------------------------------------------------------------- bad data: one clear line each


def bad(tmp_path, name, content) -> str:
    path = tmp_path / name
    if isinstance(content, pd.DataFrame):
        write(content, path)
    else:
        path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "make, target, message",
    [
        (lambda d: str(d / "missing.csv"), "y", "does not exist; check config.data"),
        (lambda d: bad(d, "t.xlsx", b"x"), "y", "unknown table format '.xlsx'; use a .csv, .tsv or .parquet file"),
        (lambda d: bad(d, "empty.csv", b""), "y", "is empty; it needs a header row and data rows"),
        (lambda d: bad(d, "header.csv", b"a,b,y\n"), "y", "has a header but no data rows"),
        (lambda d: bad(d, "fake.parquet", b"not parquet at all"), "y", "is not a valid parquet table"),
        (lambda d: bad(d, "latin1.csv", "a,y\ncafé,1\n".encode("latin-1")), "y", "cannot be read"),
        (lambda d: bad(d, "t.csv", pd.DataFrame({"a": [1, 2], "y": [0, 1]})), "label",
         "config.target 'label' is not a column of"),
        (lambda d: bad(d, "all-missing.csv", pd.DataFrame({"a": [1.0] * 30, "gone": [np.nan] * 30,
                                                           "y": [0, 1] * 15})), "y",
         "column 'gone' of"),
        (lambda d: bad(d, "typo.csv", pd.DataFrame({"age": [str(20 + i) for i in range(40)] + ["forty"],
                                                    "y": [0, 1] * 20 + [0]})), "y",
         "column 'age' of"),
    ],
    ids=["missing", "unknown-format", "empty", "header-only", "not-parquet", "not-utf8", "no-target-column",
         "feature-all-missing", "bad-number"],
)
def test_bad_tables_raise_one_line_naming_the_file_or_column_and_the_fix(tmp_path, make, target, message):
    path = make(tmp_path)
    with pytest.raises(DataError) as err:
        load_table(path, target, None, [])
    text = str(err.value)
    assert message in text and "\n" not in text
    assert path in text or "column" in text


def test_the_error_for_a_missing_target_lists_the_columns(tmp_path):
    path = bad(tmp_path, "t.csv", pd.DataFrame({"height cm": [1, 2], "y": [0, 1]}))
    with pytest.raises(DataError, match=r"its columns are: 'height cm', 'y'"):
        load_table(path, "label", None, [])


def test_a_number_that_does_not_parse_is_reported_with_its_row(tmp_path):
    frame = pd.DataFrame({"age": [str(20 + i) for i in range(40)] + ["forty"], "y": [0, 1] * 20 + [0]})
    with pytest.raises(DataError) as err:
        load_table(bad(tmp_path, "typo.csv", frame), "y", None, [])
    assert "is numeric but row 41 holds 'forty'" in str(err.value) and "config.drop 'age'" in str(err.value)


def test_a_text_column_stays_a_category(tmp_path):
    frame = pd.DataFrame({"city": ["Rome", "Oslo", "7"] * 10, "y": [0, 1, 0] * 10})
    table = load_table(bad(tmp_path, "c.csv", frame), "y", None, [])
    assert table.categorical == ["city"]


@pytest.mark.parametrize(
    "y, message",
    [
        (["a"] * 30, "has a single class ('a')"),
        (["a"] * 30 + ["b"] * 2, "class 'b' of 't.csv' has only 2 rows"),
    ],
)
def test_classes_must_fill_every_part_of_the_split(y, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_classes(pd.Series(y), "t.csv", 0.2, 0.1)


def test_load_data_checks_classes_before_anything_else(tmp_path):
    path = bad(tmp_path, "one.csv", pd.DataFrame({"a": range(30), "y": ["only"] * 30}))
    with pytest.raises(DataError, match="single class"):
        load_data(path, "y", None, [], 1000, 10, 5, 0, 0.2, 0.1)


def test_read_table_reads_a_header_cheaply(tmp_path):
    path = write(breast_cancer_frame(), tmp_path / "bc.parquet")
    assert len(read_table(path, nrows=5)) == 5


def test_a_table_is_read_once_while_unchanged(tmp_path):
    import os
    import time

    path = write(breast_cancer_frame(), tmp_path / "bc.csv")
    a = load_table(str(path), "target", None, ["patient id"])
    assert load_table(str(path), "target", None, ["patient id"]) is a
    assert load_table(str(path), "target", None, []) is not a  # other columns: another table
    time.sleep(0.01)
    os.utime(path)  # the file changed (its mtime): read again
    assert load_table(str(path), "target", None, ["patient id"]) is not a


# --------------------------------------------------------------------------- messy real tables


def _wine(**columns) -> pd.DataFrame:
    return wine_frame().assign(**columns)


def _cell(column: str, row: int, value):
    """wine's `column` with `value` in `row` (0-based)."""
    values = wine_frame()[column].astype(object)
    values[row] = value
    return values


@pytest.mark.parametrize(
    "name, frame, message",
    [
        ("inf.csv", lambda: _wine(hue=_cell("hue", 7, np.inf).astype(float)),
         "column 'hue' of '{path}' holds inf in row 8; replace it with a number"),
        ("minus-inf.parquet", lambda: _wine(hue=_cell("hue", 7, -np.inf).astype(float)),
         "column 'hue' of '{path}' holds -inf in row 8"),
        ("overflow.csv", lambda: _wine(hue=_cell("hue", 3, 1e308).astype(float)),
         "column 'hue' of '{path}' holds 1e+308 in row 4, beyond the float32 range"),
        ("underflow.parquet", lambda: _wine(hue=_cell("hue", 3, -1e308).astype(float)),
         "holds -1e+308 in row 4, beyond the float32 range"),
        ("target-inf.csv", lambda: breast_cancer_frame().assign(
            target=breast_cancer_frame()["target"].astype(float).where(np.arange(569) != 9, np.inf)),
         "target column 'target' of '{path}' holds inf (row 10)"),
        ("list.parquet", lambda: _wine(tags=[[1, 2]] * 178),
         "column 'tags' of '{path}' holds lists or records (row 1: [1, 2]); "),
        ("struct.parquet", lambda: _wine(tags=[{"a": 1}] * 178),
         "column 'tags' of '{path}' holds lists or records (row 1: {'a': 1})"),
    ],
    ids=lambda v: v if isinstance(v, str) and "." in v and " " not in v else "",
)
def test_bad_numbers_and_nested_cells_name_the_column_the_value_and_the_fix(tmp_path, name, frame, message):
    path = bad(tmp_path, name, frame())
    target = "target" if name.startswith("target") else "cultivar"
    with pytest.raises(DataError) as err:
        load_table(path, target, None, ["patient id"] if target == "target" else [])
    text = str(err.value)
    assert message.replace("{path}", path) in text and "\n" not in text
    assert "np." not in text and "float64" not in text
    assert "config.drop" in text or "config.target" in text or "leave it empty" in text


def test_a_category_dtype_column_is_an_ordinary_category_from_reading_to_serving(tmp_path):
    """pandas writes its category dtype to Parquet; it used to fail in log_model, after all the epochs."""
    import torch

    from tasks.data import encode_splits
    from tasks.tracking import model_signature
    from trackflow.classifier import FittedClassifier
    from trackflow.model import MLPClassifier

    frame = wine_frame()
    frame["colour / tint"] = frame["colour / tint"].astype("category")
    frame["cultivar"] = frame["cultivar"].astype("category")
    table = load_table(bad(tmp_path, "cat.parquet", frame), "cultivar", None, [])
    assert table.categorical == ["colour / tint"] and table.classes == ["barbera", "barolo", "grignolino"]
    assert not any(isinstance(t, pd.CategoricalDtype) for t in [*table.X.dtypes, table.y.dtype])
    encoded = encode_splits(split_table(table, 0.2, 0.1, 0))
    torch.manual_seed(0)
    clf = FittedClassifier(encoded.preprocessor, MLPClassifier(encoded.data.X_train.shape[1], [8], 3, 0.0),
                           encoded.classes, encoded.columns)
    served = frame.drop(columns="cultivar").head(5)  # as a client sends it: category dtype and all
    signature = model_signature(clf, table.X.head(5))
    assert {c.name for c in signature.inputs.inputs} >= {"colour / tint"}
    assert list(clf.predict(served).columns) == ["label", "proba_barbera", "proba_barolo", "proba_grignolino"]
    loaded = FittedClassifier.load(clf.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict_proba(served), clf.predict_proba(served), rtol=1e-6)


def test_numbers_with_thousands_separators_are_refused_then_read_with_the_named_option(tmp_path):
    frame = _wine(proline=wine_frame()["prolin é"].map(lambda v: f"{v:,.0f}"))  # 1,065 and 735
    for suffix in (".csv", ".parquet"):
        path = bad(tmp_path, f"sep{suffix}", frame)
        with pytest.raises(DataError) as err:
            load_table(path, "cultivar", None, [])
        assert "column 'proline' of" in str(err.value) and "(row 1: '1,065'); pass config.thousands ','" in str(err.value)
        table = load_table(path, "cultivar", None, [], thousands=",")
        assert "proline" in table.numeric and table.X["proline"][0] == 1065


def test_placeholders_in_a_numeric_column_are_refused_then_read_as_missing_with_the_named_option(tmp_path):
    hue = wine_frame()["hue"].astype(str).where(np.arange(178) % 8 != 0, "-")  # 12% '-'
    for suffix in (".csv", ".parquet"):
        path = bad(tmp_path, f"dash{suffix}", _wine(hue=hue))
        with pytest.raises(DataError) as err:
            load_table(path, "cultivar", None, [])
        text = str(err.value)
        assert "column 'hue' of" in text and "holds '-'" in text and "pass config.na_values '-'" in text
        table = load_table(path, "cultivar", None, [], na_values=["-"])
        assert "hue" in table.numeric and table.X["hue"].isna().sum() == 23


def test_category_codes_mixed_with_a_word_stay_a_category(tmp_path):
    frame = pd.DataFrame({"size": ["1", "2", "3", "small"] * 15, "y": [0, 1, 0] * 20})
    assert load_table(bad(tmp_path, "codes.csv", frame), "y", None, []).categorical == ["size"]


def test_duplicate_headers_are_refused_by_name(tmp_path):
    rows = "\n".join(f"{i},{i * 2},{i % 2}" for i in range(40))
    path = bad(tmp_path, "dup.csv", f"alcohol,alcohol,y\n{rows}\n".encode())
    with pytest.raises(DataError, match=r"duplicate column names 'alcohol' in its header"):
        load_table(path, "y", None, [])
    ok = bad(tmp_path, "ok.csv", f"alcohol,alcohol.1,y\n{rows}\n".encode())  # a real 'x.1' name is fine
    assert list(load_table(ok, "y", None, []).X.columns) == ["alcohol", "alcohol.1"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_blank_target_cell_keeps_integer_class_names(tmp_path, suffix):
    frame = breast_cancer_frame().drop(columns="patient id")
    frame["target"] = frame["target"].astype(object).where(np.arange(569) != 4, None)
    if suffix == ".parquet":
        frame["target"] = frame["target"].astype("Int64")
    table = load_table(bad(tmp_path, f"blank{suffix}", frame), "target", None, [])
    assert table.classes == [0, 1] and all(type(c) is int for c in table.classes)
    assert table.y.dtype == np.int64 and table.n_dropped_rows == 1


def test_a_semicolon_separated_file_gets_the_fix_and_the_option_reads_it(tmp_path):
    path = bad(tmp_path, "semi.csv", wine_frame().to_csv(index=False, sep=";").encode())
    with pytest.raises(DataError) as err:
        load_table(path, "cultivar", None, [])
    assert "looks separated by ';', not ','; pass config.sep ';'" in str(err.value)
    assert load_table(path, "cultivar", None, [], sep=";").X.shape == (178, 14)


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".csv.xz", ".tsv.gz"])
def test_compressed_text_tables_just_work(tmp_path, suffix):
    path = tmp_path / f"wine{suffix}"
    wine_frame().to_csv(path, index=False, sep="\t" if ".tsv" in suffix else ",")
    assert load_table(str(path), "cultivar", None, []).X.shape == (178, 14)


def test_an_id_like_text_column_is_left_out_and_recorded(tmp_path):
    table = load_table(str(write(breast_cancer_frame(), tmp_path / "bc.csv")), "target", None, [])
    assert "patient id" not in table.X.columns and table.X.shape[1] == 30
    assert table.left_out == {"patient id": "569 distinct values in 569 rows"}
    assert profile_table(table)["left_out_columns"] == table.left_out
    assert load_table(str(tmp_path / "bc.csv"), "target", None, ["patient id"]).left_out == {}  # --drop: no warning
    only = bad(tmp_path, "only-id.csv", breast_cancer_frame()[["patient id", "target"]])
    with pytest.raises(DataError, match="'patient id' looks like an ID"):
        load_table(only, "target", None, [])


def test_one_hot_width_is_capped_whatever_a_column_holds():
    from tasks.data import MAX_CATEGORIES

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": rng.normal(size=5000), "zip": rng.choice([f"z{i}" for i in range(2000)], 5000)})
    pre = build_preprocessor(["x"], ["zip"]).fit(train)
    assert pre.transform(train).shape[1] == 1 + MAX_CATEGORIES
    unseen = pre.transform(pd.DataFrame({"x": [0.0], "zip": ["never seen"]}))
    assert unseen[0, -1] == 1  # an unseen category joins the infrequent ones' column


@pytest.mark.parametrize(
    "y, message",
    [
        (np.random.default_rng(0).random(5000), "target column 'y' of 't.csv' has 5,000 classes in 5,000 rows "
                                                "(is it a continuous number?); a classifier here takes at most 500"),
        (np.arange(30_000) % 1500, "has 1,500 classes in 30,000 rows; a classifier here takes at most 1,000"),
        (np.arange(1000) % 120, "has 120 classes in 1,000 rows; a classifier here takes at most 100"),
    ],
    ids=["continuous", "over-the-cap", "too-few-rows"],
)
def test_a_class_count_absurd_for_the_rows_is_refused_by_the_target_column(y, message):
    with pytest.raises(DataError) as err:
        check_classes(pd.Series(y, name="y"), "t.csv", 0.2, 0.1)
    assert message in str(err.value) and "config.target" in str(err.value)


def test_many_classes_the_rows_can_fill_are_accepted():
    check_classes(pd.Series(np.arange(6000) % 500, name="y"), "t.csv", 0.2, 0.1)


def test_a_network_that_cannot_fit_in_memory_is_refused_with_the_estimate(monkeypatch):
    import psutil

    from tasks.data import check_fits_in_memory, training_bytes

    need = training_bytes(1000, 10, 2, [65536, 65536], 32, "adam")
    assert need["params"] == 10 * 65536 + 65536 + 65536 * 65536 + 65536 + 65536 * 2 + 2
    assert need["network"] >= 16 * need["params"]  # weights, gradients, Adam's two moments: float32 each
    with pytest.raises(DataError, match=r"needs ~6\d\.\d GB of memory \(network 6\d\.\d GB: 4,295,\d+,\d+ weights"):
        check_fits_in_memory(1000, 10, 2, [((65536, 65536), 32, "adam")])
    check_fits_in_memory(1000, 10, 2, [((64, 64), 32, "adam")])
    data = training_bytes(10_000_000, 1000, 2, [64], 32, "adam")["data"]
    assert data >= 4 * 10_000_000 * 1000  # the encoded float32 array at least
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("vm", (), {"available": data // 2})())
    with pytest.raises(DataError, match=r"data \d+\.\d GB: 10,000,000 rows x 1,000 encoded columns"):
        check_fits_in_memory(10_000_000, 1000, 2, [((64,), 32, "adam")])


def test_the_memory_estimate_counts_each_optimizers_state_and_checks_the_largest_trial(monkeypatch):
    import psutil

    from tasks.data import OPTIMIZER_STATES, check_fits_in_memory, networks_of, training_bytes
    from trackflow.config import SweepConfig

    need = {opt: training_bytes(1000, 10, 2, [64, 64], 32, opt) for opt in OPTIMIZER_STATES}
    assert need["adam"]["network"] - need["sgd"]["network"] == 4 * need["adam"]["params"]  # one float32 copy more
    assert need["adagrad"] == need["sgd"] and need["adamw"] == need["adam"]
    grid = SweepConfig(hidden_layers_grid=[[64], [4096, 4096]], optimizers=["sgd", "adam"]).trials()
    small, big = ((64,), 32, "sgd"), ((4096, 4096), 32, "adam")
    assert networks_of(grid) == [((64,), 32, "adam"), small, big, ((4096, 4096), 32, "sgd")]
    total = {n: sum(v for k, v in training_bytes(1000, 10, 2, *n).items() if k != "params") for n in (small, big)}
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("vm", (), {"available": total[big] - 1})())
    check_fits_in_memory(1000, 10, 2, networks_of(grid[:1]))
    with pytest.raises(DataError, match=r"^the largest trial \(hidden layers 4096,4096, batch 32, adam\) needs"):
        check_fits_in_memory(1000, 10, 2, networks_of(grid))
