"""Protocol messages: frozen dataclasses with one canonical byte encoding each.

Server-to-client requests and client-to-server replies for the stages Setup, AdvertiseKeys, ShareKeys,
MaskedInput, ConsistencyCheck and Unmask. `encode_message` / `decode_message` give the canonical bytes used in
transcripts and by fuzzers; decoders accept exactly the canonical form or raise EncodingError.
The sender of a client message is never read from the message: transports pass the authenticated id.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

import numpy as np

from secagg.encoding import Reader, Writer
from secagg.errors import EncodingError
from secagg.protocol.config import RoundConfig

WIRE_VERSION = 1
MAX_ITEMS = 1 << 20
MAX_BLOB = 1 << 16
ID_BYTES = 32


def _pairs_w(w: Writer, items: tuple[tuple[int, bytes], ...]) -> None:
    w.u32(len(items))
    for ident, blob in items:
        w.u32(ident).bytes_(blob)


def _pairs_r(r: Reader) -> tuple[tuple[int, bytes], ...]:
    # count checked against MAX_ITEMS, the remaining bytes and the reader's item budget before any pair is built
    return r.pairs(MAX_ITEMS, MAX_BLOB)


_AD_HEAD = struct.Struct(">I32s32sI")  # client_id, enc_public, mask_public, signature length
_AD_MIN_BYTES = _AD_HEAD.size  # an advertisement with an empty signature: 72 bytes


# ---------------------------------------------------------------- server -> client


@dataclass(frozen=True)
class SetupRequest:
    """Stage Setup: the server proposes a round configuration."""

    TYPE: ClassVar[int] = 1
    config: RoundConfig

    def _body(self, w: Writer) -> None:
        w.bytes_(self.config.encode())

    @classmethod
    def _read(cls, r: Reader) -> SetupRequest:
        return cls(RoundConfig.decode(r.bytes_()))


@dataclass(frozen=True)
class KeyAdvertisement:
    """One client's round keys: c_pk encrypts shares, s_pk agrees pairwise masks; signed in hardened mode."""

    client_id: int
    enc_public: bytes
    mask_public: bytes
    signature: bytes = b""

    def _body(self, w: Writer) -> None:
        w.u32(self.client_id).raw(self.enc_public).raw(self.mask_public).bytes_(self.signature)

    @classmethod
    def _read(cls, r: Reader) -> KeyAdvertisement:
        client_id, enc_public, mask_public, sig_len = _AD_HEAD.unpack(r.raw(_AD_MIN_BYTES))
        if sig_len > 64:
            raise EncodingError("field longer than allowed")
        return cls(client_id, enc_public, mask_public, r.raw(sig_len))


@dataclass(frozen=True)
class KeysBroadcast:
    """Stage ShareKeys request: every advertisement the server accepted (U1) and its claimed session id."""

    TYPE: ClassVar[int] = 2
    round_tag: bytes
    session_id: bytes
    advertisements: tuple[KeyAdvertisement, ...]

    def _body(self, w: Writer) -> None:
        w.raw(self.round_tag).raw(self.session_id).u32(len(self.advertisements))
        for adv in self.advertisements:
            adv._body(w)

    @classmethod
    def _read(cls, r: Reader) -> KeysBroadcast:
        tag, sid = r.raw(ID_BYTES), r.raw(ID_BYTES)
        n = r.count(MAX_ITEMS, _AD_MIN_BYTES, too_many="too many advertisements")
        r.spend_items(n)
        return cls(tag, sid, tuple(KeyAdvertisement._read(r) for _ in range(n)))


@dataclass(frozen=True)
class SharesDelivery:
    """Stage MaskedInput request: the share ciphertexts addressed to this client, by sender (defines U2)."""

    TYPE: ClassVar[int] = 3
    session_id: bytes
    ciphertexts: tuple[tuple[int, bytes], ...]

    def _body(self, w: Writer) -> None:
        w.raw(self.session_id)
        _pairs_w(w, self.ciphertexts)

    @classmethod
    def _read(cls, r: Reader) -> SharesDelivery:
        return cls(r.raw(ID_BYTES), _pairs_r(r))


