"""Silo DP-SGD with Opacus: epsilon from Opacus' accountant, composition over rounds, budget, ledger."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secagg.errors import ConfigurationError, EncodingError
from secagg.fl.privacy_ledger import LedgerEntry, PrivacyBudgetExceeded, PrivacyLedger

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from opacus.accountants import RDPAccountant  # noqa: E402

from secagg.fl import opacus_dp  # noqa: E402
from secagg.fl.opacus_dp import DPPolicy, PrivateTrainer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N_SAMPLES, BATCH = 64, 16  # 4 batches per epoch: sample rate 1/4


def _silo(seed: int = 0) -> tuple[Any, Any, Any]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SAMPLES, 4, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, loader


def _trainer(policy: DPPolicy, seed: int = 0, **kw: Any) -> PrivateTrainer:
    model, opt, loader = _silo(seed)
    return PrivateTrainer(model, opt, loader, policy, noise_generator=torch.Generator().manual_seed(seed), **kw)


def _rdp(noise: float, rate: float, steps: int, delta: float) -> float:
    acc = RDPAccountant()
    acc.history = [(noise, rate, steps)]
    return float(acc.get_epsilon(delta=delta))


POLICY = DPPolicy(max_grad_norm=1.0, delta=1e-5, rounds=3, local_epochs=2, noise_multiplier=1.1)


@pytest.mark.property("P15")
def test_policy_validation() -> None:
    with pytest.raises(ConfigurationError):
        DPPolicy(max_grad_norm=1.0, delta=1e-5, rounds=3)
    with pytest.raises(ConfigurationError):
        DPPolicy(max_grad_norm=1.0, delta=1e-5, rounds=3, noise_multiplier=1.0, target_epsilon=2.0)
    for bad in (
        {"max_grad_norm": 0.0},
        {"delta": 1.0},
        {"delta": 0.0},
        {"rounds": 0},
        {"local_epochs": 0},
        {"noise_multiplier": -1.0},
        {"accountant": "gdp"},
        {"max_grad_norm": float("nan")},
    ):
        kw: dict[str, Any] = {"max_grad_norm": 1.0, "delta": 1e-5, "rounds": 3, "noise_multiplier": 1.0}
        kw.update(bad)
        with pytest.raises(ConfigurationError):
            DPPolicy(**kw)


@pytest.mark.property("P15")
def test_epsilon_is_opacus_accountant_and_composes_across_rounds() -> None:
    tr = _trainer(POLICY)
    assert tr.sample_rate == pytest.approx(BATCH / N_SAMPLES)
    assert tr.steps_per_round == 2 * N_SAMPLES // BATCH
    before = tr.get_weights()
    r1 = tr.train_round()
    assert r1.round == 0 and r1.steps == tr.steps_per_round
    assert r1.epsilon == pytest.approx(_rdp(1.1, 0.25, r1.steps, 1e-5), rel=1e-12)
    assert r1.weights.dtype == np.float32 and r1.weights.shape == before.shape
    assert not np.array_equal(r1.weights, before)
    r2 = tr.train_round()
    # the same engine composes: two rounds = one accountant over all steps
    assert r2.epsilon == pytest.approx(_rdp(1.1, 0.25, r1.steps + r2.steps, 1e-5), rel=1e-12)
    assert r2.epsilon > r1.epsilon
    assert tr.epsilon == r2.epsilon
    assert sum(s for _, _, s in tr.history()) == r1.steps + r2.steps


@pytest.mark.property("P15")
def test_projection_matches_the_next_round() -> None:
    tr = _trainer(POLICY)
    projected = tr.projected_epsilon()
    got = tr.train_round().epsilon
    assert projected == pytest.approx(got, rel=1e-12)
    assert tr.projected_epsilon(2) == pytest.approx(_rdp(1.1, 0.25, 3 * tr.steps_per_round, 1e-5), rel=1e-12)


@pytest.mark.property("P15")
def test_budget_exhaustion_is_refused_before_training() -> None:
    tr = _trainer(POLICY)
    assert tr.epsilon_budget == pytest.approx(_rdp(1.1, 0.25, 3 * tr.steps_per_round, 1e-5), rel=1e-12)
    for _ in range(3):
        tr.train_round()
    weights = tr.get_weights()
    spent = tr.epsilon
    with pytest.raises(PrivacyBudgetExceeded, match="over the budget"):
        tr.train_round()
    assert np.array_equal(tr.get_weights(), weights)  # nothing trained
    assert tr.epsilon == spent


@pytest.mark.property("P15")
def test_target_epsilon_calibrates_the_noise() -> None:
    policy = DPPolicy(max_grad_norm=1.0, delta=1e-5, rounds=2, local_epochs=1, target_epsilon=3.0)
    tr = _trainer(policy)
    assert tr.epsilon_budget == 3.0
    final = _rdp(tr.noise_multiplier, 0.25, 2 * tr.steps_per_round, 1e-5)
    assert 3.0 - 0.05 <= final <= 3.0
    tr.train_round()
    r = tr.train_round()
    assert r.epsilon <= 3.0
    with pytest.raises(PrivacyBudgetExceeded):
        tr.train_round()


@pytest.mark.property("P15")
def test_ledger_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "silo-a" / "ledger.json"
    tr = _trainer(POLICY, ledger=path)
    r0 = tr.train_round()
    doc = json.loads(path.read_text())
    assert [e["round"] for e in doc["rounds"]] == [0]
    assert doc["rounds"][0]["epsilon"] == r0.epsilon
    assert not list(path.parent.glob("*.tmp"))  # atomic writes leave no temporary file

    # restart: a fresh model, optimizer and engine; the ledger restores the accountant
    tr2 = _trainer(POLICY, seed=1, ledger=path)
    assert tr2.epsilon == pytest.approx(r0.epsilon, rel=1e-12)
    r1 = tr2.train_round()
    assert r1.round == 1
    assert r1.epsilon == pytest.approx(_rdp(1.1, 0.25, 2 * tr2.steps_per_round, 1e-5), rel=1e-12)
    with pytest.raises(ConfigurationError, match="already trained"):
        tr2.train_round(1)

    tr3 = _trainer(POLICY, seed=2, ledger=path)
    tr3.train_round()
    tr4 = _trainer(POLICY, seed=3, ledger=path)
    with pytest.raises(PrivacyBudgetExceeded):
        tr4.train_round()
    ledger = PrivacyLedger(path, delta=1e-5, epsilon_budget=tr4.epsilon_budget)
    assert [e.round for e in ledger.entries] == [0, 1, 2]
    assert ledger.epsilon_spent == pytest.approx(tr4.epsilon_budget, rel=1e-12)


@pytest.mark.property("P15")
def test_ledger_refuses_changed_terms_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    PrivacyLedger(path, delta=1e-5, epsilon_budget=2.0)
    with pytest.raises(ConfigurationError, match="budget"):
        PrivacyLedger(path, delta=1e-5, epsilon_budget=3.0)
    with pytest.raises(ConfigurationError, match="delta"):
        PrivacyLedger(path, delta=1e-6, epsilon_budget=2.0)
    with pytest.raises(ConfigurationError):
        _trainer(POLICY, ledger=PrivacyLedger(tmp_path / "other.json", delta=1e-5, epsilon_budget=2.0))
    path.write_text("{not json")
    with pytest.raises(EncodingError):
        PrivacyLedger(path, delta=1e-5, epsilon_budget=2.0)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(EncodingError):
        PrivacyLedger(path, delta=1e-5, epsilon_budget=2.0)


@pytest.mark.property("P15")
def test_ledger_check_and_record(tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    ledger = PrivacyLedger(path, delta=1e-5, epsilon_budget=1.0)
    ledger.check(1.0, 0)
    with pytest.raises(PrivacyBudgetExceeded, match=r"round 0 would bring epsilon to 1\.0100"):
        ledger.check(1.01, 0)
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.check(math.inf, 0)
    ledger.record(LedgerEntry(0, 10, 1.0, 0.1, 0.4))
    with pytest.raises(ConfigurationError):
        ledger.record(LedgerEntry(0, 10, 1.0, 0.1, 0.5))
    with pytest.raises(ConfigurationError):
        ledger.record(LedgerEntry(1, 10, 1.0, 0.1, 0.3))
    again = PrivacyLedger(path, delta=1e-5, epsilon_budget=1.0)
    assert again.entries == (LedgerEntry(0, 10, 1.0, 0.1, 0.4),)
    assert again.history() == [(1.0, 0.1, 10)]
    assert "spent=0.4000" in repr(again)


def test_state_dict_vector_round_trip() -> None:
    model, _, _ = _silo()
    vec = opacus_dp.model_to_vector(model)
    assert vec.dtype == np.float32 and vec.shape == (4 * 8 + 8 + 8 * 2 + 2,)
    new = np.arange(vec.size, dtype=np.float32)
    opacus_dp.load_vector(model, new)
    assert np.array_equal(opacus_dp.model_to_vector(model), new)
    assert torch.equal(model[0].bias.detach(), torch.arange(32, 40, dtype=torch.float32))
    with pytest.raises(ConfigurationError):
        opacus_dp.load_vector(model, new[:-1])
    with pytest.raises(ConfigurationError):
        opacus_dp.load_vector(model, np.zeros(vec.size + 1, dtype=np.float32))


def test_set_weights_then_train() -> None:
    tr = _trainer(POLICY)
    start = np.zeros_like(tr.get_weights())
    tr.set_weights(start)
    assert np.array_equal(tr.get_weights(), start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = tr.train_round()
    assert np.all(np.isfinite(r.weights)) and np.any(r.weights != 0)
