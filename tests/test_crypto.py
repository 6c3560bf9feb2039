"""Crypto primitives: KDF, X25519, AEAD, Ed25519, secret containers, encodings; pinned vectors."""

from __future__ import annotations

import copy
import pickle

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.crypto import aead, kdf, keys
from secagg.crypto.rng import DeterministicRandom, SystemRandom
from secagg.crypto.secret import SecretBytes
from secagg.encoding import Reader, Writer, domain
from secagg.errors import (
    AuthenticationError,
    ConfigurationError,
    EncodingError,
    InvalidPeerKeyError,
)
from tests.vectors import load_vectors, regenerate

# RFC 7748 section 6.1 (Diffie-Hellman test vector).
RFC7748_A_PRIV = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
RFC7748_A_PUB = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
RFC7748_B_PUB = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
RFC7748_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

# Low-order points of Curve25519 (the list libsodium rejects), 32 bytes little-endian.
LOW_ORDER = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


@pytest.mark.property("P12")
def test_vector_file_is_reproducible() -> None:
    from tests.vectors import VECTORS

    assert (VECTORS / "crypto.json").read_text() == regenerate("crypto")


@pytest.mark.property("P12")
def test_kdf_vectors() -> None:
    for v in load_vectors("crypto")["kdf"]:
        info = kdf.kdf_info(v["purpose"], bytes.fromhex(v["session_id"]), *v["parties"])
        assert info.hex() == v["info"]
        okm = kdf.derive_key(
            SecretBytes(bytes.fromhex(v["ikm"])),
            purpose=v["purpose"],
            session_id=bytes.fromhex(v["session_id"]),
            parties=tuple(v["parties"]),
        )
        assert okm.expose_secret().hex() == v["okm"]


def test_kdf_party_order_is_canonical_and_purposes_separate() -> None:
    s = SecretBytes(b"k" * 32)
    sid = b"s" * 32
    a = kdf.derive_key(s, purpose="pairwise-mask", session_id=sid, parties=(1, 2))
    b = kdf.derive_key(s, purpose="pairwise-mask", session_id=sid, parties=(2, 1))
    c = kdf.derive_key(s, purpose="share-encryption", session_id=sid, parties=(1, 2))
    d = kdf.derive_key(s, purpose="pairwise-mask", session_id=b"t" * 32, parties=(1, 2))
    assert a == b
    assert a != c and a != d


@pytest.mark.property("P12")
def test_x25519_rfc7748_vector() -> None:
    a = keys.X25519KeyPair(SecretBytes(bytes.fromhex(RFC7748_A_PRIV)))
    assert a.public_bytes.hex() == RFC7748_A_PUB
    assert a.agree(bytes.fromhex(RFC7748_B_PUB)).expose_secret().hex() == RFC7748_SHARED


@pytest.mark.property("P12")
def test_x25519_pinned_vector_and_agreement_is_symmetric() -> None:
    v = load_vectors("crypto")["x25519"]
    a = keys.X25519KeyPair(SecretBytes(bytes.fromhex(v["a_private"])))
    b = keys.X25519KeyPair(SecretBytes(bytes.fromhex(v["b_private"])))
    assert a.public_bytes.hex() == v["a_public"] and b.public_bytes.hex() == v["b_public"]
    assert a.agree(b.public_bytes) == b.agree(a.public_bytes)
    assert a.agree(b.public_bytes).expose_secret().hex() == v["shared"]
    # our derivation of the public key matches pyca's own
    priv = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["a_private"]))
    assert priv.public_key().public_bytes_raw() == a.public_bytes
    assert keys.x25519_public_from_private(a.private) == a.public_bytes


@pytest.mark.property("P2")
@pytest.mark.parametrize("point", LOW_ORDER)
def test_x25519_low_order_peer_keys_rejected(point: str) -> None:
    """Scenario A12: an all-zero or low-order public key is a typed error, never a crash or a zero secret."""
    me = keys.X25519KeyPair.generate(DeterministicRandom(1))
    with pytest.raises(InvalidPeerKeyError):
        me.agree(bytes.fromhex(point))


