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
