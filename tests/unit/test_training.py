"""The network and its training: one nn.Module, autograd through it, seeded, any number of classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.data import classifier_from, encode_splits, generate_table, load_table, split_table
from tasks.evaluation import evaluate
from tasks.training import train_and_score, train_network
from tests.helpers.tables import wine_frame, write
from trackflow.config import TrainConfig
from trackflow.model import MLPClassifier

DEFAULTS = TrainConfig()


def knobs(**over):
    c = DEFAULTS.model_copy(update=over)
    return dict(hidden_layers=c.hidden_layers, dropout=c.dropout, optimizer=c.optimizer, lr=c.lr,
                weight_decay=c.weight_decay, batch_size=c.batch_size, epochs=c.epochs, seed=c.seed, device=c.device,
                activation=c.activation, momentum=c.momentum, l1=c.l1)


def test_the_network_has_the_asked_layers_and_one_logit_per_class():
    m = MLPClassifier(10, [64, 64], 2, 0.2)
    assert m(torch.zeros(4, 10)).shape == (4, 2)
    assert [layer.out_features for layer in m.hidden] == [64, 64]
    wide = MLPClassifier(7, [128, 32, 16], 5, 0.0)
    assert wide(torch.zeros(3, 7)).shape == (3, 5) and wide.spec()["hidden_layers"] == [128, 32, 16]


def test_training_runs_autograd_through_the_module(monkeypatch):
    """The module users load is the code that trained: every step calls its forward, gradients reach every layer."""
    calls = []
    real = MLPClassifier.forward
    monkeypatch.setattr(MLPClassifier, "forward",
                        lambda self, x, masks=None: calls.append(self.training) or real(self, x, masks))
    s = split_table(generate_table(400, 10, 5, 0), 0.2, 0.1, 0)
    trained = train_network(s.X_train.to_numpy(), s.y_train.to_numpy(), s.X_val.to_numpy(), s.y_val.to_numpy(),
                            n_classes=2, **knobs(epochs=2, batch_size=32))
    steps = 2 * -(-len(s.y_train) // 32)
    assert calls.count(True) == steps and calls.count(False) == 2  # training steps, then one validation per epoch
    fresh = MLPClassifier(10, [64, 64], 2, 0.2)
    fresh.reset_parameters(torch.Generator().manual_seed(0))
    for (name, p), q in zip(trained.model.named_parameters(), fresh.parameters()):
        assert not torch.equal(p, q), f"{name} was not trained"


def fit(splits, **over):
    """Encode, train and score, as a training run does."""
    encoded = encode_splits(splits)
    return encoded, train_and_score(encoded.data, **knobs(**over))


def test_defaults_reach_090_on_the_generated_set():
    c = DEFAULTS
    s = split_table(generate_table(c.n_samples, c.n_features, c.n_informative, c.seed), c.test_size, c.val_size, c.seed)
    encoded, outcome = fit(s)
    assert evaluate(outcome.proba_test, encoded.data.y_test, encoded.classes).metrics["test_accuracy"] >= 0.90
    h = outcome.history
    assert len(h["train_loss"]) == len(h["val_loss"]) == len(h["val_accuracy"]) == c.epochs
    assert h["train_loss"][-1] < h["train_loss"][0] and h["val_loss"][-1] < h["val_loss"][0]


def test_a_real_multiclass_table_with_categories_and_gaps(tmp_path):
    table = load_table(str(write(wine_frame(), tmp_path / "wine.csv")), "cultivar", None, [])
    s = split_table(table, 0.2, 0.1, 0)
    encoded, outcome = fit(s, epochs=40, hidden_layers=[32])
    classifier = classifier_from(encoded, outcome)
    ev = evaluate(outcome.proba_test, encoded.data.y_test, encoded.classes)
    assert ev.metrics["test_accuracy"] >= 0.9 and ev.metrics["test_roc_auc_ovr"] >= 0.95
    # the served model's predictions on raw rows are the training's own test probabilities
    np.testing.assert_allclose(classifier.predict_proba(s.X_test), outcome.proba_test, rtol=1e-5, atol=1e-6)
    assert classifier.classes == ["barbera", "barolo", "grignolino"]
    out = classifier.predict(s.X_test)
    assert list(out.columns) == ["label", "proba_barbera", "proba_barolo", "proba_grignolino"]
    np.testing.assert_allclose(out.iloc[:, 1:].sum(axis=1), 1.0, rtol=1e-6)


def test_same_seed_same_model_other_seed_differs():
    s = split_table(generate_table(400, 10, 5, 0), 0.2, 0.1, 0)
    (_, a), (_, b), (_, other) = fit(s, epochs=3, seed=7), fit(s, epochs=3, seed=7), fit(s, epochs=3, seed=8)
    assert a.history == b.history and a.history != other.history
    for p, q in zip(a.network.parameters(), b.network.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam", "adamw"])
def test_optimizers_and_weight_decay_train(optimizer):
    s = split_table(generate_table(600, 10, 5, 0), 0.2, 0.1, 0)
    _, outcome = fit(s, epochs=5, optimizer=optimizer, weight_decay=0.01, lr=0.01)
    h = outcome.history
    assert h["val_accuracy"][-1] > 0.8 and h["train_loss"][-1] < 0.8 * h["train_loss"][0]


@pytest.mark.parametrize("activation, l1", [("relu", 0.001), ("tanh", 0.0), ("tanh", 0.001), ("sigmoid", 0.001)])
def test_activations_and_the_l1_penalty_train(activation, l1):
    s = split_table(generate_table(600, 10, 5, 0), 0.2, 0.1, 0)
    _, outcome = fit(s, epochs=8, activation=activation, l1=l1, lr=0.01)
    h = outcome.history
    assert h["val_accuracy"][-1] > 0.8 and h["train_loss"][-1] < 0.8 * h["train_loss"][0]
    assert outcome.network.activation == activation


def test_the_activation_is_the_one_asked_for():
    x = torch.randn(5, 4)
    nets = {a: MLPClassifier(4, [3], 2, 0.0, a) for a in ("relu", "tanh", "sigmoid")}
    for net in nets.values():
        net.load_state_dict(nets["relu"].state_dict())
    layer, head = nets["relu"].hidden[0], nets["relu"].head
    for name, f in (("relu", torch.relu), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid)):
        torch.testing.assert_close(nets[name](x), head(f(layer(x))))
        assert nets[name].spec()["activation"] == name
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        MLPClassifier(4, [3], 2, 0.0, "gelu")


def test_the_l1_penalty_pulls_the_weights_not_the_biases_through_autograd():
    """One plain SGD step (one batch, no dropout): the penalty adds l1 * sign(w) to the weights' gradients only."""
    s = split_table(generate_table(200, 10, 5, 0), 0.2, 0.1, 0)
    X, y = s.X_train.to_numpy(), s.y_train.to_numpy()
    args = dict(n_classes=2, **knobs(epochs=1, batch_size=len(y), dropout=0.0, optimizer="sgd", momentum=0.0, lr=0.1))
    plain = train_network(X, y, X, y, **(args | {"l1": 0.0})).model
    pulled = train_network(X, y, X, y, **(args | {"l1": 0.5})).model
    start = MLPClassifier(10, [64, 64], 2, 0.0)
    start.reset_parameters(torch.Generator().manual_seed(DEFAULTS.seed))
    for layer, a, b in zip((*start.hidden, start.head), (*plain.hidden, plain.head), (*pulled.hidden, pulled.head)):
        torch.testing.assert_close(b.weight - a.weight, -0.1 * 0.5 * torch.sign(layer.weight))
        assert torch.equal(a.bias, b.bias)
    assert pulled.head.weight.abs().sum() < plain.head.weight.abs().sum()


