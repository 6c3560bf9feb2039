"""One contribution per (run, round), through any host (SPEC §10.1, §10.3; threat_model.md P5, scenario A10).

The attack: a lying server sets up two sessions of one (run, round) with the same client before either has
masked; if both contribute, the difference of the two sums is that client's input. The ledger's `reserve` is
an atomic test-and-set taken when a session commits to its masked input, so of any number of such sessions at
most one masks. Checked on the library API (two interleaved sessions on one ledger, in memory and on one file
opened twice), across processes racing on one ledger file, through the gRPC silo (two silo runners on one
state directory) and through the Flower mod (two SecAgg+ sessions of one round in one node's Context).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from secagg.deploy.config import load_silo_config
from secagg.deploy.ledger import FileLedger
from secagg.deploy.pki import init_pki
from secagg.protocol.client import MaskedChunks
from secagg.protocol.config import Mode
from secagg.protocol.ledger import ContributionLedger, MemoryLedger
from secagg.protocol.messages import ClientMessage, MaskedInputChunk, ServerMessage, SharesDelivery
from secagg.protocol.rules import ClientState
from secagg.simulation import SimulationSetup, build, make_config, run
from secagg.transport import wire
from secagg.transport.grpc_silo import SiloRunner, _Stream
from tests.protocol_helpers import assert_exact_sum

pytestmark = pytest.mark.property("P5")


def test_reserve_is_a_test_and_set(tmp_path: Path) -> None:
    for ledger in (MemoryLedger(), FileLedger(tmp_path / "l.json")):
        assert isinstance(ledger, ContributionLedger)
        assert not ledger.has_contributed("run", 3)
        assert ledger.reserve("run", 3)
        assert ledger.has_contributed("run", 3)
        assert not ledger.reserve("run", 3)
        assert ledger.reserve("run", 4) and ledger.reserve("other", 3)


def test_a_file_ledger_opened_twice_is_one_ledger(tmp_path: Path) -> None:
    """Two objects on one file (two silo processes started on one state directory) share every reservation."""
    a, b = FileLedger(tmp_path / "l.json"), FileLedger(tmp_path / "l.json")
    assert a.reserve("run", 0)
    assert b.has_contributed("run", 0) and not b.reserve("run", 0)
    assert b.reserve("run", 1)
    assert not a.reserve("run", 1)
    assert FileLedger(tmp_path / "l.json").contributions() == [("run", 0), ("run", 1)]


def _race(path: str, start: Any, results: Any) -> None:
    ledger = FileLedger(path)
    start.wait()
    results.put(ledger.reserve("run", 7))


def test_processes_racing_for_one_round_on_one_file_get_one_reservation(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    path = str(tmp_path / "contributions.json")
    procs = [ctx.Process(target=_race, args=(path, start, results)) for _ in range(6)]
    for p in procs:
        p.start()
    try:
        start.set()
        got = sorted(results.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():  # pragma: no cover - a hung child must not outlive the test
                p.kill()
    assert got == [False] * 5 + [True]
    assert FileLedger(path).contributions() == [("run", 7)]


# ---------------------------------------------------------------- two sessions of one (run, round)


def _twin_rounds(mode: Mode, ledger_a: ContributionLedger, ledger_b: ContributionLedger) -> tuple[Any, Any, Any]:
    """Two server sessions of the same (run, round), each with its own copies of the other clients; client 1
    of both shares one ledger (ledger_a and ledger_b are the same ledger, or two handles on one file)."""
    cfg = make_config(5, 6, mode=mode, seed=1)
    a, b = build(cfg, seed=1), build(cfg, seed=2)
    a.clients[1]._ledger = ledger_a
    b.clients[1]._ledger = ledger_b
    return cfg, a, b


@pytest.mark.parametrize("mode", [Mode.SEMI_HONEST, Mode.HARDENED])
@pytest.mark.parametrize("store", ["memory", "file"])
def test_two_interleaved_sessions_of_one_round_contribute_once(mode: Mode, store: str, tmp_path: Path) -> None:
    """Session B is set up (and passes the setup check) after session A's setup and before A masks; B then
    masks first. A, asked for its masked input afterwards, refuses: client 1 is in one aggregate only."""
    if store == "memory":
        shared: ContributionLedger = MemoryLedger()
        ledger_a = ledger_b = shared
    else:
        ledger_a, ledger_b = FileLedger(tmp_path / "c.json"), FileLedger(tmp_path / "c.json")
    _, a, b = _twin_rounds(mode, ledger_a, ledger_b)
    masked_by: list[str] = []

    def chunks_of_client_1(label: str) -> Any:
        def hook(cid: int, msg: ClientMessage) -> ClientMessage:
            if cid == 1 and isinstance(msg, MaskedInputChunk):
                masked_by.append(label)
            return msg

        return hook

    def a_to_client(cid: int, msg: ServerMessage) -> ServerMessage:
        if cid == 1 and isinstance(msg, SharesDelivery):  # A asks for the masked input: B runs first, whole
            run(b, to_server=chunks_of_client_1("b"))
        return msg

    run(a, to_client=a_to_client, to_server=chunks_of_client_1("a"))
    assert masked_by == ["b"]
    assert_exact_sum(b, range(1, 6))
    assert_exact_sum(a, range(2, 6))  # A completes without client 1 (its masks removed like a dropout's)
    twin = a.clients[1]
    assert twin.state is ClientState.ABORTED and twin.error is not None
    assert twin.error.code == "ALREADY_CONTRIBUTED"
    assert not twin.holds_round_secrets


def test_a_session_whose_reservation_fails_makes_no_chunk() -> None:
    """The reservation comes before any chunk exists: a lazily masked input is never started."""
    cfg = make_config(4, 5, seed=3)
    setup = build(cfg, seed=3)
    ledger = MemoryLedger()
    setup.clients[2]._ledger = ledger
    seen: list[Any] = []

    def to_client(cid: int, msg: ServerMessage) -> ServerMessage:
        if cid == 2 and isinstance(msg, SharesDelivery):
            assert ledger.reserve(cfg.run_id, cfg.round)  # another session got there first
            seen.append(setup.clients[2].receive(msg, lazy=True))
            return msg
        return msg

    run(setup, to_client=to_client)
    [replies] = seen
    assert not isinstance(replies, MaskedChunks)
    assert [type(m).__name__ for m in replies] == ["ClientAbort"]
    assert replies[0].code == "ALREADY_CONTRIBUTED"


# ---------------------------------------------------------------- through the gRPC silo


class _SiloAsClient:
    """A SiloRunner's message handling, driven by an in-process server: each server message goes in as the
    protobuf envelope a stream would carry, the replies come out of the runner's outbox."""

    def __init__(self, runner: SiloRunner) -> None:
        self.runner = runner
        self.stream = _Stream()
        self.client_id = runner.silo_id

    def receive(self, msg: ServerMessage) -> list[ClientMessage]:
        self.runner._handle(wire.server_to_proto(msg), self.stream)
        out: list[ClientMessage] = []
        while not self.stream.outbox.empty():
            item = self.stream.outbox.get_nowait()
            if isinstance(item, MaskedChunks):
                out.extend(item)
            elif item is not None:
                out.append(item)
        return out


