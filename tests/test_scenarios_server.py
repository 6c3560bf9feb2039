"""Scenarios A1-A12 (scenarios.md): a lying server, checked on the client.

The lying server is played by rewriting, in flight, the messages the real server sends (the in-process
network's hooks), or by handing hand-made messages straight to a ClientSession. Each test asserts the precise
outcome: the client's typed error code, a ClientAbort naming it, round secrets erased, and no Shamir share
revealed; where the honest rest of the round can go on, the exact sum over exactly the stated survivors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from secagg.crypto.keys import IdentityKey, X25519KeyPair
from secagg.crypto.rng import DeterministicRandom
from secagg.errors import InvalidPeerKeyError
from secagg.protocol import recipes
from secagg.protocol.client import ClientInput, ClientSession
from secagg.protocol.config import ClientPolicy, Mode, RoundConfig
from secagg.protocol.messages import (
    AdvertiseKeys,
    ClientAbort,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    KeysBroadcast,
    MaskedInputChunk,
    ServerMessage,
    SetupRequest,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.protocol.rules import ClientState, Stage
from secagg.protocol.server import Audit, ServerSession
from tests.protocol_helpers import (
    LOW_ORDER_KEYS,
    Wire,
    assert_aborted,
    assert_exact_sum,
    assert_no_share_left,
    assert_nothing_sent_after_setup,
    assert_server_aborted,
    deliver,
    never_both_shares,
    new_round,
    play,
    resigned_broadcast,
    round_config,
)

MODES = [Mode.SEMI_HONEST, Mode.HARDENED]
N, T = 6, 4  # complete graph k = 5; t = 4 is valid in both modes (hardened needs 2t > k + 1)
ALL = tuple(range(1, N + 1))
VICTIM = 1


def _others(*excluded: int) -> tuple[int, ...]:
    return tuple(c for c in ALL if c not in excluded)


def _rewrite_to(victim: int, kind: type, change: Callable[[Any], Any]) -> Callable[[int, Any], Any]:
    """A to_client hook: messages of `kind` for `victim` go through `change`; everything else passes."""

    def hook(cid: int, msg: Any) -> Any:
        if cid == victim and isinstance(msg, kind):
            return change(msg)
        return msg

    return hook


def _audits(run_audit: list[Audit], event: str) -> list[Audit]:
    return [a for a in run_audit if a.event == event]


# ------------------------------------------------------------------------------------------------ A1


@pytest.mark.property("P1", "P2", "P3", "P11")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("listing", ["alive-peer-also-dropped", "dropped-peer-also-alive"])
def test_A1_peer_in_both_alive_and_dropped_lists_aborts(mode: Mode, listing: str) -> None:
    """A peer in both lists would hand the server both of its shares: the client aborts, reveals nothing."""
    dropped_peer = 5
    setup = new_round(round_config(N, mode=mode, t=T), seed=101, drop_at={dropped_peer: Stage.MASKED_INPUT})
    target = 3 if listing == "alive-peer-also-dropped" else dropped_peer

    def overlap(msg: UnmaskRequest) -> UnmaskRequest:
        assert msg.dropped == (dropped_peer,)  # the honest request, before the lie
        return dataclasses.replace(
            msg, alive=tuple(sorted({*msg.alive, target})), dropped=tuple(sorted({*msg.dropped, target}))
        )

    _, wire = play(setup, to_client=_rewrite_to(VICTIM, UnmaskRequest, overlap))
    assert len(wire.received_by(VICTIM, UnmaskRequest)) == 1
    assert_aborted(setup.clients[VICTIM], "OVERLAPPING_PARTITION", wire)
    # The victim's masked input is in; the four other survivors unmask it: exact sum, victim included.
    assert_exact_sum(setup, _others(dropped_peer))
    never_both_shares(setup.clients.values())


# ------------------------------------------------------------------------------------------------ A2


@pytest.mark.property("P1", "P2", "P3", "P11")
@pytest.mark.parametrize("mode", MODES)
def test_A2_second_unmask_request_with_other_partition_is_refused(mode: Mode) -> None:
    """After answering one partition, a request that moves a peer from alive to dropped is refused: the
    client never adds a mask-key share to the seed share it already revealed for that peer."""
    setup = new_round(round_config(N, mode=mode, t=T), seed=102, drop_at={5: Stage.MASKED_INPUT})
    moved = 2

    def ask_twice(msg: UnmaskRequest) -> list[ServerMessage]:
        second = dataclasses.replace(
            msg,
            alive=tuple(p for p in msg.alive if p != moved),
            dropped=tuple(sorted({*msg.dropped, moved})),
        )
        return [msg, second]

    run, wire = play(setup, to_client=_rewrite_to(VICTIM, UnmaskRequest, ask_twice))
    victim = setup.clients[VICTIM]
    assert_aborted(victim, "SECOND_UNMASK", wire, refusal=True, shares_may_have_left=True)
    # exactly one answer left: seed shares of the alive peers and its own, the key share of the dropout
    [answer] = wire.sent_by(VICTIM, UnmaskResponse)
    assert [o for o, _ in answer.seed_shares] == [1, 2, 3, 4, 6]
    assert [o for o, _ in answer.key_shares] == [5]
    assert victim.revealed_seed_owners == {1, 2, 3, 4, 6}
    assert victim.revealed_key_owners == {5}
    never_both_shares(setup.clients.values())
    assert [a.client for a in _audits(run.audit, "client-aborted")] == [VICTIM]
    assert_exact_sum(setup, _others(5))


@pytest.mark.property("P3")
@pytest.mark.parametrize("mode", MODES)
def test_A2_identical_retry_gets_the_identical_answer(mode: Mode) -> None:
    """A retried (identical) unmask request is answered with byte-identical shares, nothing more."""
    setup = new_round(round_config(N, mode=mode, t=T), seed=103, drop_at={5: Stage.MASKED_INPUT})
    run, wire = play(setup, to_client=_rewrite_to(VICTIM, UnmaskRequest, lambda m: [m, m]))
    first, second = wire.sent_by(VICTIM, UnmaskResponse)
    assert first == second
    victim = setup.clients[VICTIM]
    assert victim.state is ClientState.DONE and victim.error is None
    assert victim.revealed_key_owners == {5}
    assert [a.client for a in _audits(run.audit, "duplicate-ignored")] == [VICTIM]
    assert_exact_sum(setup, _others(5))


# ------------------------------------------------------------------------------------------------ A3

_EARLIER = 5  # dropped at the ShareKeys stage: in U1, never in U2, so the victim holds no share of it


def _with(items: tuple[int, ...], *extra: int) -> tuple[int, ...]:
    return tuple(sorted({*items, *extra}))


A3_LIES: dict[str, tuple[Callable[[UnmaskRequest], UnmaskRequest], str]] = {
    "itself-alive": (lambda m: dataclasses.replace(m, alive=_with(m.alive, VICTIM)), "BAD_PARTITION"),
    "itself-dropped": (lambda m: dataclasses.replace(m, dropped=_with(m.dropped, VICTIM)), "BAD_PARTITION"),
    "unknown-peer": (lambda m: dataclasses.replace(m, dropped=_with(m.dropped, 99)), "BAD_PARTITION"),
    "dropped-earlier-as-dropped": (
        lambda m: dataclasses.replace(m, dropped=_with(m.dropped, _EARLIER)),
        "BAD_PARTITION",
    ),
    "dropped-earlier-as-alive": (
        lambda m: dataclasses.replace(m, alive=_with(m.alive, _EARLIER)),
        "BAD_PARTITION",
    ),
    "duplicate": (lambda m: dataclasses.replace(m, alive=(*m.alive[:2], *m.alive[1:])), "BAD_PARTITION"),
    "unsorted": (lambda m: dataclasses.replace(m, alive=tuple(reversed(m.alive))), "BAD_PARTITION"),
    "missing-neighbour": (lambda m: dataclasses.replace(m, alive=m.alive[:-1]), "BAD_PARTITION"),
    "fewer-than-t-survivors": (
        lambda m: dataclasses.replace(m, alive=m.alive[:2], dropped=_with(m.dropped, *m.alive[2:])),
        "TOO_FEW_SURVIVORS",
    ),
}


@pytest.mark.property("P1", "P2", "P11")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lie", sorted(A3_LIES))
def test_A3_bad_unmask_lists_abort_before_any_share_leaves(mode: Mode, lie: str) -> None:
    """Lists naming the client, an unknown or earlier-dropped peer, a duplicate, or too few survivors."""
    change, code = A3_LIES[lie]
    setup = new_round(round_config(N, mode=mode, t=T), seed=104, drop_at={_EARLIER: Stage.SHARE_KEYS})

    def checked(msg: UnmaskRequest) -> UnmaskRequest:
        assert (msg.alive, msg.dropped) == ((2, 3, 4, 6), ())  # the honest request, before the lie
        return change(msg)

    _, wire = play(setup, to_client=_rewrite_to(VICTIM, UnmaskRequest, checked))
    assert_aborted(setup.clients[VICTIM], code, wire)
    assert_exact_sum(setup, _others(_EARLIER))


@pytest.mark.property("P1", "P2", "P11")
@pytest.mark.parametrize("mode", MODES)
def test_A3_participant_outside_the_neighbourhood_aborts(mode: Mode) -> None:
    """Sparse graph: naming a participant that is not a neighbour of the client is a lie."""
    cfg = round_config(8, mode=mode, k=4, t=3, seed=5)
    setup = new_round(cfg, seed=105)
    hood = recipes.neighbourhoods(cfg.participants, cfg.k, cfg.graph_seed).of(VICTIM)
    stranger = min(set(cfg.participants) - hood - {VICTIM})
    lie = _rewrite_to(VICTIM, UnmaskRequest, lambda m: dataclasses.replace(m, dropped=_with(m.dropped, stranger)))
    _, wire = play(setup, to_client=lie)
    assert_aborted(setup.clients[VICTIM], "BAD_PARTITION", wire)
    assert_exact_sum(setup, cfg.participants)


@pytest.mark.property("P10", "P11")
@pytest.mark.parametrize("mode", MODES)
def test_A3_survivors_below_the_minimum_aggregate_abort(mode: Mode) -> None:
    """Complete graph: a partition leaving t survivors but fewer than the minimum aggregate size (the
    round's and this silo's, 5) is refused as well: no share for a sum over too few silos."""
    cfg = round_config(N, mode=mode, t=T, min_aggregate=5)
    policy = ClientPolicy(corrupt_fraction=0, dropout_fraction=0, require_derived_degree=False, min_aggregate=5)
    setup = new_round(cfg, seed=106, policy=policy)

    def shrink(msg: UnmaskRequest) -> UnmaskRequest:
        assert (msg.alive, msg.dropped) == ((2, 3, 4, 5, 6), ())
        return dataclasses.replace(msg, alive=(2, 3, 4), dropped=(5, 6))  # 4 survivors: >= t, < 5

    _, wire = play(setup, to_client=_rewrite_to(VICTIM, UnmaskRequest, shrink))
    assert_aborted(setup.clients[VICTIM], "MIN_AGGREGATE", wire)
    assert_exact_sum(setup, ALL)


# ------------------------------------------------------------------------------------------------ A4

A4_N, A4_T = 7, 4  # hardened, complete graph k = 6: 2t = 8 > k + 1 = 7
A4_TARGET = 7  # a survivor the liar wants "dropped" in the eyes of group B (to get its mask-key shares)
A4_GROUP_A, A4_GROUP_B = (1, 2, 3), (4, 5, 6)


def _a4_round(
    seed: int, *, forward_b_signatures: bool
) -> tuple[Any, Wire, list[Audit], dict[int, ConsistencySignature], tuple[int, ...]]:
    """Group A (and the target) are shown the true survivor set, group B the set without the target."""
    cfg = round_config(A4_N, mode=Mode.HARDENED, t=A4_T)
    setup = new_round(cfg, seed=seed)
    shown_b = tuple(c for c in cfg.participants if c != A4_TARGET)
    sigs: dict[int, ConsistencySignature] = {}
    consistency_sent: set[int] = set()

    def to_client(cid: int, msg: ServerMessage) -> ServerMessage | None:
        if cid in A4_GROUP_B:
            if isinstance(msg, ConsistencyRequest):
                consistency_sent.add(cid)
                return dataclasses.replace(msg, survivors=shown_b)
            if cid in consistency_sent and not forward_b_signatures:
                return None  # the liar keeps group B waiting for its own forged unmask request
        return msg

    def to_server(cid: int, msg: Any) -> Any:
        if isinstance(msg, ConsistencySignature):
            sigs[cid] = msg
            if cid in A4_GROUP_B and not forward_b_signatures:
                return None
        return msg

    run, wire = play(setup, to_client=to_client, to_server=to_server)
    return setup, wire, run.audit, sigs, shown_b


A4_FORGERIES = {
    # the set group B signed, with only the signatures that exist for it
    "own-set-too-few-signatures": "TOO_FEW_SIGNATURES",
    # the set group B signed, padded with a signature over the true set
    "own-set-foreign-signature": "BAD_SIGNATURES",
    # the set group B signed, with a signature from a client outside it
    "own-set-signature-from-outsider": "BAD_SIGNATURES",
    # the true set with its t valid signatures, but not the set this client signed
    "true-set-with-t-signatures": "INCONSISTENT_SURVIVORS",
}


@pytest.mark.property("P2", "P11")
@pytest.mark.parametrize("forgery", sorted(A4_FORGERIES))
def test_A4_different_survivor_sets_for_different_clients_abort(forgery: str) -> None:
    """Hardened: the server cannot show the target alive to some clients and dropped to others."""
    setup, wire, _, sigs, shown_b = _a4_round(107, forward_b_signatures=False)
    true_set = setup.server.result.survivors if setup.server.result else ()
    assert true_set == tuple(range(1, A4_N + 1))
    # the honest part of the round: t signatures over the true set, exact sum over all seven
    assert_exact_sum(setup, true_set)
    sid = setup.server.session_id
    assert sid is not None
    for b in A4_GROUP_B:
        client = setup.clients[b]
        assert client.state is ClientState.SIGNED  # waiting, holding its secrets
        alive = tuple(p for p in shown_b if p != b)

        def sig(*who: int) -> tuple[tuple[int, bytes], ...]:
            return tuple((w, sigs[w].signature) for w in sorted(who))

        requests = {
            "own-set-too-few-signatures": UnmaskRequest(sid, alive, (A4_TARGET,), shown_b, sig(*A4_GROUP_B)),
            "own-set-foreign-signature": UnmaskRequest(sid, alive, (A4_TARGET,), shown_b, sig(1, *A4_GROUP_B)),
            "own-set-signature-from-outsider": UnmaskRequest(
                sid, alive, (A4_TARGET,), shown_b, sig(*A4_GROUP_B, A4_TARGET)
            ),
            "true-set-with-t-signatures": UnmaskRequest(
                sid, alive, (A4_TARGET,), true_set, sig(*A4_GROUP_A, A4_TARGET)
            ),
        }
        replies = deliver(client, requests[forgery], wire)
        assert replies == [ClientAbort(A4_FORGERIES[forgery], replies[0].reason)]
        assert_aborted(client, A4_FORGERIES[forgery], wire)
    # nobody ever revealed a mask-key share of the target: its input stays masked
    assert all(A4_TARGET not in c.revealed_key_owners for c in setup.clients.values())
    never_both_shares(setup.clients.values())


@pytest.mark.property("P2")
def test_A4_server_rejects_signatures_over_another_survivor_set() -> None:
    """The honest server rejects consistency signatures over a set other than its U3; those clients get
    no unmask request, and the round completes over U3 with the t signatures that do match."""
    setup, wire, run_audit, _, _ = _a4_round(108, forward_b_signatures=True)
    rejected = _audits(run_audit, "client-rejected")
    assert [a.client for a in rejected] == list(A4_GROUP_B)
    assert {a.detail for a in rejected} == {"consistency signature does not verify"}
    for b in A4_GROUP_B:
        assert wire.received_by(b, UnmaskRequest) == []
        assert_no_share_left(setup.clients[b], wire)
    assert_exact_sum(setup, range(1, A4_N + 1))
    assert all(A4_TARGET not in c.revealed_key_owners for c in setup.clients.values())


# ------------------------------------------------------------------------------------------------ A5


def _a5_substitute(how: str, setup: Any, peer: int) -> Callable[[KeysBroadcast], KeysBroadcast]:
    attacker = X25519KeyPair.generate(DeterministicRandom(b"a5-attacker-x25519"))
    outsider = IdentityKey.generate(DeterministicRandom(b"a5-outsider-identity"))

    def change(msg: KeysBroadcast) -> KeysBroadcast:
        old = next(a for a in msg.advertisements if a.client_id == peer)
        if how == "mask-key-replaced":
            new = dataclasses.replace(old, mask_public=attacker.public_bytes)
        elif how == "enc-key-replaced":
            new = dataclasses.replace(old, enc_public=attacker.public_bytes)
        else:
            signer = outsider if how == "signed-by-non-roster-key" else setup.clients[2]._identity
            payload = recipes.advertisement_payload(msg.round_tag, peer, old.enc_public, attacker.public_bytes)
            sig = signer.sign(payload, context=recipes.SIG_ADVERTISE)
            new = KeyAdvertisement(peer, old.enc_public, attacker.public_bytes, sig)
        return resigned_broadcast(msg, {peer: new})

    return change


@pytest.mark.property("P2", "P11")
@pytest.mark.parametrize(
    "how", ["mask-key-replaced", "enc-key-replaced", "signed-by-non-roster-key", "signed-by-another-member"]
)
def test_A5_substituted_peer_keys_abort_in_hardened_mode(how: str) -> None:
    """Hardened: a peer's round keys replaced by the server's own (session id recomputed to match), even
    when signed by some other identity, fail the roster signature check before any share is made."""
    setup = new_round(round_config(N, mode=Mode.HARDENED, t=T), seed=109)
    peer = 3
    _, wire = play(setup, to_client=_rewrite_to(VICTIM, KeysBroadcast, _a5_substitute(how, setup, peer)))
    assert_aborted(setup.clients[VICTIM], "BAD_KEY_SIGNATURE", wire)
    assert_nothing_sent_after_setup(VICTIM, wire)
    assert_exact_sum(setup, _others(VICTIM))


@pytest.mark.property("P2", "P11")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["enc_public", "mask_public"])
def test_A5_own_keys_substituted_abort(mode: Mode, which: str) -> None:
    """The broadcast must carry the client's own keys: a substitution there aborts (both modes)."""
    setup = new_round(round_config(N, mode=mode, t=T), seed=110)
    attacker = X25519KeyPair.generate(DeterministicRandom(b"a5-own"))

    def change(msg: KeysBroadcast) -> KeysBroadcast:
        mine = next(a for a in msg.advertisements if a.client_id == VICTIM)
        return resigned_broadcast(msg, {VICTIM: dataclasses.replace(mine, **{which: attacker.public_bytes})})

    _, wire = play(setup, to_client=_rewrite_to(VICTIM, KeysBroadcast, change))
    assert_aborted(setup.clients[VICTIM], "KEY_SUBSTITUTED", wire)
    assert_nothing_sent_after_setup(VICTIM, wire)
    assert_exact_sum(setup, _others(VICTIM))


