"""The tutorial's training script (shared/seed), with its two bugs fixed, as the benchmarks' baseline.

Fixes: the head has 2 outputs for the 2-class cross-entropy (the tutorial had 1), and the
test DataLoader wraps a TensorDataset (the tutorial passed two tensors to DataLoader).
Run as a script, it trains on the tutorial's data and prints the test accuracy.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset


class SimpleModel(nn.Module):
    def __init__(self, n_features=10):
        super().__init__()
        self.fc1 = nn.Linear(n_features, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 2)
        self.dropout = nn.Dropout(0.2)

    def forward(self, x):
        x = self.dropout(torch.relu(self.fc1(x)))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)


def train_tutorial(X_train, y_train, epochs=10, lr=0.001, batch_size=32, seed=42):
    torch.manual_seed(seed)
    model = SimpleModel(X_train.shape[1])
    ds = TensorDataset(torch.tensor(X_train, dtype=torch.float32), torch.tensor(y_train, dtype=torch.long))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for data, target in loader:
            optimizer.zero_grad()
            loss = criterion(model(data), target)
            loss.backward()
            optimizer.step()
    return model


def accuracy_tutorial(model, X_test, y_test, batch_size=32):
    ds = TensorDataset(torch.tensor(X_test, dtype=torch.float32), torch.tensor(y_test, dtype=torch.long))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for data, target in loader:
            correct += (model(data).argmax(1) == target).sum().item()
            total += target.size(0)
    return correct / total


if __name__ == "__main__":
    import sys

    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    n_samples = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    X, y = make_classification(n_samples=n_samples, n_features=10, n_informative=5, random_state=42)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
    model = train_tutorial(X_train, y_train)
    print(f"Accuracy of the model on the test data: {100 * accuracy_tutorial(model, X_test, y_test):.1f} %")
