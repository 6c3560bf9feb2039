"""Exclusion: a silo named as the cause of failures is benched and the federation goes on without it
(threat_model.md P7; the gRPC coordinator and `secagg exclusions`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secagg.cli import main
from secagg.deploy.pki import init_pki
from secagg.errors import ConfigurationError
from secagg.exclusion import ExclusionList
from secagg.protocol.client import ClientSession
from secagg.protocol.messages import ClientMessage, ServerAbort, ServerMessage, ShareKeys

from .grpc_helpers import Deployment, raw_silo, wait_for

pytestmark = pytest.mark.property("P7")


def test_strikes_bench_and_reinstatement_resets() -> None:
    lst = ExclusionList(strikes=2)
    assert lst.record(0, {3: "bad shares"}) == []
    assert lst.record(1, {3: "bad shares", 5: "claims id 4"}) == [3]
    assert lst.eligible([1, 3, 5]) == [1, 5]
    again = ExclusionList.from_json(lst.to_json(), strikes=2)
    assert again == lst
    assert again.reinstate(3) and not again.reinstate(3)
    assert again.eligible([1, 3, 5]) == [1, 3, 5] and 3 not in again.counts
    assert ExclusionList(strikes=0).record(0, {3: "x"}) == []  # 0: never bench
    for bad in ("", "[]", '{"version": 1, "strikes": {"x": 1}, "benched": {}}'):
        with pytest.raises(ConfigurationError, match="exclusion list"):
            ExclusionList.from_json(bad, strikes=1)
    with pytest.raises(ConfigurationError):
        ExclusionList(strikes=-1)


def test_the_exclusions_command_lists_and_reinstates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = init_pki(tmp_path / "pki", 3)
    from secagg.deploy.config import load_server_config

    cfg = load_server_config(layout.server_config)
    lst = ExclusionList(strikes=cfg.exclusion_strikes)
    lst.record(4, {2: "2 clients could not open its shares (more than C = 0)"})
    cfg.exclusion_path.parent.mkdir(parents=True, exist_ok=True)
    cfg.exclusion_path.write_text(lst.to_json())
    assert main(["exclusions", "--config", str(layout.server_config)]) == 0
    assert "silo 2: benched in round 4: 2 clients could not open its shares" in capsys.readouterr().out
    assert main(["exclusions", "--config", str(layout.server_config), "--reinstate", "3"]) == 1
    assert "silo 3 is not benched" in capsys.readouterr().err
    assert main(["exclusions", "--config", str(layout.server_config), "--reinstate", "2"]) == 0
    assert json.loads(cfg.exclusion_path.read_text())["benched"] == {}
    assert main(["exclusions", "--config", str(layout.server_config), "--bench", "3"]) == 0
    assert main(["exclusions", "--config", str(layout.server_config), "--bench", "9"]) == 2  # not in the roster
    assert list(json.loads(cfg.exclusion_path.read_text())["benched"]) == ["3"]


class _Spoiler:
    """A silo that is honest except that every share ciphertext it sends fails to open."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    def receive(self, msg: ServerMessage) -> list[ClientMessage]:
        out = self.session.receive(msg)
        return [
            dataclasses.replace(m, ciphertexts=tuple((r, ct[:-1] + bytes([ct[-1] ^ 1])) for r, ct in m.ciphertexts))
            if isinstance(m, ShareKeys)
            else m
            for m in out
        ]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Any]:
    made: list[Deployment] = []

    def make(*args: Any, **kwargs: Any) -> Deployment:
        made.append(Deployment(tmp_path / f"d{len(made)}", *args, **kwargs))
        return made[-1]

    yield make
    for d in made:
        d.close()


def test_one_malicious_silo_among_ten_costs_one_round_over_real_processes(deployment: Any) -> None:
    """`secagg server` and nine `secagg silo` processes over mutual TLS, and silo 3 (played by the test)
    sending share ciphertexts nobody can open: round 0 aborts and names silo 3 (nine complaints, more than
    C = 1), the server benches it, rounds 1 and 2 give the exact sum of the other nine."""
    dep = deployment(10, rounds=3)
    server = dep.start_server()
    others = [s for s in range(1, 11) if s != 3]
    with raw_silo(dep, 3) as raw:
        raw.open()
        dep.start_silos(others, rounds=3)
        last = raw.play(_Spoiler(dep.session(3, 0)))  # type: ignore[arg-type]
        assert isinstance(last, ServerAbort)
        round0 = dep.wait_round(0)
        assert round0["ok"] is False and round0["blamed"].keys() == {"3"} and round0["benched"] == [3]
        dep.assert_exact(1, others)
        dep.assert_exact(2, others)
    assert server.wait() == 1, server.logs()  # not every round produced an aggregate
    assert "2 of 3 rounds produced an aggregate" in server.out()
    events = [(r.event, r.client) for r in dep.audit() if r.client == 3]
    assert ("client-blamed", 3) in events and ("silo-benched", 3) in events
    assert "secagg exclusions --config" in server.err()
    wait_for(lambda: dep.output_dir.joinpath("exclusions.json").exists(), "the exclusion list")
    assert list(json.loads(dep.output_dir.joinpath("exclusions.json").read_text())["benched"]) == ["3"]


def test_the_flower_strategy_benches_a_node_that_spoils_its_shares(tmp_path: Path, monkeypatch: Any) -> None:
    """Node 303 runs a mod that spoils every share ciphertext it sends: the first training round gets no
    aggregate and names it, SecureFedAvg benches it, and the next round aggregates the other four nodes."""
    pytest.importorskip("flwr")
    from flwr.app import Message
    from flwr.clientapp import ClientApp

    from secagg.flower import records as rec_
    from secagg.flower import secagg_mod
    from secagg.flower.local import LocalGrid
    from secagg.protocol.messages import decode_message, encode_message
    from tests.test_flower import NODES, initial, make_app, strategy

    monkeypatch.setenv("SECAGG_STATE_DIR", str(tmp_path / "state"))
    honest = secagg_mod()

    def spoiling(msg: Message, ctx: Any, call_next: Any) -> Message:
        reply = honest(msg, ctx, call_next)
        key = rec_.reply_key(rec_.PURPOSE_ARRAYS)
        if reply.has_content() and key in reply.content.array_records:
            out = [decode_message(b) for b in rec_.unpack_replies(reply.content.array_records[key])]
            spoilt = [
                dataclasses.replace(m, ciphertexts=tuple((r, ct[:-1] + bytes([ct[-1] ^ 1])) for r, ct in m.ciphertexts))
                if isinstance(m, ShareKeys)
                else m
                for m in out
            ]
            reply.content.array_records[key] = rec_.pack_replies([encode_message(m) for m in spoilt])
        return reply

    apps: dict[int, ClientApp] = {n: make_app(n, [spoiling if n == 303 else secagg_mod()]) for n in NODES}
    grid = LocalGrid(apps)
    s = strategy()
    s.start(grid=grid, initial_arrays=initial(), num_rounds=2)
    assert list(s.exclusions.benched) == [303]
    assert s.last_result is not None and len(s.last_result.survivors) == 4  # round 2: the other four
