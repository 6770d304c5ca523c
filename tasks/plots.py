"""Figures logged with each training run (matplotlib, headless), labelled with the class names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

# Per-class figures show at most this many classes (the most frequent in the test split): their
# size, text and legend stay bounded however many classes the table has.
MAX_CONFUSION, MAX_ROC = 30, 10

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


def most_frequent(support: np.ndarray, top: int) -> np.ndarray:
    """Indices of the `top` classes with the most test rows, in class order."""
    if len(support) <= top:
        return np.arange(len(support))
    return np.sort(np.argsort(-np.asarray(support), kind="stable")[:top])


def _label(name, width: int = 20) -> str:
    text = str(name)
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_confusion_matrix(confusion: np.ndarray, classes: Sequence) -> tuple["Figure", list]:
    """The matrix of counts, with the classes it shows: past MAX_CONFUSION classes, the most frequent
    ones (by test rows) only, so the figure's size and its labels stay bounded."""
    shown = most_frequent(confusion.sum(axis=1), MAX_CONFUSION)
    confusion = confusion[np.ix_(shown, shown)]
    k = len(shown)
    fig, ax = _figure((max(4.5, 0.45 * k + 2.5), max(4, 0.45 * k + 2)))
    im = ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > confusion.max() / 2 else "black",
                fontsize="small" if k > 10 else "medium")
    names = [_label(classes[i]) for i in shown]
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 4 else 0, ha="right")
    ax.set_yticks(range(k), names)
    title = "Confusion matrix (test)" if k == len(classes) else \
        f"Confusion matrix (test), the {k} most frequent of {len(classes)} classes"
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax)
    return fig, [classes[i] for i in shown]


def plot_roc_curves(y_true: np.ndarray, proba: np.ndarray, classes: Sequence) -> tuple["Figure", list]:
    """Two classes: the ROC curve of the second. More: one one-vs-rest curve per class, for at most
    MAX_ROC classes (the most frequent). Returns the figure and the classes it shows."""
    from sklearn.metrics import auc, roc_curve

    fig, ax = _figure((4.8, 4))
    k = len(classes)
    shown = [1] if k == 2 else most_frequent(np.bincount(y_true, minlength=k), MAX_ROC)
    for j in shown:
        fpr, tpr, _ = roc_curve(y_true == j, proba[:, j])
        label = f"AUC = {auc(fpr, tpr):.3f}" if k == 2 else f"{_label(classes[j])} vs rest, AUC = {auc(fpr, tpr):.3f}"
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    if k == 2:
        title = f"ROC curve (test, positive class {classes[1]})"
    elif len(shown) < k:
        title = f"ROC one vs rest (test), the {len(shown)} most frequent of {k} classes"
    else:
        title = "ROC curves, one vs rest (test)"
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize="small")
    return fig, list(classes) if k == 2 else [classes[j] for j in shown]


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


def plot_best_so_far(trials: Sequence[tuple[str, float | None]], metric: str, direction: str) -> "Figure":
    """A search trial by trial, in the order they started: each completed trial's `metric` (dots), the best so far
    among completed ones (a step line), pruned trials at their value when stopped (crosses), failed ones on the
    axis (triangles). `trials`: (outcome, value) each; a pruned trial's value is its last reported one."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure()
    pick = max if direction == "max" else min
    xs, best, so_far = [], [], None
    for i, (outcome, value) in enumerate(trials, 1):
        if outcome == "completed":
            so_far = value if so_far is None else pick(so_far, value)
        if so_far is not None:
            xs.append(i)
            best.append(so_far)
    ax.step(xs, best, where="post", color="tab:red", label=f"best so far ({direction})")
    for kind, marker, color in (("completed", "o", "tab:blue"), ("pruned", "x", "grey")):
        points = [(i, v) for i, (outcome, v) in enumerate(trials, 1) if outcome == kind and v is not None]
        if points:
            ax.plot(*zip(*points), marker, color=color, alpha=0.7, label=f"{kind} trial")
    failed = [i for i, (outcome, _) in enumerate(trials, 1) if outcome == "failed"]
    if failed:
        low = min((v for _, v in trials if v is not None), default=0.0)
        ax.plot(failed, [low] * len(failed), "v", color="black", label="failed trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial (in the order started)", ylabel=metric, title=f"Best {metric} so far")
    ax.legend(fontsize="small")
    return fig
