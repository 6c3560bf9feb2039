"""Scenario E1, protocol layer: protocols/vectors/protocol.json checked byte for byte against the code.

Each value is recomputed twice where it can be: once through the library (RoundConfig, recipes, messages,
RoundTask) and once by hand from SPEC.md's layouts with struct, hashlib and pyca primitives, so a change of
either the code or the written layout shows up here. The file must also be exactly what its generator
writes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.crypto import aead, shamir
from secagg.crypto.keys import IdentityKey, X25519KeyPair, verify_signature, x25519_public_from_private
from secagg.crypto.secret import SecretBytes
from secagg.errors import AuthenticationError, ConfigurationError, EncodingError
from secagg.fl.task import RoundTask
from secagg.protocol import recipes
from secagg.protocol.config import Mode, RoundConfig
from secagg.protocol.messages import (
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
from tests.vectors import VECTORS, load_vectors, regenerate

V = load_vectors("protocol")
H = bytes.fromhex
CONFIGS = {c["name"]: c for c in V["configs"]}
SID = H(V["session"]["session_id"])


# -- by-hand encodings (SPEC.md section 2) ------------------------------------------------------------------


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def field(b: bytes) -> bytes:
    """A `bytes` field: u32 length, then the bytes."""
    return u32(len(b)) + b


def u32_list(values: list[int]) -> bytes:
    return u32(len(values)) + b"".join(u32(v) for v in values)


def spec_digest(label: str, payload: bytes) -> bytes:
    """digest(tag, payload) = SHA-256(u32(len(tag)) || tag || payload)."""
    return hashlib.sha256(field(label.encode()) + payload).digest()


def hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


def kdf_info(purpose: str, sid: bytes, parties: list[int]) -> bytes:
    return field(f"secagg/v1/kdf/{purpose}".encode()) + field(sid) + u32_list(sorted(parties))


def config_by_hand(c: dict[str, Any]) -> bytes:
    """SPEC.md 3.2, field by field: version 1 for "quantised", version 2 (the encoding's name appended) else."""
    quantised = c["input_encoding"] == "quantised"
    return b"".join(
        [
            struct.pack(">H", 1 if quantised else 2),
            field(c["run_id"].encode()),
            u32(c["round"]),
            u32_list(c["participants"]),
            field(c["mode"].encode()),
            u32(c["k"]),
            u32(c["t"]),
            H(c["graph_seed"]),
            struct.pack(">Q", c["dim"]),
            field(int(c["modulus"]).to_bytes(9, "big")),
            field(c["clip"].encode()),
            struct.pack(">B", c["bits"]),
            struct.pack(">Q", c["max_weight"]),
            u32(c["min_aggregate"]),
            H(c["model_hash"]),
            field(c["dp_noise_multiplier"].encode()),
            b"" if quantised else field(c["input_encoding"].encode()),
        ]
    )


def make_config(c: dict[str, Any]) -> RoundConfig:
    return RoundConfig(
        run_id=c["run_id"],
        round=c["round"],
        participants=tuple(c["participants"]),
        mode=Mode(c["mode"]),
        k=c["k"],
        t=c["t"],
        graph_seed=H(c["graph_seed"]),
        dim=c["dim"],
        modulus=int(c["modulus"]),
        clip=float(c["clip"]),
        bits=c["bits"],
        max_weight=c["max_weight"],
        min_aggregate=c["min_aggregate"],
        model_hash=H(c["model_hash"]),
        dp_noise_multiplier=float(c["dp_noise_multiplier"]),
        encoding=c["input_encoding"],
    )


def session_pairs() -> dict[int, tuple[X25519KeyPair, X25519KeyPair]]:
    return {
        c["client_id"]: (
            X25519KeyPair(SecretBytes(H(c["enc_private"]))),
            X25519KeyPair(SecretBytes(H(c["mask_private"]))),
        )
        for c in V["session"]["clients"]
    }


# -- the file ------------------------------------------------------------------------------------------------


@pytest.mark.property("P12")
def test_vector_file_is_what_the_generator_writes() -> None:
    assert (VECTORS / "protocol.json").read_text() == regenerate("protocol")


# -- RoundConfig (SPEC 3) ------------------------------------------------------------------------------------


@pytest.mark.property("P4", "P12")
@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_encoding_hash_and_round_tag(name: str) -> None:
    c = CONFIGS[name]
    cfg = make_config(c)
    enc = H(c["encoding"])
    assert cfg.encode() == enc == config_by_hand(c)
    assert enc[:2] == struct.pack(">H", 1 if cfg.encoding == "quantised" else 2)
    assert RoundConfig.decode(enc) == cfg and cfg.encoding == c["input_encoding"]
    assert cfg.config_hash() == H(c["config_hash"]) == spec_digest("secagg/v1/config", enc)
    assert cfg.round_tag() == H(c["round_tag"]) == spec_digest("secagg/v1/round-tag", cfg.config_hash())
    assert repr(cfg.clip) == c["clip"] and repr(cfg.dp_noise_multiplier) == c["dp_noise_multiplier"]


@pytest.mark.property("P12")
def test_configs_cover_modes_moduli_and_float_forms() -> None:
    assert {c["mode"] for c in CONFIGS.values()} == {"semi-honest", "hardened"}
    moduli = {int(c["modulus"]) for c in CONFIGS.values()}
    assert 1 << 64 in moduli and any(m & (m - 1) for m in moduli)  # 2^64 and a non power of two
    assert any("e" in c["clip"] or "e" in c["dp_noise_multiplier"] for c in CONFIGS.values())
    assert any(not c["run_id"].isascii() for c in CONFIGS.values())  # text lengths count UTF-8 bytes


@pytest.mark.property("P4", "P12")
def test_configs_cover_both_encodings_and_versions() -> None:
    assert {c["input_encoding"] for c in CONFIGS.values()} == {"quantised", "integers"}
    versions = {H(c["encoding"])[:2] for c in CONFIGS.values()}
    assert versions == {struct.pack(">H", 1), struct.pack(">H", 2)}


@pytest.mark.property("P4", "P12")
def test_integers_config_differs_from_its_quantised_twin_and_has_its_own_capacity_rule() -> None:
    c = CONFIGS["integers"]
    enc = H(c["encoding"])
    assert enc.endswith(field(b"integers"))
    cfg = make_config(c)
    assert cfg.modulus <= cfg.n * cfg.max_weight * (1 << cfg.bits)  # the quantised capacity rule would refuse it
    with pytest.raises(ConfigurationError, match="ring capacity"):
        make_config({**c, "input_encoding": "quantised"})
    with pytest.raises(ConfigurationError, match="ring capacity"):  # integers: n * max_weight < modulus still holds
        make_config({**c, "max_weight": cfg.modulus // cfg.n})
    # The same fields read as version 1 are a quantised configuration, which this ring cannot hold.
    with pytest.raises(ConfigurationError, match="ring capacity"):
        RoundConfig.decode(struct.pack(">H", 1) + enc[2 : -len(field(b"integers"))])
    assert cfg.config_hash() != H(CONFIGS["session"]["config_hash"])


@pytest.mark.property("P4", "P12")
def test_a_version_2_config_must_name_a_non_quantised_encoding() -> None:
    enc = H(CONFIGS["integers"]["encoding"])
    body = enc[2 : -len(field(b"integers"))]
    with pytest.raises(EncodingError, match="version 1"):
        RoundConfig.decode(struct.pack(">H", 2) + body + field(b"quantised"))
    with pytest.raises(ConfigurationError, match="encoding must be one of"):
        RoundConfig.decode(struct.pack(">H", 2) + body + field(b"floats"))
    with pytest.raises(EncodingError):  # version 2 without its encoding field
        RoundConfig.decode(struct.pack(">H", 2) + body)
    session = H(CONFIGS["session"]["encoding"])
    with pytest.raises(EncodingError):  # version 1 with a trailing encoding field
        RoundConfig.decode(session + field(b"integers"))
    with pytest.raises(ConfigurationError, match="unknown RoundConfig version"):
        RoundConfig.decode(struct.pack(">H", 3) + body + field(b"integers"))


@pytest.mark.property("P4", "P12")
def test_a_non_canonical_config_encoding_is_refused() -> None:
    enc = H(CONFIGS["session"]["encoding"])
    mutated = enc.replace(field(b"1.0"), field(b"1.00"))  # same value, not its canonical text
    assert mutated != enc
    with pytest.raises(ConfigurationError, match="non-canonical"):
        RoundConfig.decode(mutated)
    short_modulus = enc.replace(field((1 << 32).to_bytes(9, "big")), field((1 << 32).to_bytes(8, "big")))
    with pytest.raises(EncodingError):
        RoundConfig.decode(short_modulus)


# -- session id (SPEC 7.1) ------------------------------------------------------------------------------------


@pytest.mark.property("P12")
def test_session_id_of_fixed_advertisements() -> None:
    s = V["session"]
    cfg = make_config(CONFIGS[s["config"]])
    assert H(s["round_tag"]) == cfg.round_tag()
    pairs = session_pairs()
    ads = []
    for c in s["clients"]:
        enc, mask = pairs[c["client_id"]]
        assert enc.public_bytes == H(c["enc_public"]) and mask.public_bytes == H(c["mask_public"])
        ads.append(KeyAdvertisement(c["client_id"], enc.public_bytes, mask.public_bytes))
    assert [a.client_id for a in ads] == list(cfg.participants)
    preimage = cfg.round_tag() + u32(len(ads)) + b"".join(u32(a.client_id) + a.enc_public + a.mask_public for a in ads)
    assert preimage == H(s["preimage"])
    assert recipes.session_id(cfg.round_tag(), ads) == SID == spec_digest(s["label"], preimage)
    assert recipes.session_id(cfg.round_tag(), ads[::-1]) == SID  # hashed in ascending id order
    assert recipes.session_id(cfg.round_tag(), ads[:-1]) != SID


# -- Shamir shares, share encryption (SPEC 6.5, 7.2, 7.3) ----------------------------------------------------


@pytest.mark.property("P12")
@pytest.mark.parametrize("index", [0, 1])
def test_shares_reconstruct_the_owners_secrets(index: int) -> None:
    s = V["shares"][index]
    owner, xs, t = s["owner"], s["xs"], s["t"]
    mask = session_pairs()[owner][1]
    for kind, secret in (("seed_shares", H(s["self_mask_seed"])), ("key_shares", mask.private.expose_secret())):
        shares = [shamir.Share.from_bytes(H(b)) for b in s[kind]]
        assert [sh.x for sh in shares] == xs
        for blob, x in zip(s[kind], xs, strict=True):
            assert H(blob)[:4] == u32(x) and len(H(blob)) == 68
        assert shamir.reconstruct(shares[:t], t).expose_secret() == secret
        assert shamir.reconstruct(shares[-t:], t).expose_secret() == secret
    key_shares = [shamir.Share.from_bytes(H(b)) for b in s["key_shares"]]
    assert x25519_public_from_private(shamir.reconstruct(key_shares[1 : t + 1], t)) == mask.public_bytes


@pytest.mark.property("P2", "P12")
def test_share_key_associated_data_plaintext_and_ciphertext() -> None:
    m = V["share_message"]
    sid, a, b = H(m["session_id"]), m["sender"], m["recipient"]
    assert sid == SID
    pairs = session_pairs()
    shared = pairs[a][0].agree(pairs[b][0].public_bytes).expose_secret()
    assert shared == H(m["enc_shared_secret"]) == pairs[b][0].agree(pairs[a][0].public_bytes).expose_secret()
    key = H(m["share_key"])
    assert key == hkdf(shared, kdf_info("share-encryption", sid, [a, b]))
    assert recipes.share_key(pairs[a][0], pairs[b][0].public_bytes, sid, a, b).expose_secret() == key
    assert recipes.share_key(pairs[b][0], pairs[a][0].public_bytes, sid, b, a).expose_secret() == key
    ad = H(m["associated_data"])
    assert ad == field(b"secagg/v1/ad/share-keys") + sid + u32(a) + u32(b)
    assert recipes.share_associated_data(sid, a, b) == ad
    seed_share, key_share = H(m["seed_share"]), H(m["key_share"])
    plaintext = H(m["plaintext"])
    assert plaintext == u32(a) + u32(b) + seed_share + key_share and len(plaintext) == 144
    assert recipes.encode_share_plaintext(a, b, seed_share, key_share) == plaintext
    assert recipes.split_share_plaintext(plaintext) == (a, b, seed_share, key_share)
    owner = next(s for s in V["shares"] if s["owner"] == a)
    assert seed_share.hex() == owner["seed_shares"][owner["xs"].index(b)]
    ct, nonce = H(m["ciphertext"]), H(m["nonce"])
    assert len(ct) == 172 and ct[:12] == nonce
    assert ct[12:] == AESGCM(key).encrypt(nonce, plaintext, ad)
    assert aead.seal(SecretBytes(key), plaintext, associated_data=ad, rng=_Fixed(nonce)) == ct
    assert aead.open_sealed(SecretBytes(key), ct, associated_data=ad) == plaintext
    reflected = recipes.share_associated_data(sid, b, a)  # the same ciphertext sent back to its sender (A11)
    with pytest.raises(AuthenticationError):
        aead.open_sealed(SecretBytes(key), ct, associated_data=reflected)


@pytest.mark.property("P8", "P12")
def test_out_of_field_share_values_are_refused_in_the_plaintext() -> None:
    m = V["share_message"]
    a, b = m["sender"], m["recipient"]
    bad = u32(b) + u32(shamir.P) + H(m["seed_share"])[8:]
    with pytest.raises(EncodingError, match="outside the field"):
        recipes.split_share_plaintext(recipes.encode_share_plaintext(a, b, bad, H(m["key_share"])))


# -- seed commitment, pairwise seeds (SPEC 7.4, 7.6) ---------------------------------------------------------


@pytest.mark.property("P12")
def test_seed_commitment() -> None:
    c = V["seed_commitment"]
    sid, cid, seed = H(c["session_id"]), c["client_id"], H(c["seed"])
    want = H(c["commitment"])
    assert recipes.seed_commitment(sid, cid, SecretBytes(seed)) == want
    assert spec_digest(c["label"], sid + u32(cid) + seed) == want
    assert seed.hex() == next(s for s in V["shares"] if s["owner"] == cid)["self_mask_seed"]


@pytest.mark.property("P12")
@pytest.mark.parametrize("index", [0, 1])
def test_pairwise_seed_and_sign(index: int) -> None:
    p = V["pairwise"][index]
    shared, sid, (a, b) = SecretBytes(H(p["shared_secret"])), H(p["session_id"]), p["parties"]
    seed = H(p["seed"])
    assert recipes.pairwise_seed(shared, sid, a, b).expose_secret() == seed
    assert recipes.pairwise_seed(shared, sid, b, a).expose_secret() == seed
    assert hkdf(shared.expose_secret(), kdf_info("pairwise-mask", sid, [a, b])) == seed
    assert (recipes.pairwise_sign(a, b), recipes.pairwise_sign(b, a)) == (p["sign_first"], p["sign_second"])
    assert p["sign_first"] == (1 if a < b else -1) == -p["sign_second"]
    if (a, b) == (1, 2):  # the agreement of the session's mask keys, from both ends
        pairs = session_pairs()
        assert pairs[1][1].agree(pairs[2][1].public_bytes).expose_secret() == shared.expose_secret()
        assert pairs[2][1].agree(pairs[1][1].public_bytes).expose_secret() == shared.expose_secret()


# -- signed payloads (SPEC 6.4, 7.7) -------------------------------------------------------------------------


@pytest.mark.property("P2", "P12")
def test_signed_payloads_and_signatures() -> None:
    s = V["signatures"]
    private = Ed25519PrivateKey.from_private_bytes(H(s["identity_private"]))
    ident = IdentityKey(private)
    public = H(s["identity_public"])
    assert ident.public_bytes == public
    pairs = session_pairs()
    by_context = {p["context"]: p for p in s["payloads"]}
    assert set(by_context) == {recipes.SIG_ADVERTISE, recipes.SIG_CONSISTENCY}

    adv = by_context[recipes.SIG_ADVERTISE]
    tag, cid = H(adv["round_tag"]), adv["client_id"]
    enc, mask = pairs[cid]
    payload = recipes.advertisement_payload(tag, cid, enc.public_bytes, mask.public_bytes)
    assert payload == H(adv["payload"]) == tag + u32(cid) + enc.public_bytes + mask.public_bytes

    cons = by_context[recipes.SIG_CONSISTENCY]
    survivors = cons["survivors_given"]
    assert survivors != sorted(survivors)
    payload = recipes.consistency_payload(H(cons["session_id"]), survivors)
    assert payload == H(cons["payload"]) == H(cons["session_id"]) + u32_list(sorted(survivors))

    for context, p in by_context.items():
        payload, signed, sig = H(p["payload"]), H(p["signed_bytes"]), H(p["signature"])
        assert signed == field(f"secagg/v1/sig/{context}".encode()) + field(payload)
        assert ident.sign(payload, context=context) == sig  # Ed25519 is deterministic
        Ed25519PublicKey.from_public_bytes(public).verify(sig, signed)  # raises if the signed bytes differ
        verify_signature(public, sig, payload, context=context)
        other = recipes.SIG_CONSISTENCY if context == recipes.SIG_ADVERTISE else recipes.SIG_ADVERTISE
        with pytest.raises(AuthenticationError):
            verify_signature(public, sig, payload, context=other)


# -- round tasks (SPEC 14) -----------------------------------------------------------------------------------


@pytest.mark.property("P4", "P12")
@pytest.mark.parametrize("index", [0, 1])
def test_task_encoding_and_digest(index: int) -> None:
    tasks = V["tasks"]
    c = tasks["cases"][index]
    params = np.frombuffer(H(c["parameters_f32le"]), dtype="<f4")
    assert params.tolist() == [float(np.float32(v)) for v in c["parameters"]]
    task = RoundTask(c["kind"], c["round"], params.astype(np.float32), dict(c["instructions"]))
    enc = H(c["encoding"])
    text = c["instructions_json"]
    assert text == json.dumps(c["instructions"], sort_keys=True, separators=(",", ":"))  # canonical JSON
    by_hand = (
        struct.pack(">H", 1)
        + field(c["kind"].encode())
        + u32(c["round"])
        + field(text.encode())
        + struct.pack(">Q", params.shape[0])
        + params.tobytes()
    )
    assert task.encode() == enc == by_hand
    assert task.digest() == H(c["digest"]) == recipes.task_digest(enc) == spec_digest(tasks["label"], enc)
    back = RoundTask.decode(enc)
    assert (back.kind, back.round, back.instructions) == (task.kind, task.round, task.instructions)
    assert back.parameters.tobytes() == params.tobytes()  # -0.0 and every bit pattern survive


@pytest.mark.property("P4", "P12")
def test_the_session_config_is_bound_to_the_fit_task() -> None:
    fit = next(c for c in V["tasks"]["cases"] if c["kind"] == "fit")
    assert CONFIGS["session"]["model_hash"] == fit["digest"]
    assert CONFIGS["session"]["dim"] == len(fit["parameters"])


# -- messages (SPEC 8) ---------------------------------------------------------------------------------------


def _pairs(items: list[list[Any]]) -> tuple[tuple[int, bytes], ...]:
    return tuple((int(i), H(b)) for i, b in items)


def _adv(a: dict[str, Any]) -> KeyAdvertisement:
    return KeyAdvertisement(a["client_id"], H(a["enc_public"]), H(a["mask_public"]), H(a["signature"]))


def build_message(name: str, f: dict[str, Any]) -> Message:
    """The message a vector's fields describe (independently of the generator)."""
    kind = name.split("/")[0]
    if kind == "SetupRequest":
        return SetupRequest(make_config(CONFIGS[f["config"]]))
    if kind == "KeysBroadcast":
        return KeysBroadcast(H(f["round_tag"]), H(f["session_id"]), tuple(_adv(a) for a in f["advertisements"]))
    if kind == "SharesDelivery":
        return SharesDelivery(H(f["session_id"]), _pairs(f["ciphertexts"]))
    if kind == "ConsistencyRequest":
        return ConsistencyRequest(H(f["session_id"]), tuple(f["survivors"]))
    if kind == "UnmaskRequest":
        return UnmaskRequest(
            H(f["session_id"]), tuple(f["alive"]), tuple(f["dropped"]), tuple(f["survivors"]), _pairs(f["signatures"])
        )
    if kind == "ServerAbort":
        return ServerAbort(H(f["round_tag"]), f["code"], f["reason"])
    if kind == "RoundComplete":
        return RoundComplete(H(f["session_id"]), tuple(f["survivors"]))
    if kind == "AdvertiseKeys":
        return AdvertiseKeys(H(f["round_tag"]), _adv(f["advertisement"]))
    if kind == "ShareKeys":
        return ShareKeys(H(f["session_id"]), _pairs(f["ciphertexts"]), H(f["seed_commitment"]))
    if kind == "MaskedInputChunk":
        dtype = {4: np.uint32, 8: np.uint64}[f["width"]]
        data = np.array([int(v) for v in f["data"]], dtype=dtype)
        return MaskedInputChunk(H(f["session_id"]), f["index"], f["count"], f["offset"], data)
    if kind == "ConsistencySignature":
        return ConsistencySignature(H(f["session_id"]), H(f["signature"]))
    if kind == "UnmaskResponse":
        return UnmaskResponse(H(f["session_id"]), _pairs(f["seed_shares"]), _pairs(f["key_shares"]))
    if kind == "ClientAbort":
        return ClientAbort(f["code"], f["reason"])
    raise AssertionError(name)


MESSAGES = {m["name"]: m for m in V["messages"]}


@pytest.mark.property("P12")
@pytest.mark.parametrize("name", list(MESSAGES))
def test_message_encoding(name: str) -> None:
    m = MESSAGES[name]
    msg = build_message(name, m["fields"])
    enc = H(m["encoding"])
    assert m["type"] == type(msg).TYPE
    assert enc[:3] == struct.pack(">HB", 1, m["type"])  # wire version 1, then the type code
    assert encode_message(msg) == enc
    assert decode_message(enc) == msg
    with pytest.raises(EncodingError):
        decode_message(enc + b"\x00")  # trailing bytes


@pytest.mark.property("P12")
def test_every_message_type_and_both_chunk_widths_are_pinned() -> None:
    assert {m["type"] for m in V["messages"]} == {1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21}
    widths = {m["fields"]["width"] for m in V["messages"] if m["type"] == MaskedInputChunk.TYPE}
    assert widths == {4, 8}


@pytest.mark.property("P12")
def test_message_bodies_follow_the_written_layout() -> None:
    """A few bodies rebuilt by hand from SPEC.md 8.2 (the rest are pinned by the encodings above)."""
    sd = MESSAGES["SharesDelivery"]
    (sender, ct_hex) = sd["fields"]["ciphertexts"][0]
    body = SID + u32(1) + u32(sender) + field(H(ct_hex))
    assert H(sd["encoding"]) == struct.pack(">HB", 1, 3) + body
    chunk = MESSAGES["MaskedInputChunk/u32"]["fields"]
    data = b"".join(struct.pack("<I", int(v)) for v in chunk["data"])  # little-endian elements
    body = SID + u32(chunk["index"]) + u32(chunk["count"]) + struct.pack(">QB", chunk["offset"], 4) + field(data)
    assert H(MESSAGES["MaskedInputChunk/u32"]["encoding"]) == struct.pack(">HB", 1, 18) + body
    ab = MESSAGES["ClientAbort"]["fields"]
    want = struct.pack(">HB", 1, 21) + field(ab["code"].encode()) + field(ab["reason"].encode())
    assert H(MESSAGES["ClientAbort"]["encoding"]) == want


# -- helpers -------------------------------------------------------------------------------------------------


class _Fixed:
    """A RandomSource that returns one fixed byte string (the recorded AEAD nonce)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def random_bytes(self, n: int) -> bytes:
        assert n == len(self._data)
        return self._data
