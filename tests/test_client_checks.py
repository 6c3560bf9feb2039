"""Client checks added after an independent review (SPEC §9.1, §10.5, §10.6; threat_model.md P3, P4, P6, P11).

- `RoundComplete`'s survivor set is checked: the client must be in it, every member must have advertised
  keys, every neighbour in it must have shared keys with the client, it must meet the minimum aggregate and,
  once the client signed a set (hardened), be that set. Otherwise the client ends ABORTED, not DONE.
- A session exported and restored after answering an unmask request answers an identical retry identically
  and refuses any other request with SECOND_UNMASK, as the live session does.
- A message object built with fields of the wrong type gets the typed BAD_ENCODING abort.
- A9 per mode: a server may run separate sessions of one (run, round) for separate groups (it chooses the
  participants); each is a round of its own, no aggregate mixes two models, and a client is in at most one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from secagg.protocol.client import ClientSession
from secagg.protocol.config import Mode
from secagg.protocol.ledger import MemoryLedger
from secagg.protocol.messages import (
    ClientAbort,
    ConsistencyRequest,
    KeysBroadcast,
    MaskedInputChunk,
    RoundComplete,
    ServerMessage,
    SetupRequest,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.protocol.rules import ClientState
from secagg.simulation import build, make_config
from tests.protocol_helpers import assert_aborted, assert_exact_sum, play, round_config

MODES = [Mode.SEMI_HONEST, Mode.HARDENED]


def _completion_rewritten(mode: Mode, change: Any) -> tuple[Any, Any]:
    setup = build(round_config(5, mode=mode), seed=21)

    def hook(cid: int, msg: ServerMessage) -> ServerMessage:
        if cid == 1 and isinstance(msg, RoundComplete):
            return RoundComplete(msg.session_id, tuple(change(msg.survivors)))
        return msg

    _, wire = play(setup, to_client=hook)
    return setup, wire


@pytest.mark.property("P6")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda s: [c for c in s if c != 1], "BAD_SURVIVORS"),  # omits the client
        (lambda s: [*s, 9], "UNKNOWN_IDENTITY"),  # names a client outside the round
        (lambda s: list(reversed(s)), "BAD_SURVIVORS"),  # not ascending
        (lambda s: [1], "MIN_AGGREGATE"),  # a "sum" of one
    ],
)
def test_round_complete_naming_an_impossible_survivor_set_ends_the_client_aborted(
    mode: Mode, change: Any, code: str
) -> None:
    setup, wire = _completion_rewritten(mode, change)
    assert_exact_sum(setup, range(1, 6))  # the server's own result is untouched
    client = setup.clients[1]
    assert_aborted(client, code, wire, shares_may_have_left=True)
    assert all(setup.clients[c].state is ClientState.DONE for c in range(2, 6))


@pytest.mark.property("P2", "P6")
def test_round_complete_with_another_set_than_the_one_signed_is_inconsistent() -> None:
    """Hardened: client 1 signed U3 = {1..5}; a completion claiming {1, 2, 3, 4} (a set it could have been
    shown) differs from what it signed."""
    setup, wire = _completion_rewritten(Mode.HARDENED, lambda s: [c for c in s if c != 5])
    assert_aborted(setup.clients[1], "INCONSISTENT_SURVIVORS", wire, shares_may_have_left=True)


@pytest.mark.property("P3", "P11")
@pytest.mark.parametrize("mode", MODES)
def test_a_restored_session_repeats_its_unmask_answer_and_refuses_any_other_request(mode: Mode) -> None:
    """SPEC §10.5 across export_state/restore (how the Flower mod keeps a session between messages)."""
    setup = build(round_config(5, mode=mode), seed=22)
    captured: dict[str, Any] = {}

    def hook(cid: int, msg: ServerMessage) -> ServerMessage | None:
        if cid == 1 and isinstance(msg, UnmaskRequest):
            captured["request"] = msg
        if cid == 1 and isinstance(msg, RoundComplete):
            return None  # client 1 stays UNMASKED: its host exports it
        return msg

    play(setup, to_client=hook)
    live = setup.clients[1]
    assert live.state is ClientState.UNMASKED
    request = captured["request"]
    [answer] = live.receive(request)
    assert isinstance(answer, UnmaskResponse)

    def restored() -> ClientSession:
        return ClientSession.restore(
            live.export_state(), rng=live._rng, policy=live.policy, identity=live._identity, ledger=live._ledger
        )

    assert restored().receive(request) == [answer]  # an identical retry: the identical bytes
    other = dataclasses.replace(
        request, alive=request.alive[1:], dropped=tuple(sorted({*request.dropped, request.alive[0]}))
    )
    again = restored()
    replies = again.receive(other)
    assert replies == [ClientAbort("SECOND_UNMASK", replies[0].reason)]
    assert again.error is not None and again.error.code == "SECOND_UNMASK"
    assert not (again.revealed_seed_owners & again.revealed_key_owners)


def _stuck_at(mode: Mode, kind: type) -> tuple[Any, ClientSession, ServerMessage]:
    """A round in which client 1 is held just before it receives its first message of `kind`."""
    setup = build(round_config(4, mode=mode), seed=23)
    held: dict[str, ServerMessage] = {}

    def hook(cid: int, msg: ServerMessage) -> ServerMessage | None:
        if cid == 1 and (isinstance(msg, kind) or "msg" in held):
            held.setdefault("msg", msg)
            return None  # that message, and everything after it, is held back from client 1
        return msg

    play(setup, to_client=hook)
    return setup, setup.clients[1], held["msg"]


_MALFORMED: list[tuple[type, Any]] = [
    (SetupRequest, lambda m: SetupRequest("not a config")),  # type: ignore[arg-type]
    (KeysBroadcast, lambda m: KeysBroadcast(m.round_tag, m.session_id, None)),  # type: ignore[arg-type]
    (KeysBroadcast, lambda m: KeysBroadcast(m.round_tag, m.session_id, (1, 2))),  # type: ignore[arg-type]
    (SharesDelivery, lambda m: SharesDelivery(m.session_id, [(s, "text") for s, _ in m.ciphertexts])),  # type: ignore[misc]
    (SharesDelivery, lambda m: SharesDelivery(m.session_id, 7)),  # type: ignore[arg-type]
    (UnmaskRequest, lambda m: UnmaskRequest(m.session_id, None, m.dropped)),  # type: ignore[arg-type]
    (UnmaskRequest, lambda m: UnmaskRequest(m.session_id, ("1",), m.dropped)),  # type: ignore[arg-type]
    (RoundComplete, lambda m: RoundComplete(m.session_id, None)),  # type: ignore[arg-type]
]


@pytest.mark.property("P8")
@pytest.mark.parametrize(("kind", "make"), _MALFORMED)
def test_a_message_object_with_fields_of_the_wrong_type_gets_a_typed_abort(kind: type, make: Any) -> None:
    _, client, msg = _stuck_at(Mode.SEMI_HONEST, kind)
    if kind is SetupRequest:
        client = ClientSession(1, rng=client._rng, policy=client.policy, ledger=MemoryLedger())
    replies = client.receive(make(msg))
    assert replies == [ClientAbort("BAD_ENCODING", replies[0].reason)]
    assert client.state is ClientState.ABORTED and not client.holds_round_secrets


@pytest.mark.property("P8")
def test_a_consistency_request_with_a_wrong_type_is_a_typed_abort_too() -> None:
    _, client, msg = _stuck_at(Mode.HARDENED, ConsistencyRequest)
    assert isinstance(msg, ConsistencyRequest)
    replies = client.receive(ConsistencyRequest(msg.session_id, None))  # type: ignore[arg-type]
    assert replies[0].code == "BAD_ENCODING"


@pytest.mark.property("P4", "P5")
@pytest.mark.parametrize("mode", MODES)
def test_A9_two_groups_in_two_sessions_of_one_round_give_two_group_sums_each_client_in_one(mode: Mode) -> None:
    """What A9 means per mode when the server runs one session per group (it chooses the participants):
    each group's session is a round of its own, over its own participants and model; each sum is exact over
    its group; no aggregate mixes the two models. A client invited to both contributes to one only."""
    base = make_config(8, 4, mode=mode, seed=24, corrupt_fraction=0.0, dropout_fraction=0.0)
    group_a, group_b = (1, 2, 3, 4), (4, 5, 6, 7, 8)  # client 4 is invited to both
    cfgs = [
        make_config(len(g), 4, mode=mode, seed=24, corrupt_fraction=0.0, dropout_fraction=0.0)
        for g in (group_a, group_b)
    ]
    shared = MemoryLedger()
    results = []
    for cfg, group, model in zip(cfgs, (group_a, group_b), (b"\x01", b"\x02"), strict=True):
        cfg = dataclasses.replace(cfg, run_id=base.run_id, participants=group, model_hash=model * 32, k=len(group) - 1)
        setup = build(cfg, seed=25)
        setup.clients[4]._ledger = shared
        _, wire = play(setup)
        results.append((setup, wire))
    (a, wire_a), (b, wire_b) = results
    assert_exact_sum(a, group_a)
    assert b.clients[4].error is not None and b.clients[4].error.code == "ALREADY_CONTRIBUTED"
    assert_exact_sum(b, (5, 6, 7, 8))
    assert wire_b.sent_by(4, MaskedInputChunk) == [] and wire_a.sent_by(4, MaskedInputChunk)
    assert a.server.result is not None and b.server.result is not None
    assert a.server.result.session_id != b.server.result.session_id
