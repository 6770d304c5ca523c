"""The classifier: the tutorial's MLP (10 -> 64 -> 64 -> 2), done right."""

from __future__ import annotations

import torch
from torch import nn


class MLPClassifier(nn.Module):
    """Two hidden ReLU layers with dropout, and one logit per class.

    The tutorial's head had a single output fed to a 2-class cross-entropy; a C-class
    cross-entropy needs C logits, so the head here has `n_classes` outputs.
    """

    def __init__(self, n_features: int = 10, hidden_dim: int = 64, n_classes: int = 2, dropout: float = 0.2):
        super().__init__()
        self.fc1 = nn.Linear(n_features, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.fc3 = nn.Linear(hidden_dim, n_classes)
        self.dropout = nn.Dropout(dropout)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """nn.Linear's default init, drawn from `generator` rather than the global RNG, so
        concurrent trainings in one process stay reproducible."""
        for layer in (self.fc1, self.fc2, self.fc3):
            nn.init.kaiming_uniform_(layer.weight, a=5**0.5, generator=generator)
            bound = 1 / layer.in_features**0.5
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.relu(self.fc1(x)))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)
