"""Real public tables that scikit-learn ships, written as users' files: CSV or Parquet, with the mess of real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def wine_frame() -> pd.DataFrame:
    """scikit-learn's wine table (178 rows, 3 cultivars), with a text column, missing cells and awkward names."""
    from sklearn.datasets import load_wine

    df = load_wine(as_frame=True).frame
    rng = np.random.default_rng(0)
    df["colour / tint"] = rng.choice(["deep", "pale", "médium"], size=len(df))  # a category, unicode, '/'
    df = df.rename(columns={"malic_acid": "malic acid", "proline": "prolin é"})  # spaces, unicode
    df.loc[[3, 10, 50], "alcohol"] = np.nan
    df.loc[[5, 77], "colour / tint"] = None
    df["cultivar"] = df.pop("target").map({0: "barolo", 1: "grignolino", 2: "barbera"})
    return df


def breast_cancer_frame() -> pd.DataFrame:
    """scikit-learn's breast-cancer table (569 rows, 2 classes as 0/1), with an id column and missing cells."""
    from sklearn.datasets import load_breast_cancer

    df = load_breast_cancer(as_frame=True).frame
    df.insert(0, "patient id", [f"P{i:04d}" for i in range(len(df))])
    df.loc[[1, 2, 3], "mean radius"] = np.nan
    return df


def write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return path