@dataclass(frozen=True)
class ConsistencyRequest:
    """Stage ConsistencyCheck (hardened): the survivor set U3 the server claims; clients sign it."""

    TYPE: ClassVar[int] = 4
    session_id: bytes
    survivors: tuple[int, ...]

    def _body(self, w: Writer) -> None:
        w.raw(self.session_id).u32_list(self.survivors)

    @classmethod
    def _read(cls, r: Reader) -> ConsistencyRequest:
        return cls(r.raw(ID_BYTES), r.u32_tuple(MAX_ITEMS))


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage Unmask: which of this client's neighbours are alive and which dropped (plus, in hardened
    mode, the survivor set and the consistency signatures over it)."""

    TYPE: ClassVar[int] = 5
    session_id: bytes
    alive: tuple[int, ...]
    dropped: tuple[int, ...]
    survivors: tuple[int, ...] = ()
    signatures: tuple[tuple[int, bytes], ...] = ()

    def _body(self, w: Writer) -> None:
        w.raw(self.session_id).u32_list(self.alive).u32_list(self.dropped).u32_list(self.survivors)
        _pairs_w(w, self.signatures)

    @classmethod
    def _read(cls, r: Reader) -> UnmaskRequest:
        sid = r.raw(ID_BYTES)
        alive, dropped, surv = r.u32_tuple(MAX_ITEMS), r.u32_tuple(MAX_ITEMS), r.u32_tuple(MAX_ITEMS)
        return cls(sid, alive, dropped, surv, _pairs_r(r))


@dataclass(frozen=True)
class ServerAbort:
    """The server stopped the round; clients erase round secrets."""

    TYPE: ClassVar[int] = 6
    round_tag: bytes
    code: str
    reason: str

    def _body(self, w: Writer) -> None:
        w.raw(self.round_tag).text(self.code).text(self.reason)

    @classmethod
    def _read(cls, r: Reader) -> ServerAbort:
        return cls(r.raw(ID_BYTES), r.text(64), r.text(1024))


@dataclass(frozen=True)
class RoundComplete:
    """The server produced the aggregate; clients erase round secrets."""

    TYPE: ClassVar[int] = 7
    session_id: bytes
    survivors: tuple[int, ...]

    def _body(self, w: Writer) -> None:
        w.raw(self.session_id).u32_list(self.survivors)

    @classmethod
    def _read(cls, r: Reader) -> RoundComplete:
        return cls(r.raw(ID_BYTES), r.u32_tuple(MAX_ITEMS))


# ---------------------------------------------------------------- client -> server


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage AdvertiseKeys reply: the client's two fresh X25519 public keys for this round."""

    TYPE: ClassVar[int] = 16
    round_tag: bytes
    advertisement: KeyAdvertisement

    def _body(self, w: Writer) -> None:
        w.raw(self.round_tag)
        self.advertisement._body(w)

    @classmethod
    def _read(cls, r: Reader) -> AdvertiseKeys:
        return cls(r.raw(ID_BYTES), KeyAdvertisement._read(r))


@dataclass(frozen=True)
class ShareKeys:
    """Stage ShareKeys reply: encrypted Shamir shares for each neighbour, and a commitment to the self-mask
    seed (lets the server check the seed it reconstructs, scenario B4)."""

    TYPE: ClassVar[int] = 17
    session_id: bytes
    ciphertexts: tuple[tuple[int, bytes], ...]
    seed_commitment: bytes

    def _body(self, w: Writer) -> None:
        w.raw(self.session_id)
        _pairs_w(w, self.ciphertexts)
        w.raw(self.seed_commitment)

    @classmethod
    def _read(cls, r: Reader) -> ShareKeys:
        return cls(r.raw(ID_BYTES), _pairs_r(r), r.raw(32))


_DTYPES: dict[int, np.dtype[np.unsignedinteger]] = {4: np.dtype("<u4"), 8: np.dtype("<u8")}