# ------------------------------------------------------------------------------------------------ A6


def _roster_policy() -> ClientPolicy:
    roster = {c: IdentityKey.generate(DeterministicRandom(b"roster-%d" % c)).public_bytes for c in ALL}
    return ClientPolicy(corrupt_fraction=0, dropout_fraction=0, require_derived_degree=False, roster=roster)


@pytest.mark.property("P2", "P11")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sybil_set", ["added", "replacing-a-member"])
def test_A6_sybil_participant_not_in_roster_aborts_at_setup(mode: Mode, sybil_set: str) -> None:
    """A configuration naming an identity outside the silo's pinned roster is refused before keys exist."""
    sybil = 99
    setup = new_round(round_config(N, mode=mode, t=T), seed=111, policy=_roster_policy())

    def change(msg: SetupRequest) -> SetupRequest:
        parts = msg.config.participants
        parts = (*parts, sybil) if sybil_set == "added" else (*parts[:-1], sybil)
        return SetupRequest(dataclasses.replace(msg.config, participants=parts))

    _, wire = play(setup, to_client=_rewrite_to(VICTIM, SetupRequest, change))
    assert_aborted(setup.clients[VICTIM], "UNKNOWN_IDENTITY", wire)
    assert wire.sent_by(VICTIM, AdvertiseKeys) == []
    assert_exact_sum(setup, _others(VICTIM))


