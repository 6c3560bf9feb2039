"""Message codec: every type round-trips canonically; random and mutated bytes never crash the decoder.

The contract (secagg/protocol/messages.py): `decode_message` accepts exactly the canonical encoding of a
message, or raises EncodingError (ConfigurationError for a config that decodes but is invalid). Anything
else escaping the decoder, or a decoded message that re-encodes to different bytes, is a defect.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.encoding import Writer
from secagg.errors import ConfigurationError, EncodingError
from secagg.protocol.config import MAX_CLIENT_ID, Mode, RoundConfig
from secagg.protocol.messages import (
    _REGISTRY,
    WIRE_VERSION,
    AdvertiseKeys,
    ClientAbort,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    KeysBroadcast,
    MaskedInputChunk,
    Message,
    RoundComplete,
    ServerAbort,
    SetupRequest,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from secagg.protocol.rules import Stage
from secagg.simulation import build, make_config, run

ALL_TYPES = sorted(_REGISTRY.values(), key=lambda c: c.TYPE)
TYPED = (EncodingError, ConfigurationError)


def decode_or_typed_error(data: bytes) -> Message | None:
    """Decode data; a typed error gives None, anything else propagates (and fails the test)."""
    try:
        msg = decode_message(data)
    except TYPED:
        return None
    # Accepted bytes must be the canonical encoding of what they decode to.
    assert encode_message(msg) == data
    return msg


# ---------------------------------------------------------------- a corpus of real messages


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[bytes, ...]:
    """Canonical encodings of every message type, taken from real rounds (and two aborts)."""
    out: list[bytes] = []
    # hardened, chunked, one dropout after sharing (so unmask responses carry key shares)
    cfg = make_config(4, 5, mode=Mode.HARDENED, seed=3, t=3)
    setup = build(cfg, seed=3, chunk_elems=2, drop_at={4: Stage.MASKED_INPUT})
    rr = run(setup, record_transcript=True)
    assert rr.ok
    out += [blob for _, _, blob in rr.transcript]
    # semi-honest: an abort at the masked-input stage (client and server aborts)
    cfg = make_config(3, 2, seed=4, t=2)
    setup = build(cfg, seed=4, drop_at={2: Stage.MASKED_INPUT, 3: Stage.MASKED_INPUT})
    rr = run(setup, record_transcript=True)
    assert not rr.ok
    out += [blob for _, _, blob in rr.transcript]
    out.append(encode_message(ClientAbort("SOME_CODE", "some reason")))
    # dedupe, keep order
    return tuple(dict.fromkeys(out))


def test_corpus_covers_every_message_type() -> None:
    seen = {decode_message(b).TYPE for b in corpus()}
    assert seen == set(_REGISTRY), sorted(set(_REGISTRY) - seen)


@pytest.mark.parametrize("index", range(0, 64))
def test_real_messages_round_trip(index: int) -> None:
    blobs = corpus()
    for blob in blobs[index::64]:
        msg = decode_message(blob)
        assert encode_message(msg) == blob
        assert decode_message(encode_message(msg)) == msg


# ---------------------------------------------------------------- hypothesis strategies per type

U32 = st.integers(min_value=0, max_value=2**32 - 1)
B32 = st.binary(min_size=32, max_size=32)
BLOB = st.binary(max_size=120)
PAIRS = st.lists(st.tuples(U32, BLOB), max_size=4).map(tuple)
IDS = st.lists(U32, max_size=8).map(tuple)
SHORT_TEXT = st.text(max_size=16)  # at most 64 UTF-8 bytes: the decoder's limit for codes
LONG_TEXT = st.text(max_size=200)  # at most 800 bytes: below the 1024-byte limit for reasons


@st.composite
def round_configs(draw: st.DrawFn) -> RoundConfig:
    """Any valid RoundConfig (the constructor validates it)."""
    n = draw(st.integers(min_value=2, max_value=9))
    parts = tuple(
        sorted(draw(st.lists(st.integers(min_value=1, max_value=MAX_CLIENT_ID), min_size=n, max_size=n, unique=True)))
    )
    mode = draw(st.sampled_from(Mode))
    k = draw(st.integers(min_value=1, max_value=n - 1))
    t_low = (k + 1) // 2 + 1 if mode is Mode.HARDENED else 2
    t = draw(st.integers(min_value=max(2, t_low), max_value=k + 1))
    modulus = draw(st.sampled_from([1 << 32, 1 << 64, 1 << 40, 1 << 20, 1_000_003, (1 << 61) - 1]))
    max_weight = draw(st.integers(min_value=1, max_value=8))
    room = (modulus - 1) // (n * max_weight)
    bits = draw(st.integers(min_value=1, max_value=min(62, room.bit_length() - 1)))
    return RoundConfig(
        run_id=draw(st.text(min_size=1, max_size=30)),
        round=draw(U32),
        participants=parts,
        mode=mode,
        k=k,
        t=t,
        graph_seed=draw(B32),
        dim=draw(st.integers(min_value=1, max_value=2**40)),
        modulus=modulus,
        clip=draw(st.floats(min_value=1e-9, max_value=1e9, allow_nan=False)),
        bits=bits,
        max_weight=max_weight,
        min_aggregate=draw(st.integers(min_value=2, max_value=n)),
        model_hash=draw(B32),
        dp_noise_multiplier=draw(st.floats(min_value=0.0, max_value=1e3, allow_nan=False)),
    )


ADS = st.builds(KeyAdvertisement, U32, B32, B32, st.binary(max_size=64))


@st.composite
def chunks(draw: st.DrawFn) -> MaskedInputChunk:
    wide = draw(st.booleans())
    top = 2**64 - 1 if wide else 2**32 - 1
    values = draw(st.lists(st.integers(min_value=0, max_value=top), max_size=12))
    data = np.array(values, dtype=np.uint64 if wide else np.uint32)
    return MaskedInputChunk(draw(B32), draw(U32), draw(U32), draw(st.integers(0, 2**64 - 1)), data)


MESSAGES: dict[type, st.SearchStrategy[Any]] = {
    SetupRequest: st.builds(SetupRequest, round_configs()),
    KeysBroadcast: st.builds(KeysBroadcast, B32, B32, st.lists(ADS, max_size=4).map(tuple)),
    SharesDelivery: st.builds(SharesDelivery, B32, PAIRS),
    ConsistencyRequest: st.builds(ConsistencyRequest, B32, IDS),
    UnmaskRequest: st.builds(UnmaskRequest, B32, IDS, IDS, IDS, PAIRS),
    ServerAbort: st.builds(ServerAbort, B32, SHORT_TEXT, LONG_TEXT),
    RoundComplete: st.builds(RoundComplete, B32, IDS),
    AdvertiseKeys: st.builds(AdvertiseKeys, B32, ADS),
    ShareKeys: st.builds(ShareKeys, B32, PAIRS, B32),
    MaskedInputChunk: chunks(),
    ConsistencySignature: st.builds(ConsistencySignature, B32, st.binary(max_size=64)),
    UnmaskResponse: st.builds(UnmaskResponse, B32, PAIRS, PAIRS),
    ClientAbort: st.builds(ClientAbort, SHORT_TEXT, LONG_TEXT),
}
ANY_MESSAGE = st.one_of(*MESSAGES.values())


def test_strategies_cover_every_type() -> None:
    assert set(MESSAGES) == set(ALL_TYPES)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_type_round_trips(cls: type, data: st.DataObject) -> None:
    msg = data.draw(MESSAGES[cls])
    blob = encode_message(msg)
    assert blob[:2] == struct.pack(">H", WIRE_VERSION) and blob[2] == cls.TYPE
    back = decode_message(blob)
    assert type(back) is cls
    assert back == msg
    assert encode_message(back) == blob


def test_chunk_dtype_survives_round_trip() -> None:
    for dtype in (np.uint32, np.uint64):
        msg = MaskedInputChunk(bytes(32), 0, 1, 0, np.array([0, 1, 2**32 - 1], dtype=dtype))
        back = decode_message(encode_message(msg))
        assert isinstance(back, MaskedInputChunk)
        assert back.data.dtype == np.dtype(dtype).newbyteorder("<") and back == msg
    # a chunk of another dtype cannot even be encoded
    with pytest.raises(EncodingError):
        encode_message(MaskedInputChunk(bytes(32), 0, 1, 0, np.array([1.0], dtype=np.float32)))


# ---------------------------------------------------------------- fuzzing the decoder


@pytest.mark.property("P7")
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_typed_error(data: bytes) -> None:
    decode_or_typed_error(data)


@pytest.mark.property("P7")
@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_REGISTRY)), st.binary(max_size=300))
def test_random_bodies_behind_a_valid_header(type_id: int, body: bytes) -> None:
    decode_or_typed_error(struct.pack(">HB", WIRE_VERSION, type_id) + body)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoding (real or generated) with a few random edits."""
    if draw(st.booleans()):
        blob = bytearray(draw(st.sampled_from(corpus())))
    else:
        blob = bytearray(encode_message(draw(ANY_MESSAGE)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "set", "u32", "cut", "insert", "delete", "truncate"]))
        pos = draw(st.integers(min_value=0, max_value=max(0, len(blob) - 1)))
        if op == "flip" and blob:
            blob[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and blob:
            blob[pos] = draw(st.integers(0, 255))
        elif op == "u32":  # overwrite what may be a length or count field
            value = draw(st.sampled_from([0, 1, 2, 3, 8, 9, 31, 32, 33, 64, 68, 2**20, 2**32 - 1]))
            blob[pos : pos + 4] = struct.pack(">I", value)
        elif op == "cut":
            end = draw(st.integers(min_value=pos, max_value=len(blob)))
            del blob[pos:end]
        elif op == "insert":
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and blob:
            del blob[pos]
        elif op == "truncate":
            del blob[pos:]
    return bytes(blob)


@pytest.mark.property("P7")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_encodings_decode_or_raise_typed_error(data: bytes) -> None:
    decode_or_typed_error(data)


@pytest.mark.property("P7")
def test_every_truncation_and_every_single_byte_flip_of_real_messages() -> None:
    """Exhaustive over prefixes and single-bit flips of the smaller real messages: typed errors only."""
    tried = 0
    for blob in corpus():
        if len(blob) > 700:
            continue
        for cut in range(len(blob)):
            with pytest.raises(TYPED):
                decode_message(blob[:cut])
            tried += 1
        for pos in range(len(blob)):
            flipped = bytearray(blob)
            flipped[pos] ^= 0x01
            decode_or_typed_error(bytes(flipped))
            tried += 1
        with pytest.raises(TYPED):
            decode_message(blob + b"\x00")  # trailing bytes
    assert tried > 5000


def test_header_errors() -> None:
    body = encode_message(RoundComplete(bytes(32), (1, 2)))
    with pytest.raises(EncodingError, match="wire version"):
        decode_message(struct.pack(">H", WIRE_VERSION + 1) + body[2:])
    unknown = next(i for i in range(256) if i not in _REGISTRY)
    with pytest.raises(EncodingError, match="unknown message type"):
        decode_message(body[:2] + bytes([unknown]) + body[3:])
    with pytest.raises(EncodingError):
        decode_message(b"")
    with pytest.raises(EncodingError):
        decode_message("not bytes")  # type: ignore[arg-type]


@pytest.mark.property("P7")
def test_length_limits_are_enforced() -> None:
    """Oversized fields are refused by the decoder, before any allocation of that size."""
    huge_list = Writer().u16(WIRE_VERSION).u8(RoundComplete.TYPE).raw(bytes(32)).u32(2**32 - 1).getvalue()
    with pytest.raises(EncodingError):
        decode_message(huge_list)
    long_sig = encode_message(ConsistencySignature(bytes(32), bytes(65)))
    with pytest.raises(EncodingError, match="longer than allowed"):
        decode_message(long_sig)
    long_code = encode_message(ClientAbort("x" * 65, ""))
    with pytest.raises(EncodingError, match="longer than allowed"):
        decode_message(long_code)
    bad_size = bytearray(encode_message(MaskedInputChunk(bytes(32), 0, 1, 0, np.zeros(2, np.uint32))))
    bad_size[2 + 1 + 32 + 4 + 4 + 8] = 2  # element size 2 is not a ring word
    with pytest.raises(EncodingError, match="element size"):
        decode_message(bytes(bad_size))
    ragged = Writer().u16(WIRE_VERSION).u8(MaskedInputChunk.TYPE).raw(bytes(32)).u32(0).u32(1).u64(0)
    with pytest.raises(EncodingError, match="whole number"):
        decode_message(ragged.u8(4).bytes_(bytes(7)).getvalue())


def _setup_bytes_with_config(config_bytes: bytes) -> bytes:
    return Writer().u16(WIRE_VERSION).u8(SetupRequest.TYPE).bytes_(config_bytes).getvalue()


@pytest.mark.property("P4")
def test_config_inside_setup_is_validated() -> None:
    """A config that decodes but breaks the rules is a ConfigurationError (never a half-built object)."""
    cfg = make_config(4, 3)
    good = cfg.encode()
    assert decode_message(_setup_bytes_with_config(good)) == SetupRequest(cfg)
    bad_version = struct.pack(">H", 3) + good[2:]  # 1 = quantised, 2 = other encodings
    with pytest.raises(ConfigurationError, match="version"):
        decode_message(_setup_bytes_with_config(bad_version))
    # the same fields with an unknown mode string
    w = Writer().u16(1).text(cfg.run_id).u32(cfg.round).u32_list(cfg.participants).text("paranoid")
    w.u32(cfg.k).u32(cfg.t).raw(cfg.graph_seed).u64(cfg.dim).bytes_(cfg.modulus.to_bytes(9, "big"))
    w.text(repr(cfg.clip)).u8(cfg.bits).u64(cfg.max_weight).u32(cfg.min_aggregate).raw(cfg.model_hash)
    w.text(repr(cfg.dp_noise_multiplier))
    with pytest.raises(ConfigurationError, match="mode"):
        decode_message(_setup_bytes_with_config(w.getvalue()))


def _config_with(cfg: RoundConfig, *, modulus_field: bytes | None = None, clip_text: str | None = None) -> bytes:
    w = Writer().u16(1).text(cfg.run_id).u32(cfg.round).u32_list(cfg.participants).text(cfg.mode.value)
    w.u32(cfg.k).u32(cfg.t).raw(cfg.graph_seed).u64(cfg.dim)
    w.bytes_(modulus_field if modulus_field is not None else cfg.modulus.to_bytes(9, "big"))
    w.text(clip_text if clip_text is not None else repr(cfg.clip)).u8(cfg.bits).u64(cfg.max_weight)
    w.u32(cfg.min_aggregate).raw(cfg.model_hash).text(repr(cfg.dp_noise_multiplier))
    return w.getvalue()


@pytest.mark.property("P4")
def test_config_encoding_is_canonical() -> None:
    """One config, one encoding: a shorter modulus field or a non-canonical float is refused.

    (Otherwise two different byte strings would carry the same config and a transcript hash would not
    identify what was sent.)
    """
    cfg = make_config(4, 3)
    assert _config_with(cfg) == cfg.encode()
    for short in (cfg.modulus.to_bytes(5, "big"), cfg.modulus.to_bytes(8, "big"), b""):
        with pytest.raises(TYPED):
            decode_message(_setup_bytes_with_config(_config_with(cfg, modulus_field=short)))
    for text in ("1", "1.00", "+1.0", " 1.0", "1e0", "nan", "inf", "-1.0", "0.0"):
        with pytest.raises(TYPED):
            decode_message(_setup_bytes_with_config(_config_with(cfg, clip_text=text)))


def test_corpus_digest_is_stable_within_a_process() -> None:
    """The corpus comes from seeded rounds: building it twice gives the same bytes (no hidden state)."""
    first = hashlib.sha256(b"".join(corpus())).hexdigest()
    corpus.cache_clear()
    assert hashlib.sha256(b"".join(corpus())).hexdigest() == first
