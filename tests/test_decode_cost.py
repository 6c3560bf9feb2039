"""Decoding cost: what a decoder spends is bounded by a small constant times what it was sent (SPEC 13.3).

A silo is authenticated and its messages are within the gRPC cap, but it may still be malicious: it can fill a
message with as many tiny items as the bytes allow. Each item a decoder builds costs about a hundred bytes of
Python objects however short its encoding, and protobuf spends about 48 bytes on every repeated item before we
see it. So every decoding path a server runs (the canonical `decode_message`, and the gRPC path
`wire.decode_client` with protobuf under it) refuses a list whose count the remaining bytes cannot hold before
building anything, and refuses more items than the message's item budget (1024 + size / 64) pays for.

For every client message type, and the server-to-client ones with lists, the worst messages at 256 KiB, 1 MiB
and 4 MiB either decode to exactly what was encoded or raise EncodingError, with tracemalloc's peak during the
decode at most C x size + K. Memory, not time, is asserted: peaks are deterministic, timings are not
(`bench/decode_cost.py` prints both).
"""

from __future__ import annotations

import ctypes
import gc
import queue
import random
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.encoding import ITEM_BUDGET_BYTES, ITEM_BUDGET_FREE
from secagg.errors import EncodingError
from secagg.protocol.messages import (
    MAX_ITEMS,
    WIRE_VERSION,
    AdvertiseKeys,
    ClientAbort,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    KeysBroadcast,
    MaskedInputChunk,
    RoundComplete,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from secagg.transport import wire
from secagg.transport._generated import secagg_pb2 as pb

pytestmark = pytest.mark.property("P7", "P13")

KiB, MiB = 1 << 10, 1 << 20
SIZES = (256 * KiB, 1 * MiB, 4 * MiB)

C_ITEMS = 3.5  # peak / size for lists of items (pairs, advertisements); reached: about 2.9
C_ADS = 4.0  # KeysBroadcast (server to client): a dataclass of four fields per 72-byte advertisement (3.8)
C_FLAT = 2.5  # peak / size for messages without item lists (a blob copied once, a text decoded); reached: <= 2
C_U32 = 10.5  # u32 lists, server to client only: 8 + 32 bytes of Python per 4-byte id (reached: 10.0)
K = 256 * KiB  # the constant: objects independent of the size, and the budget's 1024 free items

SID = bytes(range(32))
BASE_ID = 1 << 30  # ids above 2^30: the largest Python ints (32 bytes), the worst case for memory


def peak_of(decode: Callable[[Any], Any], data: Any) -> tuple[int, Any]:
    """(tracemalloc's peak during decode(data), its result or the EncodingError it raised); the result is alive
    at the peak, so what the decoded message itself occupies is counted."""
    gc.collect()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            out: Any = decode(data)
        except EncodingError as exc:
            out = exc
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not tracing:
            tracemalloc.stop()
    return peak, out


def assert_bounded(peak: int, size: int, c: float, what: str) -> None:
    assert peak <= c * size + K, f"{what}: peak {peak / size:.2f} x {size} bytes, bound {c} x size + {K}"


# -------------------------------------------------------------------------------- canonical messages


def pair_records(n: int, blob_len: int, base: int = BASE_ID) -> bytes:
    """A canonical pair list: u32 n, then n x (u32 id, u32 blob_len, blob), ids ascending from base."""
    rec = np.zeros((n, 8 + blob_len), np.uint8)
    rec[:, :4] = np.arange(base, base + n, dtype=">u4").view(np.uint8).reshape(n, 4)
    rec[:, 4:8] = np.frombuffer(struct.pack(">I", blob_len), np.uint8)
    rec[:, 8:] = (np.arange(blob_len, dtype=np.uint8) * 7 + 1) if blob_len else 0
    return struct.pack(">I", n) + rec.tobytes()


def header(type_code: int) -> bytes:
    return struct.pack(">HB", WIRE_VERSION, type_code)


def canonical_pairs(type_code: int, size: int, blob_len: int) -> bytes:
    """A message of about `size` bytes whose pair lists hold as many pairs of blob_len bytes as fit."""
    per = 8 + blob_len
    if type_code == ShareKeys.TYPE:
        n = (size - 3 - 32 - 4 - 32) // per
        return header(type_code) + SID + pair_records(n, blob_len) + bytes(32)
    if type_code == UnmaskResponse.TYPE:
        n = (size - 3 - 32 - 8) // per // 2
        return header(type_code) + SID + pair_records(n, blob_len) + pair_records(n, blob_len, BASE_ID + n)
    if type_code == SharesDelivery.TYPE:
        n = (size - 3 - 32 - 4) // per
        return header(type_code) + SID + pair_records(n, blob_len)
    assert type_code == UnmaskRequest.TYPE  # three empty u32 lists, then the signatures
    n = (size - 3 - 32 - 12 - 4) // per
    return header(type_code) + SID + bytes(12) + pair_records(n, blob_len)


PAIR_TYPES = {
    "ShareKeys": ShareKeys.TYPE,
    "UnmaskResponse": UnmaskResponse.TYPE,
    "SharesDelivery": SharesDelivery.TYPE,
    "UnmaskRequest": UnmaskRequest.TYPE,
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(PAIR_TYPES))
def test_pairs_at_the_item_budget_decode_within_the_bound(name: str, size: int) -> None:
    """As many pairs as the budget allows (64 bytes each: the worst accepted message) decode exactly."""
    data = canonical_pairs(PAIR_TYPES[name], size, ITEM_BUDGET_BYTES - 8)
    peak, msg = peak_of(decode_message, data)
    assert not isinstance(msg, EncodingError), msg
    assert encode_message(msg) == data
    assert_bounded(peak, len(data), C_ITEMS, name)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(PAIR_TYPES))
def test_honest_sized_pairs_decode_within_the_bound(name: str, size: int) -> None:
    """Pairs the size the protocol uses (172-byte ciphertexts, 68-byte shares, 64-byte signatures)."""
    blob_len = {"ShareKeys": 172, "SharesDelivery": 172, "UnmaskResponse": 68, "UnmaskRequest": 64}[name]
    data = canonical_pairs(PAIR_TYPES[name], size, blob_len)
    peak, msg = peak_of(decode_message, data)
    assert encode_message(msg) == data
    assert_bounded(peak, len(data), C_ITEMS, name)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("blob_len", [0, 2, 40])