def test_batch_larger_than_the_data():
    s = split_table(generate_table(150, 10, 5, 0), 0.2, 0.1, 0)
    _, outcome = fit(s, epochs=2, batch_size=1000)
    assert np.isfinite(outcome.history["train_loss"]).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_requested_without_cuda_is_a_clear_error():
    from trackflow.devices import DeviceError

    s = split_table(generate_table(200, 10, 5, 0), 0.2, 0.1, 0)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        fit(s, device="cuda")


def test_dropout_masks_drop_and_rescale_as_nn_dropout():
    from tasks.training import _dropout_mask

    m = _dropout_mask(np.random.default_rng(0), 20_000, 64, 0.8, "cpu")
    assert set(torch.unique(m).tolist()) == {0.0, 1.25}
    assert abs((m > 0).float().mean().item() - 0.8) < 0.01


def test_the_trained_module_owns_its_weights():
    """Training keeps parameters in one flat buffer; the returned module has storage of its own."""
    s = split_table(generate_table(200, 10, 5, 0), 0.2, 0.1, 0)
    model = train_network(s.X_train.to_numpy(), s.y_train.to_numpy(), s.X_val.to_numpy(), s.y_val.to_numpy(),
                          n_classes=2, **knobs(epochs=1)).model
    ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(ptrs) == len(list(model.parameters())) and all(p.grad is None for p in model.parameters())
