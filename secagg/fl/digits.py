"""A small real task for demos and tests: handwritten digits (scikit-learn's bundled copy of the UCI set).

Softmax regression in NumPy (no download, no torch), data split across silos with label skew drawn from a
Dirichlet distribution (non-IID, as hospitals' case mixes differ), each silo holding out part of its data
for federated evaluation. Data shuffling uses numpy's seeded Generator: this is task code, not protocol
or crypto code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from secagg.errors import ConfigurationError
from secagg.fl.parameters import Parameters
from secagg.fl.strategy import Update

N_FEATURES = 64
N_CLASSES = 10


@dataclass(frozen=True, eq=False)
class Shard:
    """One silo's data: a training part and a held-out part."""

    x_train: NDArray[np.float64]
    y_train: NDArray[np.int64]
    x_test: NDArray[np.float64]
    y_test: NDArray[np.int64]


def load_digits_data() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Features scaled to [0, 1] and labels 0..9 (1797 examples)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        raise ConfigurationError("the digits task needs scikit-learn: pip install 'secagg[demo]'") from exc
    data = load_digits()
    return (data.data / 16.0).astype(np.float64), data.target.astype(np.int64)


def make_shards(n_silos: int, *, seed: int = 0, alpha: float = 0.5, test_fraction: float = 0.25) -> list[Shard]:
    """Split the digits across n_silos with Dirichlet(alpha) label skew; smaller alpha, more skew."""
    if n_silos < 2:
        raise ConfigurationError("at least two silos")
    x, y = load_digits_data()
    rng = np.random.default_rng(seed)
    per_silo: list[list[int]] = [[] for _ in range(n_silos)]
    for label in range(N_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == label))
        props = rng.dirichlet([alpha] * n_silos)
        cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
        for silo, part in enumerate(np.split(idx, cuts)):
            per_silo[silo].extend(part.tolist())
    shards = []
    for silo_idx in per_silo:
        idx = rng.permutation(np.array(silo_idx, dtype=np.int64))
        n_test = max(1, int(len(idx) * test_fraction))
        test, train = idx[:n_test], idx[n_test:]
        shards.append(Shard(x[train], y[train], x[test], y[test]))
    return shards


def initial_parameters(seed: int = 0) -> Parameters:
    """Small random weights and zero biases."""
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((N_FEATURES, N_CLASSES)) * 0.01).astype(np.float32),
        np.zeros(N_CLASSES, dtype=np.float32),
    ]


def _unpack(flat: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    w = flat[: N_FEATURES * N_CLASSES].astype(np.float64).reshape(N_FEATURES, N_CLASSES)
    b = flat[N_FEATURES * N_CLASSES :].astype(np.float64)
    return w, b


def loss_and_accuracy(flat: NDArray[Any], x: NDArray[np.float64], y: NDArray[np.int64]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the model on (x, y)."""
    w, b = _unpack(flat)
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(y)), y].mean())
    acc = float((logits.argmax(axis=1) == y).mean())
    return loss, acc


def sgd(
    flat: NDArray[Any],
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    l2: float = 1e-4,
) -> NDArray[np.float32]:
    """Mini-batch SGD on the softmax cross-entropy; returns the new flat parameters."""
    w, b = _unpack(flat)
    rng = np.random.default_rng(seed)
    onehot = np.eye(N_CLASSES)[y]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            xb, tb = x[batch], onehot[batch]
            logits = xb @ w + b
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            g = (p - tb) / len(batch)
            w -= learning_rate * (xb.T @ g + l2 * w)
            b -= learning_rate * g.sum(axis=0)
    return np.concatenate([w.ravel(), b]).astype(np.float32)


class DigitsTrainer:
    """A silo's LocalTrainer for the digits task."""

    def __init__(self, shard: Shard, *, seed: int = 0) -> None:
        self.shard = shard
        self._seed = seed
        self._calls = 0

    def fit(self, parameters: NDArray[np.float32], instructions: dict[str, Any]) -> Update:
        """Local epochs of SGD; the update is new - old."""
        self._calls += 1
        new = sgd(
            parameters,
            self.shard.x_train,
            self.shard.y_train,
            epochs=int(instructions.get("local_epochs", 1)),
            learning_rate=float(instructions.get("learning_rate", 0.1)),
            batch_size=int(instructions.get("batch_size", 32)),
            seed=self._seed * 1_000_003 + self._calls,
        )
        return Update(new - parameters, len(self.shard.y_train))

    def evaluate(self, parameters: NDArray[np.float32]) -> tuple[float, float, int]:
        """Loss and accuracy on the held-out part."""
        loss, acc = loss_and_accuracy(parameters, self.shard.x_test, self.shard.y_test)
        return loss, acc, len(self.shard.y_test)
