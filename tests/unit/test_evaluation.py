"""Test metrics (binary keeps its names; multiclass: macro scores and one-vs-rest AUC) and the figures."""

import numpy as np
import pytest

from tasks.evaluation import classification_metrics
from tasks.plots import plot_confusion_matrix, plot_loss_curves, plot_metric_vs_lr, plot_roc_curves


def onehot_proba(pred, k, confidence=0.9):
    proba = np.full((len(pred), k), (1 - confidence) / (k - 1))
    proba[np.arange(len(pred)), pred] = confidence
    return proba


def test_binary_metrics_keep_their_names_and_values():
    y = np.array([0, 1] * 50)
    perfect = classification_metrics(y, onehot_proba(y, 2))
    assert set(perfect) == {"test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc"}
    assert all(v == pytest.approx(1.0) for v in perfect.values())
    inverted = classification_metrics(y, onehot_proba(1 - y, 2))
    assert inverted["test_accuracy"] == 0 and inverted["test_roc_auc"] == 0


def test_multiclass_metrics_are_macro_and_one_vs_rest():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    pred = np.where(rng.random(120) < 0.8, y, rng.integers(0, 3, 120))
    proba = onehot_proba(pred, 3, 0.7)
    m = classification_metrics(y, proba, prefix="val_")
    assert set(m) == {"val_accuracy", "val_precision_macro", "val_recall_macro", "val_f1_macro", "val_roc_auc_ovr"}
    assert m["val_f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["val_roc_auc_ovr"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))
    assert m["val_accuracy"] == pytest.approx((pred == y).mean())


def test_figures_name_the_classes(tmp_path):
    classes = ["barbera", "barolo", "grignolino"]
    y = np.repeat([0, 1, 2], 10)
    proba = onehot_proba(y, 3, 0.8)
    cm, shown = plot_confusion_matrix(np.diag([10, 10, 10]), classes)
    assert [t.get_text() for t in cm.axes[0].get_xticklabels()] == classes
    roc, roc_shown = plot_roc_curves(y, proba, classes)
    assert shown == roc_shown == classes
    assert [t.get_text() for t in roc.axes[0].get_legend().get_texts()] == [
        f"{c} vs rest, AUC = 1.000" for c in classes]
    binary, _ = plot_roc_curves(np.array([0, 1, 0, 1]), onehot_proba(np.array([0, 1, 0, 1]), 2), ["no", "yes"])
    assert "positive class yes" in binary.axes[0].get_title()
    figs = [cm, roc, binary, plot_loss_curves({"train_loss": [1, 0.5], "val_loss": [1.1, 0.6]}),
            plot_metric_vs_lr({"adam": ([0.1, 0.001, 0.01], [0.8, 0.9, 0.95])}, "val_accuracy")]
    for i, fig in enumerate(figs):
        fig.savefig(tmp_path / f"{i}.png")
    assert figs[-1].axes[0].get_xscale() == "log"


def test_per_class_figures_stay_bounded_with_many_classes():
    """500 classes drew a 30,000-pixel matrix with 250k labels and 500 ROC curves (21.5 GB)."""
    from tasks.plots import MAX_CONFUSION, MAX_ROC

    k = 500
    rng = np.random.default_rng(0)
    y = np.concatenate([np.arange(k), rng.integers(0, 40, 2000)])  # classes 0..39 the most frequent
    proba = onehot_proba(np.where(rng.random(len(y)) < 0.5, y, rng.integers(0, k, len(y))), k, 0.5)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, proba.argmax(1)), 1)
    cm, shown = plot_confusion_matrix(confusion, [f"class {i}" for i in range(k)])
    roc, roc_shown = plot_roc_curves(y, proba, [f"class {i}" for i in range(k)])
    assert len(shown) == MAX_CONFUSION and set(shown) <= {f"class {i}" for i in range(40)}
    assert len(roc_shown) == MAX_ROC and set(roc_shown) <= set(shown)
    assert len(cm.axes[0].texts) == MAX_CONFUSION**2 and len(roc.axes[0].get_legend().get_texts()) == MAX_ROC
    assert "30 most frequent of 500 classes" in cm.axes[0].get_title()
    for fig in (cm, roc):
        width, height = fig.get_size_inches() * fig.dpi
        assert width <= 2000 and height <= 2000
