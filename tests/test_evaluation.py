import numpy as np
import pytest
import torch

from tasks.data import Dataset
from tasks.evaluation import evaluate_model
from tasks.plots import plot_confusion_matrix, plot_loss_curves, plot_metric_vs_lr, plot_roc_curve


class _Oracle(torch.nn.Module):
    """Logits that put class 1 exactly where feature 0 is positive."""

    def __init__(self, flip=False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(-10.0 if flip else 10.0))

    def forward(self, x):
        return torch.stack([-x[:, 0] * self.w, x[:, 0] * self.w], dim=1)


def _data():
    X = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    return Dataset(X, (X[:, 0] > 0).astype(np.int64))


def test_perfect_and_inverted_models():
    good = evaluate_model.fn(_Oracle(), _data()).metrics
    assert set(good) == {"test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc"}
    assert all(v == pytest.approx(1.0) for v in good.values())
    bad = evaluate_model.fn(_Oracle(flip=True), _data())
    assert bad.metrics["test_accuracy"] == 0 and bad.metrics["test_roc_auc"] == 0
    assert bad.confusion.sum() == 200 and np.trace(bad.confusion) == 0


def test_single_class_test_split_is_a_clear_error():
    d = _data()
    with pytest.raises(ValueError, match="single class"):
        evaluate_model.fn(_Oracle(), Dataset(d.X, np.ones(200, np.int64)))


def test_plots_render(tmp_path):
    figs = [
        plot_loss_curves({"train_loss": [1, 0.5], "val_loss": [1.1, 0.6]}),
        plot_confusion_matrix(np.array([[5, 1], [2, 7]])),
        plot_roc_curve(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.4, 0.6])),
        plot_metric_vs_lr({"adam": ([0.1, 0.001, 0.01], [0.8, 0.9, 0.95])}, "val_accuracy"),
    ]
    for i, fig in enumerate(figs):
        fig.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").stat().st_size > 1000
    assert figs[3].axes[0].get_xscale() == "log"
