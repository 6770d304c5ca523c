"""The classifier network: the tutorial's MLP (10 -> 64 -> 64 -> 2 by default), done right."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class MLPClassifier(nn.Module):
    """Hidden layers, each followed by its activation (ReLU by default) and dropout, and one logit per class.

    The tutorial's head had a single output fed to a 2-class cross-entropy; a C-class
    cross-entropy needs C logits, so the head here has `n_classes` outputs. Training
    (tasks/training.py) runs autograd through this module; serving loads the same class.
    """

    # activation "relu": the spec of a network saved before the activation could be chosen has none.
    def __init__(self, n_features: int, hidden_layers: Sequence[int], n_classes: int, dropout: float,
                 activation: str = "relu"):
        super().__init__()
        widths = [n_features, *hidden_layers]
        self.n_features = n_features
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.head = nn.Linear(widths[-1], n_classes)
        self.dropout = dropout
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; one of {', '.join(ACTIVATIONS)}")
        self.activation = activation

    def spec(self) -> dict:
        """The constructor's arguments, to rebuild this network around saved weights."""
        return {"n_features": self.n_features, "hidden_layers": [layer.out_features for layer in self.hidden],
                "n_classes": self.head.out_features, "dropout": self.dropout, "activation": self.activation}

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """nn.Linear's default init, drawn from `generator` rather than the global RNG."""
        for layer in (*self.hidden, self.head):
            nn.init.kaiming_uniform_(layer.weight, a=5**0.5, generator=generator)
            bound = 1 / layer.in_features**0.5
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, x: torch.Tensor, masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits. In training, `masks` (one per hidden layer, already scaled by 1/keep) replace
        the dropout draws: the training loop draws them for many batches at once, because
        torch's per-call dropout sampling costs more than the rest of a small layer's step.
        """
        # F.linear on each layer's own parameters rather than calling the submodules: at
        # batch 32 the per-call overhead of nn.Module.__call__ is a visible share of a step.
        act = ACTIVATIONS[self.activation]
        for i, layer in enumerate(self.hidden):
            x = act(F.linear(x, layer.weight, layer.bias))
            if masks is not None:
                x = x * masks[i]
            elif self.training and self.dropout > 0:
                x = F.dropout(x, self.dropout, True)
        return F.linear(x, self.head.weight, self.head.bias)
