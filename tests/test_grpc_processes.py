"""Real-process tests of the gRPC deployment: `secagg server` and `secagg silo` processes over mutual TLS
on 127.0.0.1, with silos and servers killed at every stage, wrong certificates, lying ids, oversized and
garbage messages, replays and restarts (scenarios B2, B6, B8, C8-C10, D1-D3 of the design).

Every aggregate is checked exactly: each silo's seeded input and stochastic rounding are recomputed here
and the ring sum compared with the server's round-<r>.sum.npy. Tests synchronise on files, log lines and
process exits only (see tests/grpc_helpers.py); every process is ended and reaped in the fixture teardown.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from secagg.deploy.audit import verify_audit_log

from .grpc_helpers import Deployment

Make = Callable[..., Deployment]


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Make]:
    """Make deployments; all their processes are ended and reaped at teardown, pass or fail."""
    made: list[Deployment] = []

    def make(silos: int, **kwargs: Any) -> Deployment:
        dep = Deployment(tmp_path / f"d{len(made)}", silos, **kwargs)
        made.append(dep)
        return dep

    try:
        yield make
    finally:
        for dep in made:
            dep.close()
        for dep in made:
            assert all(p.popen.returncode is not None for p in dep.procs)


@pytest.mark.parametrize("mode", ["semi-honest", "hardened"])
def test_five_silos_exact_aggregate_and_audit(deploy: Make, mode: str) -> None:
    dep = deploy(5, mode=mode)
    server = dep.start_server()
    silos = dep.start_silos(range(1, 6), rounds=1)
    summary = dep.assert_exact(0, [1, 2, 3, 4, 5])
    assert summary["mode"] == mode and summary["dropped"] == []
    assert server.wait() == 0, server.logs()
    for i, p in silos.items():
        assert p.wait() == 0, p.logs()
        assert f"silo {i}: 1 of 1 rounds completed" in p.out()
    n = verify_audit_log(dep.server_cfg.audit_log)
    events = [r.event for r in dep.audit()]
    assert n == len(events) and "round-started" in events and events[-1] == "round-completed"


def test_busy_port_is_a_clean_refusal(deploy: Make) -> None:
    """A listen address already in use: exit 2 naming it, not a traceback (and nothing is written)."""
    dep = deploy(2)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", dep.port))
        s.listen()
        proc = dep._spawn("server", ["server", "--config", str(dep.layout.server_config)], None)
        assert proc.wait() == 2, proc.logs()
    assert f"cannot listen on 127.0.0.1:{dep.port}" in proc.err()
    assert "Traceback" not in proc.err()
    assert not (dep.output_dir / "round-0.json").exists()


# -- C8 / C4: silos killed at each stage ----------------------------------------------------------------

BEFORE_INPUT = ["advertise-keys", "share-keys", "masked-input"]


@pytest.mark.parametrize(
    ("mode", "stage"),
    [
        ("semi-honest", "advertise-keys"),
        ("semi-honest", "share-keys"),
        ("semi-honest", "masked-input"),
        ("semi-honest", "unmask"),
        ("hardened", "masked-input"),
        ("hardened", "consistency-check"),
        ("hardened", "unmask"),
    ],
)
def test_silo_killed_at_stage(deploy: Make, mode: str, stage: str) -> None:
    """A silo SIGKILLed as it receives a stage's request: the round completes with exactly the right survivors
    (the victim's input is in the sum only if it died after sending it), and the sum is exact."""
    victim = 3
    dep = deploy(5, mode=mode)
    server = dep.start_server()
    others = dep.start_silos([1, 2, 4, 5], rounds=1)
    killed = dep.start_silo(victim, env={"SECAGG_FAULT_EXIT_AT": stage})
    assert killed.wait() == -signal.SIGKILL, killed.logs()
    in_sum = stage not in BEFORE_INPUT
    survivors = [1, 2, 3, 4, 5] if in_sum else [1, 2, 4, 5]
    summary = dep.assert_exact(0, survivors)
    # dropped = shared its keys but sent no masked input: its pairwise masks were removed
    assert summary["dropped"] == ([victim] if stage == "masked-input" else [])
    assert server.wait() == 0, server.logs()
    for p in others.values():
        assert p.wait() == 0, p.logs()
    aborted = [r for r in dep.audit() if r.event == "client-aborted"]
    assert [(r.client, r.stage) for r in aborted] == [(victim, stage)]
    verify_audit_log(dep.server_cfg.audit_log)


@pytest.mark.parametrize(("mode", "stage", "victims"), [("semi-honest", "masked-input", [2, 3, 4, 5])])
def test_too_many_killed_is_a_clean_abort(deploy: Make, mode: str, stage: str, victims: list[int]) -> None:
    """Below the threshold: a typed abort in round-0.json, no aggregate file, the server exits 1."""
    dep = deploy(5, mode=mode)
    server = dep.start_server()
    dep.start_silos([i for i in range(1, 6) if i not in victims])
    killed = dep.start_silos(victims, env={"SECAGG_FAULT_EXIT_AT": stage})
    for p in killed.values():
        assert p.wait() == -signal.SIGKILL, p.logs()
    summary = dep.wait_round(0)
    assert summary["ok"] is False
    assert summary["error_code"] == "TOO_FEW_CLIENTS", summary
    assert "session_id" not in summary and "survivors" not in summary
    assert not (dep.output_dir / "round-0.sum.npy").exists()
    assert not (dep.output_dir / "round-0.mean.npy").exists()
    assert server.wait() == 1, server.logs()
    events = [r.event for r in dep.audit()]
    assert events[-1] == "round-aborted" and "round-completed" not in events
