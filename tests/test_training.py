import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tasks.data import Dataset, generate_dataset, split_dataset
from tasks.evaluation import evaluate_model
from tasks.training import backprop_step, train_model
from trackflow.config import TrainConfig
from trackflow.model import MLPClassifier


def _params(m):
    return [m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, m.fc3.weight, m.fc3.bias]


def test_model_has_one_logit_per_class():
    assert MLPClassifier()(torch.zeros(4, 10)).shape == (4, 2)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_hand_written_backward_equals_autograd(dropout):
    torch.manual_seed(0)
    model = MLPClassifier(10, 64, 2, dropout)
    x, y = torch.randn(32, 10), torch.randint(0, 2, (32,))
    keep = 1 - dropout
    m1 = torch.empty(32, 64).bernoulli_(keep) / keep
    m2 = torch.empty(32, 64).bernoulli_(keep) / keep

    # autograd, with the same dropout masks applied explicitly
    h = torch.relu(model.fc1(x)) * m1
    h = torch.relu(model.fc2(h)) * m2
    loss = F.cross_entropy(model.fc3(h), y)
    loss.backward()
    expected = [p.grad.clone() for p in _params(model)]

    grads = [torch.empty_like(p) for p in _params(model)]
    with torch.no_grad():
        loss_sum = backprop_step([p.detach() for p in _params(model)], grads, x, F.one_hot(y, 2).float(), m1, m2)
    assert loss_sum.item() / 32 == pytest.approx(loss.item(), rel=1e-5)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def _splits(n=1000, seed=0):
    return split_dataset.fn(generate_dataset.fn(n, 10, 5, seed), 0.2, 0.1, seed)


def test_defaults_reach_090_test_accuracy():
    c = TrainConfig()
    s = split_dataset.fn(generate_dataset.fn(c.n_samples, c.n_features, c.n_informative, c.seed), c.test_size, c.val_size, c.seed)
    trained = train_model.fn(s.train, s.val, c)
    metrics = evaluate_model.fn(trained.model, s.test).metrics
    assert metrics["test_accuracy"] >= 0.90
    h = trained.history
    assert len(h["train_loss"]) == len(h["val_loss"]) == len(h["val_accuracy"]) == c.epochs
    assert h["train_loss"][-1] < h["train_loss"][0] and h["val_loss"][-1] < h["val_loss"][0]


def test_same_seed_same_model_other_seed_differs():
    s = _splits(400)
    c = TrainConfig(n_samples=400, epochs=3, seed=7)
    a, b = train_model.fn(s.train, s.val, c), train_model.fn(s.train, s.val, c)
    other = train_model.fn(s.train, s.val, c.model_copy(update={"seed": 8}))
    assert a.history == b.history
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert a.history != other.history


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_optimizers_and_weight_decay_train(optimizer):
    s = _splits(600)
    c = TrainConfig(n_samples=600, epochs=5, optimizer=optimizer, weight_decay=0.01, lr=0.01)
    t = train_model.fn(s.train, s.val, c)
    assert t.history["val_accuracy"][-1] > 0.8


def test_batch_larger_than_data_and_odd_sizes():
    s = _splits(150)
    t = train_model.fn(s.train, s.val, TrainConfig(n_samples=150, epochs=2, batch_size=1000))
    assert len(t.history["train_loss"]) == 2 and np.isfinite(t.history["train_loss"]).all()


def test_train_rejects_single_class_and_feature_mismatch():
    X = np.random.default_rng(0).normal(size=(50, 10)).astype(np.float32)
    one_class = Dataset(X, np.zeros(50, np.int64))
    with pytest.raises(ValueError, match="two classes"):
        train_model.fn(one_class, one_class, TrainConfig())
    s = _splits(200)
    with pytest.raises(ValueError, match="n_features"):
        train_model.fn(s.train, s.val, TrainConfig(n_features=12))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_requested_without_cuda_is_a_clear_error():
    s = _splits(200)
    with pytest.raises(ValueError, match="CUDA is not available"):
        train_model.fn(s.train, s.val, TrainConfig(device="cuda"))
