"""Distributed DP through the real protocol: silos encode with discrete noise, SecAgg+ sums ring integers,
the server decodes the noisy sum (Kairouz et al. 2021). Checks the decoded noise and its unbiasedness."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from secagg.crypto.rng import DeterministicRandom
from secagg.fl import ddp
from secagg.fl.digits import DigitsTrainer, initial_parameters, make_shards
from secagg.fl.federation import InProcessFederation, run_federated
from secagg.fl.strategy import FitInstructions, SecureFedAvg, Update
from secagg.fl.task import RoundTask, ddp_instructions
from secagg.protocol.config import RoundConfig

DIM = 300


class FixedUpdate:
    """A trainer whose update is a fixed vector (so the noise can be isolated)."""

    def __init__(self, delta: NDArray[np.float32]) -> None:
        self.delta = delta

    def fit(self, parameters: NDArray[np.float32], instructions: dict[str, Any]) -> Update:
        return Update(self.delta, 10)

    def evaluate(self, parameters: NDArray[np.float32]) -> tuple[float, float, int]:
        return 0.0, 1.0, 10


def _params(n: int, epsilon: float = 5.0) -> ddp.DDPParams:
    return ddp.calibrate(
        mechanism="gaussian", epsilon=epsilon, delta=1e-5, dim=DIM, clip=1.0, n_min=n, rounds=10, modulus=1 << 32
    )


def _one_round(deltas: list[NDArray[np.float32]], params: ddp.DDPParams, seed: int) -> NDArray[np.float64]:
    fed = InProcessFederation({i + 1: FixedUpdate(d) for i, d in enumerate(deltas)}, rng=DeterministicRandom(seed))
    rotation = DeterministicRandom(seed + 1000).random_bytes(32)
    task = RoundTask("fit", 0, np.zeros(DIM, np.float32), ddp_instructions(params, rotation))
    res = fed.secure_round(0, task, dim=params.padded_dim, clip=1.0, encoding="integers")
    assert res.mean is None and len(res.survivors) == len(deltas)
    return ddp.decode(res.sum, params, rotation, len(res.survivors))


@pytest.mark.property("P15")
def test_decoded_noise_has_the_calibrated_variance_and_zero_mean() -> None:
    n = 4
    params = _params(n)
    noise = np.concatenate([_one_round([np.zeros(DIM, np.float32)] * n, params, seed) for seed in range(4)])
    want = params.noise_std(n) ** 2
    assert noise.var() == pytest.approx(want, rel=0.15)
    assert abs(noise.mean()) < 5 * params.noise_std(n) / np.sqrt(noise.size)


@pytest.mark.property("P6", "P15")
def test_the_decoded_sum_is_the_true_sum_plus_unbiased_noise() -> None:
    n = 4
    params = _params(n, epsilon=50.0)  # little noise: the sum itself must come through
    rng = np.random.default_rng(0)
    deltas = [(rng.standard_normal(DIM) * 0.02).astype(np.float32) for _ in range(n)]
    errors = np.concatenate([_one_round(deltas, params, seed) - np.sum(deltas, axis=0) for seed in range(4)])
    std = params.noise_std(n)
    assert abs(errors.mean()) < 5 * np.sqrt(std**2 + 1 / params.gamma**2) / np.sqrt(errors.size)
    assert errors.std() < 2 * std + 2 / params.gamma


@pytest.mark.property("P4", "P15")
def test_round_config_with_integer_encoding_round_trips_canonically() -> None:
    from secagg.simulation import make_config

    cfg = make_config(4, 16)
    ints = RoundConfig(**{**cfg.__dict__, "encoding": "integers"})
    assert RoundConfig.decode(ints.encode()) == ints
    assert ints.encode()[:2] == b"\x00\x02" and cfg.encode()[:2] == b"\x00\x01"
    assert ints.config_hash() != cfg.config_hash()


@pytest.mark.property("P15")
def test_training_with_distributed_dp_learns() -> None:
    shards = make_shards(4, seed=1)
    fed = InProcessFederation(
        {i + 1: DigitsTrainer(s, seed=i) for i, s in enumerate(shards)}, rng=DeterministicRandom(5)
    )
    params = ddp.calibrate(
        mechanism="gaussian", epsilon=100.0, delta=1e-5, dim=650, clip=1.0, n_min=4, rounds=5, modulus=1 << 32
    )
    strategy = SecureFedAvg(initial_parameters=initial_parameters(0), fit=FitInstructions(1, 0.5, 32))
    reps = run_federated(strategy, fed, 5, distributed_dp=params, rng=DeterministicRandom(6))
    # four silos and an L2 clip of 1 over 650 weights: a loose epsilon still learns, slowly
    assert reps[-1].accuracy > 0.5 and reps[-1].accuracy > reps[0].accuracy
    assert params.epsilon(5, 1e-5) <= 100.0 * (1 + 1e-6)


def test_silos_refuse_distributed_dp_instructions_that_do_not_match_the_round() -> None:
    """A task asking for the distributed-DP encoding in a quantised round (or with another dimension) is
    refused by every silo (BAD_INPUT): no aggregate."""
    from secagg.errors import RoundAborted

    params = _params(3)
    fed = InProcessFederation(
        {i + 1: FixedUpdate(np.zeros(DIM, np.float32)) for i in range(3)}, rng=DeterministicRandom(9)
    )
    task = RoundTask("fit", 0, np.zeros(DIM, np.float32), ddp_instructions(params, bytes(32)))
    with pytest.raises(RoundAborted):
        fed.secure_round(0, task, dim=params.padded_dim, clip=1.0, encoding="quantised")
    for client in fed.last_clients.values():
        assert client.error is not None and client.error.code == "BAD_INPUT"
        assert "distributed-DP" in str(client.error)


def test_silos_refuse_less_distributed_dp_noise_than_their_policy() -> None:
    """A server asking each silo for little noise (here: calibrated for epsilon 50 instead of 5) is refused by
    silos whose policy floors their own noise: BAD_INPUT before anything is masked, no aggregate. The same
    request under the floor, or a floor below it, runs."""
    from secagg.errors import RoundAborted
    from secagg.protocol.config import ClientPolicy

    strong, weak = _params(3, epsilon=5.0), _params(3, epsilon=50.0)
    assert weak.local_noise_multiplier < strong.local_noise_multiplier
    floor = (weak.local_noise_multiplier + strong.local_noise_multiplier) / 2
    policy = ClientPolicy(require_derived_degree=False, min_ddp_local_noise_multiplier=floor)

    def federation(seed: int) -> InProcessFederation:
        trainers = {i + 1: FixedUpdate(np.zeros(DIM, np.float32)) for i in range(3)}
        return InProcessFederation(trainers, rng=DeterministicRandom(seed), policy=policy)

    fed = federation(11)
    task = RoundTask("fit", 0, np.zeros(DIM, np.float32), ddp_instructions(weak, bytes(32)))
    with pytest.raises(RoundAborted):
        fed.secure_round(0, task, dim=weak.padded_dim, clip=1.0, encoding="integers")
    for client in fed.last_clients.values():
        assert client.error is not None and client.error.code == "BAD_INPUT"
        assert "below its policy" in str(client.error)
        assert not client.holds_round_secrets
    fed = federation(12)
    task = RoundTask("fit", 0, np.zeros(DIM, np.float32), ddp_instructions(strong, bytes(32)))
    res = fed.secure_round(0, task, dim=strong.padded_dim, clip=1.0, encoding="integers")
    assert len(res.survivors) == 3


def test_local_noise_multiplier_is_the_silos_own_noise_over_its_sensitivity() -> None:
    p = _params(4)
    assert p.local_noise_multiplier == pytest.approx(np.sqrt(p.local_variance) / p.l2_bound)
    assert p.l2_bound >= p.gamma * p.clip  # the rounded vector's bound covers the scaled clip