@pytest.mark.property("P2", "P11")
@pytest.mark.parametrize("mode", MODES)
def test_A6_sybil_advertisement_in_the_broadcast_aborts(mode: Mode) -> None:
    """Keys from an identity that is not a participant (a sybil) in the broadcast: abort, no share made."""
    setup = new_round(round_config(N, mode=mode, t=T), seed=112)
    sybil_keys = [X25519KeyPair.generate(DeterministicRandom(b"sybil-%d" % i)) for i in range(2)]
    sybil = KeyAdvertisement(99, sybil_keys[0].public_bytes, sybil_keys[1].public_bytes, bytes(64))

    def change(msg: KeysBroadcast) -> KeysBroadcast:
        ads = (*msg.advertisements, sybil)
        return KeysBroadcast(msg.round_tag, recipes.session_id(msg.round_tag, ads), ads)

    _, wire = play(setup, to_client=_rewrite_to(VICTIM, KeysBroadcast, change))
    assert_aborted(setup.clients[VICTIM], "UNKNOWN_IDENTITY", wire)
    assert_nothing_sent_after_setup(VICTIM, wire)
    assert_exact_sum(setup, _others(VICTIM))


# ------------------------------------------------------------------------------------------------ A7

A7_POLICY = ClientPolicy(
    modes=frozenset({Mode.SEMI_HONEST}),
    min_clients=5,
    min_threshold=3,
    min_aggregate=3,
    min_modulus_bits=32,
    max_clip=1.0,
    min_dp_noise_multiplier=0.5,
    corrupt_fraction=0.1,
    dropout_fraction=0.1,
    require_derived_degree=True,
    expected_dim=5,
)
A7_HONEST = round_config(10, dim=5, t=3, min_aggregate=3, clip=1.0, dp_noise_multiplier=0.5, run_id="a7", round=3)

