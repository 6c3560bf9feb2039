"""Federated learning on top of SecAgg+: drop-in strategy, task binding, the demo end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from secagg.crypto.rng import DeterministicRandom
from secagg.errors import ConfigurationError
from secagg.fl.digits import DigitsTrainer, initial_parameters, make_shards
from secagg.fl.federation import InProcessFederation, run_federated
from secagg.fl.parameters import flatten, unflatten
from secagg.fl.strategy import FedAvg, FedMedian, FitInstructions, IndividualUpdatesRequired, SecureFedAvg, secure
from secagg.fl.task import RoundTask, task_inputs
from secagg.protocol.config import Mode
from secagg.protocol.recipes import task_digest
from secagg.protocol.rules import ClientState
from secagg.simulation import build, make_config, run

FIT = FitInstructions(local_epochs=1, learning_rate=0.5, batch_size=32)


def _federation(seed: int = 1) -> InProcessFederation:
    shards = make_shards(4, seed=seed)
    return InProcessFederation(
        {i + 1: DigitsTrainer(s, seed=i) for i, s in enumerate(shards)}, rng=DeterministicRandom(seed)
    )


def test_secure_training_equals_plain_fedavg_within_quantisation() -> None:
    """Same data, seeds and rounds: the secure model tracks plain FedAvg to within the quantisation step
    accumulated over the rounds (16 bits over [-1, 1]: 3e-5 per coordinate per round)."""
    rounds = 4
    plain = FedAvg(initial_parameters=initial_parameters(0), fit=FIT)
    sec = SecureFedAvg(initial_parameters=initial_parameters(0), fit=FIT)
    plain_rep = run_federated(plain, _federation(), rounds)
    secure_rep = run_federated(sec, _federation(), rounds)
    step = 2.0 / ((1 << 16) - 1)
    gap = np.max(np.abs(plain.flat_parameters - sec.flat_parameters))
    assert gap <= 2 * rounds * step
    assert gap > 0  # it did go through the quantiser
    for a, b in zip(plain_rep, secure_rep, strict=True):
        assert abs(a.accuracy - b.accuracy) <= 0.02
        assert abs(a.loss - b.loss) <= 0.02
    assert secure_rep[-1].accuracy > 0.7  # 4 rounds of one epoch on a skewed split


def test_strategies_needing_individual_updates_are_refused() -> None:
    with pytest.raises(IndividualUpdatesRequired, match="individual update"):
        secure(FedMedian(initial_parameters=initial_parameters(0)))
    wrapped = secure(FedAvg(initial_parameters=initial_parameters(0)))
    assert wrapped.secure
    with pytest.raises(IndividualUpdatesRequired):
        SecureFedAvg(initial_parameters=initial_parameters(0)).aggregate_fit(0, [])


def test_fedmedian_runs_in_plaintext_only() -> None:
    med = FedMedian(initial_parameters=initial_parameters(0), fit=FIT)
    reps = run_federated(med, _federation(), 2)
    assert reps[-1].accuracy > 0.5


@pytest.mark.property("P4")
def test_round_task_encoding_round_trips_and_binds_everything() -> None:
    flat = np.arange(10, dtype=np.float32)
    task = RoundTask("fit", 3, flat, {"learning_rate": 0.1, "local_epochs": 2})
    back = RoundTask.decode(task.encode())
    assert back.kind == "fit" and back.round == 3 and back.instructions == task.instructions
    assert np.array_equal(back.parameters, flat)
    other = RoundTask("fit", 3, flat, {"learning_rate": 0.2, "local_epochs": 2})
    moved = RoundTask("fit", 3, flat + np.float32(1e-3), task.instructions)
    assert len({task.digest(), other.digest(), moved.digest()}) == 3
    assert task.digest() == task_digest(task.encode())


@pytest.mark.property("P4", "P8")
def test_a_silo_refuses_a_task_that_does_not_match_the_round_hash() -> None:
    """The server publishes one model but the round is bound to another (A9 at the task level): the silo
    aborts with BAD_INPUT before masking anything; the others' round continues."""
    shards = make_shards(4, seed=2)
    cfg = make_config(4, 650, max_weight=1024)
    setup = build(cfg, seed=2)
    task = RoundTask("fit", 0, np.concatenate([p.ravel() for p in initial_parameters(0)]), FIT.as_dict())
    blob = task.encode()
    cfg_bound = cfg  # model_hash of the config is all zeros: no task has that digest
    for cid, client in setup.clients.items():
        client.provide_input(task_inputs(DigitsTrainer(shards[cid - 1]), lambda digest, b=blob: b))
    run(setup)
    assert cfg_bound.model_hash != task.digest()
    for client in setup.clients.values():
        assert client.state is ClientState.ABORTED and client.error is not None
        assert client.error.code == "BAD_INPUT" and "model hash" in str(client.error)
    assert setup.server.result is None


def test_parameters_flatten_round_trip_and_refuse_nan() -> None:
    params = [np.ones((2, 3), np.float32), np.arange(4, dtype=np.float32)]
    flat, shapes = flatten(params)
    back = unflatten(flat, shapes)
    assert all(np.array_equal(a, b) for a, b in zip(params, back, strict=True))
    with pytest.raises(ConfigurationError):
        flatten([np.array([np.nan], np.float32)])
    with pytest.raises(ConfigurationError):
        unflatten(flat[:-1], shapes)


def test_torch_state_dict_round_trip() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("opacus")
    from secagg.fl.opacus_dp import state_dict_to_vector, vector_to_state_dict

    model = torch.nn.Linear(3, 2)
    flat = state_dict_to_vector(model.state_dict())
    assert flat.shape == (8,)
    restored = vector_to_state_dict(flat, model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored[name], tensor)


def test_demo_end_to_end_over_grpc(tmp_path: Path) -> None:
    """The README's main job, reduced: 3 hospital processes, 4 rounds, real gRPC + mutual TLS."""
    from secagg.demo import run_demo

    lines: list[str] = []
    report = run_demo(tmp_path / "demo", silos=3, rounds=4, mode=Mode.SEMI_HONEST, echo=lines.append)
    assert report["final_accuracy"]["secure_fedavg"] >= 0.8
    assert report["max_accuracy_gap_secure_vs_plain"] <= 0.02
    assert (tmp_path / "demo" / "accuracy.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved["accuracy"]["secure_fedavg"] == report["accuracy"]["secure_fedavg"]
    assert report["audit_records"] > 0
    assert any("secure round   4/4" in line for line in lines)
