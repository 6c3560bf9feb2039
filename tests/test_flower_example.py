"""The Flower example app (examples/flower-secagg): SecureFedAvg + secagg_mod trains as well as plain FedAvg does,
and its final model equals plain FedAvg's (same app without the mod, same seeds) up to quantisation error."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flower-secagg"
sys.path.insert(0, str(EXAMPLE))

import run_local  # noqa: E402
from flwr.app import Context, RecordDict  # noqa: E402
from secagg_example import server_app, task  # noqa: E402

from secagg.flower import SecureFedAvg  # noqa: E402

NODES, ROUNDS = 4, 3
STEP = 2 * 1.0 / 2**16  # SecAggSettings defaults: clip 1.0, 16 bits


@pytest.fixture(autouse=True)
def _quiet_flower() -> None:
    logging.getLogger("flwr").setLevel(logging.WARNING)


def _flat(result: object) -> np.ndarray:
    arrays = result.arrays  # type: ignore[attr-defined]
    return np.concatenate([a.ravel().astype(np.float64) for a in arrays.to_numpy_ndarrays()])


def test_secure_run_matches_plain_fedavg() -> None:
    config = run_local.load_run_config()
    strategy = run_local.make_strategy(config, secure=True)
    assert isinstance(strategy, SecureFedAvg)
    secure = run_local.run(NODES, ROUNDS, secure=True, strategy=strategy)
    plain = run_local.run(NODES, ROUNDS, secure=False)

    # The aggregate came out of SecAgg+ with every node surviving.
    assert strategy.last_result is not None and len(strategy.last_result.survivors) == NODES

    # It learned: from chance to a sane accuracy on the server's held-out digits.
    assert secure.evaluate_metrics_serverapp[0]["accuracy"] < 0.2
    assert secure.evaluate_metrics_serverapp[ROUNDS]["accuracy"] > 0.8
    assert secure.evaluate_metrics_clientapp[ROUNDS]["eval_acc"] > 0.8

    # Same final model as plain FedAvg up to quantisation: at most 2 steps per round, and training moved it far more.
    s, p = _flat(secure), _flat(plain)
    initial = np.concatenate(
        [t.detach().numpy().ravel() for t in task.initial_model(int(config["seed"])).state_dict().values()]
    )
    assert list(secure.arrays.keys()) == list(plain.arrays.keys())
    diff = float(np.abs(s - p).max())
    assert diff <= 2 * ROUNDS * STEP, f"{diff / STEP:.2f} steps"
    assert float(np.abs(p - initial).max()) > 1000 * STEP

    # Metrics travel in 2^-20 fixed point: the secure weighted means equal FedAvg's to that precision (round 1's
    # training ran on identical models, later ones on models a few steps apart).
    for key in ("train_loss",):
        assert secure.train_metrics_clientapp[1][key] == pytest.approx(plain.train_metrics_clientapp[1][key], abs=1e-5)
    for key in ("eval_loss", "eval_acc"):
        for r in range(1, ROUNDS + 1):
            got, want = secure.evaluate_metrics_clientapp[r][key], plain.evaluate_metrics_clientapp[r][key]
            assert got == pytest.approx(want, abs=1e-3)


def test_partitions_are_deterministic_disjoint_and_cover_the_pool() -> None:
    parts = [task.partition_indices(i, NODES) for i in range(NODES)]
    again = [task.partition_indices(i, NODES) for i in range(NODES)]
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    every = torch.cat(parts)
    assert len(set(every.tolist())) == len(every)  # disjoint
    test_set = task.load_centralized_dataset()
    assert len(every) + len(test_set) == 1797  # every digit is either a partition's or the server's
    # Non-IID: partition i holds more of its own classes (c mod N == i) than of the others.
    _, y, _ = task._digits()
    for i, idx in enumerate(parts):
        labels = y[idx]
        own = sum(int((labels == c).sum()) for c in range(10) if c % NODES == i)
        own_classes = sum(1 for c in range(10) if c % NODES == i)
        other = (len(labels) - own) / (10 - own_classes)
        assert own / own_classes > 2 * other


def test_server_app_main_saves_the_final_model(tmp_path: Path) -> None:
    config = run_local.load_run_config(**{"num-server-rounds": 1, "model-path": str(tmp_path / "model.pt")})
    grid = run_local.make_grid(3, secure=True)  # (2 nodes: SecureFedAvg cannot configure t, see the report)
    context = Context(run_id=7, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    server_app.main(grid, context)
    state = torch.load(tmp_path / "model.pt")
    model = task.Net()
    model.load_state_dict(state)
    initial = task.initial_model(int(config["seed"])).state_dict()
    assert set(state) == set(initial)
    assert any(not torch.equal(state[k], initial[k]) for k in state)  # one round of training moved it


def test_server_app_main_fails_when_no_secure_round_completed(tmp_path: Path) -> None:
    """Nodes without the mod never answer through SecAgg+: the ServerApp raises (Flower marks the run failed)
    instead of saving the initial model as if it had trained."""
    config = run_local.load_run_config(**{"num-server-rounds": 1, "model-path": str(tmp_path / "model.pt")})
    grid = run_local.make_grid(3, secure=False)
    context = Context(run_id=7, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    with pytest.raises(RuntimeError, match="no secure round completed"):
        server_app.main(grid, context)
    assert not (tmp_path / "model.pt").exists()
