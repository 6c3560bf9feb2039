"""Malicious clients with an honest server: no coalition of up to C clients isolates an honest peer
(threat_model.md P1, P7, P10, R2; SPEC §3.1, §10.1).

The review's attack: client 3 sends undecryptable share ciphertexts to every peer but the victim; the others
abort (AUTHENTICATION_FAILED, as Bonawitz et al. prescribe), and a round over {3, 5} would hand client 3 the
victim's input. The defence is the minimum aggregate: C + 2 for the C corrupt clients the configuration
tolerates, required by the server (propose_round) and by every client (its policy), so any aggregate holds two
honest inputs. The property test lets up to C malicious clients sabotage any honest peers at any stage.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from secagg.errors import ConfigurationError
from secagg.protocol import params
from secagg.protocol.config import ClientPolicy, Mode
from secagg.protocol.messages import (
    AdvertiseKeys,
    ClientAbort,
    ClientMessage,
    ConsistencySignature,
    MaskedInputChunk,
    ShareKeys,
    UnmaskResponse,
)
from secagg.protocol.server import ServerSession
from secagg.simulation import build, make_config, run
from tests.protocol_helpers import assert_exact_sum, assert_server_aborted

STAGE_REPLIES: dict[str, type] = {
    "advertise": AdvertiseKeys,
    "share": ShareKeys,
    "mask": MaskedInputChunk,
    "sign": ConsistencySignature,
    "unmask": UnmaskResponse,
}


def _broken(ct: bytes) -> bytes:
    return ct[:-1] + bytes([ct[-1] ^ 1])  # fails authentication


def _garbage_to_all_but(victim: int, attackers: set[int]) -> Any:
    def hook(cid: int, msg: ClientMessage) -> ClientMessage:
        if cid in attackers and isinstance(msg, ShareKeys):
            cts = tuple((r, ct if r == victim or r in attackers else _broken(ct)) for r, ct in msg.ciphertexts)
            return dataclasses.replace(msg, ciphertexts=cts)
        return msg

    return hook


@pytest.mark.property("P1", "P10")
@pytest.mark.parametrize(("n", "attackers"), [(10, {3}), (20, {3, 4})])
def test_the_reviews_isolation_attack_gets_no_aggregate(n: int, attackers: set[int]) -> None:
    """n = 10 (C = 1) with one attacker, n = 20 (C = 2) with two colluders, default derived configuration and
    default policy: every honest peer but the victim aborts, and the survivors {attackers, victim} are fewer
    than C + 2, so the server aborts and no aggregate exists."""
    victim = 5
    cfg = make_config(n, 8, seed=31)
    assert cfg.min_aggregate == params.min_aggregate_floor(n, 0.1) == len(attackers) + 2
    setup = build(cfg, seed=31, policy=ClientPolicy())
    run_ = run(setup, to_server=_garbage_to_all_but(victim, attackers))
    assert_server_aborted(setup, "TOO_FEW_CLIENTS")
    assert not run_.ok
    honest_others = [c for c in cfg.participants if c not in attackers and c != victim]
    for c in honest_others:
        assert setup.clients[c].error is not None and setup.clients[c].error.code == "AUTHENTICATION_FAILED"
    # and the attackers are named: more than C clients could not open their shares
    assert set(setup.server.blamed) == attackers
    assert [a.client for a in run_.audit if a.event == "client-blamed"] == sorted(attackers)


@pytest.mark.property("P10")
def test_a_client_refuses_a_round_whose_minimum_aggregate_is_below_two_honest_inputs() -> None:
    """A server that proposes min_aggregate = 2 to ten silos that assume 10% corrupt (C = 1) is refused."""
    cfg = dataclasses.replace(make_config(10, 4, seed=32), min_aggregate=2)
    setup = build(cfg, seed=32, policy=ClientPolicy())
    run(setup)
    assert all(s.error is not None and s.error.code == "MIN_AGGREGATE" for s in setup.clients.values())
    assert ClientPolicy().min_aggregate_for(10) == 3 and ClientPolicy(min_aggregate=5).min_aggregate_for(10) == 5


@pytest.mark.property("P9", "P10")
@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=2, max_value=400),
    st.floats(min_value=0.0, max_value=0.6),
    st.floats(min_value=0.0, max_value=0.6),
    st.sampled_from(["semi-honest", "hardened"]),
)
def test_any_derivable_configuration_leaves_two_honest_inputs_after_the_dropouts(
    n: int, gamma: float, delta: float, mode: str
) -> None:
    """Liveness of the C + 2 floor: whenever (k, t) can be derived, C + 2 clients remain after D dropouts."""
    try:
        params.derive_params(n, gamma, delta, mode)  # type: ignore[arg-type]
    except ConfigurationError:
        assume(False)
    assert params.min_aggregate_floor(n, gamma) <= n - params.max_dropouts(n, delta)


# ---------------------------------------------------------------- the class


@st.composite
def _coalitions(draw: st.DrawFn) -> tuple[Any, float, frozenset[int], dict[int, tuple[str, Any]]]:
    mode = draw(st.sampled_from([Mode.SEMI_HONEST, Mode.HARDENED]))
    n = draw(st.integers(min_value=4, max_value=16))
    gamma = draw(st.sampled_from((0.1, 0.2, 0.25, 0.3)))
    try:
        cfg = make_config(n, 3, mode=mode, seed=draw(st.integers(0, 999)), corrupt_fraction=gamma, dropout_fraction=0.0)
    except ConfigurationError:
        assume(False)
    c = params.max_corrupt(n, gamma)
    bad = frozenset(draw(st.sets(st.sampled_from(cfg.participants), min_size=min(1, c), max_size=c)))
    plans: dict[int, tuple[str, Any]] = {}
    for m in sorted(bad):
        stage = draw(st.sampled_from(sorted(STAGE_REPLIES)))
        victims = frozenset(draw(st.sets(st.sampled_from(cfg.participants))))
        how = draw(st.sampled_from(("abort", "silent", "tamper")))
        plans[m] = (stage, (how, victims))
    return cfg, gamma, bad, plans


def _sabotage(bad: frozenset[int], plans: dict[int, tuple[str, Any]], tampered: set[int]) -> Any:
    def hook(cid: int, msg: ClientMessage) -> ClientMessage | None:
        if cid not in bad:
            return msg
        stage, (how, victims) = plans[cid]
        if not isinstance(msg, STAGE_REPLIES[stage]):
            return msg
        if how == "abort":
            return ClientAbort("SABOTAGE", "a malicious client walks out")
        if how == "silent":
            return None
        if isinstance(msg, ShareKeys):  # undecryptable shares for the chosen honest peers
            cts = tuple((r, _broken(ct) if r in victims else ct) for r, ct in msg.ciphertexts)
            return dataclasses.replace(msg, ciphertexts=cts)
        if isinstance(msg, UnmaskResponse):  # corrupted shares of the chosen owners (in range, so decodable)

            def bump(owner: int, blob: bytes) -> bytes:
                if owner not in victims:
                    return blob
                y = (int.from_bytes(blob[4:8], "big") + 1) % ((1 << 31) - 1)
                return blob[:4] + y.to_bytes(4, "big") + blob[8:]

            return dataclasses.replace(
                msg,
                seed_shares=tuple((o, bump(o, b)) for o, b in msg.seed_shares),
                key_shares=tuple((o, bump(o, b)) for o, b in msg.key_shares),
            )
        if isinstance(msg, MaskedInputChunk):  # a masked input the sum cannot absorb (usually BAD_AGGREGATE)
            tampered.add(cid)
            data = msg.data.copy()
            data[0] ^= data.dtype.type(1 << (data.dtype.itemsize * 8 - 1))
            return dataclasses.replace(msg, data=data)
        return msg  # signatures and advertisements: nothing more to spoil than silence or an abort

    return hook


@pytest.mark.property("P1", "P6", "P7", "P10")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(_coalitions())
def test_up_to_c_malicious_clients_never_get_an_aggregate_with_fewer_than_two_honest_inputs(
    case: tuple[Any, float, frozenset[int], dict[int, tuple[str, Any]]],
) -> None:
    """Up to C malicious clients, each spoiling one stage (walking out, going silent, or tampering: shares
    no chosen honest peer can open, corrupted unmask shares of chosen owners, an impossible masked input),
    honest server, honest peers with the default policy: the server either aborts with a typed error or
    releases an aggregate with at least two honest inputs, exact over its survivors unless a malicious
    client's own masked input was altered."""
    cfg, gamma, bad, plans = case
    setup = build(cfg, seed=cfg.round, policy=ClientPolicy(corrupt_fraction=gamma, dropout_fraction=0.0))
    # the server counts the same C: blame is framing-proof for at most C corrupt clients (SPEC §11.8)
    setup.server = ServerSession(cfg, roster=setup.server.roster, corrupt_fraction=gamma)
    tampered: set[int] = set()
    run(setup, to_server=_sabotage(bad, plans, tampered))
    res = setup.server.result
    # accountability without framing: only malicious clients are ever named
    assert set(setup.server.blamed) <= bad, (setup.server.blamed, sorted(bad))
    event(f"blamed: {'some' if setup.server.blamed else 'none'}")
    event(f"outcome: {'aggregate' if res is not None else setup.server.error.code if setup.server.error else '?'}")
    if res is None:
        assert setup.server.error is not None
        return
    honest = [c for c in res.survivors if c not in bad]
    assert len(honest) >= 2, f"aggregate over {res.survivors} with malicious {sorted(bad)}"
    if not tampered & set(res.survivors):
        assert_exact_sum(setup, res.survivors)