@dataclass(frozen=True, eq=False)
class MaskedInputChunk:
    """Stage MaskedInput reply, in chunks: elements [offset, offset + len(data)) of the masked vector."""

    TYPE: ClassVar[int] = 18
    session_id: bytes
    index: int
    count: int
    offset: int
    data: np.ndarray

    def _body(self, w: Writer) -> None:
        arr = np.ascontiguousarray(self.data)
        if arr.dtype.kind != "u" or arr.dtype.itemsize not in _DTYPES or arr.ndim != 1:
            raise EncodingError("masked data must be a 1-D uint32 or uint64 array")
        w.raw(self.session_id).u32(self.index).u32(self.count).u64(self.offset)
        w.u8(arr.dtype.itemsize).bytes_(arr.astype(_DTYPES[arr.dtype.itemsize], copy=False).tobytes())

    @classmethod
    def _read(cls, r: Reader) -> MaskedInputChunk:
        sid, idx, cnt, off, size = r.raw(ID_BYTES), r.u32(), r.u32(), r.u64(), r.u8()
        if size not in _DTYPES:
            raise EncodingError("unknown element size")
        blob = r.bytes_()
        if len(blob) % size:
            raise EncodingError("chunk length is not a whole number of elements")
        return cls(sid, idx, cnt, off, np.frombuffer(blob, dtype=_DTYPES[size]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaskedInputChunk):
            return NotImplemented
        return (
            (self.session_id, self.index, self.count, self.offset)
            == (other.session_id, other.index, other.count, other.offset)
            and self.data.dtype == other.data.dtype
            and np.array_equal(self.data, other.data)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ConsistencySignature:
    """Stage ConsistencyCheck reply (hardened): the client's signature over (session id, survivors)."""

    TYPE: ClassVar[int] = 19
    session_id: bytes
    signature: bytes

    def _body(self, w: Writer) -> None:
        w.raw(self.session_id).bytes_(self.signature)

    @classmethod
    def _read(cls, r: Reader) -> ConsistencySignature:
        return cls(r.raw(ID_BYTES), r.bytes_(max_len=64))


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage Unmask reply: shares of self-mask seeds of alive clients (its own included) and of mask keys
    of dropped clients, each as (owner id, 68-byte Shamir share)."""

    TYPE: ClassVar[int] = 20
    session_id: bytes
    seed_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]

    def _body(self, w: Writer) -> None:
        w.raw(self.session_id)
        _pairs_w(w, self.seed_shares)
        _pairs_w(w, self.key_shares)

    @classmethod
    def _read(cls, r: Reader) -> UnmaskResponse:
        return cls(r.raw(ID_BYTES), _pairs_r(r), _pairs_r(r))


@dataclass(frozen=True)
class ClientAbort:
    """The client stopped taking part (typed reason); the server treats it as dropped."""

    TYPE: ClassVar[int] = 21
    code: str
    reason: str

    def _body(self, w: Writer) -> None:
        w.text(self.code).text(self.reason)

    @classmethod
    def _read(cls, r: Reader) -> ClientAbort:
        return cls(r.text(64), r.text(1024))


ServerMessage: TypeAlias = (
    SetupRequest | KeysBroadcast | SharesDelivery | ConsistencyRequest | UnmaskRequest | ServerAbort | RoundComplete
)
ClientMessage: TypeAlias = (
    AdvertiseKeys | ShareKeys | MaskedInputChunk | ConsistencySignature | UnmaskResponse | ClientAbort
)
Message: TypeAlias = ServerMessage | ClientMessage

_REGISTRY: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        SetupRequest,
        KeysBroadcast,
        SharesDelivery,
        ConsistencyRequest,
        UnmaskRequest,
        ServerAbort,
        RoundComplete,
        AdvertiseKeys,
        ShareKeys,
        MaskedInputChunk,
        ConsistencySignature,
        UnmaskResponse,
        ClientAbort,
    )
}


def encode_message(msg: Message) -> bytes:
    """Canonical bytes: u16 wire version, u8 type, then the body."""
    w = Writer().u16(WIRE_VERSION).u8(msg.TYPE)
    msg._body(w)
    return w.getvalue()


def decode_message(data: bytes) -> Message:
    """Parse canonical bytes; raises EncodingError (or ConfigurationError inside a config) on bad input."""
    r = Reader(data)
    if r.u16() != WIRE_VERSION:
        raise EncodingError("unsupported wire version")
    cls = _REGISTRY.get(r.u8())
    if cls is None:
        raise EncodingError("unknown message type")
    msg = cls._read(r)
    r.finish()
    return msg
