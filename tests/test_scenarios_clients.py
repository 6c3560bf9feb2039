"""Scenario group B: faulty or malicious clients, checked on the server (scenarios.md, B1-B9).

Each test runs real rounds through the in-process network and tampers with one client's messages in flight
(the `to_server` hook sees every client message before the server does). Outcomes are checked precisely:
REJECT means an audit record naming the client and the round going on without it; CONTINUE means the exact
ring sum over exactly the stated survivors (recomputed from the plaintext inputs); never a wrong sum.
B2 (oversized messages) and the certificate part of B8 belong to the transport tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.crypto import shamir
from secagg.crypto.keys import X25519KeyPair
from secagg.crypto.rng import DeterministicRandom
from secagg.crypto.secret import SecretBytes
from secagg.errors import ConfigurationError, RoundAborted
from secagg.protocol import recipes
from secagg.protocol.client import ClientInput
from secagg.protocol.config import ClientPolicy, Mode, RoundConfig
from secagg.protocol.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencySignature,
    MaskedInputChunk,
    ServerMessage,
    SetupRequest,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from secagg.protocol.rules import ClientState, ServerState, Stage
from secagg.protocol.server import FOLD_AFTER, Audit, ServerSession
from secagg.simulation import SimulationSetup, build, expected_sum, make_config, run
from secagg.transport.inprocess import RoundRun

P = shamir.P
LOW_MODULUS_POLICY = ClientPolicy(
    corrupt_fraction=0.0, dropout_fraction=0.0, require_derived_degree=False, min_modulus_bits=16
)
MODES = [Mode.SEMI_HONEST, Mode.HARDENED]

ToServer = Callable[[int, ClientMessage], ClientMessage | list[ClientMessage] | None]


# ---------------------------------------------------------------- helpers


def setup_round(
    n: int = 8,
    *,
    dim: int = 6,
    mode: Mode = Mode.SEMI_HONEST,
    t: int | None = None,
    k: int | None = None,
    seed: int = 11,
    chunk_elems: int | None = None,
    drop_at: dict[int, Stage] | None = None,
    policy: ClientPolicy | None = None,
    **config: Any,
) -> SimulationSetup:
    """A round of n clients (t defaults to the smallest threshold valid for the mode, plus one)."""
    if t is None:
        t = (n // 2 + 1) if mode is Mode.HARDENED else max(2, n // 2)
    cfg = make_config(n, dim, mode=mode, seed=seed, t=t, k=k, corrupt_fraction=0.0, dropout_fraction=0.0, **config)
    return build(cfg, seed=seed, chunk_elems=chunk_elems, drop_at=drop_at, policy=policy)


def tamper(client: int, kind: type, fn: Callable[[Any], Any]) -> ToServer:
    """A to_server hook applying fn to every message of type kind sent by client (others pass)."""

    def hook(cid: int, msg: ClientMessage) -> Any:
        if cid == client and isinstance(msg, kind):
            return fn(msg)
        return msg

    return hook


def events(rr: RoundRun, event: str, client: int | None = None) -> list[Audit]:
    return [a for a in rr.audit if a.event == event and (client is None or a.client == client)]


def assert_exact(setup: SimulationSetup, survivors: Iterable[int]) -> None:
    """CONTINUE: the server's result is the exact ring sum over exactly these survivors."""
    res = setup.server.result
    assert res is not None, f"no aggregate: {setup.server.error}"
    assert setup.server.error is None and setup.server.state is ServerState.DONE
    surv = tuple(sorted(survivors))
    assert res.survivors == surv
    want, total = expected_sum(setup, surv)
    assert res.sum.dtype == want.dtype
    assert np.array_equal(res.sum, want)
    assert res.total_weight == total


def assert_aborted(setup: SimulationSetup, *codes: str) -> None:
    """ABORT: a typed error, no aggregate, no accumulator left behind."""
    srv = setup.server
    assert srv.result is None
    assert isinstance(srv.error, RoundAborted)
    assert srv.error.code in codes, srv.error
    assert srv.state is ServerState.ABORTED


def assert_rejected(rr: RoundRun, client: int, stage: Stage) -> None:
    hits = events(rr, "client-rejected", client)
    assert hits, [a for a in rr.audit if a.client == client]
    assert hits[0].stage == stage.value


def everyone_but(setup: SimulationSetup, *gone: int) -> list[int]:
    return [c for c in setup.config.participants if c not in gone]


def replace(msg: Any, **changes: Any) -> Any:
    return dataclasses.replace(msg, **changes)


# ---------------------------------------------------------------- B1 masked vector of the wrong shape


def _short(m: MaskedInputChunk) -> MaskedInputChunk:
    return replace(m, data=m.data[:-1])


def _long(m: MaskedInputChunk) -> MaskedInputChunk:
    return replace(m, data=np.concatenate([m.data, m.data[:1]]))


B1_SINGLE_CHUNK: dict[str, Callable[[MaskedInputChunk], Any]] = {
    "too-short": _short,
    "too-long": _long,
    "empty": lambda m: replace(m, data=m.data[:0]),
    "uint64": lambda m: replace(m, data=m.data.astype(np.uint64)),
    "int32": lambda m: replace(m, data=m.data.astype(np.int32)),
    "float": lambda m: replace(m, data=m.data.astype(np.float64)),
    "two-dimensional": lambda m: replace(m, data=m.data.reshape(1, -1)),
    "not-an-array": lambda m: replace(m, data=m.data.tolist()),
    "count-zero": lambda m: replace(m, count=0),
    "count-two-one-sent": lambda m: replace(m, count=2),
    "count-huge": lambda m: replace(m, count=2**32 - 1),
    "index-one": lambda m: replace(m, index=1),
    "offset": lambda m: replace(m, offset=1),
    "other-session": lambda m: replace(m, session_id=bytes(32)),
}