@pytest.mark.parametrize("name", sorted(PAIR_TYPES))
def test_tiny_pairs_beyond_the_budget_are_refused_before_any_is_built(name: str, blob_len: int, size: int) -> None:
    """Pairs of 8, 10 or 48 bytes filling the message (the old worst case: 12 x its size) are refused at the
    count, before a single pair of that list exists. (UnmaskResponse's two lists share one budget: its first
    list may fit and be built, within the bound, before its second is refused.)"""
    data = canonical_pairs(PAIR_TYPES[name], size, blob_len)
    peak, err = peak_of(decode_message, data)
    assert isinstance(err, EncodingError) and "too many items for the message size" in str(err)
    assert_bounded(peak, len(data), C_ITEMS, name)
    if name != "UnmaskResponse" or blob_len < ITEM_BUDGET_BYTES // 2 - 8:
        assert peak <= K


def test_the_budget_is_exact_and_small_messages_keep_their_free_items() -> None:
    """1024 items are free (every test-sized message decodes as before); beyond, 64 bytes per item."""
    free = header(ShareKeys.TYPE) + SID + pair_records(ITEM_BUDGET_FREE, 0) + bytes(32)
    msg = decode_message(free)
    assert isinstance(msg, ShareKeys) and len(msg.ciphertexts) == ITEM_BUDGET_FREE
    assert msg.ciphertexts[0] == (BASE_ID, b"")
    # n pairs in a message of B bytes: accepted iff n <= 1024 + B // 64 (the last blob sets B)
    n = ITEM_BUDGET_FREE + 500
    exact = 500 * ITEM_BUDGET_BYTES - len(share_keys_with_last_blob(n, 0))
    for last in (exact - 64, exact - 1, exact, exact + 1, exact + 640):
        data = share_keys_with_last_blob(n, last)
        fits = n <= ITEM_BUDGET_FREE + len(data) // ITEM_BUDGET_BYTES
        assert fits == (last >= exact)
        if fits:
            assert encode_message(decode_message(data)) == data
        else:
            with pytest.raises(EncodingError, match="too many items for the message size"):
                decode_message(data)


def share_keys_with_last_blob(n: int, last: int) -> bytes:
    """A ShareKeys of n pairs, all blobs empty but the last, which has `last` bytes."""
    records = bytearray(pair_records(n, 0))
    records[4 + 8 * (n - 1) + 4 : 4 + 8 * n] = struct.pack(">I", last)
    return header(ShareKeys.TYPE) + SID + bytes(records) + bytes(last) + bytes(32)


@pytest.mark.parametrize(
    "name,data",
    [
        ("pairs", header(ShareKeys.TYPE) + SID + struct.pack(">I", MAX_ITEMS) + bytes(64)),
        ("advertisements", header(KeysBroadcast.TYPE) + SID + SID + struct.pack(">I", MAX_ITEMS) + bytes(72 * 9)),
        ("u32", header(RoundComplete.TYPE) + SID + struct.pack(">I", MAX_ITEMS) + bytes(400)),
        ("second list", header(UnmaskResponse.TYPE) + SID + pair_records(3, 2) + struct.pack(">I", 1 << 19)),
    ],
)
def test_a_count_the_bytes_cannot_hold_is_refused_before_anything_is_built(name: str, data: bytes) -> None:
    """A pair needs 8 bytes, an advertisement 72, a u32 4: a larger count is truncated input, found at once."""
    peak, err = peak_of(decode_message, data)
    assert isinstance(err, EncodingError) and "truncated" in str(err), (name, err)
    assert peak <= 16 * KiB


@pytest.mark.parametrize("size", SIZES)
def test_key_advertisements_decode_within_the_bound(size: int) -> None:
    """KeysBroadcast (server to client) with as many 72-byte advertisements as fit."""
    n = (size - 3 - 64 - 4) // 72
    ads = tuple(KeyAdvertisement(BASE_ID + i, bytes([i % 251]) * 32, bytes([i % 241]) * 32) for i in range(n))
    data = encode_message(KeysBroadcast(SID, SID, ads))
    peak, msg = peak_of(decode_message, data)
    assert msg == KeysBroadcast(SID, SID, ads)
    assert_bounded(peak, len(data), C_ADS, "KeysBroadcast")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["RoundComplete", "ConsistencyRequest", "UnmaskRequest"])
