"""Figures logged with each training run (matplotlib, headless), labelled with the class names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(figsize=(5.5, 4)) -> tuple["Figure", object]:
    # The object-oriented API with no pyplot state: safe in worker threads and headless.
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def plot_loss_curves(history: dict[str, list[float]]) -> "Figure":
    fig, ax = _figure()
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], marker="o", label="train loss")
    ax.plot(epochs, history["val_loss"], marker="o", label="validation loss")
    ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss per epoch")
    ax.legend()
    return fig


def plot_confusion_matrix(confusion: np.ndarray, classes: Sequence) -> "Figure":
    k = len(classes)
    fig, ax = _figure((max(4.5, 0.6 * k + 2.5), max(4, 0.6 * k + 2)))
    im = ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > confusion.max() / 2 else "black")
    names = [str(c) for c in classes]
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 4 else 0, ha="right")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    fig.colorbar(im, ax=ax)
    return fig


def plot_roc_curves(y_true: np.ndarray, proba: np.ndarray, classes: Sequence) -> "Figure":
    """Two classes: the ROC curve of the second. More: one one-vs-rest curve per class."""
    from sklearn.metrics import auc, roc_curve

    fig, ax = _figure((4.8, 4))
    shown = [1] if len(classes) == 2 else range(len(classes))
    for j in shown:
        fpr, tpr, _ = roc_curve(y_true == j, proba[:, j])
        label = f"AUC = {auc(fpr, tpr):.3f}" if len(classes) == 2 else f"{classes[j]} vs rest, AUC = {auc(fpr, tpr):.3f}"
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    title = f"ROC curve (test, positive class {classes[1]})" if len(classes) == 2 else "ROC curves, one vs rest (test)"
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_metric_vs_lr(series: dict[str, tuple[list[float], list[float]]], metric: str) -> "Figure":
    """One line per label (e.g. optimizer/dropout), `metric` against the learning rate on a log axis."""
    fig, ax = _figure()
    for label, (lrs, values) in series.items():
        order = np.argsort(lrs)
        ax.plot(np.asarray(lrs)[order], np.asarray(values)[order], marker="o", label=label)
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel=metric, title=f"{metric} against learning rate")
    if len(series) > 1:
        ax.legend()
    return fig