A7_DOWNGRADES: dict[str, tuple[dict[str, Any], str]] = {
    "threshold": ({"t": 2}, "THRESHOLD"),
    "clients": ({"participants": (1, 2, 3, 4), "k": 3}, "TOO_FEW_CLIENTS"),
    "modulus": ({"modulus": 1 << 16, "bits": 8}, "MODULUS"),
    "clip": ({"clip": 2.0}, "CLIP"),
    "dp-noise": ({"dp_noise_multiplier": 0.25}, "DP_NOISE"),
    "dp-noise-off": ({"dp_noise_multiplier": 0.0}, "DP_NOISE"),
    "min-aggregate": ({"min_aggregate": 2}, "MIN_AGGREGATE"),
    "mode": ({"mode": Mode.HARDENED, "t": 6}, "MODE"),
    "dimension": ({"dim": 6}, "DIMENSION"),
    "graph-degree": ({"k": 8}, "GRAPH_DEGREE"),
    "graph-too-sparse": ({"k": 2}, "PARAMETERS"),
}


def _a7_client(policy: ClientPolicy = A7_POLICY) -> ClientSession:
    vec = ClientInput(np.zeros(A7_HONEST.dim, dtype=np.float32))
    return ClientSession(1, rng=DeterministicRandom(b"a7-client"), policy=policy, input=vec)


