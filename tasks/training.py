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
class TrainingState:
    """Where a training stopped between epochs, all it takes to go on bit for bit as if it had not stopped:
    the weights, the optimizer's state, both generators' states, the history so far."""

    weights: dict[str, torch.Tensor]
    optimizer: dict
    torch_rng: torch.Tensor
    numpy_rng: dict
    history: dict[str, list[float]]
    seconds: float  # spent training so far, for the throughput

    @property
    def epochs_done(self) -> int:
        return len(self.history["train_loss"])


class TrainingDiverged(ArithmeticError):
    """The training loss became NaN or infinite: the training cannot go on. Carries the epoch (from 1)."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message, epoch)  # both in args: the exception pickles back from a worker as it was
        self.epoch = epoch

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class TrainedNetwork:
    model: MLPClassifier
    history: dict[str, list[float]]
    samples_per_second: float
    state: TrainingState | None = None  # set when the training stopped before its last epoch


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
    resume: TrainingState | None = None, stop_after: int | None = None,
) -> TrainedNetwork:
    """Fit an MLPClassifier on encoded features and integer labels; train_loss, val_loss, val_accuracy per epoch.

    Every random draw (initial weights, shuffling, dropout) comes from generators seeded
    with `seed`, none from torch's global one: the same seed gives the same model, also
    when several trainings share a process.

    In segments: `stop_after` (an epoch, from 1) stops there and returns the state to go
    on from (`resume`); training in segments gives the same weights and history, bit for
    bit, as training in one go. A loss that becomes NaN or infinite raises TrainingDiverged
    (checked once an epoch, where the epoch's loss is read anyway).
    """
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MLPClassifier(X_train.shape[1], hidden_layers, n_classes, dropout, activation)
    model.reset_parameters(gen)
    if resume is not None:
        model.load_state_dict(resume.weights)
        gen.set_state(resume.torch_rng)
        rng.bit_generator.state = resume.numpy_rng
    model.to(dev)
    first = resume.epochs_done if resume is not None else 0
    last = epochs if stop_after is None else min(stop_after, epochs)
    keep = 1.0 - dropout

    # torch.tensor copies: pandas hands out read-only arrays, which torch will not wrap.
    X = torch.tensor(np.asarray(X_train, dtype=np.float32), device=dev)
    y = torch.tensor(np.asarray(y_train, dtype=np.int64), device=dev)
    Xv = torch.tensor(np.asarray(X_val, dtype=np.float32), device=dev)
    yv = torch.tensor(np.asarray(y_val, dtype=np.int64), device=dev)
    n, bs = len(y), batch_size
    chunk = max(bs, _CHUNK // bs * bs)
    history: dict[str, list[float]] = ({k: list(v) for k, v in resume.history.items()} if resume is not None
                                       else {"train_loss": [], "val_loss": [], "val_accuracy": []})
    start = time.perf_counter()
    with _threads_for(model, dev), _flat_parameters(model) as flat:
        opt = make_optimizer(optimizer, flat, lr=lr, weight_decay=weight_decay, momentum=momentum, device=dev)
        if resume is not None:
            opt.load_state_dict(resume.optimizer)
        weights = [layer.weight for layer in (*model.hidden, model.head)]  # what the L1 penalty sums over
        for epoch in range(first + 1, last + 1):
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
            train_loss = total.item() / n
            if not np.isfinite(train_loss):
                raise TrainingDiverged(f"training diverged: train_loss became {train_loss} at epoch {epoch} "
                                       "(a lower lr or weight decay may help)", epoch)
            val_loss, val_acc = _val_metrics(model, Xv, yv)
            history["train_loss"].append(train_loss)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
        state = None
        if last < epochs:
            state = TrainingState({k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                                  _cpu(opt.state_dict()), gen.get_state(), rng.bit_generator.state, history, 0.0)
    elapsed = time.perf_counter() - start + (resume.seconds if resume is not None else 0.0)
    if state is not None:
        state.seconds = elapsed
        return TrainedNetwork(model.cpu().eval(), history, n * (last / elapsed if elapsed else 0.0), state)
    return TrainedNetwork(model.cpu().eval(), history, n * epochs / elapsed)


def _cpu(tree):
    """An optimizer's state_dict with its tensors copied to the CPU (they travel between processes)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().clone()
    if isinstance(tree, dict):
        return {k: _cpu(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_cpu(v) for v in tree]
    return tree


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
    return _scored(trained, data, start)


def _scored(trained: TrainedNetwork, data: TrialData, start: float) -> TrialOutcome:
    with torch.no_grad():
        x = torch.tensor(data.X_test)
        proba = torch.cat([torch.softmax(trained.model(x[i : i + 65_536]), 1) for i in range(0, len(x), 65_536)])
    return TrialOutcome(trained.model, trained.history, trained.samples_per_second, proba.numpy(),
                        time.perf_counter() - start, _worker())


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# This process's copy of a sweep's data, by token: a worker gets the arrays once, not with each segment.
# One entry: a worker serves one sweep's trials at a time.
_DATA: dict[str, TrialData] = {}


@dataclass(frozen=True)
class DataNotHere:
    """Returned (not raised: Dask logs a raised one as a failed task) by a worker without the arrays of `token`:
    send them with the call."""

    token: str


def train_segment(data: TrialData | str, token: str, knobs: dict, resume: TrainingState | None,
                  stop_after: int) -> TrialOutcome | TrainingState | DataNotHere:
    """Train from `resume` (or from scratch) up to epoch `stop_after`: the state to go on from, or, at the
    training's last epoch, the TrialOutcome (network, history, test probabilities) train_and_score returns.

    `data` is the arrays, kept in this process under `token` for the next calls, or just the
    token; DataNotHere when this process does not hold them.
    """
    start = time.perf_counter()
    if isinstance(data, str):
        if data not in _DATA:
            return DataNotHere(token)
        data = _DATA[data]
    elif token not in _DATA:
        _DATA.clear()
        _DATA[token] = data
    trained = train_network(data.X_train, data.y_train, data.X_val, data.y_val, n_classes=data.n_classes,
                            resume=resume, stop_after=stop_after, **knobs)
    if trained.state is not None:
        return trained.state
    outcome = _scored(trained, data, start)
    outcome.seconds += resume.seconds if resume is not None else 0.0  # the earlier segments' training
    return outcome


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
