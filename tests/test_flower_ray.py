"""The Flower example app (examples/flower-secagg) under Flower's Simulation Engine with the Ray backend.

`flwr.simulation.run_simulation` runs the ServerApp in a thread of this process and the virtual SuperNodes'
ClientApps in Ray actors (other processes, which get the ClientApp, each Message and each node's Context
pickled, and `partition-id` / `num-partitions` from the simulation). Two secure rounds over NODES nodes must
each end with every node among the SecAgg+ survivors, move the model, and reach the same server-side and
node-side accuracies as the in-process runner (`run_local.run`), up to quantisation. Ray must be shut down
afterwards and none of its processes left running, also when the ServerApp fails mid-run. Skipped where Ray
(`flwr[simulation]`) is absent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")
pytest.importorskip("sklearn")
ray = pytest.importorskip("ray")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flower-secagg"
sys.path.insert(0, str(EXAMPLE))

import flwr.supercore.telemetry  # noqa: E402
import run_local  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import Result, Strategy  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from secagg_example import client_app, server_app, task  # noqa: E402

from secagg.flower import SecureFedAvg  # noqa: E402

NODES = 12
ROUNDS = 2  # round 2's train messages also carry the evaluation of round 1's model
ACCURACY_TOLERANCE = 0.02  # stochastic rounding in SecAgg+'s quantisation differs between two runs
# One ClientApp actor per Ray CPU: on 2 cores, two actors (each imports torch and the app on its first message).
BACKEND_CONFIG: dict[str, Any] = {
    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    # "local": a Ray instance of this test, even where RAY_ADDRESS or a `ray start` cluster would be picked up
    "init_args": {"address": "local", "include_dashboard": False, "logging_level": "ERROR"},
}


def _live_descendants() -> set[int]:
    """Pids of every live (not zombie) process below this one."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state, ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(entry))
    todo, out = list(children.get(os.getpid(), [])), set()
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo += children.get(pid, [])
    return out


def _wait_gone(pids: set[int], timeout: float = 60.0) -> set[int]:
    """Wait (at most `timeout` seconds) for these processes to exit; those still alive."""
    end = time.monotonic() + timeout
    while True:
        alive = pids & _live_descendants()
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.2)


@pytest.fixture
def ray_cleanup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[set[int]]:
    """Processes below this one before the test. Afterwards, also when the test failed: Ray shut down, every
    process the test started gone (killed if it outlived a grace period), PYTHONPATH as it was (Flower's Ray
    backend rewrites it for its workers)."""
    logging.getLogger("flwr").setLevel(logging.WARNING)
    monkeypatch.setenv("SECAGG_STATE_DIR", str(tmp_path / "state"))  # the nodes' state key, inherited by Ray
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setattr(flwr.supercore.telemetry, "FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's FutureWarning about GPUs we do not use
    if "PYTHONPATH" in os.environ:
        monkeypatch.setenv("PYTHONPATH", os.environ["PYTHONPATH"])
    else:
        monkeypatch.delenv("PYTHONPATH", raising=False)
    before = _live_descendants()
    try:
        yield before
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for pid in _wait_gone(_live_descendants() - before, timeout=30.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _simulate(strategy: Strategy, num_nodes: int, num_rounds: int, client_cpus: float = 1) -> Result:
    """The example's ServerApp loop (`server_app.run`, as run_local drives it) with `strategy`, its ClientApp as
    shipped, on `num_nodes` virtual SuperNodes under Ray."""
    config = run_local.load_run_config(**{"num-server-rounds": num_rounds})
    out: dict[str, Result] = {}
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Any) -> None:
        out["result"] = server_app.run(strategy, grid, config)

    backend = {**BACKEND_CONFIG, "client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0}}
    run_simulation(server_app=app, client_app=client_app.app, num_supernodes=num_nodes, backend_config=backend)
    assert "result" in out, "the ServerApp did not finish"
    return out["result"]


def _flat(result: Result) -> np.ndarray:
    return np.concatenate([a.ravel().astype(np.float64) for a in result.arrays.to_numpy_ndarrays()])


def test_the_client_app_pickles_for_ray() -> None:
    """Flower's Ray backend sends the ClientApp (its functions and mods, with what their closures and globals
    reference) to an actor with every message, by Ray's cloudpickle; anything unpicklable fails every message."""
    from ray import cloudpickle

    app = cloudpickle.loads(cloudpickle.dumps(client_app.app))
    assert sorted(app._registered_funcs) == sorted(client_app.app._registered_funcs)


def test_secure_rounds_on_ray_match_the_in_process_runner(ray_cleanup: set[int]) -> None:
    """Two rounds: the second also carries the nodes' evaluation of round 1's model inside its train messages."""
    config = run_local.load_run_config()
    strategy = run_local.make_strategy(config, secure=True)
    assert isinstance(strategy, SecureFedAvg)
    survivors: dict[int, int] = {}
    aggregate_train = strategy.aggregate_train

    def recording(server_round: int, replies: Any) -> Any:
        out = aggregate_train(server_round, replies)
        survivors[server_round] = len(strategy.last_result.survivors) if strategy.last_result else 0
        return out

    strategy.aggregate_train = recording  # type: ignore[method-assign]
    result = _simulate(strategy, NODES, ROUNDS)

    # Flower's Ray backend ended the run: Ray is down and its processes (GCS, raylet, actors) are gone.
    assert not ray.is_initialized()
    assert _wait_gone(_live_descendants() - ray_cleanup) == set()

    # Every round went through SecAgg+ with every virtual node among the survivors, and the model moved.
    assert survivors == dict.fromkeys(range(1, ROUNDS + 1), NODES)
    initial = np.concatenate(
        [t.detach().numpy().ravel() for t in task.initial_model(int(config["seed"])).state_dict().values()]
    )
    assert float(np.abs(_flat(result) - initial).max()) > 1e-3

    # The same accuracies as the in-process runner on the same nodes (same partitions, seeds and training).
    local = run_local.run(num_nodes=NODES, num_rounds=ROUNDS)
    for r in range(1, ROUNDS + 1):
        on_ray = result.evaluate_metrics_serverapp[r]["accuracy"]
        assert on_ray == pytest.approx(local.evaluate_metrics_serverapp[r]["accuracy"], abs=ACCURACY_TOLERANCE)
        assert result.evaluate_metrics_clientapp[r]["eval_acc"] == pytest.approx(
            local.evaluate_metrics_clientapp[r]["eval_acc"], abs=ACCURACY_TOLERANCE
        )
    assert (
        float(result.evaluate_metrics_serverapp[ROUNDS]["accuracy"])
        > float(result.evaluate_metrics_serverapp[0]["accuracy"]) + 0.1
    )


def test_ray_is_shut_down_when_the_server_app_fails(ray_cleanup: set[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The ServerApp raises after the nodes' first answers: the error reaches the caller, and Ray and its
    processes are gone all the same."""

    def failing_evaluate(server_round: int, arrays: Any) -> Any:
        if server_round >= 1:
            raise RuntimeError("central evaluation failed on purpose")
        return real_evaluate(server_round, arrays)

    real_evaluate = server_app.global_evaluate
    monkeypatch.setattr(server_app, "global_evaluate", failing_evaluate)
    strategy = run_local.make_strategy(run_local.load_run_config(), secure=True)
    with pytest.raises(RuntimeError, match="on purpose"):
        _simulate(strategy, 3, 1, client_cpus=2)  # one actor
    assert not ray.is_initialized()
    assert _wait_gone(_live_descendants() - ray_cleanup) == set()
