"""Client-side DP-SGD for a silo with Opacus: one PrivacyEngine for the silo's whole run, a ledger, a budget.

`PrivateTrainer` wraps the silo's model, optimizer and data loader with Opacus' `PrivacyEngine` once, so the
engine's accountant composes over every round (re-creating the engine per round would restart epsilon from
zero). Each round trains `local_epochs` epochs and returns the weights as a flat float32 vector, ready for
SecAgg's quantiser, with the cumulative epsilon from Opacus' own accountant. Before training, the trainer asks
the accountant for the epsilon after the round's steps (a hypothetical history: current history plus the
round's steps) and refuses the round with `PrivacyBudgetExceeded` if it would pass the budget. With a
`PrivacyLedger`, the spent privacy survives restarts: the ledger's history is loaded into the new engine.

Needs the `dp` extra (torch, opacus). Opacus' noise uses torch's generator unless `secure_mode=True`
(which needs torchcsprng): use secure mode in production.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch  # type: ignore[import-not-found, unused-ignore]
from numpy.typing import NDArray
from opacus import PrivacyEngine  # type: ignore[import-untyped, import-not-found, unused-ignore]
from opacus.accountants import create_accountant  # type: ignore[import-untyped, import-not-found, unused-ignore]
from opacus.accountants.utils import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    get_noise_multiplier,
)

from secagg.errors import ConfigurationError
from secagg.fl.privacy_ledger import BUDGET_SLACK, LedgerEntry, PrivacyBudgetExceeded, PrivacyLedger

__all__ = [
    "DPPolicy",
    "PrivacyBudgetExceeded",
    "PrivateTrainer",
    "RoundResult",
    "epsilon_for",
    "load_vector",
    "model_to_vector",
    "state_dict_to_vector",
    "vector_to_state_dict",
]

_ACCOUNTANTS = ("rdp", "prv")


def _positive(value: Any, name: str, *, integer: bool = False) -> None:
    if integer:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be a positive int")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive finite number")


@dataclass(frozen=True)
class DPPolicy:
    """A silo's DP-SGD policy: exactly one of noise_multiplier / target_epsilon, and the rounds budget.

    With `target_epsilon`, the noise multiplier is chosen (Opacus' `get_noise_multiplier`) so that all
    `rounds` rounds of `local_epochs` epochs end at or below it, and the budget is target_epsilon. With
    `noise_multiplier`, the budget is the epsilon those `rounds` rounds reach. Either way the ledger refuses
    any round beyond the budget.
    """

    max_grad_norm: float
    delta: float
    rounds: int
    local_epochs: int = 1
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    accountant: str = "rdp"
    poisson_sampling: bool = True

    def __post_init__(self) -> None:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigurationError("give exactly one of noise_multiplier and target_epsilon")
        if self.noise_multiplier is not None:
            _positive(self.noise_multiplier, "noise_multiplier")
        if self.target_epsilon is not None:
            _positive(self.target_epsilon, "target_epsilon")
        _positive(self.max_grad_norm, "max_grad_norm")
        if isinstance(self.delta, bool) or not isinstance(self.delta, float) or not 0 < self.delta < 1:
            raise ConfigurationError("delta must be a float in (0, 1)")
        _positive(self.rounds, "rounds", integer=True)
        _positive(self.local_epochs, "local_epochs", integer=True)
        if self.accountant not in _ACCOUNTANTS:
            raise ConfigurationError(f"accountant must be one of {_ACCOUNTANTS}")
        if not isinstance(self.poisson_sampling, bool):
            raise ConfigurationError("poisson_sampling must be a bool")


def epsilon_for(history: list[tuple[float, float, int]], delta: float, accountant: str = "rdp") -> float:
    """Epsilon of an Opacus accountant holding `history` ((noise_multiplier, sample_rate, steps) triples)."""
    if not history:
        return 0.0
    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(n), float(q), int(s)) for n, q, s in history]
    return float(acc.get_epsilon(delta=delta))


# ---------------------------------------------------------------------------- weights <-> vector


def state_dict_to_vector(state: Mapping[str, Any]) -> NDArray[np.float32]:
    """The floating-point entries of a state_dict, flattened in key order into one float32 vector."""
    parts = [
        np.asarray(t.detach().cpu().reshape(-1).to(torch.float32).numpy(), dtype=np.float32)
        for t in state.values()
        if torch.is_tensor(t) and torch.is_floating_point(t)
    ]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def vector_to_state_dict(vector: NDArray[Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """A state_dict shaped like `template` whose floating entries come from `vector` (others copied)."""
    vec = np.asarray(vector)
    if vec.ndim != 1 or not np.issubdtype(vec.dtype, np.floating):
        raise ConfigurationError("weights must be a flat floating-point vector")
    out: dict[str, Any] = {}
    offset = 0
    for key, t in template.items():
        if torch.is_tensor(t) and torch.is_floating_point(t):
            n = int(t.numel())
            if offset + n > vec.shape[0]:
                raise ConfigurationError("weight vector is shorter than the model")
            chunk = torch.from_numpy(np.array(vec[offset : offset + n], dtype=np.float32))
            out[key] = chunk.reshape(t.shape).to(dtype=t.dtype, device=t.device)
            offset += n
        else:
            out[key] = copy.deepcopy(t)
    if offset != vec.shape[0]:
        raise ConfigurationError("weight vector is longer than the model")
    return out


def model_to_vector(model: Any) -> NDArray[np.float32]:
    """A module's floating-point state as one float32 vector."""
    return state_dict_to_vector(model.state_dict())


def load_vector(model: Any, vector: NDArray[Any]) -> None:
    """Load a flat vector (from `model_to_vector`'s layout) into a module, in place."""
    model.load_state_dict(vector_to_state_dict(vector, model.state_dict()))


# -------------------------------------------------------------------------------------- trainer


@dataclass(frozen=True)
class RoundResult:
    """One trained round: the new weights (flat float32), cumulative epsilon, steps and mean loss."""

    round: int
    weights: NDArray[np.float32]
    epsilon: float
    steps: int
    mean_loss: float


class PrivateTrainer:
    """A silo's DP-SGD trainer: Opacus' PrivacyEngine attached once, rounds checked against the budget.

    `model`, `optimizer` and `data_loader` are the silo's plain torch objects (the optimizer over the
    model's parameters); `loss_fn(outputs, targets)` defaults to cross-entropy. Batches are (inputs,
    targets) pairs. `ledger` is a PrivacyLedger or a path for one (created with this policy's delta,
    budget and accountant; its history is loaded into the engine's accountant).
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        data_loader: Any,
        policy: DPPolicy,
        *,
        loss_fn: Callable[[Any, Any], Any] | None = None,
        ledger: PrivacyLedger | str | os.PathLike[str] | None = None,
        noise_generator: Any = None,
        secure_mode: bool = False,
    ) -> None:
        if not isinstance(policy, DPPolicy):
            raise ConfigurationError("policy must be a DPPolicy")
        n_batches = len(data_loader)
        if n_batches < 1:
            raise ConfigurationError("the data loader yields no batches")
        self._policy = policy
        self._sample_rate = 1.0 / n_batches  # what Opacus' make_private uses for accounting
        self._steps_per_round = policy.local_epochs * n_batches
        total_steps = policy.rounds * self._steps_per_round
        if policy.noise_multiplier is not None:
            noise = float(policy.noise_multiplier)
            budget = epsilon_for([(noise, self._sample_rate, total_steps)], policy.delta, policy.accountant)
        else:
            assert policy.target_epsilon is not None
            noise = float(
                get_noise_multiplier(
                    target_epsilon=policy.target_epsilon,
                    target_delta=policy.delta,
                    sample_rate=self._sample_rate,
                    steps=total_steps,
                    accountant=policy.accountant,
                )
            )
            budget = float(policy.target_epsilon)
        self._noise = noise
        self._budget = budget
        if ledger is None or isinstance(ledger, PrivacyLedger):
            self._ledger = ledger
        else:
            self._ledger = PrivacyLedger(
                ledger, delta=policy.delta, epsilon_budget=budget, accountant=policy.accountant
            )
        if self._ledger is not None:
            lg = self._ledger
            if lg.delta != policy.delta or lg.accountant != policy.accountant:
                raise ConfigurationError("the ledger was created with another delta or accountant")
            if not math.isclose(lg.epsilon_budget, budget, rel_tol=1e-12):
                raise ConfigurationError("the ledger was created with another epsilon budget")
        self._model = model
        self._loss_fn: Callable[[Any, Any], Any] = loss_fn if loss_fn is not None else torch.nn.CrossEntropyLoss()
        self._engine = PrivacyEngine(accountant=policy.accountant, secure_mode=secure_mode)
        self._dp_model, self._optimizer, self._loader = self._engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=data_loader,
            noise_multiplier=noise,
            max_grad_norm=policy.max_grad_norm,
            poisson_sampling=policy.poisson_sampling,
            noise_generator=noise_generator,
        )
        if self._ledger is not None:
            self._engine.accountant.history = self._ledger.history()
        self._last_round: int | None = self._ledger.last_round if self._ledger is not None else None

    # ------------------------------------------------------------------ facts

    @property
    def policy(self) -> DPPolicy:
        return self._policy

    @property
    def noise_multiplier(self) -> float:
        return self._noise

    @property
    def sample_rate(self) -> float:
        return self._sample_rate

    @property
    def steps_per_round(self) -> int:
        return self._steps_per_round

    @property
    def epsilon_budget(self) -> float:
        return self._budget

    @property
    def ledger(self) -> PrivacyLedger | None:
        return self._ledger

    @property
    def privacy_engine(self) -> Any:
        """Opacus' engine (its `accountant` holds the composed history of every round)."""
        return self._engine

    @property
    def epsilon(self) -> float:
        """Cumulative epsilon spent so far, from Opacus' accountant (at the policy's delta)."""
        return float(self._engine.get_epsilon(self._policy.delta)) if len(self._engine.accountant) else 0.0

    def history(self) -> list[tuple[float, float, int]]:
        """A copy of the accountant's history: (noise_multiplier, sample_rate, steps) triples."""
        return [(float(n), float(q), int(s)) for n, q, s in self._engine.accountant.history]

    def projected_epsilon(self, rounds: int = 1) -> float:
        """Epsilon after `rounds` more rounds of this policy's steps (a hypothetical accountant history)."""
        extra = (self._noise, self._sample_rate, rounds * self._steps_per_round)
        return epsilon_for([*self.history(), extra], self._policy.delta, self._policy.accountant)

    # ------------------------------------------------------------------ weights

    def get_weights(self) -> NDArray[np.float32]:
        """The model's floating-point state as a flat float32 vector."""
        return model_to_vector(self._model)

    def set_weights(self, vector: NDArray[Any]) -> None:
        """Load a flat vector (e.g. the new global model) into the model."""
        load_vector(self._model, vector)

    # ------------------------------------------------------------------ training

    def train_round(self, round_number: int | None = None) -> RoundResult:
        """Check the budget, train local_epochs epochs with DP-SGD, record the round, return the weights."""
        rnd = round_number if round_number is not None else (0 if self._last_round is None else self._last_round + 1)
        if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
            raise ConfigurationError("round number must be a non-negative int")
        if self._last_round is not None and rnd <= self._last_round:
            raise ConfigurationError(f"round {rnd} was already trained (last: {self._last_round})")
        projected = self.projected_epsilon(1)
        if self._ledger is not None:
            self._ledger.check(projected, rnd)
        elif not projected <= self._budget * (1 + BUDGET_SLACK):
            raise PrivacyBudgetExceeded(
                f"round {rnd} would bring epsilon to {projected:.4f}, over the budget of {self._budget:.4f}"
            )
        steps_before = sum(s for _, _, s in self.history())
        self._dp_model.train()
        total, batches = 0.0, 0
        for _ in range(self._policy.local_epochs):
            for batch in self._loader:
                inputs, targets = batch[0], batch[1]
                self._optimizer.zero_grad()
                outputs = self._dp_model(inputs)
                # An empty Poisson batch still takes its (pure-noise) step: skipping it would reveal it.
                empty = int(outputs.shape[0]) == 0
                loss = outputs.sum() * 0.0 if empty else self._loss_fn(outputs, targets)
                loss.backward()
                self._optimizer.step()
                total += float(loss.detach())
                batches += 1
        steps = sum(s for _, _, s in self.history()) - steps_before
        eps = self.epsilon
        if self._ledger is not None:
            self._ledger.record(LedgerEntry(rnd, steps, self._noise, self._sample_rate, eps))
        self._last_round = rnd
        return RoundResult(rnd, self.get_weights(), eps, steps, total / batches if batches else 0.0)

    def __repr__(self) -> str:
        return (
            f"PrivateTrainer(noise_multiplier={self._noise:.4g}, sample_rate={self._sample_rate:.4g}, "
            f"steps_per_round={self._steps_per_round}, epsilon={self.epsilon:.4f}/{self._budget:.4f})"
        )