@pytest.mark.property("P7")
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("fault", sorted(B1_SINGLE_CHUNK))
def test_B1_malformed_masked_vector_rejects_client_and_round_continues(fault: str, mode: Mode) -> None:
    setup = setup_round(mode=mode)
    rr = run(setup, to_server=tamper(3, MaskedInputChunk, B1_SINGLE_CHUNK[fault]))
    assert_rejected(rr, 3, Stage.MASKED_INPUT)
    # client 3 shared its keys, so its pairwise masks are removed like a dropout's; its input is not summed
    assert_exact(setup, everyone_but(setup, 3))
    assert setup.server.result is not None and 3 in setup.server.result.dropped


def _chunk_fault(fault: str) -> Callable[[MaskedInputChunk], Any]:
    def fn(m: MaskedInputChunk) -> Any:
        if m.index != 1:
            return m
        if fault == "skip":
            return None
        if fault == "count-changed":
            return replace(m, count=m.count + 1)
        if fault == "offset-gap":
            return replace(m, offset=m.offset + 1)
        if fault == "reordered":
            return None  # chunk 1 never arrives; chunk 2 arrives out of order
        if fault == "dtype":
            return replace(m, data=m.data.astype(np.uint64))
        raise AssertionError(fault)

    return fn


@pytest.mark.property("P7")
@pytest.mark.parametrize("fault", ["skip", "count-changed", "offset-gap", "dtype"])
def test_B1_bad_chunk_mid_stream_discards_partial_input(fault: str) -> None:
    """A stream that goes wrong after some good chunks: the staged part never reaches the sum."""
    setup = setup_round(dim=11, chunk_elems=4)  # 12 elements in 3 chunks
    rr = run(setup, to_server=tamper(5, MaskedInputChunk, _chunk_fault(fault)))
    assert_rejected(rr, 5, Stage.MASKED_INPUT)
    assert_exact(setup, everyone_but(setup, 5))


def _read_only(m: MaskedInputChunk) -> MaskedInputChunk:
    data = m.data.copy()
    data.setflags(write=False)
    return replace(m, data=data)


def _strided(m: MaskedInputChunk) -> MaskedInputChunk:
    return replace(m, data=np.repeat(m.data, 2)[::2])


def _through_the_codec(m: MaskedInputChunk) -> Any:
    return decode_message(encode_message(m))  # what a real transport hands the server