@pytest.mark.property("P2", "P4")
def test_A7_the_honest_configuration_is_accepted() -> None:
    """Control: the same silo and policy take part when nothing is downgraded."""
    client = _a7_client()
    [reply] = client.receive(SetupRequest(A7_HONEST))
    assert isinstance(reply, AdvertiseKeys)
    assert reply.round_tag == A7_HONEST.round_tag()
    assert client.state is ClientState.ADVERTISED and client.holds_round_secrets


@pytest.mark.property("P2", "P4", "P11")
@pytest.mark.parametrize("downgrade", sorted(A7_DOWNGRADES))
def test_A7_parameter_downgrade_is_refused_at_setup(downgrade: str) -> None:
    """t, n, modulus, clip, DP noise, mode, minimum aggregate, dimension or graph degree below policy."""
    changes, code = A7_DOWNGRADES[downgrade]
    cfg = dataclasses.replace(A7_HONEST, **changes)  # a valid RoundConfig, only below this silo's floor
    client = _a7_client()
    wire = Wire()
    replies = deliver(client, SetupRequest(cfg), wire)
    assert replies == [ClientAbort(code, replies[0].reason)]
    assert_aborted(client, code, wire, refusal=True)
    assert wire.sent_by(1, AdvertiseKeys) == []
    assert client.config is None  # the refused configuration was never adopted


@pytest.mark.property("P2", "P4", "P11")
@pytest.mark.parametrize("mode", MODES)
def test_A7_downgrade_shown_to_one_silo_is_refused_and_the_rest_continue(mode: Mode) -> None:
    """In a live round: the one silo shown a wider clip range than its policy allows refuses at setup;
    the others finish the round exactly without it."""
    policy = ClientPolicy(corrupt_fraction=0, dropout_fraction=0, require_derived_degree=False, max_clip=1.0)
    setup = new_round(round_config(N, mode=mode, t=T, clip=1.0), seed=113, policy=policy)
    wider = _rewrite_to(VICTIM, SetupRequest, lambda m: SetupRequest(dataclasses.replace(m.config, clip=4.0)))
    _, wire = play(setup, to_client=wider)
    assert_aborted(setup.clients[VICTIM], "CLIP", wire, refusal=True)
    assert wire.sent_by(VICTIM, AdvertiseKeys) == []
    assert_exact_sum(setup, _others(VICTIM))


# ------------------------------------------------------------------------------------------------ A8

_OTHER_SID = bytes(range(32))


def _sid_lies(mode: Mode) -> dict[str, tuple[type, Callable[[Any], Any], str, bool]]:
    """name -> (message type, rewrite, expected code, whether the victim's masked input is in the sum)."""
    lies: dict[str, tuple[type, Callable[[Any], Any], str, bool]] = {
        "keys-other-session-id": (
            KeysBroadcast,
            lambda m: dataclasses.replace(m, session_id=_OTHER_SID),
            "SESSION_ID_MISMATCH",
            False,
        ),
        "keys-session-id-over-other-key-set": (
            KeysBroadcast,  # the server's real session id, but one peer's keys left out of this copy
            lambda m: dataclasses.replace(m, advertisements=m.advertisements[:-1]),
            "SESSION_ID_MISMATCH",
            False,
        ),
        "keys-other-round-tag": (
            KeysBroadcast,
            lambda m: dataclasses.replace(m, round_tag=bytes(32)),
            "ROUND_MISMATCH",
            False,
        ),
        "shares-other-session-id": (
            SharesDelivery,
            lambda m: dataclasses.replace(m, session_id=_OTHER_SID),
            "SESSION_ID_MISMATCH",
            False,
        ),
        "unmask-other-session-id": (
            UnmaskRequest,
            lambda m: dataclasses.replace(m, session_id=_OTHER_SID),
            "SESSION_ID_MISMATCH",
            True,
        ),
    }
    if mode is Mode.HARDENED:
        lies["consistency-other-session-id"] = (
            ConsistencyRequest,
            lambda m: dataclasses.replace(m, session_id=_OTHER_SID),
            "SESSION_ID_MISMATCH",
            True,
        )
    return lies