def test_u32_lists_decode_within_their_documented_bound(name: str, size: int) -> None:
    """u32 lists occur only in server-to-client messages; each id costs a tuple slot and an int (40 bytes for
    4), so their bound is 10 x (and they are limited to 2^20 ids: at most 40 MiB whatever the size)."""
    n = min((size - 64) // 4, MAX_ITEMS)
    ids = tuple(range(BASE_ID, BASE_ID + n))
    msg: Any = {
        "RoundComplete": RoundComplete(SID, ids),
        "ConsistencyRequest": ConsistencyRequest(SID, ids),
        "UnmaskRequest": UnmaskRequest(SID, ids, (), ()),
    }[name]
    data = encode_message(msg)
    peak, got = peak_of(decode_message, data)
    assert got == msg
    assert_bounded(peak, len(data), C_U32, name)


def flat_client_messages(size: int) -> dict[str, tuple[bytes, bool]]:
    """Client messages without lists, made as large as possible: (bytes, decodes)."""
    chunk = MaskedInputChunk(SID, 0, 1, 0, np.arange((size - 64) // 4, dtype=np.uint32))
    adv = encode_message(AdvertiseKeys(SID, KeyAdvertisement(7, bytes(32), bytes(32), bytes(64))))
    sig = encode_message(ConsistencySignature(SID, bytes(64)))
    abort = header(ClientAbort.TYPE) + struct.pack(">I", 4) + b"CODE"
    return {
        "MaskedInputChunk": (encode_message(chunk), True),
        "MaskedInputChunk ragged": (encode_message(chunk)[:-1], False),
        "AdvertiseKeys with trailing bytes": (adv + bytes(size - len(adv)), False),
        "AdvertiseKeys with a huge signature": (adv[:-68] + struct.pack(">I", size) + bytes(size), False),
        "ConsistencySignature with trailing bytes": (sig + bytes(size), False),
        "ClientAbort with a huge reason": (abort + struct.pack(">I", size) + b"r" * size, False),
    }


@pytest.mark.parametrize("size", SIZES)
def test_client_messages_without_lists_decode_within_the_bound(size: int) -> None:
    for name, (data, ok) in flat_client_messages(size).items():
        peak, msg = peak_of(decode_message, data)
        assert isinstance(msg, EncodingError) != ok, (name, msg)
        if ok:
            assert encode_message(msg) == data
        assert_bounded(peak, len(data), C_FLAT, name)


# -------------------------------------------------------------------------------- the gRPC wire path


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def ld(field: int, body: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(body)) + body


def envelope(field: int, body: bytes) -> bytes:
    return bytes([15 << 3, WIRE_VERSION]) + ld(field, body)


# a ShareCiphertext / OwnedShare of 64 serialized bytes: tag, length, peer (1 + 5), blob (1 + 1 + 54)
WIRE_BLOB = ITEM_BUDGET_BYTES - 10


def wire_message(name: str, size: int, blob_len: int) -> ShareKeys | UnmaskResponse:
    per = 10 + blob_len
    blob = bytes(range(1, blob_len + 1))
    if name == "ShareKeys":
        n = (size - 80) // per
        return ShareKeys(SID, tuple((BASE_ID + i, blob) for i in range(n)), bytes(32))
    n = (size - 40) // per // 2
    pairs = tuple((BASE_ID + i, blob) for i in range(2 * n))
    return UnmaskResponse(SID, pairs[:n], pairs[n:])


def refuse_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any protobuf parse on the wire path fail the test: refusals must come before it."""

    class NoParse:
        @staticmethod
        def FromString(raw: bytes) -> None:
            raise AssertionError(f"protobuf parsed an envelope of {len(raw)} bytes that should have been refused")

    monkeypatch.setattr(wire, "pb", type("pb", (), {"ClientEnvelope": NoParse}))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("blob_len", [WIRE_BLOB, 68, 172])
@pytest.mark.parametrize("name", ["ShareKeys", "UnmaskResponse"])
def test_wire_pairs_within_the_budget_decode_within_the_bound(name: str, blob_len: int, size: int) -> None:
    """Serialized envelopes with as many items as the budget allows (and honest-sized ones) decode exactly;
    Python's share of the cost is bounded here, protobuf's own in the test below."""
    msg = wire_message(name, size, blob_len)
    raw = wire.encode_client(msg)
    peak, got = peak_of(wire.decode_client, raw)
    assert got == msg
    assert_bounded(peak, len(raw), C_ITEMS, name)
    # the same items in a form that is not the serializer's (an unknown field first): the same result
    raw2 = b"\xf8\x07\x01" + raw
    peak, got = peak_of(wire.decode_client, raw2)
    assert got == msg
    assert_bounded(peak, len(raw2), C_ITEMS, name)


def over_budget_envelopes(size: int) -> dict[str, bytes]:
    """Envelopes that would make protobuf build far more than their size (24 x, 15 x) before any check."""
    sk_end = ld(3, bytes(32))
    return {
        "empty ShareCiphertext items": envelope(17, ld(1, SID) + b"\x12\x00" * ((size - 80) // 2) + sk_end),
        "peer-only items": envelope(17, ld(1, SID) + ld(2, b"\x08" + varint(BASE_ID)) * ((size - 80) // 8)),
        "items of 48 bytes": envelope(17, ld(2, b"\x08" + varint(BASE_ID) + ld(2, bytes(40))) * (size // 50)),
        "empty OwnedShare items, both lists": envelope(20, (b"\x12\x00\x1a\x00") * ((size - 40) // 4)),
        "oneof switching": bytes([15 << 3, 1]) + b"\x82\x01\x00\x8a\x01\x00" * (size // 6),
        "share_keys repeated": b"\x8a\x01\x02\x12\x00" * (size // 5),
        "unknown fields in share_keys": envelope(17, b"\x78\x00" * (size // 2)),
        "a group of empty items": envelope(17, b"\x12\x00" * 9 + b"\x7b" + b"\x12\x00" * (size // 2) + b"\x7c"),
    }


@pytest.mark.parametrize("size", SIZES)
def test_wire_envelopes_beyond_the_budget_are_refused_before_protobuf_parses_them(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_protobuf(monkeypatch)
    for name, raw in over_budget_envelopes(size).items():
        peak, err = peak_of(wire.decode_client, raw)
        assert isinstance(err, EncodingError) and "too many items for the message size" in str(err), (name, err)
        assert peak <= K, name


def test_client_from_proto_checks_the_budget_before_converting() -> None:
    """A parsed envelope (not from the wire) with more items than its size pays for is refused unconverted."""
    env = pb.ClientEnvelope(wire_version=WIRE_VERSION)
    env.share_keys.session_id = env.share_keys.seed_commitment = SID
    env.share_keys.ciphertexts.extend([pb.ShareCiphertext(peer=1)] * 50_000)
    size = env.ByteSize()
    peak, err = peak_of(wire.client_from_proto, env)
    assert isinstance(err, EncodingError) and "message size" in str(err)
    assert_bounded(peak, size, C_FLAT, "refused envelope")  # ByteSize() serializes: about 2 x the size, briefly
    u = pb.ClientEnvelope(wire_version=WIRE_VERSION)
    u.unmask_response.session_id = SID
    u.unmask_response.seed_shares.extend([pb.OwnedShare(owner=1)] * ITEM_BUDGET_FREE)
    u.unmask_response.key_shares.extend([pb.OwnedShare(owner=2)] * ITEM_BUDGET_FREE)
    with pytest.raises(EncodingError, match="message size"):
        wire.client_from_proto(u)  # the two lists share one budget


def flat_wire_envelopes(size: int) -> dict[str, tuple[bytes, bool]]:
    chunk = MaskedInputChunk(SID, 0, 1, 0, np.arange((size - 64) // 4, dtype=np.uint32))
    fast = wire.encode_client(chunk)
    adv = wire.encode_client(AdvertiseKeys(SID, KeyAdvertisement(7, bytes(32), bytes(32), bytes(64))))
    return {
        "MaskedInputChunk (read in place)": (fast, True),
        "MaskedInputChunk, another form": (b"\xf8\x07\x01" + fast, True),
        "AdvertiseKeys with a huge unknown field": (adv + ld(99, bytes(size)), True),
        "AdvertiseKeys with a huge signature": (envelope(16, ld(1, SID) + ld(2, ld(4, bytes(size)))), False),
        "ClientAbort with a huge reason": (envelope(21, ld(1, b"CODE") + ld(2, b"r" * size)), False),
    }


@pytest.mark.parametrize("size", SIZES)
def test_wire_messages_without_lists_decode_within_the_bound(size: int) -> None:
    for name, (raw, ok) in flat_wire_envelopes(size).items():
        peak, msg = peak_of(wire.decode_client, raw)
        assert isinstance(msg, EncodingError) != ok, (name, msg)
        assert_bounded(peak, len(raw), C_FLAT, name)


def _mallinfo2() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2  # noqa: B018 - glibc >= 2.33
    except (OSError, AttributeError):
        return None
    return libc


@pytest.mark.skipif(_mallinfo2() is None, reason="needs glibc's mallinfo2 to see protobuf's arena")
def test_protobuf_arena_of_the_worst_accepted_envelope_is_bounded() -> None:
    """tracemalloc does not see protobuf's C arena; glibc's counters do. In a fresh process: what protobuf holds
    after parsing the worst accepted envelope is at most 2.5 x its size (measured: 1.95 x; the Python objects
    are bounded above, so the whole decode stays under 6 x), and an envelope beyond the budget is never parsed
    (checked above)."""
    script = textwrap.dedent(
        f"""
        import ctypes, gc, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from tests.test_decode_cost import wire_message, WIRE_BLOB
        from secagg.transport import wire
        from secagg.transport._generated import secagg_pb2 as pb

        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in
                        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = Info
        def used():
            m = libc.mallinfo2()
            return m.uordblks + m.hblkhd
        worst = 0.0
        for name in ("ShareKeys", "UnmaskResponse"):
            raw = wire.encode_client(wire_message(name, {4 * MiB}, WIRE_BLOB))
            gc.collect()
            before = used()
            env = pb.ClientEnvelope.FromString(raw)
            worst = max(worst, (used() - before) / len(raw))
            del env
        print(worst)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    ratio = float(out.stdout.split()[-1])
    assert ratio <= 2.5, ratio


# -------------------------------------------------------------------------------- the walk changes no verdict


def reference_decode(raw: bytes) -> tuple[str, Any]:
    """What the wire path decided before the walk: protobuf parses, client_from_proto checks."""
    try:
        env = pb.ClientEnvelope.FromString(raw)
    except Exception:  # protobuf's DecodeError
        return "error", "not a protobuf ClientEnvelope"
    try:
        return "ok", wire.client_from_proto(env)
    except EncodingError as exc:
        return "error", str(exc)


def outcome(raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", wire.decode_client(raw)
    except EncodingError as exc:
        return "error", str(exc)


@st.composite
def edited_list_envelopes(draw: st.DrawFn) -> bytes:
    """A serialized ShareKeys or UnmaskResponse envelope with a few edits: bytes changed, inserted, removed, cut,
    or appended (groups, odd wire types, bad varints and lengths among them)."""
    items = draw(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=12)), max_size=4))
    if draw(st.booleans()):
        msg: Any = ShareKeys(SID, tuple(items), bytes(32))
    else:
        msg = UnmaskResponse(SID, tuple(items[:2]), tuple(items[2:]))
    raw = bytearray(wire.encode_client(msg))
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["set", "insert", "delete", "cut", "append"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        byte = draw(
            st.one_of(st.sampled_from([0x00, 0x0B, 0x0C, 0x12, 0x7F, 0x80, 0xFF, 0x1A, 0x7B]), st.integers(0, 255))
        )
        if edit == "set" and raw:
            raw[at] = byte
        elif edit == "insert":
            raw.insert(at, byte)
        elif edit == "delete" and raw:
            del raw[at]
        elif edit == "cut":
            del raw[at:]
        else:
            raw += draw(st.binary(min_size=1, max_size=12))
    return bytes(raw)


@settings(max_examples=500, deadline=None)
@given(edited_list_envelopes())
def test_the_walk_before_protobuf_changes_no_verdict_of_a_small_envelope(raw: bytes) -> None:
    """Within the budget the walk is invisible: decode_client says what protobuf and client_from_proto say."""
    assert outcome(raw) == reference_decode(raw)


@pytest.mark.parametrize("name", ["ShareKeys", "UnmaskResponse"])
def test_at_the_budget_boundary_the_walk_and_client_from_proto_agree(name: str) -> None:
    """For the serializer's form, the walk's budget (over the received bytes) and client_from_proto's (over
    ByteSize) are the same number: one item more than the budget is refused by both, one fewer by neither."""
    n = 3 * ITEM_BUDGET_FREE
    for blob_len in range(0, 120, 3):
        pairs = tuple((BASE_ID + i, bytes(blob_len)) for i in range(n))
        msg: Any = (
            ShareKeys(SID, pairs, bytes(32)) if name == "ShareKeys" else UnmaskResponse(SID, pairs[:5], pairs[5:])
        )
        raw = wire.encode_client(msg)
        fits = n <= ITEM_BUDGET_FREE + len(raw) // ITEM_BUDGET_BYTES
        expected = ("ok", msg) if fits else ("error", "too many items for the message size")
        assert outcome(raw) == reference_decode(raw) == expected, (blob_len, len(raw))


@pytest.mark.parametrize("name", ["ShareKeys", "UnmaskResponse"])
def test_the_walk_changes_no_verdict_of_an_edited_large_envelope(name: str) -> None:
    """Beyond the free items too: honest-sized envelopes of about 2500 items with a few bytes changed, inserted
    or removed are decoded, or refused with the reason, that protobuf and client_from_proto give."""
    rng = random.Random(f"decode-cost-{name}")
    base = wire.encode_client(wire_message(name, 200 * KiB, 172 if name == "ShareKeys" else 68))
    verdicts = set()
    for _ in range(100):
        raw = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            at, byte = rng.randrange(len(raw)), rng.choice([0x0B, 0x0C, 0x12, 0x1A, 0x80, 0xFF, rng.randrange(256)])
            edit = rng.choice("sid")
            if edit == "s":
                raw[at] = byte
            elif edit == "i":
                raw.insert(at, byte)
            else:
                del raw[at]
        got = outcome(bytes(raw))
        assert got == reference_decode(bytes(raw))
        verdicts.add(got[0])
    assert verdicts == {"ok", "error"}


def _groups(depth: int) -> bytes:
    return b"\x0b" * depth + b"\x0c" * depth


ODD_BUT_SMALL: dict[str, bytes] = {
    **{f"{d} nested groups": _groups(d) for d in (99, 100, 101)},
    **{f"{d} nested groups in share_keys": envelope(17, _groups(d)) for d in (98, 99, 100)},
    "groups of other fields": b"\x0b\x13\x14\x0c",
    "groups closed in the wrong order": b"\x0b\x13\x0c\x14",
    "a group left open": envelope(17, b"\x0b\x12\x00"),
    "a group open at the end of share_keys": envelope(17, b"\x0b") + b"\x0c",
    "an end-group tag alone": envelope(17, b"\x0c"),
    "a group of the largest field number": b"\xfb\xff\xff\xff\x0f\xfc\xff\xff\xff\x0f",
    "items inside a group in share_keys": envelope(17, b"\x0b" + b"\x12\x00" * 5 + b"\x0c"),
    "share_keys inside a group": b"\x0b" + ld(17, b"\x12\x00") + b"\x0c",
    "field 0": envelope(17, b"\x00\x00"),
    "wire types 6 and 7": envelope(17, b"\x0e") + envelope(17, b"\x0f"),
    "a 10-byte varint": envelope(17, b"\x08" + b"\xff" * 9 + b"\x7f"),
    "an 11-byte varint": envelope(17, b"\x08" + b"\xff" * 10 + b"\x01"),
    "a 6-byte tag": b"\xf8\x87\x80\x80\x80\x00\x01",
    "a tag of 2^32": b"\xf8\xff\xff\xff\x1f\x00",
    "a non-minimal 10-byte length": b"\x7a\x81" + b"\x80" * 8 + b"\x00" + b"\x00",
    "an item running past share_keys": b"\x8a\x01\x02\x12\x05" + bytes(5),
    "a varint running past share_keys": b"\x8a\x01\x02\x08\x80\x01",
    "a fixed64 running past share_keys": b"\x8a\x01\x03\x09\x00\x00" + bytes(8),
    "share_keys as a varint": b"\x88\x01\x05",
    "share_keys as a group": b"\x8b\x01\x8c\x01",
    "share_keys then unmask_response": envelope(17, b"\x12\x00") + ld(20, b"\x12\x00\x1a\x00"),
    "2-byte lengths, minimal and not": envelope(
        17, b"\x12\x80\x00" + b"\x12\x81\x00\x00" + b"\x12\x80\x01" + bytes(128)
    ),
}


@pytest.mark.parametrize("name", sorted(ODD_BUT_SMALL))
def test_odd_protobuf_gets_the_verdict_protobuf_gives(name: str) -> None:
    """Groups, nesting at protobuf's limit, odd varints and tags: decoded or refused exactly as before."""
    raw = ODD_BUT_SMALL[name]
    assert outcome(raw) == reference_decode(raw)


# -------------------------------------------------------------------------------- the silo's side: server envelopes
#
# The silo does not trust the server (threat_model.md, ADV2): it receives each ServerEnvelope serialized and decodes
# it with wire.decode_server, which walks it like decode_client before protobuf parses it. Items (advertisements,
# ciphertexts, signatures, oneof changes) have the same budget as on the server; u32 ids have their own,
# ID_BUDGET_FREE + size // 3, which no list of distinct ids >= 1 (every list an honest server sends) comes near.

C_IDS = 12.5  # peak / size for u32 ids at their budget: a tuple slot and an int (36 bytes) per 3 bytes (reached: 12.0)
K_IDS = K + 40 * wire.ID_BUDGET_FREE  # the free ids: 17408 ints


def senv(field: int, body: bytes) -> bytes:
    return bytes([15 << 3, WIRE_VERSION]) + ld(field, body)


def packed(value: int, n: int) -> bytes:
    return varint(value) * n


def refuse_server_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any protobuf parse of a server envelope fail the test: refusals must come before it."""

    class NoParse:
        @staticmethod
        def FromString(raw: bytes) -> None:
            raise AssertionError(f"protobuf parsed a server envelope of {len(raw)} bytes that should be refused")

    monkeypatch.setattr(wire, "pb", type("pb", (), {"ServerEnvelope": NoParse, "ClientEnvelope": NoParse}))


def over_budget_server_envelopes(size: int) -> dict[str, bytes]:
    """Server envelopes that protobuf would turn into 24 to 40 times their size (items), or 8 to 22 times (ids)."""
    tag_sid = ld(1, SID) + ld(2, SID)
    n1, n2 = size - 64, (size - 64) // 2  # ids of 1 byte (cached small ints) and of 2 bytes (an int each)
    return {
        "empty advertisements": senv(2, tag_sid + b"\x1a\x00" * ((size - 80) // 2)),
        "empty ciphertexts": senv(3, ld(1, SID) + b"\x12\x00" * ((size - 40) // 2)),
        "empty signatures": senv(5, ld(1, SID) + b"\x2a\x00" * ((size - 40) // 2)),
        "oneof switching": bytes([15 << 3, 1]) + b"\x0a\x00\x12\x00" * (size // 4),
        "keys_broadcast repeated": b"\x12\x02\x1a\x00" * (size // 4),
        "survivors of 1 byte": senv(4, ld(1, SID) + ld(2, packed(1, n1))),
        "survivors of 2 bytes": senv(4, ld(1, SID) + ld(2, packed(300, n2))),
        "survivors not packed": senv(4, ld(1, SID) + b"\x10\x01" * (n1 // 2)),
        "survivors in many packed pieces": senv(4, ld(1, SID) + ld(2, packed(300, 62)) * (size // 128)),
        "round_complete survivors": senv(7, ld(1, SID) + ld(2, packed(300, n2))),
        "alive, dropped, survivors": senv(5, ld(1, SID) + b"".join(ld(f, packed(300, n2 // 3)) for f in (2, 3, 4))),
        "participants": senv(1, ld(1, ld(4, packed(300, n2)))),
        "participants in many configs": senv(1, ld(1, ld(4, packed(300, 62))) * (size // 130)),
    }


@pytest.mark.property("P13")
@pytest.mark.parametrize("size", SIZES)
def test_server_envelopes_beyond_the_budgets_are_refused_before_protobuf_parses_them(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: protobuf built 40 x the size for empty advertisements, 24 x for empty ciphertexts or signatures,
    and conversion up to 18 x more for 2-byte ids; now refused by the walk, which builds a 64 KiB block at most."""
    refuse_server_parse(monkeypatch)
    for name, raw in over_budget_server_envelopes(size).items():
        peak, err = peak_of(wire.decode_server, raw)
        assert isinstance(err, EncodingError) and "too many items for the message size" in str(err), (name, err)
        assert peak <= K, name


def padded(raw_without_pad: Callable[[int], bytes], size: int) -> bytes:
    """An envelope of `size` bytes: raw_without_pad(n) with a top-level unknown field filling the rest."""
    body = raw_without_pad(size)
    pad = max(size - len(body) - 6, 0)
    pad += size - len(body + ld(99, bytes(pad)))  # the length's varint may be a byte shorter than allowed for
    return body + ld(99, bytes(pad))


def ids_at_the_budget(size: int) -> dict[str, bytes]:
    """As many 2-byte ids (an int each: the most Python per byte) as the id budget allows, the rest padding."""
    n = wire.ID_BUDGET_FREE + size // wire.ID_BUDGET_BYTES
    return {
        "ConsistencyRequest": padded(lambda s: senv(4, ld(1, SID) + ld(2, packed(300, n))), size),
        "RoundComplete": padded(lambda s: senv(7, ld(1, SID) + ld(2, packed(300, n))), size),
        "UnmaskRequest": padded(
            lambda s: senv(5, ld(1, SID) + b"".join(ld(f, packed(300 + f, n // 3)) for f in (2, 3, 4))), size
        ),
    }


def config_without_participants(modulus: int = 1 << 32) -> bytes:
    from secagg.simulation import make_config

    config = wire.config_to_proto(make_config(3, 5, modulus=modulus))
    config.ClearField("participants")
    return bytes(config.SerializeToString())


@pytest.mark.property("P13")
@pytest.mark.parametrize("size", SIZES)
def test_server_ids_at_their_budget_decode_or_are_refused_within_the_bound(size: int) -> None:
    """The worst accepted u32 lists: decoded (or refused for MAX_ITEMS) with Python's peak at most 12.5 x the size
    plus the free ids (before: 18.4 x for 2-byte ids); protobuf's array adds 4 bytes an id (at most 4 x)."""
    for name, raw in ids_at_the_budget(size).items():
        peak, got = peak_of(wire.decode_server, raw)
        if isinstance(got, EncodingError):
            assert "too many survivors" in str(got) and size > 3 * MiB, (name, got)
        else:
            assert wire.server_from_proto(pb.ServerEnvelope.FromString(raw)) == got
        assert_bounded_by(peak, len(raw), C_IDS, K_IDS, name)


C_SETUP = 40.0  # a SetupRequest: RoundConfig.validate sorts a list and a set of the participants (reached: 37.7)


@pytest.mark.property("P13")
@pytest.mark.parametrize("size", SIZES)
def test_a_setup_request_of_as_many_participants_as_fit_decodes_within_its_bound(size: int) -> None:
    """Participants 1..n, as many as fit (at most MAX_ITEMS): the costliest participants, sorted and distinct
    as RoundConfig requires, whose validation (in secagg.protocol.config, not the wire) builds a set of them."""
    from secagg.protocol.messages import SetupRequest
    from secagg.simulation import make_config

    base = config_without_participants(modulus=1 << 64)
    n = 127 + 16256 + (size - 64 - len(base) - 127 - 2 * 16256) // 3
    n = min(n, MAX_ITEMS)
    config = pb.RoundConfig.FromString(base)
    config.participants.extend(range(1, n + 1))
    raw = senv(1, ld(1, config.SerializeToString()))
    assert len(raw) <= size
    peak, got = peak_of(wire.decode_server, raw)
    assert isinstance(got, SetupRequest) and got.config.participants == tuple(range(1, n + 1))
    assert got == SetupRequest(wire.config_from_proto(config)) and got.config != make_config(3, 5)
    assert_bounded_by(peak, len(raw), C_SETUP, K_IDS, "SetupRequest")


def assert_bounded_by(peak: int, size: int, c: float, k: int, what: str) -> None:
    assert peak <= c * size + k, f"{what}: peak {peak / size:.2f} x {size} bytes, bound {c} x size + {k}"


def server_items_at_the_budget(size: int) -> dict[str, bytes]:
    """The smallest items that convert (72-byte advertisements, 64-byte ciphertexts and signatures), as many as
    fit, which is within the item budget."""
    ad = ld(3, ld(2, bytes(range(32))) + ld(3, bytes(range(32, 64))))  # client_id 0, no signature: 72 bytes
    pair = ld(2, b"\x08" + varint(BASE_ID) + ld(2, bytes(WIRE_BLOB)))  # 64 bytes
    sig = ld(5, b"\x08" + varint(BASE_ID) + ld(2, bytes(WIRE_BLOB)))
    return {
        "KeysBroadcast": senv(2, ld(1, SID) + ld(2, SID) + ad * ((size - 80) // len(ad))),
        "SharesDelivery": senv(3, ld(1, SID) + pair * ((size - 40) // len(pair))),
        "UnmaskRequest": senv(5, ld(1, SID) + sig * ((size - 40) // len(sig))),
    }


@pytest.mark.property("P13")
@pytest.mark.parametrize("size", SIZES)
def test_server_items_at_the_budget_decode_within_the_bound(size: int) -> None:
    """Python's peak for the worst accepted items: at most C_ADS x the size (one dataclass per advertisement)."""
    for name, raw in server_items_at_the_budget(size).items():
        peak, got = peak_of(wire.decode_server, raw)
        assert not isinstance(got, EncodingError), (name, got)
        assert got == wire.server_from_proto(pb.ServerEnvelope.FromString(raw))
        assert_bounded(peak, len(raw), C_ADS, name)


HONEST_SERVER_MESSAGES = [
    "KeysBroadcast, 1000 signed advertisements",
    "KeysBroadcast, 10000 advertisements",
    "UnmaskRequest, 1000 signatures",
    "UnmaskRequest, 10000 silos",
    "SetupRequest, 10^5 participants",
    "RoundComplete, 10000 large ids",
]


def honest_server_message(name: str) -> Any:
    from secagg.protocol.messages import SetupRequest
    from secagg.simulation import make_config

    sig, n = bytes(range(64)), 10_000
    sigs = tuple((i, sig) for i in range(1, 1001))
    if name.startswith("KeysBroadcast"):
        count, signature = (1000, sig) if "signed" in name else (n, b"")
        ads = (KeyAdvertisement(i, bytes([i % 251]) * 32, bytes([i % 241]) * 32, signature) for i in range(count))
        return KeysBroadcast(SID, SID, tuple(ads))
    if name == "UnmaskRequest, 1000 signatures":
        return UnmaskRequest(SID, tuple(range(1, 501)), (), tuple(range(1, 1001)), sigs)
    if name == "UnmaskRequest, 10000 silos":
        odd, even = tuple(range(1, n, 2)), tuple(range(2, n + 1, 2))
        return UnmaskRequest(SID, odd, even, odd, sigs)
    if name.startswith("SetupRequest"):
        return SetupRequest(make_config(100_000, 6, modulus=1 << 64))
    return RoundComplete(SID, tuple(range((1 << 31) - 2 - n, (1 << 31) - 2)))


@pytest.mark.property("P13")
@pytest.mark.parametrize("name", HONEST_SERVER_MESSAGES)
def test_large_honest_server_messages_decode(name: str) -> None:
    msg = honest_server_message(name)
    raw = wire.server_to_proto(msg).SerializeToString()
    assert wire.decode_server(raw) == msg


@pytest.mark.property("P13")
@pytest.mark.parametrize("n", [1, 127, 128, 5000, 16383, 16384, 20_000, 100_000, 400_000])
def test_no_lists_of_distinct_ids_are_refused(n: int) -> None:
    """The id budget's free ids cover the 127 one-byte and 16256 two-byte ids of up to three lists of distinct
    ids: the smallest ids (1..n) in all three lists of an UnmaskRequest, and in each single-list message."""
    ids = tuple(range(1, n + 1))
    for msg in (UnmaskRequest(SID, ids, ids, ids), ConsistencyRequest(SID, ids), RoundComplete(SID, ids)):
        raw = wire.server_to_proto(msg).SerializeToString()
        assert wire.decode_server(raw) == msg
    tight = wire.server_to_proto(UnmaskRequest(SID, ids, ids, ids)).SerializeToString()
    assert 3 * n <= wire.ID_BUDGET_FREE + len(tight) // wire.ID_BUDGET_BYTES


@pytest.mark.property("P13")
def test_server_from_proto_checks_the_id_budget_before_converting() -> None:
    """A parsed envelope (not from the wire) with more ids than its size pays for is refused unconverted."""
    env = pb.ServerEnvelope(wire_version=WIRE_VERSION)
    env.round_complete.session_id = SID
    env.round_complete.survivors.extend([1] * 100_000)
    with pytest.raises(EncodingError, match="message size"):
        wire.server_from_proto(env)
    u = pb.ServerEnvelope(wire_version=WIRE_VERSION)
    u.unmask_request.session_id = SID
    for values in (u.unmask_request.alive, u.unmask_request.dropped, u.unmask_request.survivors):
        values.extend([2] * 10_000)  # 30,000 ids in 30 KB: the three lists share one budget
    with pytest.raises(EncodingError, match="message size"):
        wire.server_from_proto(u)


def server_reference(raw: bytes) -> tuple[str, Any]:
    """What the silo decided before the walk: protobuf parses, server_from_proto checks."""
    try:
        env = pb.ServerEnvelope.FromString(raw)
    except Exception:  # protobuf's DecodeError
        return "error", "not a protobuf ServerEnvelope"
    try:
        return "ok", wire.server_from_proto(env)
    except EncodingError as exc:
        return "error", str(exc)


def server_outcome(raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", wire.decode_server(raw)
    except EncodingError as exc:
        return "error", str(exc)


@st.composite
def edited_server_envelopes(draw: st.DrawFn) -> bytes:
    """A serialized server envelope with lists (or a setup request), with a few bytes edited."""
    from secagg.protocol.messages import SetupRequest
    from secagg.simulation import make_config

    ids = tuple(draw(st.lists(st.integers(0, 2**32 - 1), max_size=5)))
    items = tuple(draw(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=12)), max_size=3)))
    kind = draw(st.sampled_from(["keys", "shares", "consistency", "unmask", "complete", "setup"]))
    msg: Any = {
        "keys": lambda: KeysBroadcast(SID, SID, tuple(KeyAdvertisement(i, SID, SID) for i, _ in items)),
        "shares": lambda: SharesDelivery(SID, items),
        "consistency": lambda: ConsistencyRequest(SID, ids),
        "unmask": lambda: UnmaskRequest(SID, ids[:2], ids[2:], ids, items),
        "complete": lambda: RoundComplete(SID, ids),
        "setup": lambda: SetupRequest(make_config(3, 5)),
    }[kind]()
    raw = bytearray(wire.server_to_proto(msg).SerializeToString())
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["set", "insert", "delete", "cut", "append"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        byte = draw(
            st.one_of(
                st.sampled_from([0x00, 0x0B, 0x0C, 0x10, 0x12, 0x22, 0x7F, 0x80, 0xFF, 0x7B]), st.integers(0, 255)
            )
        )
        if edit == "set" and raw:
            raw[at] = byte
        elif edit == "insert":
            raw.insert(at, byte)
        elif edit == "delete" and raw:
            del raw[at]
        elif edit == "cut":
            del raw[at:]
        else:
            raw += draw(st.binary(min_size=1, max_size=12))
    return bytes(raw)


@pytest.mark.property("P13")
@settings(max_examples=500, deadline=None)
@given(edited_server_envelopes())
def test_the_walk_before_protobuf_changes_no_verdict_of_a_small_server_envelope(raw: bytes) -> None:
    assert server_outcome(raw) == server_reference(raw)


ODD_SERVER_ENVELOPES: dict[str, bytes] = {
    **{f"{d} nested groups in a config": senv(1, ld(1, _groups(d))) for d in (97, 98, 99)},
    "ids as fixed32 (an unknown field)": senv(4, ld(1, SID) + b"\x15" + bytes(4)),
    "a packed list cut in a varint": senv(4, ld(1, SID) + ld(2, b"\x01\x80")),
    "a packed list with an 11-byte varint": senv(4, ld(1, SID) + ld(2, b"\xff" * 10 + b"\x01")),
    "a packed list running past its body": senv(4, ld(1, SID) + b"\x12\x05\x01"),
    "ids packed and not, mixed": senv(7, ld(1, SID) + b"\x10\x05" + ld(2, b"\x01\x02") + b"\x10\x07"),
    "config repeated (merged)": senv(1, ld(1, ld(4, b"\x01\x02")) + ld(1, ld(4, b"\x03"))),
    "ids in a group in unmask_request": senv(5, ld(1, SID) + b"\x0b" + ld(2, b"\x01\x02") + b"\x0c"),
    "survivors as a group": senv(4, ld(1, SID) + b"\x13\x14"),
    "a group left open in a config": senv(1, ld(1, b"\x0b")),
}


@pytest.mark.property("P13")
@pytest.mark.parametrize("name", sorted(ODD_SERVER_ENVELOPES))
def test_odd_server_envelopes_get_the_verdict_protobuf_gives(name: str) -> None:
    raw = ODD_SERVER_ENVELOPES[name]
    assert server_outcome(raw) == server_reference(raw)


@pytest.mark.property("P13")
def test_a_silo_ends_the_round_as_malformed_on_an_over_budget_envelope(tmp_path: Path) -> None:
    """Through a real SiloRunner._handle with serialized envelopes, as the stream delivers them: after the setup
    (the silo answers with its keys), an envelope beyond the budget ends the round as MALFORMED, nothing raised;
    the silo takes part in the next round."""
    import dataclasses

    from secagg.deploy.config import load_silo_config
    from secagg.deploy.pki import init_pki
    from secagg.protocol.messages import SetupRequest
    from secagg.simulation import build, make_config
    from secagg.transport.grpc_silo import SiloRunner, _Stream

    pki = init_pki(tmp_path / "pki", 4, dim=6)
    cfg = dataclasses.replace(make_config(4, 6, seed=4), run_id="run")
    setup = build(cfg, seed=4)
    runner = SiloRunner(load_silo_config(pki.silos[0].config), inputs=lambda _c: setup.inputs[1])
    stream = _Stream()

    def replies() -> list[object]:
        out = []
        while not stream.outbox.empty():
            out.append(stream.outbox.get_nowait())
        return out

    runner._handle(wire.server_to_proto(SetupRequest(cfg)).SerializeToString(), stream)
    assert [type(r).__name__ for r in replies()] == ["AdvertiseKeys"]
    assert runner._session is not None
    hostile = over_budget_server_envelopes(1 * MiB)["empty advertisements"]
    runner._handle(hostile, stream)
    assert runner._session is None and replies() == []
    assert [(r.round, r.state, r.error_code) for r in runner.rounds] == [(0, "aborted", "MALFORMED")]
    assert runner.rounds[0].error == "too many items for the message size"
    runner._handle(b"\xff\xfe not protobuf", stream)  # no round in progress: nothing to end, nothing raised
    assert len(runner.rounds) == 1
    nxt = dataclasses.replace(cfg, round=1)
    runner._handle(wire.server_to_proto(SetupRequest(nxt)).SerializeToString(), stream)
    assert [type(r).__name__ for r in replies()] == ["AdvertiseKeys"]


@pytest.mark.property("P13")
@pytest.mark.skipif(_mallinfo2() is None, reason="needs glibc's mallinfo2 to see protobuf's arena")
def test_protobuf_arena_of_the_worst_accepted_server_envelopes_is_bounded() -> None:
    """In a fresh process: protobuf's arena for the worst accepted server envelopes is at most 2.5 x their size for
    items (measured 2.1 x) and 4.5 x for ids (an array of 4-byte elements; measured 4.3 x)."""
    script = textwrap.dedent(
        f"""
        import ctypes, gc, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from tests.test_decode_cost import server_items_at_the_budget, ids_at_the_budget
        from secagg.transport._generated import secagg_pb2 as pb

        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in
                        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = Info
        def used():
            m = libc.mallinfo2()
            return m.uordblks + m.hblkhd
        for cases in (server_items_at_the_budget({4 * MiB}), ids_at_the_budget({1 * MiB})):
            worst = 0.0
            for raw in cases.values():
                gc.collect()
                before = used()
                env = pb.ServerEnvelope.FromString(raw)
                worst = max(worst, (used() - before) / len(raw))
                del env
            print(worst)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    items, ids = map(float, out.stdout.split()[-2:])
    assert items <= 2.5 and ids <= 4.5, (items, ids)


# -------------------------------------------------------------------------------- the server's inbox, in bytes
#
# The coordinator takes the messages of every silo from one inbox. It used to hold up to 64 decoded messages (up to
# about 3 x the 8 MiB cap each: 1.5 GiB) plus one decode per reader thread; now a reader reserves a message's encoded
# size before decoding it and waits while the reservations would pass the budget (4 x max_message_bytes + 1 MiB by
# default), so a flood blocks the flooding streams.


def _wait_for(what: Callable[[], bool]) -> None:
    """Wait for a state another thread reaches (a hang fails here; nothing is asserted about time)."""
    for _ in range(20_000):
        if what():
            return
        time.sleep(0.005)
    raise AssertionError("the state was never reached")


@pytest.mark.property("P7")
def test_the_inbox_grants_reservations_in_order_and_lets_an_oversized_message_in_alone() -> None:
    from secagg.transport.grpc_server import _Inbox

    stopping = threading.Event()
    inbox = _Inbox(100, stopping)
    assert inbox.reserve(60)
    inbox.put((1, 1, "first"), 60)
    granted: list[str] = []

    def want(size: int, name: str) -> None:
        if inbox.reserve(size):
            granted.append(name)
            inbox.put((1, 1, name), size)

    big = threading.Thread(target=want, args=(150, "big"))
    big.start()
    _wait_for(lambda: len(inbox._turns) == 1)
    small = threading.Thread(target=want, args=(10, "small"))  # it would fit, but it asked after the big one
    small.start()
    _wait_for(lambda: len(inbox._turns) == 2)
    assert granted == [] and inbox.used == 60
    assert inbox.get(0) == (1, 1, "first")  # the inbox is empty: the big message comes in alone
    big.join()
    _wait_for(lambda: len(inbox._turns) == 1)
    assert granted == ["big"] and inbox.used == 150
    assert inbox.get(0) == (1, 1, "big")
    small.join()
    assert granted == ["big", "small"] and inbox.get(0) == (1, 1, "small") and inbox.used == 0
    assert inbox.peak == 150
    with pytest.raises(queue.Empty):
        inbox.get_nowait()
    assert inbox.reserve(100)
    late = threading.Thread(target=want, args=(1, "late"))
    late.start()
    _wait_for(lambda: len(inbox._turns) == 1)
    stopping.set()  # a reservation waiting gives up once the server stops
    late.join()
    assert granted == ["big", "small"]


@pytest.mark.property("P7")
def test_the_servers_inbox_never_holds_more_than_its_byte_budget_while_silos_flood_it(tmp_path: Path) -> None:
    """Two silos' streams (the real Participate reader) each push 40 masked chunks of 64 KiB as fast as they can
    into an inbox of 4.5 chunks, while the coordinator takes nothing: the readers block with 4 chunks queued.
    Then the coordinator takes everything: every chunk of each silo in its order, then the silo's departure;
    the most bytes ever reserved (decoding or queued) is within the budget."""
    from secagg.crypto.rng import SystemRandom
    from secagg.deploy.config import load_server_config
    from secagg.deploy.pki import init_pki
    from secagg.transport.grpc_server import _CLOSED, AggregationServer, _Servicer

    pki = init_pki(tmp_path / "pki", 2, dim=6)
    config = load_server_config(pki.server_config)
    elems, count = 16 * 1024, 40
    chunks = [
        wire.encode_client(MaskedInputChunk(SID, i, count, i * elems, np.full(elems, i, np.uint32)))
        for i in range(count)
    ]
    size = max(map(len, chunks))  # 64 KiB and a few bytes
    budget = 4 * size + size // 2
    server = AggregationServer(config, rng=SystemRandom(), inbox_bytes=budget)
    server._serving = True
    inbox = server._inbox

    class Context:
        def __init__(self, silo: int) -> None:
            entry = config.roster.by_id(silo)
            assert entry is not None
            self.name = entry.certificate_identity.encode()

        def auth_context(self) -> dict[str, list[bytes]]:
            return {"x509_common_name": [self.name]}

        def invocation_metadata(self) -> tuple[()]:
            return ()

        def send_initial_metadata(self, metadata: Any) -> None:
            pass

        def add_callback(self, callback: Callable[[], None]) -> None:
            pass

        def abort(self, code: Any, details: str) -> None:
            raise AssertionError(details)

    def stream(silo: int) -> None:
        for _ in _Servicer(server).Participate(iter(chunks), Context(silo)):
            pass  # the coordinator sends nothing

    streams = [threading.Thread(target=stream, args=(silo,), daemon=True) for silo in (1, 2)]
    for t in streams:
        t.start()
    try:
        _wait_for(lambda: len(inbox._turns) == 2)  # both readers wait for room, holding their next chunk
        assert len(inbox) == 4 and budget - size < inbox.used <= budget  # no room for a fifth
        got: dict[int, list[Any]] = {1: [], 2: []}
        while any(not items or items[-1] != _CLOSED for items in got.values()):
            silo, _generation, item = inbox.get(timeout=60)
            got[silo].append(item if item == _CLOSED else item.index)
        for items in got.values():
            assert items == [*range(count), _CLOSED]
        assert budget - size < inbox.peak <= budget  # the budget was reached, never passed
        assert inbox.used == 0
    finally:
        server._stopping.set()
        for t in streams:
            t.join(timeout=60)
