"""Figures logged with each training run (matplotlib, headless)."""

from __future__ import annotations

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


def plot_confusion_matrix(confusion: np.ndarray) -> "Figure":
    fig, ax = _figure((4.5, 4))
    im = ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > confusion.max() / 2 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    fig.colorbar(im, ax=ax)
    return fig


def plot_roc_curve(y_true: np.ndarray, y_score: np.ndarray) -> "Figure":
    from sklearn.metrics import auc, roc_curve

    fpr, tpr, _ = roc_curve(y_true, y_score)
    fig, ax = _figure((4.5, 4))
    ax.plot(fpr, tpr, label=f"AUC = {auc(fpr, tpr):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve (test)")
    ax.legend(loc="lower right")
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