@pytest.mark.parametrize("bad", [b"", b"\x01" * 31, b"\x01" * 33, "not bytes"])
def test_x25519_malformed_peer_keys_rejected(bad: object) -> None:
    me = keys.X25519KeyPair.generate(DeterministicRandom(1))
    with pytest.raises(InvalidPeerKeyError):
        me.agree(bad)  # type: ignore[arg-type]


@pytest.mark.property("P12")
def test_aead_vector_and_round_trip() -> None:
    v = load_vectors("crypto")["aead"]
    key = SecretBytes(bytes.fromhex(v["key"]))
    ad = bytes.fromhex(v["associated_data"])
    ct = bytes.fromhex(v["ciphertext"])
    assert aead.seal(key, bytes.fromhex(v["plaintext"]), associated_data=ad, rng=DeterministicRandom(7)) == ct
    assert aead.open_sealed(key, ct, associated_data=ad).hex() == v["plaintext"]


@pytest.mark.property("P2")
def test_aead_rejects_wrong_context_tampering_and_wrong_key() -> None:
    """Scenario A11 at the primitive level: a relabelled or reflected ciphertext fails authentication."""
    key = SecretBytes(b"\x05" * 32)
    ct = aead.seal(key, b"share", associated_data=b"sid|stage|from=1|to=2", rng=SystemRandom())
    with pytest.raises(AuthenticationError):
        aead.open_sealed(key, ct, associated_data=b"sid|stage|from=2|to=1")
    tampered = bytearray(ct)
    tampered[-1] ^= 1
    with pytest.raises(AuthenticationError):
        aead.open_sealed(key, bytes(tampered), associated_data=b"sid|stage|from=1|to=2")
    with pytest.raises(AuthenticationError):
        aead.open_sealed(SecretBytes(b"\x06" * 32), ct, associated_data=b"sid|stage|from=1|to=2")
    with pytest.raises(AuthenticationError):
        aead.open_sealed(key, ct[:20], associated_data=b"sid|stage|from=1|to=2")


def test_aead_requires_associated_data() -> None:
    key = SecretBytes(b"\x05" * 32)
    with pytest.raises(TypeError):
        aead.seal(key, b"x", rng=SystemRandom())  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError):
        aead.seal(key, b"x", associated_data=b"", rng=SystemRandom())
    with pytest.raises(ConfigurationError):
        aead.seal(b"\x05" * 32, b"x", associated_data=b"ad", rng=SystemRandom())  # type: ignore[arg-type]


