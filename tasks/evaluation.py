"""Evaluation: held-out metrics from class probabilities, binary or multiclass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    classes: list
    y_true: np.ndarray  # class indices
    proba: np.ndarray  # (n, n_classes)
    confusion: np.ndarray


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, prefix: str = "test_") -> dict[str, float]:
    """Two classes: accuracy, precision, recall, F1 (of the second class) and ROC AUC, named as before.
    More: accuracy, macro precision/recall/F1, and one-vs-rest macro ROC AUC."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    y_pred = proba.argmax(1)
    labels = list(range(proba.shape[1]))
    if proba.shape[1] == 2:
        m = {"accuracy": accuracy_score(y_true, y_pred),
             "precision": precision_score(y_true, y_pred, zero_division=0),
             "recall": recall_score(y_true, y_pred, zero_division=0),
             "f1": f1_score(y_true, y_pred, zero_division=0),
             "roc_auc": roc_auc_score(y_true, proba[:, 1])}
    else:
        m = {"accuracy": accuracy_score(y_true, y_pred),
             "precision_macro": precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
             "recall_macro": recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
             "f1_macro": f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
             "roc_auc_ovr": roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)}
    return {f"{prefix}{k}": float(v) for k, v in m.items()}


def evaluate(proba: np.ndarray, y_true: np.ndarray, classes: list) -> Evaluation:
    """Metrics and confusion matrix from a held-out split's class probabilities and true class indices."""
    from sklearn.metrics import confusion_matrix

    if len(y_true) == 0:
        raise ValueError("test split is empty; add rows or raise --test-size")
    confusion = confusion_matrix(y_true, proba.argmax(1), labels=list(range(len(classes))))
    return Evaluation(classification_metrics(y_true, proba), list(classes), np.asarray(y_true), proba, confusion)