@pytest.mark.property("P2", "P4", "P11")
@pytest.mark.parametrize(
    ("mode", "lie"),
    [(m, name) for m in MODES for name in sorted(_sid_lies(m))],
)
def test_A8_session_id_differs_from_the_clients_derivation(mode: Mode, lie: str) -> None:
    """At every stage the client checks the server's session id against its own derivation."""
    kind, change, code, victim_in_sum = _sid_lies(mode)[lie]
    setup = new_round(round_config(N, mode=mode, t=T), seed=114)
    _, wire = play(setup, to_client=_rewrite_to(VICTIM, kind, change))
    assert_aborted(setup.clients[VICTIM], code, wire)
    if kind is KeysBroadcast:
        assert_nothing_sent_after_setup(VICTIM, wire)
    if kind is SharesDelivery:
        assert wire.sent_by(VICTIM, MaskedInputChunk) == []
    assert_exact_sum(setup, ALL if victim_in_sum else _others(VICTIM))


# ------------------------------------------------------------------------------------------------ A9


class _ModelSplitter:
    """A liar showing group B another model (model_hash) and translating, up to `level`, every identifier
    that would give the split away: 0 nothing, 1 round tags of B's advertisements, 2 the round tag of B's
    key broadcast, 3 session ids both ways."""

    def __init__(self, cfg: RoundConfig, group_b: tuple[int, ...], level: int) -> None:
        self.cfg_b = dataclasses.replace(cfg, model_hash=bytes([1]) * 32)
        self.tag_a, self.tag_b = cfg.round_tag(), self.cfg_b.round_tag()
        self.group_b, self.level = group_b, level
        self.sid_a: bytes | None = None
        self.sid_b: bytes | None = None

    def to_client(self, cid: int, msg: ServerMessage) -> ServerMessage:
        if cid not in self.group_b:
            return msg
        if isinstance(msg, SetupRequest):
            return SetupRequest(self.cfg_b)
        if isinstance(msg, KeysBroadcast) and self.level >= 2:
            self.sid_a = msg.session_id
            self.sid_b = recipes.session_id(self.tag_b, msg.advertisements)
            sid = self.sid_b if self.level >= 3 else msg.session_id
            return KeysBroadcast(self.tag_b, sid, msg.advertisements)
        if isinstance(msg, SharesDelivery) and self.level >= 3:
            assert self.sid_b is not None
            return dataclasses.replace(msg, session_id=self.sid_b)
        return msg

    def to_server(self, cid: int, msg: Any) -> Any:
        if cid not in self.group_b:
            return msg
        if isinstance(msg, AdvertiseKeys) and self.level >= 1:
            return AdvertiseKeys(self.tag_a, msg.advertisement)
        if isinstance(msg, ShareKeys) and self.level >= 3:
            assert self.sid_a is not None
            return dataclasses.replace(msg, session_id=self.sid_a)
        return msg


A9_CASES = [
    # (mode, level, code of group B, code of group A, server's code)
    (Mode.SEMI_HONEST, 0, "SERVER_ABORT", "SERVER_ABORT", "TOO_FEW_CLIENTS"),
    (Mode.SEMI_HONEST, 1, "ROUND_MISMATCH", "SERVER_ABORT", "TOO_FEW_CLIENTS"),
    (Mode.SEMI_HONEST, 2, "SESSION_ID_MISMATCH", "SERVER_ABORT", "TOO_FEW_CLIENTS"),
    (Mode.SEMI_HONEST, 3, "AUTHENTICATION_FAILED", "AUTHENTICATION_FAILED", "TOO_FEW_CLIENTS"),
    (Mode.HARDENED, 0, "SERVER_ABORT", "SERVER_ABORT", "TOO_FEW_CLIENTS"),
    (Mode.HARDENED, 1, "SERVER_ABORT", "SERVER_ABORT", "TOO_FEW_CLIENTS"),
    (Mode.HARDENED, 3, "SERVER_ABORT", "SERVER_ABORT", "TOO_FEW_CLIENTS"),
]


@pytest.mark.property("P2", "P4", "P11")
@pytest.mark.parametrize(("mode", "level", "code_b", "code_a", "server_code"), A9_CASES)
def test_A9_different_models_to_different_clients_abort_without_aggregate(
    mode: Mode, level: int, code_b: str, code_a: str, server_code: str
) -> None:
    """Half the silos are shown another model: however carefully the liar translates identifiers, the
    two halves cannot complete one round together; no masked input leaves any silo, no aggregate."""
    cfg = round_config(N, mode=mode, t=T)
    setup = new_round(cfg, seed=115)
    group_b = (4, 5, 6)
    liar = _ModelSplitter(cfg, group_b, level)
    run, wire = play(setup, to_client=liar.to_client, to_server=liar.to_server)
    assert_server_aborted(setup, server_code)
    assert not run.ok
    for c in ALL:
        client = setup.clients[c]
        code = code_b if c in group_b else code_a
        assert client.state is ClientState.ABORTED
        assert client.error is not None and client.error.code == code, (c, str(client.error))
        assert not client.holds_round_secrets
        assert_no_share_left(client, wire)
        assert wire.sent_by(c, MaskedInputChunk) == []
    if level == 0 or mode is Mode.HARDENED:  # the server itself turned group B's advertisements away
        rejected = [a.client for a in _audits(run.audit, "client-rejected")]
        assert rejected == list(group_b)


@pytest.mark.property("P2", "P4")
@pytest.mark.parametrize("mode", MODES)
def test_A9_minority_shown_another_model_is_left_out_of_the_aggregate(mode: Mode) -> None:
    """If enough silos share the real model, the round completes over exactly them: the silos shown
    another model never contribute, so no aggregate mixes two models."""
    cfg = round_config(N, mode=mode, t=T)
    setup = new_round(cfg, seed=116)
    liar = _ModelSplitter(cfg, (5, 6), level=0)
    _, wire = play(setup, to_client=liar.to_client, to_server=liar.to_server)
    assert_exact_sum(setup, (1, 2, 3, 4))
    for c in (5, 6):
        assert wire.sent_by(c, ShareKeys) == [] and wire.sent_by(c, MaskedInputChunk) == []
        assert setup.clients[c].config == liar.cfg_b


