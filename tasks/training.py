"""Training the network with autograd, on arrays; NumPy and torch only, so that a worker
process training a sweep's trial imports nothing else (the preprocessing is tasks/data.py's).

For a 10 -> 64 -> 64 -> 2 MLP at batch 32 a step's arithmetic is tiny, so per-step
overhead decides the speed (measured in benchmarks/bench_training.py):
- no DataLoader: batches are slices of a chunk permuted once, so a step does no indexing;
- dropout masks are drawn for a whole chunk at once, with NumPy's generator (torch's
  per-call dropout sampling cost ~30 us a batch here, more than a layer's matmul);
- the parameters live in one flat buffer during training, so the fused optimizer step
  and the gradient reset each touch one tensor instead of one per layer;
- small models train on one thread.
Autograd runs through trackflow.model.MLPClassifier as it is.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trackflow.devices import resolve_device
from trackflow.model import MLPClassifier

# Batches are gathered this many samples at a time: memory stays bounded on large
# tables while the inner loop only slices.
_CHUNK = 16_384
# Below this many weights one thread beats two here (intra-op parallelism costs more than it gains).
_SMALL_MODEL = 1_000_000


@dataclass
class TrainedNetwork:
    model: MLPClassifier
    history: dict[str, list[float]]
    samples_per_second: float


@dataclass(frozen=True)
class TrialData:
    """The encoded splits a training needs, and all it is sent: arrays only."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int


@dataclass
class TrialOutcome:
    """A trained network with its history and its class probabilities on the test split."""

    network: MLPClassifier
    history: dict[str, list[float]]
    samples_per_second: float
    proba_test: np.ndarray
    seconds: float
    worker: str = ""  # host:pid of the process that trained it


@contextlib.contextmanager
def _threads_for(model: torch.nn.Module, device: torch.device):
    n_weights = sum(p.numel() for p in model.parameters())
    if device.type != "cpu" or n_weights >= _SMALL_MODEL:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _flat_parameters(model: torch.nn.Module):
    """Yield (one Parameter holding all of `model`'s, its gradient buffer); the module's parameters
    and gradients are views into them for the duration, and get storage of their own after."""
    params = list(model.parameters())
    flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset : offset + n].view_as(p)
        p.grad = flat.grad[offset : offset + n].view_as(p)
        offset += n
    try:
        yield flat
    finally:
        for p in params:
            p.data = p.data.clone()
            p.grad = None