@pytest.mark.property("P7", "P2")
@pytest.mark.parametrize("form", ["bit-255-set", "u-plus-p"])
def test_a_non_canonical_mask_key_is_refused_where_it_is_advertised(form: str) -> None:
    """The same point in a non-canonical encoding used to pass every check and abort the round once its
    owner dropped (the reconstructed key's canonical public key differs from the advertised bytes). Now the
    server rejects the advertisement and the round goes on without that client, even when others drop."""
    from secagg.protocol.messages import KeyAdvertisement

    cfg = make_config(6, 3, seed=33)
    setup = build(cfg, seed=33)
    p = 2**255 - 19

    def noncanonical(cid: int, msg: ClientMessage) -> ClientMessage:
        if cid == 2 and isinstance(msg, AdvertiseKeys):
            u = int.from_bytes(msg.advertisement.mask_public, "little")
            bad = u | (1 << 255) if form == "bit-255-set" else u + p
            if bad >= 1 << 256:  # pragma: no cover - u + p fits in 256 bits only for u < 2^256 - p
                bad = u | (1 << 255)
            adv = dataclasses.replace(msg.advertisement, mask_public=bad.to_bytes(32, "little"))
            return AdvertiseKeys(msg.round_tag, KeyAdvertisement(adv.client_id, adv.enc_public, adv.mask_public))
        return msg

    run_ = run(setup, to_server=noncanonical)
    rejected = [a for a in run_.audit if a.event == "client-rejected"]
    assert [a.client for a in rejected] == [2] and "canonical" in rejected[0].detail
    assert_exact_sum(setup, (1, 3, 4, 5, 6))