# ------------------------------------------------------------------------------------------------ A10


def _rejoin(setup: Any, client_id: int, seed: bytes) -> ClientSession:
    """A fresh session of the same silo: same policy, identity, input and, crucially, the same ledger."""
    old = setup.clients[client_id]
    return ClientSession(
        client_id,
        rng=DeterministicRandom(seed + b"-%d" % client_id),
        policy=old.policy,
        identity=old._identity,
        ledger=old._ledger,
        input=setup.inputs[client_id],
    )


@pytest.mark.property("P5", "P11")
@pytest.mark.parametrize("mode", MODES)
def test_A10_same_round_set_up_again_after_masked_input_is_refused(mode: Mode) -> None:
    """The server withholds the unmask step, lets the round fail, then sets the same (run, round) up
    again (same or altered configuration): every silo that sent its masked input refuses to contribute
    twice; one that stopped before sending it may join."""
    cfg = round_config(N, mode=mode, t=T)
    late = 6  # stops when asked for its masked input: it never contributed
    setup = new_round(cfg, seed=117, drop_at={late: Stage.MASKED_INPUT})
    _, wire = play(setup, to_client=lambda cid, m: None if isinstance(m, UnmaskRequest) else m)
    assert_server_aborted(setup, "TOO_FEW_SHARES")
    contributed = _others(late)
    assert all(wire.sent_by(c, MaskedInputChunk) for c in contributed)

    for again in (cfg, dataclasses.replace(cfg, model_hash=bytes([7]) * 32, graph_seed=bytes(32))):
        for c in contributed:
            client = _rejoin(setup, c, b"again")
            replies = client.receive(SetupRequest(again))
            assert replies == [ClientAbort("ALREADY_CONTRIBUTED", replies[0].reason)]
            assert_aborted(client, "ALREADY_CONTRIBUTED", refusal=True)
        fresh = _rejoin(setup, late, b"again")
        [reply] = fresh.receive(SetupRequest(again))
        assert isinstance(reply, AdvertiseKeys)
    # the next round is fine
    [reply] = _rejoin(setup, 1, b"next").receive(SetupRequest(dataclasses.replace(cfg, round=cfg.round + 1)))
    assert isinstance(reply, AdvertiseKeys)


@pytest.mark.property("P5", "P11")
@pytest.mark.parametrize("mode", MODES)
def test_A10_rerun_of_a_completed_round_gets_no_contribution(mode: Mode) -> None:
    """A whole second server session for a (run, round) that already completed: no silo advertises keys,
    the server aborts and produces no second aggregate."""
    cfg = round_config(N, mode=mode, t=T)
    setup = new_round(cfg, seed=118)
    play(setup)
    assert_exact_sum(setup, ALL)
    again = dataclasses.replace(setup, clients={c: _rejoin(setup, c, b"rerun") for c in ALL})
    again.server = ServerSession(cfg, roster=setup.server.roster)
    _, wire = play(again)
    assert_server_aborted(again, "TOO_FEW_CLIENTS")
    for c in ALL:
        assert wire.sent_by(c, AdvertiseKeys) == []
        assert_aborted(again.clients[c], "ALREADY_CONTRIBUTED", wire, refusal=True)


@pytest.mark.property("P5", "P11")
@pytest.mark.parametrize("mode", MODES)
def test_A10_setup_replayed_into_a_live_session_aborts(mode: Mode) -> None:
    """A SetupRequest replayed to a session that already sent its masked input is illegal there."""
    setup = new_round(round_config(N, mode=mode, t=T), seed=119)
    hook = _rewrite_to(VICTIM, SharesDelivery, lambda m: [m, SetupRequest(setup.config)])
    _, wire = play(setup, to_client=hook)
    assert len(wire.sent_by(VICTIM, MaskedInputChunk)) == 1
    assert_aborted(setup.clients[VICTIM], "UNEXPECTED_MESSAGE", wire)
    assert wire.sent_by(VICTIM, AdvertiseKeys) and len(wire.sent_by(VICTIM, AdvertiseKeys)) == 1
    # its masked input is in, and the others hold its seed shares: the round still completes exactly
    assert_exact_sum(setup, ALL)


# ------------------------------------------------------------------------------------------------ A11


