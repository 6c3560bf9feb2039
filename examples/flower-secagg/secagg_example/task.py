"""secagg_example: the model, the data and the training, nothing Flower- or SecAgg+-specific.

A small MLP on scikit-learn's bundled digits (1,797 8x8 images, no download). A fixed fifth is the server's
test set; the rest is split across partitions non-IID-ish and deterministically: half of each class goes to
one partition (class mod N), the other half round robin to all. Each partition keeps a fifth for local
evaluation. Training is deterministic for a given (seed, partition, round): one thread, seeded shuffling.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.set_num_threads(1)  # deterministic float sums, and one core per node
torch.use_deterministic_algorithms(True)

DATA_SEED = 2024
TEST_FRACTION = 0.2
VAL_FRACTION = 0.2


class Net(nn.Module):
    """64 -> 64 -> 10 MLP with tanh (smooth, so a tiny change of the weights changes training only a little)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def initial_model(seed: int = 0) -> Net:
    """The global model's starting weights, the same for every run with the same seed."""
    torch.manual_seed(seed)
    return Net()


@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features scaled to [0, 1], labels, and a fixed permutation of the sample indices."""
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(DATA_SEED))
    return x, y, perm


def _split() -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the server's test set and of the pool the partitions share."""
    _, _, perm = _digits()
    n_test = int(len(perm) * TEST_FRACTION)
    return perm[:n_test], perm[n_test:]


def partition_indices(partition_id: int, num_partitions: int) -> torch.Tensor:
    """This partition's sample indices: half of class c goes to partition c mod N, the rest round robin."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is not in 0..{num_partitions - 1}")
    _, y, _ = _digits()
    _, pool = _split()
    mine: list[torch.Tensor] = []
    rest: list[torch.Tensor] = []
    for c in range(10):
        idx = pool[y[pool] == c]
        half = len(idx) // 2
        if c % num_partitions == partition_id:
            mine.append(idx[:half])
        rest.append(idx[half:])
    mine.append(torch.cat(rest)[partition_id::num_partitions])
    return torch.sort(torch.cat(mine)).values


def load_data(partition_id: int, num_partitions: int, batch_size: int) -> tuple[TensorDataset, TensorDataset]:
    """This partition's local train and validation sets."""
    x, y, _ = _digits()
    idx = partition_indices(partition_id, num_partitions)
    order = torch.randperm(len(idx), generator=torch.Generator().manual_seed(DATA_SEED + partition_id))
    idx = idx[order]
    n_val = max(1, int(len(idx) * VAL_FRACTION))
    val, train = idx[:n_val], idx[n_val:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


def load_centralized_dataset() -> TensorDataset:
    """The server's held-out test set (never given to a partition)."""
    x, y, _ = _digits()
    test, _ = _split()
    return TensorDataset(x[test], y[test])


def train(model: Net, data: TensorDataset, epochs: int, lr: float, batch_size: int, seed: int) -> float:
    """Local SGD; the shuffling is seeded so a run is reproducible. Returns the mean training loss."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            count += len(yb)
    return total / max(count, 1)


def test(model: Net, data: TensorDataset) -> tuple[float, float]:
    """Mean loss and accuracy on a dataset."""
    x, y = data.tensors
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(nn.functional.cross_entropy(logits, y))
        acc = float((logits.argmax(dim=1) == y).float().mean())
    return loss, acc
