"""Strategies, in the spirit of Flower's: configure a round, aggregate its results, evaluate.

`FedAvg` is the weighted average of the silos' model updates (McMahan et al. 2017). `SecureFedAvg` is the same
strategy run through SecAgg+: the server receives only the weighted mean, never one silo's update. Swapping
`FedAvg(...)` for `SecureFedAvg(...)` is the only change a user makes; `secure(strategy)` wraps any strategy
whose aggregation is a weighted mean, and refuses, with a clear error, strategies that need the individual
updates (median, Krum, trimmed mean...), which secure aggregation cannot serve by design.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from secagg.errors import ConfigurationError
from secagg.fl.parameters import Parameters, flatten, unflatten


class IndividualUpdatesRequired(ConfigurationError):  # noqa: N818 - names the refusal
    """The strategy aggregates something other than a weighted mean, so it cannot run on SecAgg."""


@dataclass(frozen=True)
class FitInstructions:
    """What every silo is asked to do in a training round (all of it is hashed into the round's task)."""

    local_epochs: int = 1
    learning_rate: float = 0.1
    batch_size: int = 32
    extra: dict[str, float | int | str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float | int | str]:
        """A flat, JSON-able view (canonical order when encoded)."""
        return {
            "local_epochs": self.local_epochs,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            **self.extra,
        }


@dataclass(frozen=True)
class Update:
    """One silo's result of a training round: a flat float32 model update (new - old) and its weight."""

    delta: NDArray[np.float32]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationResult:
    """Federated evaluation: example-weighted means over the silos that answered."""

    loss: float
    accuracy: float
    num_examples: int


class Strategy:
    """Base class. A strategy keeps the global model and turns a round's aggregate into the next model."""

    requires_individual_updates: bool = False
    """True for strategies that must see each silo's update (they cannot run on secure aggregation)."""
    secure: bool = False
    """True when the round's aggregation must go through SecAgg+ (the server sees only the weighted mean)."""

    def __init__(
        self,
        *,
        initial_parameters: Parameters,
        fit: FitInstructions | None = None,
        clip: float = 1.0,
        min_fit_silos: int = 2,
    ) -> None:
        if not initial_parameters:
            raise ConfigurationError("initial_parameters must hold at least one array")
        if not (np.isfinite(clip) and clip > 0):
            raise ConfigurationError("clip must be a positive number")
        self._flat, self._shapes = flatten(initial_parameters)
        self.fit_instructions = fit or FitInstructions()
        self.clip = float(clip)
        self.min_fit_silos = min_fit_silos
        self.history: list[dict[str, Any]] = []

    # -- the model -------------------------------------------------------------------------------------

    @property
    def parameters(self) -> Parameters:
        """The current global model as a list of arrays."""
        return unflatten(self._flat, self._shapes)

    @property
    def flat_parameters(self) -> NDArray[np.float32]:
        """The current global model as one float32 vector (what silos receive)."""
        return self._flat.copy()

    @property
    def dim(self) -> int:
        """Number of model coordinates."""
        return int(self._flat.shape[0])

    # -- rounds ----------------------------------------------------------------------------------------

    def configure_fit(self, server_round: int) -> FitInstructions:
        """Instructions for the silos in this round (override to schedule learning rates, epochs...)."""
        return self.fit_instructions

    def aggregate_fit(self, server_round: int, updates: Sequence[Update]) -> Parameters:
        """Plaintext aggregation of individual updates (only for strategies that are not secure)."""
        raise NotImplementedError

    def apply_weighted_mean(self, server_round: int, mean_delta: NDArray[np.floating[Any]], total_weight: int) -> None:
        """Move the model by the example-weighted mean update (what SecAgg+ delivers)."""
        if mean_delta.shape != self._flat.shape:
            raise ConfigurationError(f"aggregate has {mean_delta.shape[0]} coordinates, the model {self.dim}")
        self._flat = (self._flat.astype(np.float64) + mean_delta).astype(np.float32)
        self.history.append({"round": server_round, "total_weight": int(total_weight)})


class FedAvg(Strategy):
    """Federated averaging: the new model is the old one plus the example-weighted mean of the updates."""

    def aggregate_fit(self, server_round: int, updates: Sequence[Update]) -> Parameters:
        """Weighted mean of the clipped updates (clipped as the secure path clips them, for comparability)."""
        if len(updates) < self.min_fit_silos:
            raise ConfigurationError(f"{len(updates)} updates, fewer than min_fit_silos={self.min_fit_silos}")
        total = sum(u.num_examples for u in updates)
        acc = np.zeros(self.dim, dtype=np.float64)
        for u in updates:
            acc += u.num_examples * np.clip(u.delta.astype(np.float64), -self.clip, self.clip)
        self.apply_weighted_mean(server_round, acc / total, total)
        return self.parameters


class SecureFedAvg(FedAvg):
    """FedAvg through SecAgg+: identical maths, but the server only ever sees the weighted mean."""

    secure = True

    def aggregate_fit(self, server_round: int, updates: Sequence[Update]) -> Parameters:
        """Refused: a secure strategy never receives individual updates."""
        raise IndividualUpdatesRequired(
            "SecureFedAvg aggregates through SecAgg+; individual updates never reach the server"
        )


class FedMedian(Strategy):
    """Coordinate-wise median of the updates (robust aggregation). Needs every individual update."""

    requires_individual_updates = True

    def aggregate_fit(self, server_round: int, updates: Sequence[Update]) -> Parameters:
        """Coordinate-wise median of the clipped updates."""
        stacked = np.stack([np.clip(u.delta, -self.clip, self.clip) for u in updates])
        self.apply_weighted_mean(server_round, np.median(stacked, axis=0), sum(u.num_examples for u in updates))
        return self.parameters


def secure(strategy: Strategy) -> Strategy:
    """The same strategy, aggregated through SecAgg+. Refuses strategies that need individual updates."""
    if strategy.requires_individual_updates:
        raise IndividualUpdatesRequired(
            f"{type(strategy).__name__} needs every silo's individual update (it is not a weighted mean), "
            "which secure aggregation hides by design; use a weighted-mean strategy such as FedAvg"
        )
    wrapped = copy.copy(strategy)
    wrapped.secure = True
    return wrapped
