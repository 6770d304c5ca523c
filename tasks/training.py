"""Training step: fit the MLP with a hand-derived backward pass.

For a 10 -> 64 -> 64 -> 2 MLP at batch 32, autograd's graph building and a DataLoader
cost more than the arithmetic (0.7 ms a step here, slower than scikit-learn's numpy
MLP). The backward pass of this fixed architecture is short, so it is written out
below (checked against autograd in tests/test_training.py), batches are slices of a
pre-permuted chunk rather than DataLoader items, and the optimizer is torch's own
fused Adam/AdamW fed with those gradients.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data import Dataset
from trackflow.config import TrainConfig
from trackflow.model import MLPClassifier

# Batches are gathered (and dropout masks drawn) this many samples at a time, which
# bounds memory for large datasets while keeping per-step indexing out of the loop.
_CHUNK = 16_384


@dataclass
class TrainedModel:
    model: MLPClassifier
    history: dict[str, list[float]] = field(default_factory=dict)
    samples_per_second: float = 0.0
    device: str = "cpu"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but CUDA is not available; use --device cpu or auto")
    return torch.device(device)


def backprop_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    x: torch.Tensor,
    onehot: torch.Tensor,
    mask1: torch.Tensor,
    mask2: torch.Tensor,
) -> torch.Tensor:
    """One forward + backward pass of MLPClassifier with cross-entropy, writing into `grads`.

    `mask1`/`mask2` are the dropout masks, already scaled by 1/keep. Returns the batch's
    summed loss as a 0-d tensor (no host sync).
    """
    w1, b1, w2, b2, w3, b3 = params
    gw1, gb1, gw2, gb2, gw3, gb3 = grads
    n = x.shape[0]
    h1 = torch.addmm(b1, x, w1.t())
    m1 = mask1 * (h1 > 0)  # relu and dropout folded into one mask
    a1 = h1 * m1
    h2 = torch.addmm(b2, a1, w2.t())
    m2 = mask2 * (h2 > 0)
    a2 = h2 * m2
    logp = torch.log_softmax(torch.addmm(b3, a2, w3.t()), dim=1)
    loss_sum = -(logp * onehot).sum()
    g = logp.exp_().sub_(onehot).div_(n)  # d(mean CE)/d(logits) = softmax - onehot
    torch.mm(g.t(), a2, out=gw3)
    torch.sum(g, 0, out=gb3)
    g = (g @ w3).mul_(m2)
    torch.mm(g.t(), a1, out=gw2)
    torch.sum(g, 0, out=gb2)
    g = (g @ w2).mul_(m1)
    torch.mm(g.t(), x, out=gw1)
    torch.sum(g, 0, out=gb1)
    return loss_sum


@contextlib.contextmanager
def _single_thread(device: torch.device):
    # This model is too small for intra-op parallelism: one thread is faster than two
    # here, and leaves the other cores to concurrent trials.
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _evaluate_loss(model: MLPClassifier, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(X)
        loss = F.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc


@task(cache_policy=NO_CACHE)
def train_model(train: Dataset, val: Dataset, config: TrainConfig) -> TrainedModel:
    """Train an MLPClassifier on `train`; record train_loss, val_loss and val_accuracy per epoch."""
    n_classes = int(max(train.y.max(), val.y.max())) + 1
    if n_classes < 2 or len(np.unique(train.y)) < 2:
        raise ValueError(f"training split has labels {np.unique(train.y).tolist()}; need at least two classes")
    if train.n_features != config.n_features or val.n_features != config.n_features:
        raise ValueError(
            f"data has {train.n_features} features but config.n_features={config.n_features}; they must match"
        )
    device = resolve_device(config.device)
    gen = torch.Generator().manual_seed(config.seed)
    model = MLPClassifier(config.n_features, config.hidden_dim, n_classes, config.dropout)
    model.reset_parameters(gen)
    model.to(device)
    params = [model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias, model.fc3.weight, model.fc3.bias]
    grads = [torch.zeros_like(p) for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    # fused=True: one kernel for all parameters (0.69 vs 0.94 ms a step here).
    optimizer = opt_cls(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)

    X = torch.from_numpy(train.X).to(device)
    y = torch.from_numpy(train.y).to(device)
    X_val = torch.from_numpy(val.X).to(device)
    y_val = torch.from_numpy(val.y).to(device)
    n, bs, keep = len(train), config.batch_size, 1.0 - config.dropout
    chunk = max(bs, _CHUNK // bs * bs)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    weights = [p.detach() for p in params]

    start = time.perf_counter()
    with _single_thread(device), torch.no_grad():
        for _ in range(config.epochs):
            model.train()
            perm = torch.randperm(n, generator=gen).to(device)
            loss_total = torch.zeros((), device=device)
            for c0 in range(0, n, chunk):
                idx = perm[c0 : c0 + chunk]
                Xc, Yc = X[idx], F.one_hot(y[idx], n_classes).float()
                if keep < 1.0:
                    masks = torch.empty((2, len(idx), config.hidden_dim)).bernoulli_(keep, generator=gen)
                    masks = masks.div_(keep).to(device)
                else:
                    masks = torch.ones((2, len(idx), config.hidden_dim), device=device)
                for b0 in range(0, len(idx), bs):
                    s = slice(b0, b0 + bs)
                    loss_total += backprop_step(weights, grads, Xc[s], Yc[s], masks[0, s], masks[1, s])
                    optimizer.step()
            val_loss, val_acc = _evaluate_loss(model, X_val, y_val)
            history["train_loss"].append(loss_total.item() / n)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
    elapsed = time.perf_counter() - start
    model.eval()
    for p in params:
        p.grad = None
    return TrainedModel(model.cpu(), history, n * config.epochs / elapsed, str(device))
