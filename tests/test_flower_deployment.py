"""The Flower example app in a real deployment (examples/flower-secagg/deploy_local.py): a SuperLink, 3 SuperNodes
and `flwr run` on 127.0.0.1, one secure round of the app as shipped. Its final model equals the in-process
runner's (run_local.py, same seeds, same training) up to SecAgg+'s quantisation, and every process it started is
gone when it returns. Takes a few minutes: Flower starts a new process for every message a SuperNode answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr")
torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flower-secagg"
sys.path.insert(0, str(EXAMPLE))

import deploy_local  # noqa: E402
import run_local  # noqa: E402
from secagg_example import task  # noqa: E402

from secagg.flower import SecAggSettings  # noqa: E402

NODES, ROUNDS = 3, 1
ACCURACY_TOLERANCE = 0.02


@pytest.fixture
def marker() -> Iterator[str]:
    """The marker the deployment puts in every process's environment; whatever still carries it afterwards fails
    the test (and is killed, so nothing outlives it even if the harness missed a process)."""
    token = secrets.token_hex(8)
    yield token
    leftover = deploy_local.marked_processes(token)
    for pid in leftover:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert leftover == [], f"processes of the deployment still alive after it returned: {leftover}"


def _accuracy(state: dict[str, Any]) -> float:
    model = task.Net()
    model.load_state_dict(state)
    return float(task.test(model, task.load_centralized_dataset())[1])


def test_deployed_secure_round_matches_in_process_runner(tmp_path: Path, marker: str) -> None:
    try:
        result = deploy_local.run(
            "secagg", NODES, ROUNDS, work_dir=tmp_path / "deploy", timeout=1800, startup_timeout=300, marker=marker
        )
    except deploy_local.DeploymentError as exc:
        pytest.fail(f"the deployment failed: {exc}")

    # It ran where it says, on every node, and measured the round.
    assert result.ok and result.run_status == "finished:completed"
    assert result.model_path is not None and Path(result.model_path).is_file()
    assert sorted(result.node_ids) == list(range(NODES)) and len(set(result.node_ids.values())) == NODES
    assert all(sum(c.values()) > 0 for c in result.received.values()) and len(result.received) == NODES
    assert result.exchanges_per_node_per_round is not None and result.exchanges_per_node_per_round > 0
    assert len(result.round_seconds) == ROUNDS and result.seconds_per_round is not None

    deployed = torch.load(result.model_path, weights_only=True)

    logging.getLogger("flwr").setLevel(logging.WARNING)
    local = run_local.run(num_nodes=NODES, num_rounds=ROUNDS).arrays.to_torch_state_dict()

    assert list(deployed) == list(local)
    # Training is deterministic (seeded, one thread); the two runs differ only by SecAgg+'s stochastic rounding of
    # each node's update (new weights minus the ones sent, clipped to [-clip, clip]) to a grid of step
    # 2 * clip / (2^bits - 1). Each run's aggregate is a weighted mean of the nodes' rounded updates, so it is
    # within one step of the exact mean in every coordinate, and two runs within two steps of each other.
    s = SecAggSettings()
    step = 2 * s.clip / (2**s.bits - 1)
    tolerance = 2 * step * ROUNDS + 1e-6  # + float32 rounding of weights of magnitude ~1
    diff = max(float((deployed[k].double() - local[k].double()).abs().max()) for k in local)
    assert diff <= tolerance, f"deployed model differs from run_local's by {diff:.3g} > {tolerance:.3g}"
    initial = task.initial_model(int(run_local.load_run_config()["seed"])).state_dict()
    moved = max(float((local[k].double() - initial[k].double()).abs().max()) for k in local)
    assert moved > 100 * tolerance  # the round did change the model: the comparison is not vacuous

    acc_deployed, acc_local = _accuracy(deployed), _accuracy(local)
    assert abs(acc_deployed - acc_local) <= ACCURACY_TOLERANCE, (acc_deployed, acc_local)
    assert acc_local > 0.5  # one round from chance (0.07) on the server's held-out digits
