"""Evaluation step: test-set metrics and the figures that explain them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data import Dataset


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    y_true: np.ndarray
    y_score: np.ndarray  # probability of the positive class
    confusion: np.ndarray


def predict_proba(model: torch.nn.Module, X: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
    """Class probabilities, in batches (no DataLoader: features are one tensor)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(X[i : i + batch_size], dtype=np.float32)).to(device)
            out.append(torch.softmax(model(xb), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, 2), dtype=np.float32)


@task(cache_policy=NO_CACHE)
def evaluate_model(model: torch.nn.Module, test: Dataset, prefix: str = "test_") -> Evaluation:
    """Accuracy, precision, recall, F1 and ROC AUC of `model` on `test` (binary, positive class 1)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

    if len(test) == 0:
        raise ValueError("test split is empty; raise --n-samples or --test-size")
    if len(np.unique(test.y)) < 2:
        raise ValueError("test split holds a single class, so ROC AUC is undefined; raise --n-samples or --test-size")
    proba = predict_proba(model, test.X)
    if proba.shape[1] != 2:
        raise ValueError(f"evaluate_model handles binary classifiers; the model has {proba.shape[1]} outputs")
    y_pred = proba.argmax(1)
    y_score = proba[:, 1]
    metrics = {
        "accuracy": accuracy_score(test.y, y_pred),
        "precision": precision_score(test.y, y_pred, zero_division=0),
        "recall": recall_score(test.y, y_pred, zero_division=0),
        "f1": f1_score(test.y, y_pred, zero_division=0),
        "roc_auc": roc_auc_score(test.y, y_score),
    }
    return Evaluation(
        {f"{prefix}{k}": float(v) for k, v in metrics.items()},
        test.y,
        y_score,
        confusion_matrix(test.y, y_pred, labels=[0, 1]),
    )