class _ShareShuffler:
    """Records share ciphertexts as clients send them and rewrites the victim's delivery."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.sent: dict[int, dict[int, bytes]] = {}

    def to_server(self, cid: int, msg: Any) -> Any:
        if isinstance(msg, ShareKeys):
            self.sent[cid] = dict(msg.ciphertexts)
        return msg

    def to_client(self, cid: int, msg: ServerMessage) -> ServerMessage:
        if cid != VICTIM or not isinstance(msg, SharesDelivery):
            return msg
        cts = dict(msg.ciphertexts)
        if self.how == "reflected":  # the victim's own ciphertext for peer 2, sent back "from" peer 2
            cts[2] = self.sent[VICTIM][2]
        elif self.how == "sender-relabelled":  # peer 2's and peer 3's ciphertexts swapped
            cts[2], cts[3] = cts[3], cts[2]
        elif self.how == "recipient-relabelled":  # peer 2's ciphertext for peer 4, delivered to the victim
            cts[2] = self.sent[2][4]
        elif self.how == "bit-flipped":
            ct = bytearray(cts[2])
            ct[-1] ^= 1
            cts[2] = bytes(ct)
        return dataclasses.replace(msg, ciphertexts=tuple(sorted(cts.items())))


@pytest.mark.property("P2", "P11")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["reflected", "sender-relabelled", "recipient-relabelled", "bit-flipped"])
def test_A11_reflected_or_relabelled_share_ciphertext_aborts(mode: Mode, how: str) -> None:
    """The AEAD associated data binds (session, sender, recipient): reflection and relabelling fail."""
    setup = new_round(round_config(N, mode=mode, t=T), seed=120)
    liar = _ShareShuffler(how)
    _, wire = play(setup, to_client=liar.to_client, to_server=liar.to_server)
    assert_aborted(setup.clients[VICTIM], "AUTHENTICATION_FAILED", wire)
    assert wire.sent_by(VICTIM, MaskedInputChunk) == []
    # the victim is in U2 but not U3: its pairwise masks are removed, its input is not in the sum
    assert_exact_sum(setup, _others(VICTIM))
    assert setup.server.result is not None and setup.server.result.dropped == (VICTIM,)


# ------------------------------------------------------------------------------------------------ A12


@pytest.mark.property("P2", "P11")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["enc_public", "mask_public"])
@pytest.mark.parametrize("bad", range(len(LOW_ORDER_KEYS)))
def test_A12_low_order_peer_key_in_the_broadcast_aborts(mode: Mode, which: str, bad: int) -> None:
    """An all-zero or small-order X25519 key for a peer (session id recomputed to match): a typed abort
    before any share is made, never a crash and never a zero shared secret."""
    setup = new_round(round_config(N, mode=mode, t=T), seed=121)
    peer = 4

    def change(msg: KeysBroadcast) -> KeysBroadcast:
        old = next(a for a in msg.advertisements if a.client_id == peer)
        return resigned_broadcast(msg, {peer: dataclasses.replace(old, **{which: LOW_ORDER_KEYS[bad]})})

    _, wire = play(setup, to_client=_rewrite_to(VICTIM, KeysBroadcast, change))
    assert_aborted(setup.clients[VICTIM], "INVALID_PEER_KEY", wire)
    assert_nothing_sent_after_setup(VICTIM, wire)
    assert_exact_sum(setup, _others(VICTIM))


@pytest.mark.property("P2", "P7")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["enc_public", "mask_public"])
@pytest.mark.parametrize("bad", range(len(LOW_ORDER_KEYS)))
def test_A12_client_advertising_a_low_order_key_is_rejected_and_the_round_continues(
    mode: Mode, which: str, bad: int
) -> None:
    """A (malicious) silo advertises a small-order key, properly signed in hardened mode: the server
    rejects that silo, no honest silo aborts, and the round completes exactly without it."""
    setup = new_round(round_config(N, mode=mode, t=T), seed=122)
    rogue = 3

    def to_server(cid: int, msg: Any) -> Any:
        if cid != rogue or not isinstance(msg, AdvertiseKeys):
            return msg
        adv = dataclasses.replace(msg.advertisement, **{which: LOW_ORDER_KEYS[bad]})
        if mode is Mode.HARDENED:  # the rogue silo signs its own bad key with its real identity
            payload = recipes.advertisement_payload(msg.round_tag, rogue, adv.enc_public, adv.mask_public)
            adv = dataclasses.replace(
                adv, signature=setup.clients[rogue]._identity.sign(payload, context=recipes.SIG_ADVERTISE)
            )
        return AdvertiseKeys(msg.round_tag, adv)

    run, _ = play(setup, to_server=to_server)
    rejected = _audits(run.audit, "client-rejected")
    assert [a.client for a in rejected] == [rogue]
    assert rejected[0].stage == Stage.ADVERTISE_KEYS.value
    assert _audits(run.audit, "client-aborted") == []
    assert all(setup.clients[c].state is ClientState.DONE for c in _others(rogue))
    assert_exact_sum(setup, _others(rogue))
    assert setup.server.result is not None and rogue not in setup.server.result.dropped


@pytest.mark.property("P2")
def test_A12_every_test_key_is_refused_by_x25519_agreement() -> None:
    """Sanity of the test data: X25519 with any key of LOW_ORDER_KEYS gives no shared secret."""
    pair = X25519KeyPair.generate(DeterministicRandom(b"a12"))
    assert len(set(LOW_ORDER_KEYS)) == len(LOW_ORDER_KEYS) == 8
    for key in LOW_ORDER_KEYS:
        with pytest.raises(InvalidPeerKeyError):
            pair.agree(key)


@pytest.mark.property("P2")
def test_A12_key_check_refuses_exactly_the_keys_agreement_refuses() -> None:
    """The advertised-key check (client and server) refuses a key iff X25519 agreement with it yields no
    secret: every small-order key and encoding variant (top bit set, u + p), and no honest key."""
    probe = X25519KeyPair.generate(DeterministicRandom(b"a12-probe"))
    p = 2**255 - 19
    variants = set(LOW_ORDER_KEYS)
    for key in LOW_ORDER_KEYS:
        u = int.from_bytes(key, "little") & ((1 << 255) - 1)
        variants.add((u | 1 << 255).to_bytes(32, "little"))
        if u + p < 1 << 255:
            variants.add((u + p).to_bytes(32, "little"))
    honest = [X25519KeyPair.generate(DeterministicRandom(b"a12-%d" % i)).public_bytes for i in range(64)]
    for key in sorted(variants) + honest:
        try:
            probe.agree(key)
            agrees = True
        except InvalidPeerKeyError:
            agrees = False
        try:
            recipes.check_round_public_key(key)
            accepted = True
        except InvalidPeerKeyError:
            accepted = False
        assert accepted == agrees == (key in honest), key.hex()