@pytest.mark.property("P7")
@pytest.mark.parametrize("form", [_read_only, _strided, _through_the_codec], ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("chunk", [None, 3], ids=["one-chunk", "chunked"])
def test_B1_valid_vector_in_another_memory_layout_is_accepted(
    form: Callable[[MaskedInputChunk], Any], chunk: int | None
) -> None:
    """Same values, other layout (read-only, as decoded from bytes; or a strided view): a valid input,
    summed exactly; never an exception out of the server."""
    setup = setup_round(dim=7, chunk_elems=chunk)
    rr = run(setup, to_server=tamper(2, MaskedInputChunk, form))
    assert not events(rr, "client-rejected")
    assert_exact(setup, setup.config.participants)


def _direct(setup: SimulationSetup) -> SimulationSetup:
    """The same round with a server that has no staging budget: every chunk goes straight into the sum."""
    old = setup.server
    setup.server = ServerSession(setup.config, roster=old.roster, timeouts=old.timeouts, staging_budget_bytes=0)
    return setup


@pytest.mark.property("P6")
def test_B1_direct_streams_give_the_exact_sum() -> None:
    setup = _direct(setup_round(dim=11, chunk_elems=4, drop_at={8: Stage.MASKED_INPUT}))
    rr = run(setup, to_server=tamper(1, MaskedInputChunk, _twice))  # duplicates are ignored, not re-added
    assert events(rr, "duplicate-ignored", 1) and not events(rr, "client-rejected")
    assert_exact(setup, everyone_but(setup, 8))


@pytest.mark.property("P6")
@pytest.mark.parametrize("fault", ["skip", "count-changed", "offset-gap", "dtype"])
def test_B1_direct_stream_failing_mid_way_aborts_never_a_wrong_sum(fault: str) -> None:
    """Chunks already added to the sum cannot be taken out again: the round aborts, typed."""
    setup = _direct(setup_round(dim=11, chunk_elems=4))
    rr = run(setup, to_server=tamper(5, MaskedInputChunk, _chunk_fault(fault)))
    assert_rejected(rr, 5, Stage.MASKED_INPUT)
    assert_aborted(setup, "PARTIAL_INPUT")


@pytest.mark.property("P7")
def test_B1_stream_cut_short_is_rejected_at_the_deadline() -> None:
    setup = setup_round(dim=11, chunk_elems=4)
    rr = run(setup, to_server=tamper(5, MaskedInputChunk, lambda m: m if m.index < 2 else None))
    hits = events(rr, "client-rejected", 5)
    assert [h.detail for h in hits] == ["masked input incomplete at the deadline"]
    assert_exact(setup, everyone_but(setup, 5))


@pytest.mark.property("P7")
@pytest.mark.parametrize("modulus", [1_000_003, 1 << 24], ids=["prime", "2^24"])
@pytest.mark.parametrize("chunked", [False, True], ids=["one-chunk", "chunked"])
def test_B1_element_not_below_modulus_rejects_client(modulus: int, chunked: bool) -> None:
    setup = setup_round(
        n=6, dim=9, modulus=modulus, bits=12, max_weight=2, chunk_elems=4 if chunked else None,
        policy=LOW_MODULUS_POLICY,
    )  # fmt: skip
    assert setup.server.ring.dtype == np.uint32

    def poison(m: MaskedInputChunk) -> MaskedInputChunk:
        if m.index != m.count - 1:
            return m
        data = m.data.copy()
        data[-1] = modulus  # the smallest value outside the ring
        return replace(m, data=data)

    rr = run(setup, to_server=tamper(2, MaskedInputChunk, poison))
    assert_rejected(rr, 2, Stage.MASKED_INPUT)
    assert events(rr, "client-rejected", 2)[0].detail == "element >= modulus"
    assert_exact(setup, everyone_but(setup, 2))


@pytest.mark.property("P7")
def test_B1_largest_ring_element_passes_the_range_check() -> None:
    """modulus - 1 is a ring element: the chunk is accepted (the check sits exactly at the modulus). The
    changed value then makes the aggregate leave the honest range, which the server notices at the end."""
    modulus = 1_000_003
    setup = setup_round(n=5, dim=4, modulus=modulus, bits=12, max_weight=2, policy=LOW_MODULUS_POLICY)

    def edge(m: MaskedInputChunk) -> MaskedInputChunk:
        data = m.data.copy()
        data[:] = modulus - 1
        return replace(m, data=data)

    rr = run(setup, to_server=tamper(2, MaskedInputChunk, edge))
    assert not events(rr, "client-rejected")
    assert setup.server._u3 == (1, 2, 3, 4, 5)  # 2's input was taken
    assert_aborted(setup, "BAD_AGGREGATE")


# ---------------------------------------------------------------- B3 malformed unmask responses


def _share_bytes(x: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return shamir.Share(x, tuple(int(v) for v in rng.integers(0, P, 16))).to_bytes()


B3_FAULTS: dict[str, Callable[[UnmaskResponse], Any]] = {
    "unknown-owner": lambda r: replace(r, seed_shares=(*r.seed_shares, (99, r.seed_shares[0][1]))),
    "missing-owner": lambda r: replace(r, seed_shares=r.seed_shares[1:]),
    "duplicate-owner": lambda r: replace(r, seed_shares=(r.seed_shares[0], *r.seed_shares)),
    "unsorted-owners": lambda r: replace(r, seed_shares=tuple(reversed(r.seed_shares))),
    "key-share-for-live-peer": lambda r: replace(r, key_shares=(*r.key_shares, r.seed_shares[0])),
    "no-key-shares": lambda r: replace(r, key_shares=()),
    "other-x-coordinate": lambda r: replace(
        r, seed_shares=((r.seed_shares[0][0], _share_bytes(7)), *r.seed_shares[1:])
    ),
    "garbage-bytes": lambda r: replace(r, seed_shares=((r.seed_shares[0][0], bytes(range(68))), *r.seed_shares[1:])),
    "short-share": lambda r: replace(r, key_shares=((r.key_shares[0][0], b"\x00\x00\x00\x03"),)),
    "value-outside-field": lambda r: replace(
        r, seed_shares=((r.seed_shares[0][0], (3).to_bytes(4, "big") + b"\xff" * 64), *r.seed_shares[1:])
    ),
    "x-zero": lambda r: replace(r, seed_shares=((r.seed_shares[0][0], bytes(68)), *r.seed_shares[1:])),
    "other-session": lambda r: replace(r, session_id=bytes(32)),
}


@pytest.mark.property("P7")
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("fault", sorted(B3_FAULTS))
def test_B3_malformed_unmask_response_rejects_responder(fault: str, mode: Mode) -> None:
    # client 8 drops after sharing keys, so responses carry mask-key shares too
    setup = setup_round(mode=mode, drop_at={8: Stage.MASKED_INPUT})
    rr = run(setup, to_server=tamper(3, UnmaskResponse, B3_FAULTS[fault]))
    assert_rejected(rr, 3, Stage.UNMASK)
    # 3 sent its masked input: it stays a survivor, its seed comes from the other responders' shares
    assert_exact(setup, everyone_but(setup, 8))
    assert setup.server.result is not None and setup.server.result.dropped == (8,)


@pytest.mark.property("P7")
def test_B3_rejections_below_threshold_abort_cleanly() -> None:
    """Two of the t + 1 responders send garbage: t - 1 good ones remain, so the round aborts, typed."""
    setup = setup_round(n=6, t=4, drop_at={5: Stage.UNMASK})
    garbage = B3_FAULTS["garbage-bytes"]

    def hook(cid: int, msg: ClientMessage) -> Any:
        return garbage(msg) if cid in (1, 2) and isinstance(msg, UnmaskResponse) else msg

    rr = run(setup, to_server=hook)
    assert_rejected(rr, 1, Stage.UNMASK)
    assert_rejected(rr, 2, Stage.UNMASK)
    assert_aborted(setup, "TOO_FEW_SHARES")


@st.composite
def _random_response(draw: st.DrawFn, resp: UnmaskResponse) -> UnmaskResponse:
    owners = st.integers(min_value=0, max_value=12)
    blob = st.one_of(st.binary(max_size=80), st.sampled_from([b for _, b in (*resp.seed_shares, *resp.key_shares)]))
    pairs = st.lists(st.tuples(owners, blob), max_size=9).map(tuple)
    seed = draw(st.one_of(st.just(resp.seed_shares), pairs))
    key = draw(st.one_of(st.just(resp.key_shares), pairs))
    return UnmaskResponse(resp.session_id, seed, key)


@pytest.mark.property("P7")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_B3_random_unmask_responses_never_crash_or_corrupt(data: st.DataObject) -> None:
    setup = setup_round(n=6, t=3, dim=3, drop_at={6: Stage.MASKED_INPUT})

    def hook(cid: int, msg: ClientMessage) -> Any:
        if cid == 2 and isinstance(msg, UnmaskResponse):
            return data.draw(_random_response(msg))
        return msg

    run(setup, to_server=hook)
    # whatever client 2 sent, the other four responders suffice (t = 3): the sum is exact
    assert_exact(setup, everyone_but(setup, 6))


# ---------------------------------------------------------------- B4 corrupted Shamir shares


def _bump(blob: bytes, limb: int = 0, delta: int = 1) -> bytes:
    share = shamir.Share.from_bytes(blob)
    y = list(share.y)
    y[limb] = (y[limb] + delta) % P
    return shamir.Share(share.x, tuple(y)).to_bytes()


def _corrupt_owner(owner: int, *, key: bool = False, delta: int = 1, limb: int = 0) -> Callable[..., Any]:
    def fn(r: UnmaskResponse) -> UnmaskResponse:
        field_name = "key_shares" if key else "seed_shares"
        pairs = tuple((o, _bump(b, limb, delta) if o == owner else b) for o, b in getattr(r, field_name))
        return replace(r, **{field_name: pairs})

    return fn


@pytest.mark.property("P6")
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_B4_corrupted_seed_share_is_detected_and_set_aside(mode: Mode) -> None:
    setup = setup_round(mode=mode)
    rr = run(setup, to_server=tamper(2, UnmaskResponse, _corrupt_owner(5)))
    # the corrupted share is among the first t used, so the first reconstruction fails its commitment
    assert [a.client for a in events(rr, "shares-corrected")] == [5]
    assert_exact(setup, setup.config.participants)


@pytest.mark.property("P6")
def test_B4_corrupted_mask_key_share_is_detected_and_set_aside() -> None:
    setup = setup_round(drop_at={7: Stage.MASKED_INPUT})
    rr = run(setup, to_server=tamper(1, UnmaskResponse, _corrupt_owner(7, key=True, limb=15, delta=P - 1)))
    assert [a.client for a in events(rr, "shares-corrected")] == [7]
    assert_exact(setup, everyone_but(setup, 7))


@pytest.mark.property("P6")
def test_B4_crafted_in_range_corruption_is_caught_by_the_commitment() -> None:
    """A shift of 1/lambda_i changes the reconstructed limb by exactly one, so the limb range filter passes;
    only the check against the seed commitment can notice. The sum must still be exact."""
    setup = setup_round(n=8, t=4)
    xs = [1, 2, 3, 4]  # the first t responders by id: the server's first reconstruction uses them
    lam = int(shamir.lagrange_coefficients(xs)[xs.index(3)])
    delta = pow(lam, P - 2, P)
    rr = run(setup, to_server=tamper(3, UnmaskResponse, _corrupt_owner(6, delta=delta, limb=7)))
    assert [a.client for a in events(rr, "shares-corrected")] == [6]
    assert_exact(setup, setup.config.participants)


@pytest.mark.property("P6")
def test_B4_crafted_in_range_corruption_really_passes_the_limb_filter() -> None:
    """Control for the test above: the crafted shift does survive a plain reconstruction (wrong secret)."""
    rng = DeterministicRandom(5)
    secret = SecretBytes(bytes(range(32)))
    shares = shamir.split(secret, [1, 2, 3, 4], 4, rng)
    lam = int(shamir.lagrange_coefficients([1, 2, 3, 4])[2])
    bad = shamir.Share.from_bytes(_bump(shares[2].to_bytes(), 7, pow(lam, P - 2, P)))
    got = shamir.reconstruct([shares[0], shares[1], bad, shares[3]], 4).expose_secret()
    assert got != secret.expose_secret()
    assert got[14:16] == (int.from_bytes(secret.expose_secret()[14:16], "big") + 1).to_bytes(2, "big")


@pytest.mark.property("P6")
def test_B4_corruption_with_only_t_responders_aborts_never_a_wrong_sum() -> None:
    setup = setup_round(n=6, t=4, drop_at={5: Stage.UNMASK, 6: Stage.UNMASK})
    run(setup, to_server=tamper(2, UnmaskResponse, _corrupt_owner(1, delta=12345)))
    assert_aborted(setup, "CORRUPT_SHARES")


@pytest.mark.property("P6")
def test_B4_too_many_corrupt_responders_abort() -> None:
    """Five of eight responders corrupt the same owner's share with unrelated errors: only three good
    shares remain (t = 4), so no subset reconstructs a seed that matches its commitment."""
    setup = setup_round(n=8, t=4)

    def hook(cid: int, msg: ClientMessage) -> Any:
        if cid in (1, 2, 3, 4, 5) and isinstance(msg, UnmaskResponse):
            return _corrupt_owner(8, delta=(cid * 2654435761) % P + 1)(msg)
        return msg

    run(setup, to_server=hook)
    assert_aborted(setup, "CORRUPT_SHARES")


@pytest.mark.property("P6")
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    corrupt=st.dictionaries(
        st.integers(min_value=1, max_value=7),
        st.tuples(st.integers(1, 7), st.booleans(), st.integers(0, 15), st.integers(1, P - 1)),
        max_size=4,
    )
)
def test_B4_random_corruptions_never_give_a_wrong_sum(
    corrupt: dict[int, tuple[int, bool, int, int]],
) -> None:
    """Responders corrupt random limbs of random owners' shares: an exact sum or a typed abort, never else."""
    setup = setup_round(n=7, t=3, dim=3, drop_at={7: Stage.MASKED_INPUT})

    def hook(cid: int, msg: ClientMessage) -> Any:
        if cid in corrupt and isinstance(msg, UnmaskResponse):
            owner, key, limb, delta = corrupt[cid]
            owner = 7 if key else owner
            return _corrupt_owner(owner, key=key, limb=limb, delta=delta)(msg)
        return msg

    run(setup, to_server=hook)
    if setup.server.result is None:
        assert_aborted(setup, "CORRUPT_SHARES")
        assert corrupt  # an honest round never aborts here
    else:
        assert_exact(setup, everyone_but(setup, 7))


# ---------------------------------------------------------------- B5 duplicates


def _twice(m: Any) -> list[Any]:
    return [m, m]


DUP_KINDS: list[tuple[str, type, Mode, int | None]] = [
    ("advertise", AdvertiseKeys, Mode.SEMI_HONEST, None),
    ("share-keys", ShareKeys, Mode.SEMI_HONEST, None),
    ("masked-one-chunk", MaskedInputChunk, Mode.SEMI_HONEST, None),
    ("masked-chunked", MaskedInputChunk, Mode.SEMI_HONEST, 3),
    ("signature", ConsistencySignature, Mode.HARDENED, None),
    ("unmask", UnmaskResponse, Mode.SEMI_HONEST, None),
    ("unmask-hardened", UnmaskResponse, Mode.HARDENED, None),
]


@pytest.mark.property("P7")
@pytest.mark.parametrize(("name", "kind", "mode", "chunk"), DUP_KINDS, ids=[d[0] for d in DUP_KINDS])
def test_B5_identical_duplicate_is_idempotent(name: str, kind: type, mode: Mode, chunk: int | None) -> None:
    setup = setup_round(mode=mode, dim=7, chunk_elems=chunk, drop_at={8: Stage.MASKED_INPUT})
    # client 1 replies first in every stage, so its duplicate arrives while the stage is still open
    rr = run(setup, to_server=tamper(1, kind, _twice))
    assert not events(rr, "client-rejected"), events(rr, "client-rejected")
    ignored = events(rr, "duplicate-ignored", 1) + events(rr, "late-chunk-ignored", 1)
    assert ignored and all(a.stage == _stage_of(kind).value for a in ignored)
    assert_exact(setup, everyone_but(setup, 8))


def _stage_of(kind: type) -> Stage:
    return {
        AdvertiseKeys: Stage.ADVERTISE_KEYS,
        ShareKeys: Stage.SHARE_KEYS,
        MaskedInputChunk: Stage.MASKED_INPUT,
        ConsistencySignature: Stage.CONSISTENCY_CHECK,
        UnmaskResponse: Stage.UNMASK,
    }[kind]


def _other_keys(m: AdvertiseKeys) -> AdvertiseKeys:
    kp = X25519KeyPair.generate(DeterministicRandom(77))
    return replace(m, advertisement=replace(m.advertisement, enc_public=kp.public_bytes))


def _changed_chunk(m: MaskedInputChunk) -> MaskedInputChunk:
    data = m.data.copy()
    data[0] ^= 1
    return replace(m, data=data)


CONFLICTS: list[tuple[str, type, Mode, int | None, Callable[[Any], Any]]] = [
    ("advertise", AdvertiseKeys, Mode.SEMI_HONEST, None, _other_keys),
    ("advertise-hardened", AdvertiseKeys, Mode.HARDENED, None, _other_keys),
    ("share-keys", ShareKeys, Mode.SEMI_HONEST, None, lambda m: replace(m, seed_commitment=bytes(32))),
    ("masked-chunked", MaskedInputChunk, Mode.SEMI_HONEST, 3, _changed_chunk),
    ("signature", ConsistencySignature, Mode.HARDENED, None, lambda m: replace(m, signature=bytes(64))),
    ("unmask", UnmaskResponse, Mode.SEMI_HONEST, None, _corrupt_owner(2)),
]


@pytest.mark.property("P7")
@pytest.mark.parametrize(("name", "kind", "mode", "chunk", "change"), CONFLICTS, ids=[c[0] for c in CONFLICTS])
def test_B5_conflicting_duplicate_is_rejected_and_the_first_stands(
    name: str, kind: type, mode: Mode, chunk: int | None, change: Callable[[Any], Any]
) -> None:
    setup = setup_round(mode=mode, dim=7, chunk_elems=chunk, drop_at={8: Stage.MASKED_INPUT})
    rr = run(setup, to_server=tamper(1, kind, lambda m: [m, change(m)]))
    hits = events(rr, "conflicting-duplicate-rejected", 1)
    assert hits and all(a.stage == _stage_of(kind).value for a in hits)
    assert not events(rr, "client-rejected")
    # the first message stands: client 1 is a full survivor and the sum is exact
    assert_exact(setup, everyone_but(setup, 8))


@pytest.mark.property("P7")
def test_B5_repeated_chunk_of_another_dtype_is_a_conflict_not_a_crash() -> None:
    setup = setup_round(dim=7, chunk_elems=3)

    def again_as_float(m: MaskedInputChunk) -> list[MaskedInputChunk]:
        return [m, replace(m, data=m.data.astype(np.float64))] if m.index == 0 else [m]

    rr = run(setup, to_server=tamper(1, MaskedInputChunk, again_as_float))
    # the conflicting copy is rejected, its sender blamed (no honest client sends two versions) and kept in
    assert [a.event for a in rr.audit if a.client == 1] == ["conflicting-duplicate-rejected", "client-blamed"]
    assert_exact(setup, setup.config.participants)


@pytest.mark.property("P7")
def test_B5_changed_chunk_after_a_complete_input_changes_nothing() -> None:
    setup = setup_round(dim=7)
    rr = run(setup, to_server=tamper(1, MaskedInputChunk, lambda m: [m, _changed_chunk(m)]))
    assert events(rr, "late-chunk-ignored", 1)
    assert_exact(setup, setup.config.participants)


@pytest.mark.property("P3")
def test_B5_duplicated_server_messages_do_not_double_count() -> None:
    """The network delivers every server message twice: clients answer identical retries identically
    (or ignore them), and the server's sum counts each input once."""

    def twice(cid: int, msg: ServerMessage) -> list[ServerMessage]:
        return [msg, msg] if isinstance(msg, UnmaskRequest) else [msg]

    setup = setup_round(drop_at={8: Stage.MASKED_INPUT})
    rr = run(setup, to_client=twice)  # type: ignore[arg-type]
    assert not events(rr, "client-rejected")
    assert_exact(setup, everyone_but(setup, 8))


# ---------------------------------------------------------------- B6 wrong stage, wrong session, too late


def _with_earlier(kind_now: type, earlier: dict[int, list[ClientMessage]]) -> ToServer:
    """Client 2 sends every earlier message of its own again just before its reply of the current stage."""

    def hook(cid: int, msg: ClientMessage) -> Any:
        if cid != 2:
            return msg
        old = list(earlier.get(cid, []))
        earlier.setdefault(cid, []).append(msg)
        if isinstance(msg, kind_now):
            return [*old, msg]
        return msg

    return hook


@pytest.mark.property("P7")
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("kind_now", [ShareKeys, MaskedInputChunk, UnmaskResponse], ids=lambda k: k.__name__)
def test_B6_message_for_an_earlier_stage_is_rejected_without_effect(kind_now: type, mode: Mode) -> None:
    setup = setup_round(mode=mode)
    rr = run(setup, to_server=_with_earlier(kind_now, {}))
    stale = events(rr, "message-rejected", 2)
    assert stale and all(a.stage == _stage_of(kind_now).value for a in stale)
    assert not events(rr, "client-rejected")
    assert_exact(setup, setup.config.participants)


def _recorded_messages(setup: SimulationSetup) -> dict[tuple[int, type], list[ClientMessage]]:
    out: dict[tuple[int, type], list[ClientMessage]] = {}

    def hook(cid: int, msg: ClientMessage) -> ClientMessage:
        out.setdefault((cid, type(msg)), []).append(msg)
        return msg

    run(setup, to_server=hook)
    return out


@pytest.mark.property("P7")
@pytest.mark.parametrize("kind", [ShareKeys, MaskedInputChunk, UnmaskResponse], ids=lambda k: k.__name__)
def test_B6_message_from_another_session_is_rejected(kind: type) -> None:
    """Client 2's message of the same stage from another round (other keys, same run) arrives first."""
    other = _recorded_messages(setup_round(seed=99))
    setup = setup_round(seed=11)
    replayed = other[(2, kind)]
    rr = run(setup, to_server=tamper(2, kind, lambda m: [*replayed, m]))
    hits = events(rr, "client-rejected", 2)
    assert hits and "another session" in hits[0].detail and hits[0].stage == _stage_of(kind).value
    if kind is UnmaskResponse:  # 2 sent its masked input: still a survivor, just not a responder
        assert_exact(setup, setup.config.participants)
    else:
        assert_exact(setup, everyone_but(setup, 2))


@pytest.mark.property("P7")
def test_B6_advertisement_for_another_round_is_rejected() -> None:
    other = _recorded_messages(setup_round(seed=11, round_=5))
    setup = setup_round(seed=11)
    rr = run(setup, to_server=tamper(2, AdvertiseKeys, lambda m: [other[(2, AdvertiseKeys)][0], m]))
    assert "another round" in events(rr, "client-rejected", 2)[0].detail
    assert_exact(setup, everyone_but(setup, 2))


@pytest.mark.property("P7", "P11")
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_B6_messages_after_completion_change_nothing(mode: Mode) -> None:
    setup = setup_round(mode=mode, drop_at={8: Stage.MASKED_INPUT})
    sent: list[tuple[int, ClientMessage]] = []
    received: list[tuple[int, ServerMessage]] = []

    def up(cid: int, msg: ClientMessage) -> ClientMessage:
        sent.append((cid, msg))
        return msg

    def down(cid: int, msg: ServerMessage) -> ServerMessage:
        received.append((cid, msg))
        return msg

    run(setup, to_server=up, to_client=down)
    srv = setup.server
    res = srv.result
    assert res is not None
    frozen_sum = res.sum.copy()
    records: dict[int, int] = {}
    for cid, msg in sent:
        out = srv.receive(cid, msg, now=1e9)
        audits = [(a.event, a.client) for a in out if isinstance(a, Audit)]
        records[cid] = records.get(cid, 0) + len(audits)
        # rejected without effect; past FOLD_AFTER repeats from one client, not recorded one by one (SPEC §12.3)
        assert audits in ([("message-rejected", cid)], []) and records[cid] <= FOLD_AFTER
        assert not [e for e in out if not isinstance(e, Audit)]  # nothing sent
    assert srv.result is res and np.array_equal(res.sum, frozen_sum) and srv.state is ServerState.DONE
    assert srv.poll(2e9) == []
    # and the clients, done with the round, ignore every replayed server message
    for cid, smsg in received:
        client = setup.clients[cid]
        if cid == 8:
            continue  # dropped out mid-round
        assert client.state is ClientState.DONE and not client.holds_round_secrets
        assert client.receive(smsg) == []
        assert client.state is ClientState.DONE


@pytest.mark.property("P7")
def test_B6_messages_after_an_abort_change_nothing() -> None:
    setup = setup_round(n=5, t=4, drop_at={4: Stage.MASKED_INPUT, 5: Stage.MASKED_INPUT})
    sent: list[tuple[int, ClientMessage]] = []
    run(setup, to_server=lambda cid, m: sent.append((cid, m)) or m)  # type: ignore[func-returns-value]
    assert_aborted(setup, "TOO_FEW_CLIENTS")
    err = setup.server.error
    for cid, msg in sent:
        out = setup.server.receive(cid, msg, now=0.0)
        assert [a.event for a in out if isinstance(a, Audit)] == ["message-rejected"]
    assert setup.server.error is err and setup.server.result is None


# ---------------------------------------------------------------- B7 shares to the wrong recipients


def _b7(fault: str, setup: SimulationSetup) -> Callable[[ShareKeys], ShareKeys]:
    cfg = setup.config
    hood = recipes.neighbourhoods(cfg.participants, cfg.k, cfg.graph_seed).of(3)
    stranger = min(c for c in cfg.participants if c != 3 and c not in hood)

    def fn(m: ShareKeys) -> ShareKeys:
        cts = list(m.ciphertexts)
        if fault == "non-neighbour":
            cts[0] = (stranger, cts[0][1])
            cts.sort()
        elif fault == "extra-non-neighbour":
            cts = sorted([*cts, (stranger, cts[0][1])])
        elif fault == "to-itself":
            cts = sorted([*cts, (3, cts[0][1])])
        elif fault == "missing-neighbour":
            cts = cts[1:]
        elif fault == "duplicate-recipient":
            cts = sorted([*cts, cts[0]])
        elif fault == "unsorted":
            cts = list(reversed(cts))
        elif fault == "outsider":
            cts = sorted([*cts, (999, cts[0][1])])
        elif fault == "truncated-ciphertext":
            cts[0] = (cts[0][0], cts[0][1][:-1])
        elif fault == "none":
            cts = []
        return replace(m, ciphertexts=tuple(cts))

    return fn


B7_FAULTS = [
    "non-neighbour",
    "extra-non-neighbour",
    "to-itself",
    "missing-neighbour",
    "duplicate-recipient",
    "unsorted",
    "outsider",
    "truncated-ciphertext",
    "none",
]


@pytest.mark.property("P7")
@pytest.mark.parametrize("fault", B7_FAULTS)
def test_B7_shares_to_wrong_recipients_reject_the_sender(fault: str) -> None:
    setup = setup_round(n=8, k=4, t=3)  # a Harary graph: every client has 4 neighbours, 3 strangers
    assert not setup.config.is_complete_graph
    deliveries: list[SharesDelivery] = []

    def down(cid: int, msg: ServerMessage) -> ServerMessage:
        if isinstance(msg, SharesDelivery):
            deliveries.append(msg)
        return msg

    rr = run(setup, to_server=tamper(3, ShareKeys, _b7(fault, setup)), to_client=down)
    assert_rejected(rr, 3, Stage.SHARE_KEYS)
    # no share of the rejected sender reaches anyone, and 3 itself is not asked for its masked input
    assert deliveries and all(3 not in dict(d.ciphertexts) for d in deliveries)
    assert len(deliveries) == 7
    assert_exact(setup, everyone_but(setup, 3))
    assert setup.server.result is not None and 3 not in setup.server.result.dropped


# ---------------------------------------------------------------- B8 inner id differs from the sender


@pytest.mark.property("P7", "P13")
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_B8_advertisement_claiming_another_id_is_rejected(mode: Mode) -> None:
    setup = setup_round(mode=mode)
    stolen: dict[str, AdvertiseKeys] = {}

    def hook(cid: int, msg: ClientMessage) -> Any:
        if isinstance(msg, AdvertiseKeys) and cid == 2:
            stolen["2"] = msg
            return msg
        if isinstance(msg, AdvertiseKeys) and cid == 3:
            # 3 sends client 2's own (signed) advertisement, verbatim, instead of its own
            return stolen["2"]
        return msg

    rr = run(setup, to_server=hook)
    assert_rejected(rr, 3, Stage.ADVERTISE_KEYS)
    assert "claims id 2" in events(rr, "client-rejected", 3)[0].detail
    assert_exact(setup, everyone_but(setup, 3))


@pytest.mark.property("P7", "P13")
def test_B8_relabelled_advertisement_is_rejected() -> None:
    setup = setup_round()
    relabel = tamper(4, AdvertiseKeys, lambda m: replace(m, advertisement=replace(m.advertisement, client_id=5)))
    rr = run(setup, to_server=relabel)
    assert_rejected(rr, 4, Stage.ADVERTISE_KEYS)
    assert_exact(setup, everyone_but(setup, 4))


@pytest.mark.property("P7", "P13")
def test_B8_sender_outside_the_round_is_rejected_without_state_change() -> None:
    setup = setup_round(n=4, t=2)
    srv = setup.server
    srv.start(0.0)
    c1 = setup.clients[1].receive(SetupRequest(setup.config))
    assert isinstance(c1[0], AdvertiseKeys)
    out = srv.receive(42, c1[0], 0.0)
    assert [(a.event, a.client) for a in out if isinstance(a, Audit)] == [("message-rejected", 42)]
    assert "not a participant" in out[0].detail  # type: ignore[union-attr]
    assert srv.state is ServerState.COLLECT_KEYS and not srv._ads
    # the real client 1 is still welcome
    assert srv.receive(1, c1[0], 0.0) == [] and 1 in srv._ads


# ---------------------------------------------------------------- B9 capacity and clipping


@pytest.mark.property("P4")
def test_B9_capacity_is_refused_when_the_config_is_built() -> None:
    base: dict[str, Any] = dict(run_id="r", round=0, mode=Mode.SEMI_HONEST, k=3, t=2, graph_seed=bytes(32), dim=4)
    four = (1, 2, 3, 4)
    # n * max_weight * 2^bits must stay below the modulus: 4 * 4 * 2^28 = 2^32 is refused, 2^27 accepted
    with pytest.raises(ConfigurationError, match="capacity"):
        RoundConfig(participants=four, max_weight=4, bits=28, **base)
    RoundConfig(participants=four, max_weight=4, bits=27, **base)
    with pytest.raises(ConfigurationError, match="capacity"):
        RoundConfig(participants=four, max_weight=4, bits=16, modulus=1 << 20, **base)
    RoundConfig(participants=four, max_weight=4, bits=15, modulus=1 << 20, **base)
    with pytest.raises(ConfigurationError, match="capacity"):  # 4 * 2^18 = 1048576 > 1000003
        RoundConfig(participants=four, max_weight=1, bits=18, modulus=1_000_003, **base)
    RoundConfig(participants=four, max_weight=1, bits=17, modulus=1_000_003, **base)
    # 2^64 lifts the limit
    RoundConfig(participants=four, max_weight=4, bits=28, modulus=1 << 64, **base)
    with pytest.raises(ConfigurationError, match="capacity"):
        make_config(20, 4, bits=28, max_weight=16)


EXTREMES = [
    # (modulus, n, max_weight, bits): n * max_weight * 2^bits just below the modulus
    (1 << 32, 3, 5, 28),
    (1 << 64, 3, 5, 60),
    (1_000_003, 3, 5, 16),
    (1 << 20, 4, 1, 17),
]


@pytest.mark.property("P6")
@pytest.mark.parametrize("sign", [+1, -1], ids=["plus", "minus"])
@pytest.mark.parametrize(("modulus", "n", "max_weight", "bits"), EXTREMES)
def test_B9_sum_at_the_extremes_is_exact(modulus: int, n: int, max_weight: int, bits: int, sign: int) -> None:
    """Every client sends +clip (or far beyond) with the maximum weight: the sum is the largest value the
    capacity allows and does not wrap; all -clip gives zero. The decoded mean is exactly +-clip."""
    assert n * max_weight * (1 << bits) < modulus <= 2 * n * max_weight * (1 << bits)
    setup = setup_round(
        n=n, t=2, dim=5, modulus=modulus, bits=bits, max_weight=max_weight, clip=0.5,
        policy=LOW_MODULUS_POLICY,
    )  # fmt: skip
    beyond = np.array([0.5, 0.50001, 3.0, 1e30, np.inf], dtype=np.float32) * sign
    for c, client in setup.clients.items():
        inp = ClientInput(beyond.copy(), max_weight)
        setup.inputs[c] = inp
        client.provide_input(inp)
    run(setup)
    assert_exact(setup, setup.config.participants)
    res = setup.server.result
    assert res is not None
    qmax = (1 << bits) - 1
    top = n * max_weight * qmax if sign > 0 else 0
    assert [int(v) for v in res.sum] == [top] * 5
    assert res.total_weight == n * max_weight
    assert np.allclose(res.mean, sign * 0.5, rtol=0, atol=1e-12)


@pytest.mark.property("P6")
def test_B9_inputs_outside_the_clip_range_are_clipped() -> None:
    setup = setup_round(n=4, t=2, dim=6, clip=2.0, bits=20)
    vectors = {
        1: [5.0, -5.0, 2.0, -2.0, 0.0, 1.0],
        2: [np.inf, -np.inf, 1e9, -1e9, 0.5, -1.0],
        3: [2.0001, -2.0001, 3.0, -3.0, 0.25, 0.0],
        4: [2.5, -2.5, 0.0, 0.0, -0.5, 100.0],
    }
    weights = {1: 1, 2: 2, 3: 3, 4: 4}
    for c, client in setup.clients.items():
        inp = ClientInput(np.array(vectors[c], dtype=np.float32), weights[c])
        setup.inputs[c] = inp
        client.provide_input(inp)
    run(setup)
    assert_exact(setup, setup.config.participants)
    res = setup.server.result
    assert res is not None
    clipped = {c: np.clip(np.array(v, dtype=np.float64), -2.0, 2.0) for c, v in vectors.items()}
    want = sum(weights[c] * clipped[c] for c in vectors) / sum(weights.values())
    step = 4.0 / ((1 << 20) - 1)
    assert np.max(np.abs(res.mean - want)) <= step
    assert res.mean[0] == pytest.approx(2.0, abs=1e-12) and res.mean[1] == pytest.approx(-2.0, abs=1e-12)


@pytest.mark.property("P8")
def test_B9_weight_outside_its_range_is_refused_by_the_client() -> None:
    """A weight above max_weight would break the capacity bound: the client refuses to mask it, aborts its
    own round (secrets erased, BAD_INPUT) and the others' sum is exact without it."""
    setup = setup_round(n=4, t=2, max_weight=3)
    bad = ClientInput(np.zeros(setup.config.dim, dtype=np.float32), 4)
    setup.clients[2].provide_input(bad)
    run(setup)
    client = setup.clients[2]
    assert client.state is ClientState.ABORTED and not client.holds_round_secrets
    assert isinstance(client.error, RoundAborted) and client.error.code == "BAD_INPUT"
    assert "weight" in str(client.error)
    assert_exact(setup, tuple(c for c in setup.config.participants if c != 2))


@pytest.mark.property("P6")
def test_B9_server_refuses_an_aggregate_outside_the_honest_range() -> None:
    """A client that adds a large value to its masked vector pushes the sum outside what honest inputs can
    reach (here: the weight coordinate): typed abort, not a wrong mean."""
    setup = setup_round(n=4, t=2, dim=3)

    def inflate(m: MaskedInputChunk) -> MaskedInputChunk:
        data = m.data.copy()
        data[-1] += np.uint32(1 << 30)  # the weight coordinate
        return replace(m, data=data)

    run(setup, to_server=tamper(2, MaskedInputChunk, inflate))
    assert_aborted(setup, "BAD_AGGREGATE")


# ---------------------------------------------------------------- sanity of the harness itself


@pytest.mark.property("P6")
def test_harness_detects_a_wrong_sum() -> None:
    """assert_exact would notice a sum that is off by one in one coordinate, or a wrong survivor set."""
    setup = setup_round(n=4, t=2)
    run(setup)
    assert_exact(setup, setup.config.participants)
    res = setup.server.result
    assert res is not None
    res.sum[0] += np.uint32(1)
    with pytest.raises(AssertionError):
        assert_exact(setup, setup.config.participants)
    res.sum[0] -= np.uint32(1)
    with pytest.raises(AssertionError):
        assert_exact(setup, [1, 2, 3])


@pytest.mark.property("P7", "P14")
def test_B5_twenty_thousand_duplicates_write_a_handful_of_audit_records() -> None:
    """A client repeating its advertisement 20,000 times: the server keeps the first, records three
    duplicate-ignored records and, when the stage closes, one audit-folded record counting the rest."""
    setup = setup_round()

    def flood(cid: int, msg: ClientMessage) -> ClientMessage | list[ClientMessage]:
        return [msg] * 20_000 if cid == 2 and type(msg).__name__ == "AdvertiseKeys" else msg

    rr = run(setup, to_server=flood)
    mine = [a for a in rr.audit if a.client == 2]
    assert [a.event for a in mine] == ["duplicate-ignored"] * FOLD_AFTER + ["audit-folded"]
    assert mine[-1].detail == f"duplicate-ignored: {20_000 - 1 - FOLD_AFTER} more not recorded"
    assert rr.ok
