"""Conversion between the engine's message dataclasses and the protobuf envelopes of protocols/secagg.proto.

Decoding applies the limits of the canonical decoder (fixed lengths, list sizes, string sizes) and raises
EncodingError, so a malformed or hostile envelope never reaches a session as anything but a typed error.
Nothing here is hashed or signed: those bytes are always the canonical encodings (protocols/SPEC.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

from secagg.encoding import ITEM_BUDGET_BYTES, ITEM_BUDGET_FREE
from secagg.errors import ConfigurationError, EncodingError
from secagg.protocol.config import Mode, RoundConfig
from secagg.protocol.messages import (
    ID_BYTES,
    MAX_BLOB,
    MAX_ITEMS,
    WIRE_VERSION,
    AdvertiseKeys,
    ClientAbort,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    KeysBroadcast,
    MaskedInputChunk,
    RoundComplete,
    ServerAbort,
    ServerMessage,
    SetupRequest,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.transport._generated import secagg_pb2 as pb

_MODES = {Mode.SEMI_HONEST: pb.MODE_SEMI_HONEST, Mode.HARDENED: pb.MODE_HARDENED}
_MODES_BACK = {v: k for k, v in _MODES.items()}
_WIDTHS: dict[int, np.dtype[Any]] = {4: np.dtype("<u4"), 8: np.dtype("<u8")}


# ---------------------------------------------------------------------------------------- checks


def _fixed(b: bytes, n: int, what: str) -> bytes:
    if len(b) != n:
        raise EncodingError(f"{what} must be {n} bytes")
    return bytes(b)


def _blob(b: bytes, what: str, limit: int = MAX_BLOB) -> bytes:
    if len(b) > limit:
        raise EncodingError(f"{what} longer than {limit} bytes")
    return bytes(b)


def _ids(values: Sequence[int], what: str) -> tuple[int, ...]:
    if len(values) > MAX_ITEMS:
        raise EncodingError(f"too many {what}")
    return tuple(values)  # a protobuf list of ints: its length is known, so the tuple is allocated once


def _text(s: str, limit: int, what: str) -> str:
    if len(s.encode("utf-8")) > limit:
        raise EncodingError(f"{what} longer than {limit} bytes")
    return str(s)


def _pairs(items: Any, key: str, value: str) -> tuple[tuple[int, bytes], ...]:
    if len(items) > MAX_ITEMS:
        raise EncodingError("too many items")
    return tuple((int(getattr(i, key)), _blob(getattr(i, value), value)) for i in items)


def _item_budget(size: int) -> int:
    """How many items (pairs, advertisements) an envelope of `size` bytes may make a decoder build (SPEC 13.3)."""
    return ITEM_BUDGET_FREE + size // ITEM_BUDGET_BYTES


def _spend(env: Any, n: int) -> None:
    """Refuse a parsed envelope whose lists hold more items than its serialized size pays for, before converting
    them (each converted item costs about a hundred bytes of Python objects, whatever its encoded size)."""
    if n > ITEM_BUDGET_FREE and n > _item_budget(env.ByteSize()):
        raise EncodingError("too many items for the message size")


# u32 ids (participants, survivors, alive, dropped: server to client only) have a budget of their own (SPEC 13.3).
# An id costs a tuple slot and an int, about 36 bytes, and protobuf's array 4 more; as a varint it takes 1 to 5
# bytes. The ids of an honest list are distinct and at least 1, so at most 127 of them take 1 byte and 16256 take 2:
# a list of n ids takes at least 3 n - 16510 bytes, and 3 bytes an id, with the free ids covering the short ones
# of up to three lists in one message (3 x 5504), never refuses it. What it refuses is a list of ids shorter than
# that (repeated or not) that would cost up to 20 x its size.
ID_BUDGET_FREE = 17 * 1024
ID_BUDGET_BYTES = 3


def _id_budget(size: int) -> int:
    """How many u32 ids an envelope of `size` bytes may make a decoder build (SPEC 13.3)."""
    return ID_BUDGET_FREE + size // ID_BUDGET_BYTES


def _spend_ids(env: Any, n: int) -> None:
    """Refuse a parsed envelope whose u32 lists hold more ids than its serialized size pays for (the walk of
    decode_server refuses them before protobuf parses the envelope; this catches envelopes made otherwise)."""
    if n > ID_BUDGET_FREE and n > _id_budget(env.ByteSize()):
        raise EncodingError("too many items for the message size")


# ---------------------------------------------------------------------------------------- config


def config_to_proto(cfg: RoundConfig) -> pb.RoundConfig:
    """RoundConfig -> protobuf."""
    return pb.RoundConfig(
        format_version=1,
        run_id=cfg.run_id,
        round=cfg.round,
        participants=list(cfg.participants),
        mode=_MODES[cfg.mode],
        k=cfg.k,
        t=cfg.t,
        graph_seed=cfg.graph_seed,
        dim=cfg.dim,
        modulus=cfg.modulus.to_bytes(9, "big"),
        clip=cfg.clip,
        bits=cfg.bits,
        max_weight=cfg.max_weight,
        min_aggregate=cfg.min_aggregate,
        model_hash=cfg.model_hash,
        dp_noise_multiplier=cfg.dp_noise_multiplier,
        encoding=cfg.encoding,
    )


def config_from_proto(p: pb.RoundConfig) -> RoundConfig:
    """protobuf -> RoundConfig, validated exactly as RoundConfig validates itself."""
    if p.format_version != 1:
        raise EncodingError("unknown RoundConfig format version")
    if p.mode not in _MODES_BACK:
        raise EncodingError("unknown mode")
    try:
        return RoundConfig(
            run_id=_text(p.run_id, 512, "run_id"),
            round=p.round,
            participants=_ids(p.participants, "participants"),
            mode=_MODES_BACK[p.mode],
            k=p.k,
            t=p.t,
            graph_seed=_fixed(p.graph_seed, 32, "graph_seed"),
            dim=p.dim,
            modulus=int.from_bytes(_fixed(p.modulus, 9, "modulus"), "big"),
            clip=p.clip,
            bits=p.bits,
            max_weight=p.max_weight,
            min_aggregate=p.min_aggregate,
            model_hash=_fixed(p.model_hash, 32, "model_hash"),
            dp_noise_multiplier=p.dp_noise_multiplier,
            encoding=p.encoding or "quantised",
        )
    except ConfigurationError as exc:
        raise EncodingError(f"invalid round configuration: {exc}") from None


# ---------------------------------------------------------------------------------------- messages


def _adv_to(a: KeyAdvertisement) -> pb.KeyAdvertisement:
    return pb.KeyAdvertisement(
        client_id=a.client_id, enc_public=a.enc_public, mask_public=a.mask_public, signature=a.signature
    )


def _adv_from(p: pb.KeyAdvertisement) -> KeyAdvertisement:
    return KeyAdvertisement(
        p.client_id,
        _fixed(p.enc_public, 32, "enc_public"),
        _fixed(p.mask_public, 32, "mask_public"),
        _blob(p.signature, "signature", 64),
    )


def server_to_proto(msg: ServerMessage) -> pb.ServerEnvelope:
    """A server message in its envelope."""
    env = pb.ServerEnvelope(wire_version=WIRE_VERSION)
    if isinstance(msg, SetupRequest):
        env.setup_request.config.CopyFrom(config_to_proto(msg.config))
    elif isinstance(msg, KeysBroadcast):
        m = env.keys_broadcast
        m.round_tag, m.session_id = msg.round_tag, msg.session_id
        m.advertisements.extend(_adv_to(a) for a in msg.advertisements)
    elif isinstance(msg, SharesDelivery):
        env.shares_delivery.session_id = msg.session_id
        env.shares_delivery.ciphertexts.extend(pb.ShareCiphertext(peer=p, ciphertext=c) for p, c in msg.ciphertexts)
    elif isinstance(msg, ConsistencyRequest):
        env.consistency_request.session_id = msg.session_id
        env.consistency_request.survivors.extend(msg.survivors)
    elif isinstance(msg, UnmaskRequest):
        u = env.unmask_request
        u.session_id = msg.session_id
        u.alive.extend(msg.alive)
        u.dropped.extend(msg.dropped)
        u.survivors.extend(msg.survivors)
        u.signatures.extend(pb.ClientSignature(client_id=c, signature=s) for c, s in msg.signatures)
    elif isinstance(msg, ServerAbort):
        env.server_abort.round_tag, env.server_abort.code = msg.round_tag, msg.code
        env.server_abort.reason = msg.reason
    elif isinstance(msg, RoundComplete):
        env.round_complete.session_id = msg.session_id
        env.round_complete.survivors.extend(msg.survivors)
    else:  # pragma: no cover
        raise EncodingError(f"not a server message: {type(msg).__name__}")
    return env


def server_from_proto(env: pb.ServerEnvelope) -> ServerMessage:
    """Decode a server envelope (on the silo); EncodingError if malformed."""
    if env.wire_version != WIRE_VERSION:
        raise EncodingError("unsupported wire version")
    kind = env.WhichOneof("message")
    if kind == "setup_request":
        config = env.setup_request.config
        if len(config.participants) <= MAX_ITEMS:  # more: config_from_proto says "too many participants"
            _spend_ids(env, len(config.participants))
        return SetupRequest(config_from_proto(config))
    if kind == "keys_broadcast":
        k = env.keys_broadcast
        if len(k.advertisements) > MAX_ITEMS:
            raise EncodingError("too many advertisements")
        _spend(env, len(k.advertisements))
        return KeysBroadcast(
            _fixed(k.round_tag, ID_BYTES, "round_tag"),
            _fixed(k.session_id, ID_BYTES, "session_id"),
            tuple(_adv_from(a) for a in k.advertisements),
        )
    if kind == "shares_delivery":
        s = env.shares_delivery
        _spend(env, len(s.ciphertexts))
        return SharesDelivery(_fixed(s.session_id, ID_BYTES, "session_id"), _pairs(s.ciphertexts, "peer", "ciphertext"))
    if kind == "consistency_request":
        c = env.consistency_request
        if len(c.survivors) <= MAX_ITEMS:
            _spend_ids(env, len(c.survivors))
        return ConsistencyRequest(_fixed(c.session_id, ID_BYTES, "session_id"), _ids(c.survivors, "survivors"))
    if kind == "unmask_request":
        u = env.unmask_request
        _spend(env, len(u.signatures))
        if max(len(u.alive), len(u.dropped), len(u.survivors)) <= MAX_ITEMS:
            _spend_ids(env, len(u.alive) + len(u.dropped) + len(u.survivors))
        return UnmaskRequest(
            _fixed(u.session_id, ID_BYTES, "session_id"),
            _ids(u.alive, "alive"),
            _ids(u.dropped, "dropped"),
            _ids(u.survivors, "survivors"),
            _pairs(u.signatures, "client_id", "signature"),
        )
    if kind == "server_abort":
        a = env.server_abort
        return ServerAbort(
            _fixed(a.round_tag, ID_BYTES, "round_tag"),
            _text(a.code, 64, "code"),
            _text(a.reason, 1024, "reason"),
        )
    if kind == "round_complete":
        r = env.round_complete
        if len(r.survivors) <= MAX_ITEMS:
            _spend_ids(env, len(r.survivors))
        return RoundComplete(_fixed(r.session_id, ID_BYTES, "session_id"), _ids(r.survivors, "survivors"))
    raise EncodingError("empty or unknown server message")


def client_to_proto(msg: ClientMessage) -> pb.ClientEnvelope:
    """A client message in its envelope (the masked chunk's elements as little-endian bytes)."""
    env = pb.ClientEnvelope(wire_version=WIRE_VERSION)
    if isinstance(msg, AdvertiseKeys):
        env.advertise_keys.round_tag = msg.round_tag
        env.advertise_keys.advertisement.CopyFrom(_adv_to(msg.advertisement))
    elif isinstance(msg, ShareKeys):
        s = env.share_keys
        s.session_id, s.seed_commitment = msg.session_id, msg.seed_commitment
        s.ciphertexts.extend(pb.ShareCiphertext(peer=p, ciphertext=c) for p, c in msg.ciphertexts)
    elif isinstance(msg, MaskedInputChunk):
        data = np.ascontiguousarray(msg.data)
        width = data.dtype.itemsize
        if data.dtype.kind != "u" or width not in _WIDTHS:
            raise EncodingError("masked data must be uint32 or uint64")
        c = env.masked_input_chunk
        c.session_id, c.index, c.count, c.offset = msg.session_id, msg.index, msg.count, msg.offset
        c.element_width = width
        c.data = data.astype(_WIDTHS[width], copy=False).tobytes()
    elif isinstance(msg, ConsistencySignature):
        env.consistency_signature.session_id = msg.session_id
        env.consistency_signature.signature = msg.signature
    elif isinstance(msg, UnmaskResponse):
        u = env.unmask_response
        u.session_id = msg.session_id
        u.seed_shares.extend(pb.OwnedShare(owner=o, share=s) for o, s in msg.seed_shares)
        u.key_shares.extend(pb.OwnedShare(owner=o, share=s) for o, s in msg.key_shares)
    elif isinstance(msg, ClientAbort):
        env.client_abort.code, env.client_abort.reason = msg.code, msg.reason
    else:  # pragma: no cover
        raise EncodingError(f"not a client message: {type(msg).__name__}")
    return env


def client_from_proto(env: pb.ClientEnvelope) -> ClientMessage:
    """Decode a client envelope (on the server); EncodingError if malformed."""
    if env.wire_version != WIRE_VERSION:
        raise EncodingError("unsupported wire version")
    kind = env.WhichOneof("message")
    if kind == "advertise_keys":
        a = env.advertise_keys
        if not a.HasField("advertisement"):
            raise EncodingError("advertisement missing")
        return AdvertiseKeys(_fixed(a.round_tag, ID_BYTES, "round_tag"), _adv_from(a.advertisement))
    if kind == "share_keys":
        s = env.share_keys
        _spend(env, len(s.ciphertexts))
        return ShareKeys(
            _fixed(s.session_id, ID_BYTES, "session_id"),
            _pairs(s.ciphertexts, "peer", "ciphertext"),
            _fixed(s.seed_commitment, 32, "seed_commitment"),
        )
    if kind == "masked_input_chunk":
        c = env.masked_input_chunk
        dtype = _WIDTHS.get(c.element_width)
        if dtype is None:
            raise EncodingError("element width must be 4 or 8")
        raw = c.data  # each read of a bytes field copies it out of the message: read it once
        if not raw or len(raw) % c.element_width:
            raise EncodingError("chunk data is not a non-zero whole number of elements")
        data = np.frombuffer(raw, dtype=dtype)
        return MaskedInputChunk(_fixed(c.session_id, ID_BYTES, "session_id"), c.index, c.count, c.offset, data)
    if kind == "consistency_signature":
        c = env.consistency_signature
        return ConsistencySignature(_fixed(c.session_id, ID_BYTES, "session_id"), _blob(c.signature, "signature", 64))
    if kind == "unmask_response":
        u = env.unmask_response
        _spend(env, len(u.seed_shares) + len(u.key_shares))
        return UnmaskResponse(
            _fixed(u.session_id, ID_BYTES, "session_id"),
            _pairs(u.seed_shares, "owner", "share"),
            _pairs(u.key_shares, "owner", "share"),
        )
    if kind == "client_abort":
        a = env.client_abort
        return ClientAbort(_text(a.code, 64, "code"), _text(a.reason, 1024, "reason"))
    raise EncodingError("empty or unknown client message")


# ---------------------------------------------------------------------------------------- serialized envelopes
#
# A masked chunk is most of what a round moves. Through protobuf messages its elements are copied four or five
# times per side (ndarray -> bytes -> message -> serialized bytes; received bytes -> message -> bytes, once per
# read of the field). These functions write and read the serialized ClientEnvelope directly: the bytes are
# exactly those of client_to_proto(msg).SerializeToString() (fields in number order, zero values left out, as
# the protobuf serializer writes them), and a received envelope in that form is read in place. Anything else
# (another message type, another field order, unknown fields, a value out of range) goes through protobuf and
# client_from_proto, so every check and every error stays theirs.

_ENVELOPE_VERSION_FIELD = 15  # ClientEnvelope.wire_version
_ENVELOPE_CHUNK_FIELD = 18  # ClientEnvelope.masked_input_chunk
_LEN, _VARINT = 2, 0  # protobuf wire types
_U32, _U64 = (1 << 32) - 1, (1 << 64) - 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


_PREFIX = _tag(_ENVELOPE_VERSION_FIELD, _VARINT) + _varint(WIRE_VERSION) + _tag(_ENVELOPE_CHUNK_FIELD, _LEN)
# MaskedInputChunk fields in number order: (field, wire type, largest value for a varint)
_CHUNK_FIELDS = ((1, _LEN, 0), (2, _VARINT, _U32), (3, _VARINT, _U32), (4, _VARINT, _U64), (5, _VARINT, _U32))
_CHUNK_DATA_TAG = _tag(6, _LEN)


def encode_client(msg: ClientMessage) -> bytes:
    """The serialized envelope of a client message: the bytes of client_to_proto(msg).SerializeToString(),
    a masked chunk's elements copied once (into the result)."""
    if isinstance(msg, MaskedInputChunk):
        fast = _encode_chunk(msg)
        if fast is not None:
            return fast
    return bytes(client_to_proto(msg).SerializeToString())


def _encode_chunk(msg: MaskedInputChunk) -> bytes | None:
    data = np.ascontiguousarray(msg.data)
    width = data.dtype.itemsize
    if data.dtype.kind != "u" or width not in _WIDTHS:
        return None  # client_to_proto raises the error
    sid, values = msg.session_id, (msg.index, msg.count, msg.offset, width)
    if not isinstance(sid, bytes) or any(type(v) is not int for v in values):
        return None  # not plain bytes and ints: protobuf decides what it accepts
    head = [_tag(1, _LEN) + _varint(len(sid)) + sid] if sid else []
    for (field, _, top), value in zip(_CHUNK_FIELDS[1:], values, strict=True):
        if not 0 <= value <= top:
            return None  # out of the field's range: protobuf raises
        if value:
            head.append(_tag(field, _VARINT) + _varint(value))
    elements = data.astype(_WIDTHS[width], copy=False).data.cast("B")
    if elements.nbytes:
        head.append(_CHUNK_DATA_TAG + _varint(elements.nbytes))
    body = b"".join(head)
    return b"".join((_PREFIX, _varint(len(body) + elements.nbytes), body, elements))


def decode_client(raw: bytes) -> ClientMessage:
    """Decode a serialized client envelope (on the server); EncodingError if malformed or not protobuf. A masked
    chunk in the serializer's form is read in place: its elements are a read-only view of `raw`."""
    fast = _decode_chunk(raw)
    if fast is not None:
        return fast
    _scan_items(raw)  # before protobuf builds a message object per item
    try:
        env = pb.ClientEnvelope.FromString(raw)
    except DecodeError:
        raise EncodingError("not a protobuf ClientEnvelope") from None
    return client_from_proto(env)


def _read_varint(raw: bytes, pos: int, top: int) -> tuple[int, int] | None:
    """(value, next position), or None past the end, past 10 bytes, or above top."""
    value = shift = 0
    while pos < len(raw) and shift < 70:
        byte = raw[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return (value, pos) if value <= top else None
        shift += 7
    return None


def _decode_chunk(raw: bytes) -> MaskedInputChunk | None:
    """The chunk of an envelope in exactly the serializer's form, checked as client_from_proto checks it;
    None for anything else (the protobuf path then decides, and raises its errors)."""
    if not isinstance(raw, bytes) or not raw.startswith(_PREFIX):
        return None
    got = _read_varint(raw, len(_PREFIX), len(raw))
    if got is None or got[0] != len(raw) - got[1]:
        return None  # the chunk must be the envelope's last and only other field
    pos = got[1]
    sid, numbers = b"", [0, 0, 0, 0]  # session_id; index, count, offset, element_width
    for i, (field, wire_type, top) in enumerate(_CHUNK_FIELDS):
        tag = _tag(field, wire_type)
        if not raw.startswith(tag, pos):
            continue  # a zero value is left out
        got = _read_varint(raw, pos + len(tag), top if wire_type == _VARINT else len(raw))
        if got is None:
            return None
        if wire_type == _VARINT:
            numbers[i - 1], pos = got
        elif got[0] <= len(raw) - got[1]:
            sid, pos = raw[got[1] : got[1] + got[0]], got[1] + got[0]
        else:
            return None
    index, count, offset, width = numbers
    dtype = _WIDTHS.get(width)
    if len(sid) != ID_BYTES or dtype is None or not raw.startswith(_CHUNK_DATA_TAG, pos):
        return None
    got = _read_varint(raw, pos + len(_CHUNK_DATA_TAG), len(raw))
    if got is None or got[0] != len(raw) - got[1] or got[0] == 0 or got[0] % dtype.itemsize:
        return None  # data must end the envelope, a non-zero whole number of elements
    data = np.frombuffer(raw, dtype=dtype, count=got[0] // dtype.itemsize, offset=got[1])
    if data.ctypes.data % dtype.itemsize:  # the kernels assume aligned elements: one copy then
        data = data.copy()
        data.flags.writeable = False
    return MaskedInputChunk(sid, index, count, offset, data)


# ---------------------------------------------------------------------------------------- cost of a parse
#
# protobuf builds one message object (about 48 bytes in its arena) for every repeated item and for every change of
# the oneof, however short its encoding: an envelope of 2-byte empty ShareCiphertext items takes 24 times its size
# (empty KeyAdvertisement items 40 times) before client_from_proto or server_from_proto sees it. _scan_items walks
# an envelope's fields, and those of the bodies that hold lists (_CLIENT_BODIES, _SERVER_BODIES), without building
# anything, and refuses the envelope once more fields than its item budget, or more u32 ids than its id budget
# (SPEC 13.3), have been seen; other bodies are skipped whole (what protobuf builds from them is at most about their
# size: scalars, strings, unknown fields and merged submessages). The ids of a packed list are its bytes below
# 0x80 (each ends a varint: one element in protobuf's array); an id outside a packed list is one field. The walk
# follows protobuf's grammar: what protobuf certainly refuses (a field 0, wire type 6 or 7, an unmatched end-group
# tag, a group left open, a tag, varint or length cut short or running past its message) is refused as protobuf
# reports it; groups (unknown fields, which proto3 parsers accept) are followed, their fields counted. Only past
# protobuf's nesting limit (100) does the walk stop, counting every 2 bytes left as one more item: as many as
# protobuf could build from them.

_IDS = "u32 ids"  # in a body table: a repeated uint32 field
_Bodies = dict[int, Any]  # field number -> the table of a body the walk descends into, or _IDS

# ClientEnvelope.share_keys, .unmask_response: the client messages with repeated items (every field in them counts)
_CLIENT_BODIES: _Bodies = {17: {}, 20: {}}
# ServerEnvelope: setup_request.config.participants, keys_broadcast, shares_delivery, consistency_request.survivors,
# unmask_request (alive, dropped, survivors; signatures count as items), round_complete.survivors
_SERVER_BODIES: _Bodies = {
    1: {1: {4: _IDS}},
    2: {},
    3: {},
    4: {2: _IDS},
    5: {2: _IDS, 3: _IDS, 4: _IDS},
    7: {2: _IDS},
}
_ANY_VARINT = (1 << 70) - 1  # protobuf reads up to 10 varint bytes and keeps the low bits
_MAX_DEPTH = 100  # protobuf's nesting limit: groups and messages below the envelope
_GROUP_START, _GROUP_END = 3, 4  # wire types
_COUNT_BLOCK = 1 << 16  # bytes of a packed list looked at at once (a bool per byte)


def decode_server(raw: bytes) -> ServerMessage:
    """Decode a serialized server envelope (on the silo); EncodingError if malformed, not protobuf, or holding more
    items or ids than its size pays for (refused before protobuf parses it)."""
    return server_from_proto(parse_server(raw))


def parse_server(raw: bytes) -> pb.ServerEnvelope:
    """The parsed server envelope, walked first as decode_server walks it (also the default response deserializer
    of grpc_silo.participate, for tools that want the protobuf message)."""
    _scan_items(raw, _SERVER_BODIES, "ServerEnvelope")
    try:
        env: pb.ServerEnvelope = pb.ServerEnvelope.FromString(raw)
    except DecodeError:
        raise EncodingError("not a protobuf ServerEnvelope") from None
    return env


def _scan_items(raw: bytes, bodies: _Bodies = _CLIENT_BODIES, what: str = "ClientEnvelope") -> None:
    """EncodingError "too many items for the message size" when parsing `raw` as this envelope could build more
    message objects than _item_budget(len(raw)) or more u32 ids than _id_budget(len(raw)), "not a protobuf <what>"
    for bytes protobuf refuses; the walk stops at the first of these, so its time is linear in the budgets (and a
    packed list's bytes)."""
    bad = f"not a protobuf {what}"
    end = len(raw)
    budget, id_budget = _item_budget(end), _id_budget(end)
    pos, limit, fields = 0, end, bodies
    frames: list[tuple[int, _Bodies]] = []  # (limit, fields) of the bodies around the one at pos
    seen = ids = 0
    groups: list[int] = []  # field numbers of the groups open at pos (in the innermost body)
    while pos < end:
        if pos == limit:  # the end of a body
            if groups:
                raise EncodingError(bad)
            limit, fields = frames.pop()
            continue
        if frames and pos + 1 < limit and raw[pos] & 0x87 == _LEN and raw[pos] > 7 and raw[pos] >> 3 not in fields:
            # the common case inside a list body: a 1-byte tag, a length of 1 or 2 bytes (an item)
            first = raw[pos + 1]
            if first < 0x80:
                after = pos + 2 + first
            elif pos + 2 < limit and raw[pos + 2] < 0x80:
                after = pos + 3 + (first & 0x7F | raw[pos + 2] << 7)
            else:
                after = limit + 1  # the general walk decides
            if after <= limit:
                seen += 1
                if seen > budget:
                    raise EncodingError("too many items for the message size")
                pos = after
                continue
        got = _read_varint(raw, pos, _U32)
        if got is None or got[1] > limit or got[0] >> 3 == 0:
            raise EncodingError(bad)
        tag, after = got
        field, wire_type = tag >> 3, tag & 7
        inner = None if groups else fields.get(field)
        if inner is _IDS and wire_type == _VARINT:  # one id, not packed
            ids += 1
            if ids > id_budget:
                raise EncodingError("too many items for the message size")
            pos = _skip_value(raw, after, limit, wire_type, bad)
            continue
        seen += 1
        if seen > budget:
            raise EncodingError("too many items for the message size")
        if wire_type == _GROUP_START:
            if len(groups) + len(frames) >= _MAX_DEPTH:  # protobuf's limit decides: at most an item per 2 bytes
                if seen + (end - pos) // 2 > budget:
                    raise EncodingError("too many items for the message size")
                return
            groups.append(field)
            pos = after
        elif wire_type == _GROUP_END:
            if not groups or groups.pop() != field:
                raise EncodingError(bad)
            pos = after
        elif wire_type == _LEN and inner is _IDS:  # a packed list
            start, stop = _len_value(raw, after, limit, bad)
            ids += _varint_ends(raw, start, stop)
            if ids > id_budget:
                raise EncodingError("too many items for the message size")
            pos = stop
        elif wire_type == _LEN and inner is not None:  # a body with lists: its fields are counted
            start, stop = _len_value(raw, after, limit, bad)
            frames.append((limit, fields))
            pos, limit, fields = start, stop, inner
        else:
            pos = _skip_value(raw, after, limit, wire_type, bad)
    if groups:
        raise EncodingError(bad)


def _varint_ends(raw: bytes, start: int, stop: int) -> int:
    """How many varints end in raw[start:stop] (its bytes below 0x80): the elements protobuf unpacks from it."""
    n = 0
    for lo in range(start, stop, _COUNT_BLOCK):
        block = np.frombuffer(raw, np.uint8, min(_COUNT_BLOCK, stop - lo), lo)
        n += int(np.count_nonzero(block < 0x80))
    return n


def _len_value(raw: bytes, pos: int, limit: int, bad: str) -> tuple[int, int]:
    """(start, end) of the length-delimited value at pos, within limit."""
    got = _read_varint(raw, pos, limit)
    if got is None or got[1] + got[0] > limit:
        raise EncodingError(bad)
    return got[1], got[1] + got[0]


def _skip_value(raw: bytes, pos: int, limit: int, wire_type: int, bad: str) -> int:
    """The position after the value of a field of this wire type at pos (varint, fixed64, length-delimited,
    fixed32), within limit."""
    if wire_type == _VARINT:
        got = _read_varint(raw, pos, _ANY_VARINT)
        if got is not None and got[1] <= limit:
            return got[1]
    elif wire_type == _LEN:
        return _len_value(raw, pos, limit, bad)[1]
    elif wire_type in (1, 5) and pos + (8 if wire_type == 1 else 4) <= limit:
        return pos + (8 if wire_type == 1 else 4)
    raise EncodingError(bad)  # cut short, or wire type 6 or 7