@pytest.mark.property("P2")
def test_ed25519_vector_contexts_and_pem_round_trip() -> None:
    v = load_vectors("crypto")["ed25519"]
    ident = keys.IdentityKey.generate(DeterministicRandom(v["seed_rng"]))
    msg = bytes.fromhex(v["message"])
    sig = ident.sign(msg, context=v["context"])
    assert ident.public_bytes.hex() == v["public"] and sig.hex() == v["signature"]
    keys.verify_signature(ident.public_bytes, sig, msg, context=v["context"])
    with pytest.raises(AuthenticationError):
        keys.verify_signature(ident.public_bytes, sig, msg, context="consistency-check")
    with pytest.raises(AuthenticationError):
        keys.verify_signature(ident.public_bytes, sig, msg + b"!", context=v["context"])
    other = keys.IdentityKey.generate(DeterministicRandom(12))
    with pytest.raises(AuthenticationError):
        keys.verify_signature(other.public_bytes, sig, msg, context=v["context"])
    for password in (None, b"correct horse"):
        loaded = keys.IdentityKey.from_pem(ident.to_pem(password), password)
        assert loaded.public_bytes == ident.public_bytes
    assert keys.load_public_pem(ident.public_pem()) == ident.public_bytes
    with pytest.raises(ConfigurationError):
        keys.IdentityKey.from_pem(ident.to_pem(b"pw"), b"wrong")
    with pytest.raises(ConfigurationError):
        keys.IdentityKey.from_pem(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")


@pytest.mark.property("P11")
def test_secrets_refuse_pickle_copy_and_print() -> None:
    raw = bytes.fromhex("deadbeef" * 8)
    s = SecretBytes(raw)
    pair = keys.X25519KeyPair(SecretBytes(raw))
    ident = keys.IdentityKey.generate(DeterministicRandom(3))
    for obj in (s, pair, ident, DeterministicRandom(1)):
        with pytest.raises(TypeError):
            pickle.dumps(obj)
        with pytest.raises(TypeError):
            copy.deepcopy(obj)
        assert "deadbeef" not in repr(obj) and "deadbeef" not in str(obj)
    assert "deadbeef" not in f"{s}" and "deadbeef" not in repr([s])
    with pytest.raises(TypeError):
        hash(s)
    assert s == SecretBytes(raw) and s != SecretBytes(bytes(32))


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=64),
    st.text(max_size=20),
    st.lists(st.integers(0, 2**32 - 1), max_size=10),
    st.booleans(),
)
def test_encoding_round_trip(a: int, b: int, c: int, d: bytes, e: str, f: list[int], g: bool) -> None:
    data = Writer().u8(a).u32(b).u64(c).bytes_(d).text(e).u32_list(f).boolean(g).getvalue()
    r = Reader(data)
    assert (r.u8(), r.u32(), r.u64(), r.bytes_(), r.text(), r.u32_list(), r.boolean()) == (
        a,
        b,
        c,
        d,
        e,
        f,
        g,
    )
    r.finish()
    # every strict prefix is refused, and so are trailing bytes
    for cut in range(len(data)):
        with pytest.raises(EncodingError):
            rr = Reader(data[:cut])
            rr.u8(), rr.u32(), rr.u64(), rr.bytes_(), rr.text(), rr.u32_list(), rr.boolean()
            rr.finish()
    r2 = Reader(data + b"\x00")
    r2.u8(), r2.u32(), r2.u64(), r2.bytes_(), r2.text(), r2.u32_list(), r2.boolean()
    with pytest.raises(EncodingError):
        r2.finish()


def test_encoding_rejects_out_of_range_and_bad_labels() -> None:
    for bad in (-1, 256, True):
        with pytest.raises(EncodingError):
            Writer().u8(bad)
    with pytest.raises(EncodingError):
        Reader(b"\x02").boolean()
    with pytest.raises(EncodingError):
        Reader(b"\x00\x00\x00\x05ab").bytes_()
    with pytest.raises(EncodingError):
        Reader(b"\x00\x00\x00\x10" + b"a" * 16).bytes_(max_len=8)
    with pytest.raises(EncodingError):
        domain("a/b")
    assert domain("kdf", "x") == b"secagg/v1/kdf/x"


def test_deterministic_random_is_reproducible_and_forks_are_independent() -> None:
    a, b = DeterministicRandom(5), DeterministicRandom(5)
    assert a.random_bytes(40) == b.random_bytes(40)
    assert DeterministicRandom(5).random_bytes(16) != DeterministicRandom(6).random_bytes(16)
    fa, fb = a.fork(b"x"), a.fork(b"y")
    assert fa.random_bytes(16) != fb.random_bytes(16)


