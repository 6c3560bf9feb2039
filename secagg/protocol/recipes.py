"""The key schedule and byte layouts both sides must compute identically (see protocols/SPEC.md).

Session id, associated data of share ciphertexts, share plaintexts, pairwise mask seeds, the self-mask seed
commitment and the signed payloads of the hardened mode. Nothing here holds state.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from secagg.crypto import shamir
from secagg.crypto.kdf import derive_key
from secagg.crypto.keys import X25519KeyPair, check_x25519_public
from secagg.crypto.secret import SecretBytes
from secagg.crypto.shamir import Share
from secagg.encoding import Writer, digest, domain
from secagg.errors import EncodingError, InvalidPeerKeyError
from secagg.protocol.graph import Graph
from secagg.protocol.messages import KeyAdvertisement

SIG_ADVERTISE = "advertise-keys"
SIG_CONSISTENCY = "consistency-check"


def session_id(round_tag: bytes, advertisements: Sequence[KeyAdvertisement]) -> bytes:
    """SHA-256 over the round tag and every accepted (id, c_pk, s_pk), in ascending id order."""
    parts = [round_tag, _X.pack(len(advertisements))]
    for adv in sorted(advertisements, key=lambda a: a.client_id):
        parts += (_X.pack(adv.client_id), adv.enc_public, adv.mask_public)
    return digest(domain("session-id"), b"".join(parts))


_P25519 = 2**255 - 19
_SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        _P25519 - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


def check_round_public_key(public: bytes) -> None:
    """Refuse (InvalidPeerKeyError) an advertised X25519 key that is malformed, all-zero or of small order.

    Agreement with a small-order point gives the all-zero secret whatever the scalar, so such a key is
    refused where it is advertised (scenario A12) instead of making every peer abort later. A key must also be
    canonical (the 255-bit little-endian u < p, bit 255 clear): a non-canonical encoding of a valid point passes
    agreement, but once its owner drops, the server's check of the reconstructed mask key against the advertised
    bytes fails and the round aborts. The canonical u is then compared with the five small-order
    u-coordinates of Curve25519 and its twist.
    """
    check_x25519_public(public)
    raw = int.from_bytes(public, "little")
    if raw >= _P25519:
        # RFC 7748 ignores bit 255 and reduces u mod p, so 2^255 + u, u + p and u name the same point; only the
        # canonical form is what an honest key pair produces (and what a reconstructed mask key is compared with)
        raise InvalidPeerKeyError("X25519 public key not in canonical form (bit 255 set or u >= p)")
    if raw in _SMALL_ORDER_U:
        raise InvalidPeerKeyError("X25519 public key of small order")


def advertisement_payload(round_tag: bytes, client_id: int, enc_public: bytes, mask_public: bytes) -> bytes:
    """What a client signs in hardened mode when it advertises its round keys."""
    return Writer().raw(round_tag).u32(client_id).raw(enc_public).raw(mask_public).getvalue()


def consistency_payload(sid: bytes, survivors: Sequence[int]) -> bytes:
    """What a client signs in the consistency check: the session and the survivor set U3."""
    return Writer().raw(sid).u32_list(sorted(survivors)).getvalue()


def share_associated_data(sid: bytes, sender: int, recipient: int) -> bytes:
    """AEAD associated data of a share ciphertext: binds session, stage, sender and recipient (A11)."""
    return _AD_PREFIX + sid + _PAIR.pack(sender, recipient)


_AD_PREFIX = Writer().bytes_(domain("ad", "share-keys")).getvalue()
_PAIR = struct.Struct(">II")


def share_key(own: X25519KeyPair, peer_enc_public: bytes | X25519PublicKey, sid: bytes, a: int, b: int) -> SecretBytes:
    """AES-256-GCM key of the pair (a, b) for share encryption, from their encryption keys."""
    return derive_key(own.agree(peer_enc_public), purpose="share-encryption", session_id=sid, parties=(a, b))


def pairwise_seed(shared: SecretBytes, sid: bytes, a: int, b: int) -> SecretBytes:
    """Mask seed of the pair (a, b) from their X25519 mask-key agreement."""
    return derive_key(shared, purpose="pairwise-mask", session_id=sid, parties=(a, b))


def pairwise_sign(owner: int, peer: int) -> int:
    """+1 if the owner adds the pair's mask, -1 if it subtracts it (the smaller id adds)."""
    return 1 if owner < peer else -1