@pytest.mark.property("P6", "P7")
def test_colluders_corrupting_unmask_shares_are_set_aside_and_only_they_are_named() -> None:
    """n = 100, k = 22, t = 11, ten colluders that corrupt every share they reveal: decoding sets their shares
    aside (the old search over 64 subsets gave up and blamed honest clients), the sum is exact, and each
    colluder that corrupted shares of more than C = 10 owners is named, nobody else."""
    cfg = make_config(100, 4, seed=34)
    assert (cfg.k, cfg.t) == (22, 11)
    colluders = set(range(2, 100, 10))
    setup = build(cfg, seed=34, policy=ClientPolicy())

    def corrupt(cid: int, msg: ClientMessage) -> ClientMessage:
        if cid in colluders and isinstance(msg, UnmaskResponse):

            def bump(blob: bytes) -> bytes:
                y = (int.from_bytes(blob[4:8], "big") + 12345) % ((1 << 31) - 1)
                return blob[:4] + y.to_bytes(4, "big") + blob[8:]

            return dataclasses.replace(
                msg,
                seed_shares=tuple((o, bump(b)) for o, b in msg.seed_shares),
                key_shares=tuple((o, bump(b)) for o, b in msg.key_shares),
            )
        return msg

    run(setup, to_server=corrupt)
    assert_exact_sum(setup, cfg.participants)
    assert setup.server.blamed and set(setup.server.blamed) <= colluders


@pytest.mark.property("P6", "P7")
def test_a_dealer_of_inconsistent_shares_is_named_not_its_holders() -> None:
    """Client 4 deals a wrong share of its self-mask seed to every neighbour but t - 1 (inside the AEAD, so
    the ciphertexts open): its holders reveal what they got, decoding finds more than C of its shares bad, and
    the dealer is named, not the honest holders that revealed them."""
    cfg = make_config(10, 4, seed=35)
    setup = build(cfg, seed=35, policy=ClientPolicy())
    dealer = setup.clients[4]
    # corrupt the seed shares client 4 puts into its ciphertexts (the y of every recipient but two)
    original = dealer._on_keys

    def on_keys(msg: Any) -> Any:
        import secagg.protocol.client as client_module

        real = client_module.recipes.encode_share_plaintext
        count = {"n": 0}

        def bad_plaintext(sender: int, recipient: int, seed_share: bytes, key_share: bytes) -> bytes:
            count["n"] += 1
            if count["n"] > cfg.t - 1:
                y = (int.from_bytes(seed_share[4:8], "big") + 1) % ((1 << 31) - 1)
                seed_share = seed_share[:4] + y.to_bytes(4, "big") + seed_share[8:]
            return real(sender, recipient, seed_share, key_share)

        client_module.recipes.encode_share_plaintext = bad_plaintext  # type: ignore[assignment]
        try:
            return original(msg)
        finally:
            client_module.recipes.encode_share_plaintext = real  # type: ignore[assignment]

    dealer._on_keys = on_keys  # type: ignore[method-assign]
    run(setup)
    assert set(setup.server.blamed) == {4}, setup.server.blamed
