"""Federated training with DP-SGD on every silo (Opacus): epsilon composes, the budget is enforced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("opacus")

from secagg.crypto.rng import DeterministicRandom
from secagg.errors import RoundAborted
from secagg.fl.digits import make_shards
from secagg.fl.digits_dp import DigitsDPTrainer, initial_parameters_torch
from secagg.fl.federation import InProcessFederation, run_federated
from secagg.fl.opacus_dp import epsilon_for
from secagg.fl.strategy import FitInstructions, SecureFedAvg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _trainers(tmp: Path, rounds: int) -> dict[int, DigitsDPTrainer]:
    shards = make_shards(3, seed=0)
    return {
        i + 1: DigitsDPTrainer(
            s, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, rounds=rounds, ledger_path=tmp / f"{i}.json", seed=i
        )
        for i, s in enumerate(shards)
    }


@pytest.mark.property("P15")
def test_secure_dp_training_reports_opacus_epsilon_and_learns(tmp_path: Path) -> None:
    trainers = _trainers(tmp_path, rounds=3)
    fed = InProcessFederation(trainers, rng=DeterministicRandom(1))
    strategy = SecureFedAvg(initial_parameters=initial_parameters_torch(0), fit=FitInstructions(1, 0.5, 32))
    reps = run_federated(strategy, fed, 3)
    assert reps[-1].accuracy > 0.5
    for i, t in trainers.items():
        ledger = json.loads((tmp_path / f"{i - 1}.json").read_text())
        assert [r["round"] for r in ledger["rounds"]] == [0, 1, 2]
        history = [(r["noise_multiplier"], r["sample_rate"], r["steps"]) for r in ledger["rounds"]]
        assert t.epsilon == pytest.approx(epsilon_for(history, 1e-5), rel=1e-9)
        assert 0 < t.epsilon <= t.epsilon_budget * (1 + 1e-9)


@pytest.mark.property("P8", "P15")
def test_a_round_past_the_budget_is_refused_and_produces_no_aggregate(tmp_path: Path) -> None:
    trainers = _trainers(tmp_path, rounds=1)  # the budget covers one round
    fed = InProcessFederation(trainers, rng=DeterministicRandom(2))
    strategy = SecureFedAvg(initial_parameters=initial_parameters_torch(0), fit=FitInstructions(1, 0.5, 32))
    run_federated(strategy, fed, 1)
    with pytest.raises(RoundAborted):
        run_federated(strategy, fed, 1, first_round=1)  # every silo refuses to train: no aggregate
    for client in fed.last_clients.values():
        assert client.error is not None and client.error.code == "BAD_INPUT"
        assert "PrivacyBudgetExceeded" in str(client.error)
    for i in range(3):
        ledger = json.loads((tmp_path / f"{i}.json").read_text())
        assert len(ledger["rounds"]) == 1  # nothing was spent on the refused round