def _val_metrics(model: MLPClassifier, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(X[i : i + 65_536]) for i in range(0, len(X), 65_536)])
        return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def make_optimizer(name: str, flat: torch.nn.Parameter, *, lr: float, weight_decay: float, momentum: float,
                   device: torch.device) -> torch.optim.Optimizer:
    """The optimizer `name` over the flat parameter buffer; fused (one kernel updates the whole buffer), as torch
    has fused kernels of all four on the CPU and CUDA. `momentum` is SGD's; the others have no such knob."""
    fused = device.type in ("cpu", "cuda")
    if name == "sgd":
        return torch.optim.SGD([flat], lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    cls = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return cls([flat], lr=lr, weight_decay=weight_decay, fused=fused)


def train_network(
    X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *, n_classes: int,
    hidden_layers: Sequence[int], dropout: float, optimizer: str, lr: float, weight_decay: float, batch_size: int,
    epochs: int, seed: int, device: str, activation: str, momentum: float, l1: float,
) -> TrainedNetwork:
    """Fit an MLPClassifier on encoded features and integer labels; train_loss, val_loss, val_accuracy per epoch.

    Every random draw (initial weights, shuffling, dropout) comes from generators seeded
    with `seed`, none from torch's global one: the same seed gives the same model, also
    when several trainings share a process.
    """
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MLPClassifier(X_train.shape[1], hidden_layers, n_classes, dropout, activation)
    model.reset_parameters(gen)
    model.to(dev)
    keep = 1.0 - dropout

    # torch.tensor copies: pandas hands out read-only arrays, which torch will not wrap.
    X = torch.tensor(np.asarray(X_train, dtype=np.float32), device=dev)
    y = torch.tensor(np.asarray(y_train, dtype=np.int64), device=dev)
    Xv = torch.tensor(np.asarray(X_val, dtype=np.float32), device=dev)
    yv = torch.tensor(np.asarray(y_val, dtype=np.int64), device=dev)
    n, bs = len(y), batch_size
    chunk = max(bs, _CHUNK // bs * bs)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    start = time.perf_counter()
    with _threads_for(model, dev), _flat_parameters(model) as flat:
        opt = make_optimizer(optimizer, flat, lr=lr, weight_decay=weight_decay, momentum=momentum, device=dev)
        weights = [layer.weight for layer in (*model.hidden, model.head)]  # what the L1 penalty sums over
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(n, generator=gen).to(dev)
            total = torch.zeros((), device=dev)  # summed on the device: no host sync per step
            for c0 in range(0, n, chunk):
                idx = perm[c0 : c0 + chunk]
                Xc, yc = X[idx], y[idx]
                masks = [_dropout_mask(rng, len(idx), width, keep, dev) for width in hidden_layers] if keep < 1 else None
                for b0 in range(0, len(idx), bs):
                    s = slice(b0, b0 + bs)
                    loss = F.cross_entropy(model(Xc[s], [m[s] for m in masks] if masks else None), yc[s])
                    flat.grad.zero_()
                    (loss + l1 * sum(w.abs().sum() for w in weights) if l1 else loss).backward()
                    opt.step()
                    total.add_(loss.detach(), alpha=len(yc[s]))
            val_loss, val_acc = _val_metrics(model, Xv, yv)
            history["train_loss"].append(total.item() / n)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
    elapsed = time.perf_counter() - start
    return TrainedNetwork(model.cpu().eval(), history, n * epochs / elapsed)


def _dropout_mask(rng: np.random.Generator, rows: int, width: int, keep: float, device) -> torch.Tensor:
    """Keep each unit with probability `keep`, scaled by 1/keep (inverted dropout, as nn.Dropout)."""
    kept = rng.random((rows, width), dtype=np.float32) < keep
    return torch.from_numpy(kept).to(device=device, dtype=torch.float32).mul_(1.0 / keep)


def train_and_score(
    data: TrialData, *, hidden_layers: Sequence[int], dropout: float, optimizer: str, lr: float, weight_decay: float,
    batch_size: int, epochs: int, seed: int, device: str, activation: str, momentum: float, l1: float,
) -> TrialOutcome:
    """One training (a run, or one trial of a sweep): the network, its history, its test-split probabilities."""
    start = time.perf_counter()
    trained = train_network(data.X_train, data.y_train, data.X_val, data.y_val, n_classes=data.n_classes,
                            hidden_layers=hidden_layers, dropout=dropout, optimizer=optimizer, lr=lr,
                            weight_decay=weight_decay, batch_size=batch_size, epochs=epochs, seed=seed, device=device,
                            activation=activation, momentum=momentum, l1=l1)
    with torch.no_grad():
        x = torch.tensor(data.X_test)
        proba = torch.cat([torch.softmax(trained.model(x[i : i + 65_536]), 1) for i in range(0, len(x), 65_536)])
    return TrialOutcome(trained.model, trained.history, trained.samples_per_second, proba.numpy(),
                        time.perf_counter() - start, f"{socket.gethostname()}:{os.getpid()}")


def train_on(
    executor, data: TrialData, *, hidden_layers: Sequence[int], dropout: float, optimizer: str, lr: float,
    weight_decay: float, batch_size: int, epochs: int, seed: int, device: str, activation: str, momentum: float,
    l1: float,
) -> TrialOutcome:
    """train_and_score, run by `executor` (a concurrent.futures Executor: worker processes, Dask) or here (None)."""
    knobs = dict(hidden_layers=hidden_layers, dropout=dropout, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                 batch_size=batch_size, epochs=epochs, seed=seed, device=device, activation=activation,
                 momentum=momentum, l1=l1)
    if executor is None:
        return train_and_score(data, **knobs)
    return executor.submit(train_and_score, data, **knobs).result()


def _head(data: TrialData, rows: int) -> TrialData:
    return TrialData(data.X_train[:rows], data.y_train[:rows], data.X_val[:rows], data.y_val[:rows],
                     data.X_test[:rows], data.y_test[:rows], data.n_classes)


def estimate_seconds(
    data: TrialData, *, hidden_layers: Sequence[int], dropout: float, optimizer: str, lr: float, weight_decay: float,
    batch_size: int, epochs: int, seed: int, device: str, activation: str, momentum: float, l1: float,
    sample_rows: int = 4096,
) -> float:
    """How long one training on `data` will take here: a one-epoch fit on a slice of it, timed and scaled up."""
    rows = min(sample_rows, len(data.y_train))
    knobs = dict(hidden_layers=hidden_layers, dropout=dropout, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                 batch_size=batch_size, seed=seed, device=device, activation=activation, momentum=momentum, l1=l1)
    train_and_score(_head(data, 64), epochs=1, **knobs)  # first-call costs out of the timing
    timed = train_and_score(_head(data, rows), epochs=1, **knobs)
    return timed.seconds / rows * len(data.y_train) * epochs
