"""Client-side robustness: a hostile peer's share and a failing local input never leave secrets behind."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from secagg.crypto import aead, shamir
from secagg.crypto.rng import DeterministicRandom
from secagg.protocol import recipes
from secagg.protocol.client import ClientInput
from secagg.protocol.messages import ClientMessage, ShareKeys, UnmaskResponse
from secagg.protocol.rules import ClientState
from secagg.simulation import build, expected_sum, make_config, run


def _exact(setup, survivors) -> None:  # type: ignore[no-untyped-def]
    res = setup.server.result
    assert res is not None and res.survivors == tuple(survivors)
    want, total = expected_sum(setup, res.survivors)
    assert np.array_equal(res.sum, want) and total == res.total_weight


@pytest.mark.property("P8", "P11")
def test_out_of_field_share_from_a_peer_is_refused_on_arrival() -> None:
    """Client 1 encrypts a share whose values are >= p to client 2. Client 2 refuses it when it arrives
    (typed abort before its masked input), instead of forwarding it at unmask and being rejected there."""
    setup = build(make_config(5, 20), seed=4)
    attacker, victim = 1, 2
    forwarded: list[tuple[int, ClientMessage]] = []

    def hook(cid: int, msg: ClientMessage) -> ClientMessage:
        forwarded.append((cid, msg))
        if cid == attacker and isinstance(msg, ShareKeys):
            secrets = setup.clients[attacker]._secrets  # the attacker's own key, as a malicious client has it
            assert secrets is not None
            bad = struct.pack(">17I", victim, *([shamir.P] * shamir.LIMBS))
            good_key = struct.pack(">17I", victim, *([1] * shamir.LIMBS))
            pt = recipes.encode_share_plaintext(attacker, victim, bad, good_key)
            ad = recipes.share_associated_data(msg.session_id, attacker, victim)
            ct = aead.seal(secrets.pair_keys[victim], pt, associated_data=ad, rng=DeterministicRandom(1))
            cts = tuple((r, ct if r == victim else c) for r, c in msg.ciphertexts)
            return dataclasses.replace(msg, ciphertexts=cts)
        return msg

    run(setup, to_server=hook)
    client = setup.clients[victim]
    assert client.state is ClientState.ABORTED and not client.holds_round_secrets
    assert client.error is not None and client.error.code == "BAD_ENCODING"
    assert not any(cid == victim and isinstance(m, UnmaskResponse) for cid, m in forwarded)
    assert client.revealed_seed_owners == set() and client.revealed_key_owners == set()
    _exact(setup, [1, 3, 4, 5])


@pytest.mark.property("P8", "P11")
def test_failing_input_provider_aborts_only_that_client() -> None:
    setup = build(make_config(5, 20), seed=5)

    def broken(config):  # type: ignore[no-untyped-def]
        raise RuntimeError("local training crashed")

    setup.clients[3].provide_input(broken)
    run(setup)
    client = setup.clients[3]
    assert client.state is ClientState.ABORTED and not client.holds_round_secrets
    assert client.error is not None and client.error.code == "BAD_INPUT"
    _exact(setup, [1, 2, 4, 5])


@pytest.mark.property("P8", "P11")
def test_nan_input_aborts_only_that_client() -> None:
    setup = build(make_config(5, 20), seed=6)
    vec = np.zeros(20, dtype=np.float32)
    vec[7] = np.nan
    setup.clients[4].provide_input(ClientInput(vec, 1))
    run(setup)
    client = setup.clients[4]
    assert client.state is ClientState.ABORTED and not client.holds_round_secrets
    assert client.error is not None and client.error.code == "BAD_INPUT" and "NaN" in str(client.error)
    _exact(setup, [1, 2, 3, 5])


def test_integers_round_refuses_float_or_malformed_inputs() -> None:
    """In an 'integers' round a client must hand over ring elements of the round's length and dtype."""
    import dataclasses as dc

    cfg = dc.replace(make_config(4, 16), encoding="integers")
    setup = build(cfg, seed=8)
    good = np.arange(16, dtype=np.uint32)
    setup.clients[1].provide_input(ClientInput.integers(good))
    setup.clients[2].provide_input(ClientInput(np.zeros(16, np.float32), 1))  # floats: refused
    setup.clients[3].provide_input(ClientInput.integers(np.arange(16, dtype=np.uint64)))  # wrong dtype
    setup.clients[4].provide_input(ClientInput.integers(np.arange(16, dtype=np.uint32) * 3))
    run(setup)
    for bad in (2, 3):
        client = setup.clients[bad]
        assert client.error is not None and client.error.code == "BAD_INPUT" and not client.holds_round_secrets
    res = setup.server.result
    assert res is not None and res.survivors == (1, 4) and res.mean is None
    assert np.array_equal(res.sum, good + good * 3) and res.total_weight == 2


def test_quantisation_blocks_match_one_pass_across_a_block_boundary() -> None:
    """Clients quantise in blocks of 2^20 coordinates; the sum equals the one-pass plaintext sum."""
    from secagg.simulation import simulate

    report = simulate(3, (1 << 20) + 7, dropout=0.0, seed=11)
    assert report["ok"] and report["exact"]
