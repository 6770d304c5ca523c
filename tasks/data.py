"""Data steps: generate the synthetic classification set and split it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE


@dataclass(frozen=True)
class Dataset:
    """Features `X` (float32, n x d) and integer labels `y` (n,)."""

    X: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.y.ndim != 1 or len(self.X) != len(self.y):
            raise ValueError(f"Dataset needs X of shape (n, d) and y of shape (n,), got {self.X.shape} and {self.y.shape}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_features(self) -> int:
        return self.X.shape[1]


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


@task(cache_policy=NO_CACHE)
def generate_dataset(n_samples: int, n_features: int, n_informative: int, seed: int) -> Dataset:
    """A seeded binary classification set from scikit-learn's `make_classification`."""
    from sklearn.datasets import make_classification

    if n_informative > n_features:
        raise ValueError(f"n_informative ({n_informative}) must be <= n_features ({n_features})")
    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=min(2, n_features - n_informative),
        random_state=seed,
    )
    return Dataset(X.astype(np.float32), y.astype(np.int64))


@task(cache_policy=NO_CACHE)
def split_dataset(data: Dataset, test_size: float, val_size: float, seed: int) -> Splits:
    """Stratified, seeded train/validation/test split; `test_size` and `val_size` are fractions of the whole."""
    from sklearn.model_selection import train_test_split

    if not (0 < test_size < 1 and 0 < val_size < 1 and test_size + val_size < 1):
        raise ValueError(f"test_size ({test_size}) and val_size ({val_size}) must be in (0, 1) and sum to < 1")
    X_rest, X_test, y_rest, y_test = train_test_split(
        data.X, data.y, test_size=test_size, stratify=data.y, random_state=seed
    )
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=val_size / (1 - test_size), stratify=y_rest, random_state=seed
    )
    return Splits(Dataset(X_train, y_train), Dataset(X_val, y_val), Dataset(X_test, y_test))