def task_digest(encoded_task: bytes) -> bytes:
    """The model_hash of a round: SHA-256 of its encoded task (model and instructions), domain separated."""
    return digest(domain("task"), encoded_task)


def seed_commitment(sid: bytes, client_id: int, seed: SecretBytes) -> bytes:
    """Hash commitment to a self-mask seed (hiding: the seed has 256 bits of entropy)."""
    payload = Writer().raw(sid).u32(client_id).raw(seed.expose_secret()).getvalue()
    return digest(domain("seed-commitment"), payload)


def encode_share_plaintext(sender: int, recipient: int, seed_share: Share | bytes, key_share: Share | bytes) -> bytes:
    """Plaintext of a share ciphertext: both ids, then the self-mask seed share and the mask-key share."""
    seed = seed_share.to_bytes() if isinstance(seed_share, Share) else seed_share
    key = key_share.to_bytes() if isinstance(key_share, Share) else key_share
    if len(seed) != Share.ENCODED_LEN or len(key) != Share.ENCODED_LEN:
        raise EncodingError("a share is 68 bytes")
    return _PAIR.pack(sender, recipient) + seed + key


SHARE_PLAINTEXT_BYTES = 8 + 2 * Share.ENCODED_LEN


def split_share_plaintext(data: bytes) -> tuple[int, int, bytes, bytes]:
    """Sender, recipient and the two encoded shares, checking sizes and that both x's are the recipient."""
    if len(data) != SHARE_PLAINTEXT_BYTES:
        raise EncodingError("share plaintext has the wrong length")
    sender, recipient = _PAIR.unpack_from(data, 0)
    seed, key = data[8 : 8 + Share.ENCODED_LEN], data[8 + Share.ENCODED_LEN :]
    if _X.unpack_from(seed)[0] != recipient or _X.unpack_from(key)[0] != recipient:
        raise EncodingError("share x-coordinate is not the recipient's id")
    if max(_YS.unpack_from(seed, 4)) >= shamir.P or max(_YS.unpack_from(key, 4)) >= shamir.P:
        # checked on arrival, so a peer cannot make this client forward an invalid share (and be rejected)
        raise EncodingError("share value outside the field")
    return sender, recipient, seed, key


_X = struct.Struct(">I")
_YS = struct.Struct(f">{shamir.LIMBS}I")


def decode_share_plaintext(data: bytes) -> tuple[int, int, Share, Share]:
    """Like split_share_plaintext, but decoding (and range-checking) both shares."""
    sender, recipient, seed, key = split_share_plaintext(data)
    return sender, recipient, Share.from_bytes(seed), Share.from_bytes(key)


def encode_shares(xs: Sequence[int], ys: np.ndarray) -> list[bytes]:
    """The canonical 68-byte encodings of the shares (xs[i], ys[i]) for a (n, 16) array of y values."""
    table = np.empty((len(xs), 1 + ys.shape[1]), dtype=">u4")
    table[:, 0] = xs
    table[:, 1:] = ys
    blob = table.tobytes()
    size = Share.ENCODED_LEN
    return [blob[i * size : (i + 1) * size] for i in range(len(xs))]


class Neighbourhoods:
    """Neighbours by client id: a Harary graph H(n, k) over the participants, labels permuted by the seed."""

    __slots__ = ("_graph", "_index", "_participants")

    def __init__(self, participants: tuple[int, ...], k: int, graph_seed: bytes) -> None:
        self._participants = participants
        self._index = {cid: i for i, cid in enumerate(participants)}
        self._graph = Graph(len(participants), k, graph_seed)

    def of(self, client_id: int) -> frozenset[int]:
        """The neighbours of client_id (never the client itself)."""
        parts = self._participants
        return frozenset(parts[j] for j in self._graph.neighbours(self._index[client_id]))


@functools.lru_cache(maxsize=16)
def neighbourhoods(participants: tuple[int, ...], k: int, graph_seed: bytes) -> Neighbourhoods:
    """Cached: the graph is a pure function of public round parameters."""
    return Neighbourhoods(participants, k, graph_seed)