def _spec_stream(seed: int | bytes, label: bytes, length: int) -> bytes:
    """SPEC section 15, DeterministicRandom, by hand: key = SHA-256(label || 0x00 || seed bytes), an int seed as
    16 bytes big-endian; the stream is AES-256 of the counter blocks BE128(0), BE128(1), ... (AES-256-CTR, zero
    initial block)."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    seed_bytes = seed if isinstance(seed, bytes) else seed.to_bytes(16, "big")
    key = hashlib.sha256(label + b"\x00" + seed_bytes).digest()
    blocks = -(-length // 16)
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # one block per counter value
    by_blocks = b"".join(ecb.update(i.to_bytes(16, "big")) for i in range(blocks))[:length]
    ctr = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(length))
    assert by_blocks == ctr
    return ctr


@pytest.mark.property("P12")
def test_deterministic_random_vectors_recomputed_from_the_spec() -> None:
    import hashlib
    import struct

    v = load_vectors("crypto")["deterministic_random"]
    for name in ("int_seed", "int_seed_zero", "int_seed_max", "bytes_seed", "bytes_seed_empty"):
        case = v[name]
        label = bytes.fromhex(case["label"])
        seed: int | bytes = int(case["seed"]) if case["seed_type"] == "int" else bytes.fromhex(case["seed"])
        seed_bytes = bytes.fromhex(case["seed_bytes"])
        assert seed_bytes == (seed if isinstance(seed, bytes) else seed.to_bytes(16, "big"))
        assert hashlib.sha256(label + b"\x00" + seed_bytes).hexdigest() == case["key"]
        total = sum(r["n"] for r in case["reads"])
        stream = _spec_stream(seed, label, total + 16)
        pos = 0
        for r in case["reads"]:  # consecutive reads, however unaligned, continue one stream
            assert r["bytes"] == stream[pos : pos + r["n"]].hex()
            pos += r["n"]
        assert list(struct.unpack("<4I", stream[pos : pos + 16])) == case["then_uint32"]  # little-endian u32 words
        # and the library agrees, for the default label too when the vector uses it
        rng = DeterministicRandom(seed, label=label)
        assert [rng.random_bytes(r["n"]).hex() for r in case["reads"]] == [r["bytes"] for r in case["reads"]]
        if label == b"secagg/v1/deterministic-random":
            assert DeterministicRandom(seed).random_bytes(total) == stream[:total]
        if isinstance(seed, int):  # an int seed is exactly its 16-byte big-endian encoding
            assert DeterministicRandom(seed_bytes, label=label).random_bytes(total) == stream[:total]

    f = v["fork"]
    parent_seed, parent_label = bytes.fromhex(f["parent_seed"]), bytes.fromhex(f["parent_label"])
    parent = _spec_stream(parent_seed, parent_label, 7 + 32 + 16)
    assert parent[:7].hex() == f["parent_read_before"]
    child_seed = parent[7:39]  # fork(label) takes the parent's next 32 bytes as the child's seed
    assert child_seed.hex() == f["child_seed"]
    child_label = b"secagg/v1/fork/" + bytes.fromhex(f["label"])
    assert child_label.hex() == f["child_label"]
    assert hashlib.sha256(child_label + b"\x00" + child_seed).hexdigest() == f["child_key"]
    assert _spec_stream(child_seed, child_label, 32).hex() == f["child_first_32"]
    assert parent[39:55].hex() == f["parent_next_16"]  # the parent goes on after the 32 bytes the fork took

    fe = v["field_elements"]
    words = struct.unpack("<64I", _spec_stream(int(fe["seed"]), b"secagg/v1/deterministic-random", 256))
    elements = [w & 0x7FFFFFFF for w in words if w & 0x7FFFFFFF != 2**31 - 1][: fe["count"]]
    assert elements == fe["elements"]


@pytest.mark.property("P12")
def test_deterministic_random_int_seed_range_and_draws_in_pieces() -> None:
    import numpy as np

    from secagg.crypto.rng import random_uint32
    from secagg.crypto.shamir import random_field_elements

    for bad in (-1, 1 << 128):
        with pytest.raises(OverflowError):
            DeterministicRandom(bad)
    whole = DeterministicRandom(9).random_bytes(100)
    rng = DeterministicRandom(9)
    assert b"".join(rng.random_bytes(n) for n in (3, 0, 13, 16, 68)) == whole
    rng = DeterministicRandom(9)
    buf = np.empty(37, dtype=np.uint8)
    rng.fill(buf)
    assert buf.tobytes() + rng.random_bytes(63) == whole
    words = random_uint32(DeterministicRandom(9), 25)
    assert words.tolist() == list(np.frombuffer(whole, dtype="<u4"))
    rng = DeterministicRandom(9)
    assert random_field_elements(rng, 5).tolist() == [int(w) & 0x7FFFFFFF for w in words[:5]]
    assert rng.random_bytes(80) == whole[20:]  # five words consumed, nothing more