def test_two_silo_runners_on_one_state_directory_contribute_once(tmp_path: Path) -> None:
    """The same silo started twice (one state directory, one ledger file) and offered the same (run, round) by
    a lying server on both connections: one runner contributes, the other refuses before masking."""
    pki = init_pki(tmp_path / "pki", 4, dim=6)
    silo_cfg = load_silo_config(pki.silos[0].config)
    cfg = dataclasses.replace(make_config(4, 6, seed=4), run_id="run")
    a, b = build(cfg, seed=4), build(cfg, seed=5)
    runners = [SiloRunner(silo_cfg, inputs=lambda _c, s=s: s.inputs[1]) for s in (a, b)]
    assert runners[0]._ledger.path == runners[1]._ledger.path
    a.clients[1], b.clients[1] = _SiloAsClient(runners[0]), _SiloAsClient(runners[1])  # type: ignore[assignment]

    def a_to_client(cid: int, msg: ServerMessage) -> ServerMessage:
        if cid == 1 and isinstance(msg, SharesDelivery):
            run(b)
        return msg

    run(a, to_client=a_to_client)
    _check_one_contribution(a, b)
    assert [r.error_code for r in runners[0].rounds] == ["ALREADY_CONTRIBUTED"]
    assert runners[1].rounds[0].state == "done"
    assert FileLedger(silo_cfg.ledger_path).contributions() == [("run", 0)]


def _check_one_contribution(a: SimulationSetup, b: SimulationSetup) -> None:
    assert b.server.result is not None and b.server.result.survivors == (1, 2, 3, 4)
    assert_exact_sum(a, (2, 3, 4))  # A goes on without client 1, whose masks are removed like a dropout's


# ---------------------------------------------------------------- through the Flower mod


def test_two_secagg_sessions_of_one_round_in_a_flower_node_contribute_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lying strategy gives the metrics session of a training step the (run, round) of its update session:
    both sessions live in each node's Context and are set up before either masks. Every node contributes to
    the first and refuses the second with ALREADY_CONTRIBUTED, so the second round aborts and only the update
    is aggregated."""
    pytest.importorskip("flwr")
    from secagg.flower.strategy import SecureFedAvg
    from tests.test_flower import NODES, _replies_of, expected_round, flat, initial, secure_grid, strategy

    monkeypatch.setenv("SECAGG_STATE_DIR", str(tmp_path / "state"))

    class SameRound(SecureFedAvg):
        def _config(self, round_: int, *args: Any, **fields: Any) -> Any:
            return super()._config(round_ - 1 if round_ % 3 == 1 else round_, *args, **fields)

    honest = strategy()
    liar = SameRound(secagg=honest.secagg, rng=honest._rng)
    grid = secure_grid()
    seen = _replies_of(grid)
    result = liar.start(grid=grid, initial_arrays=initial(), num_rounds=1)
    refusals = [m for _, msgs in seen for m in msgs if getattr(m, "code", None) == "ALREADY_CONTRIBUTED"]
    assert len(refusals) == len(NODES)  # each node refused the second session of the round, once
    masked_nodes = {node for node, msgs in seen if any(isinstance(m, MaskedInputChunk) for m in msgs)}
    assert masked_nodes == set(NODES)  # ... and contributed to the first
    assert liar.last_result is not None and liar.last_result.survivors == tuple(range(1, len(NODES) + 1))
    assert abs(flat(result.arrays) - expected_round(flat(initial()), NODES, 1)).max() <= 2 * 2 / (1 << 16)
