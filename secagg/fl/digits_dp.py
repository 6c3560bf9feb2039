"""The digits task with client-side differential privacy: DP-SGD with Opacus on each silo (extra `dp`).

The same softmax-regression model as `secagg.fl.digits`, as a torch `nn.Linear(64, 10)`, trained with
`PrivateTrainer` (one Opacus PrivacyEngine for the silo's whole run, so epsilon composes over rounds, and a
persistent privacy ledger that refuses rounds past the budget). The update sent through SecAgg+ is the
difference of DP-SGD weights, so the server's aggregate is already differentially private per silo.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

from secagg.fl.digits import N_CLASSES, N_FEATURES, Shard
from secagg.fl.strategy import Update


def _logits(flat: NDArray[Any], x: NDArray[np.float64]) -> NDArray[np.float64]:
    """torch Linear layout: weight (10, 64) then bias (10)."""
    w = flat[: N_CLASSES * N_FEATURES].astype(np.float64).reshape(N_CLASSES, N_FEATURES)
    b = flat[N_CLASSES * N_FEATURES :].astype(np.float64)
    return x @ w.T + b


def initial_parameters_torch(seed: int = 0) -> list[NDArray[np.float32]]:
    """Initial weights in the torch layout (small, seeded), for the strategy."""
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((N_CLASSES, N_FEATURES)) * 0.01).astype(np.float32),
        np.zeros(N_CLASSES, dtype=np.float32),
    ]


class DigitsDPTrainer:
    """A silo's LocalTrainer running DP-SGD with Opacus; `epsilon` is what it has spent so far."""

    def __init__(
        self,
        shard: Shard,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        delta: float,
        rounds: int,
        ledger_path: str | os.PathLike[str] | None = None,
        learning_rate: float = 0.5,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        import torch

        from secagg.fl.opacus_dp import DPPolicy, PrivateTrainer

        torch.manual_seed(seed)
        self.shard = shard
        model = torch.nn.Linear(N_FEATURES, N_CLASSES)
        data = torch.utils.data.TensorDataset(
            torch.tensor(shard.x_train, dtype=torch.float32), torch.tensor(shard.y_train, dtype=torch.long)
        )
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
        self._optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
        policy = DPPolicy(max_grad_norm=max_grad_norm, delta=delta, rounds=rounds, noise_multiplier=noise_multiplier)
        self._trainer = PrivateTrainer(model, self._optimizer, loader, policy, ledger=ledger_path)

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon (Opacus' accountant, at the policy's delta)."""
        return self._trainer.epsilon

    @property
    def epsilon_budget(self) -> float:
        """The epsilon the whole run may reach."""
        return self._trainer.epsilon_budget

    def fit(self, parameters: NDArray[np.float32], instructions: dict[str, Any]) -> Update:
        """One round of DP-SGD from the global model; the update carries the epsilon spent so far."""
        self._trainer.set_weights(parameters)
        for group in self._optimizer.param_groups:
            group["lr"] = float(instructions.get("learning_rate", group["lr"]))
        result = self._trainer.train_round()
        delta = (result.weights - parameters).astype(np.float32)
        return Update(delta, len(self.shard.y_train), {"epsilon": result.epsilon})

    def evaluate(self, parameters: NDArray[np.float32]) -> tuple[float, float, int]:
        """Loss and accuracy on the held-out part (no privacy cost: it trains nothing)."""
        logits = _logits(parameters, self.shard.x_test)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        y = self.shard.y_test
        loss = float(-logp[np.arange(len(y)), y].mean())
        acc = float((logits.argmax(axis=1) == y).mean())
        return loss, acc, len(y)
