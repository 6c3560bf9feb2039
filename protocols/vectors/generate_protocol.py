"""Generate protocols/vectors/protocol.json: known answers for the protocol's byte layouts (scenario E1).

Run `python protocols/vectors/generate_protocol.py` to regenerate; tests/test_protocol_vectors.py checks every
value against the code and that the file is exactly what this script writes. Everything is built from fixed
inputs: private keys and seeds are fixed byte strings (written to the file, so another implementation can
replay them without our DeterministicRandom), and the only other randomness (Shamir coefficients, the AEAD
nonce) comes from seeded DeterministicRandom streams whose output is recorded too (the shares, the nonce).

Pinned (SPEC.md section 15): RoundConfig encodings, config hashes and round tags (3.2, 3.3; three version-1
"quantised" configurations and one version-2 "integers" one, whose `input_encoding` key is RoundConfig's
`encoding` field, named so because `encoding` holds the canonical bytes as everywhere else); the session id
of fixed advertisements and its preimage (7.1); the share-encryption key, associated data, plaintext and
ciphertext of one share message (7.2, 7.3); the seed commitment (7.6); the pairwise mask seeds and signs
(7.4; sign_first / sign_second: the sign with which the first / second party adds the pair's mask); both
signed payloads with their context-bound signed bytes and Ed25519 signatures (6.4, 7.7); the digest of fixed
round tasks (model_hash, section 14); and the canonical encoding of one message of each type (8.2; two for
MaskedInputChunk, one per element width, and two for SetupRequest, one per RoundConfig version). Bytes are
hex; integers that may exceed 2^53 are decimal strings; floats are their canonical text (3.2).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from secagg.crypto import aead, shamir
from secagg.crypto.keys import IdentityKey, X25519KeyPair
from secagg.crypto.rng import DeterministicRandom
from secagg.crypto.secret import SecretBytes
from secagg.encoding import Writer, domain
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
    encode_message,
)


def fixed(label: str, n: int = 32) -> bytes:
    """A fixed byte string named by label (SHA-256 counter mode), so every input is reproducible by hand."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"secagg/v1/vectors/protocol/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


# ---------------------------------------------------------------------------------------------- tasks

TASKS: list[dict[str, Any]] = [
    {
        "name": "fit",
        "kind": "fit",
        "round": 3,
        "parameters": [0.5, -1.25, 3.0, 0.0, 0.001, -0.0],
        "instructions": {"local_epochs": 2, "learning_rate": 0.1, "batch_size": 32, "optimizer": "sgd"},
    },
    {"name": "evaluate", "kind": "evaluate", "round": 3, "parameters": [1.0, -2.5], "instructions": {}},
]


def make_task(spec: dict[str, Any]) -> RoundTask:
    """The RoundTask a task vector describes."""
    params = np.array(spec["parameters"], dtype=np.float32)
    return RoundTask(spec["kind"], spec["round"], params, dict(spec["instructions"]))


# ---------------------------------------------------------------------------------------------- configs


def config_specs() -> list[dict[str, Any]]:
    """Four configurations: the session's (semi-honest, 2^32, bound to the fit task), a hardened 2^64 one
    with a non-ASCII run id and scientific-notation floats, one with a modulus that is not a power of two, and
    an "integers" one (version 2) in a ring too small for the quantised capacity rule (4 * 1 * 2^16 >= 2^16)."""
    return [
        {
            "name": "session",
            "run_id": "vectors",
            "round": 7,
            "participants": [1, 2, 3, 4, 5],
            "mode": "semi-honest",
            "k": 4,
            "t": 3,
            "graph_seed": bytes(range(32)).hex(),
            "dim": 6,
            "modulus": str(1 << 32),
            "clip": "1.0",
            "bits": 16,
            "max_weight": 4,
            "min_aggregate": 3,
            "model_hash": make_task(TASKS[0]).digest().hex(),
            "dp_noise_multiplier": "0.0",
            "input_encoding": "quantised",
        },
        {
            "name": "hardened-2^64",
            "run_id": "h\u00f4pital-\u00fc",
            "round": (1 << 32) - 1,
            "participants": [3, 17, (1 << 31) - 2],
            "mode": "hardened",
            "k": 2,
            "t": 2,
            "graph_seed": (b"\xa5" * 32).hex(),
            "dim": 1000,
            "modulus": str(1 << 64),
            "clip": "0.1",
            "bits": 20,
            "max_weight": 1000,
            "min_aggregate": 2,
            "model_hash": (b"\x11" * 32).hex(),
            "dp_noise_multiplier": "1e-05",
            "input_encoding": "quantised",
        },
        {
            "name": "prime-modulus",
            "run_id": "p",
            "round": 0,
            "participants": [1, 2],
            "mode": "semi-honest",
            "k": 1,
            "t": 2,
            "graph_seed": fixed("graph-seed").hex(),
            "dim": 1,
            "modulus": str((1 << 61) - 1),
            "clip": "1e+16",
            "bits": 8,
            "max_weight": 1,
            "min_aggregate": 2,
            "model_hash": bytes(32).hex(),
            "dp_noise_multiplier": "0.5",
            "input_encoding": "quantised",
        },
        {
            "name": "integers",
            "run_id": "ddp",
            "round": 4,
            "participants": [2, 5, 9, 11],
            "mode": "semi-honest",
            "k": 3,
            "t": 3,
            "graph_seed": fixed("graph-seed/integers").hex(),
            "dim": 8,
            "modulus": str(1 << 16),
            "clip": "1.0",
            "bits": 16,
            "max_weight": 1,
            "min_aggregate": 3,
            "model_hash": fixed("model-hash/integers").hex(),
            "dp_noise_multiplier": "0.0",
            "input_encoding": "integers",
        },
    ]


def make_config(spec: dict[str, Any]) -> RoundConfig:
    """The RoundConfig a config vector describes."""
    return RoundConfig(
        run_id=spec["run_id"],
        round=spec["round"],
        participants=tuple(spec["participants"]),
        mode=Mode(spec["mode"]),
        k=spec["k"],
        t=spec["t"],
        graph_seed=bytes.fromhex(spec["graph_seed"]),
        dim=spec["dim"],
        modulus=int(spec["modulus"]),
        clip=float(spec["clip"]),
        bits=spec["bits"],
        max_weight=spec["max_weight"],
        min_aggregate=spec["min_aggregate"],
        model_hash=bytes.fromhex(spec["model_hash"]),
        dp_noise_multiplier=float(spec["dp_noise_multiplier"]),
        encoding=spec["input_encoding"],
    )


# ---------------------------------------------------------------------------------------------- build


def build() -> dict[str, object]:
    """Every vector, computed from fixed inputs."""
    out: dict[str, object] = {"format": 1}

    # -- tasks (model_hash of a round)
    tasks = []
    for spec in TASKS:
        task = make_task(spec)
        enc = task.encode()
        tasks.append(
            {
                **spec,
                "parameters_f32le": np.asarray(spec["parameters"], dtype="<f4").tobytes().hex(),
                "instructions_json": json.dumps(spec["instructions"], sort_keys=True, separators=(",", ":")),
                "encoding": enc.hex(),
                "digest": task.digest().hex(),
            }
        )
    out["tasks"] = {"label": domain("task").decode(), "cases": tasks}

    # -- configurations
    configs = []
    for spec in config_specs():
        cfg = make_config(spec)
        configs.append(
            {
                **spec,
                "encoding": cfg.encode().hex(),
                "config_hash": cfg.config_hash().hex(),
                "round_tag": cfg.round_tag().hex(),
            }
        )
    out["configs"] = configs
    cfg = make_config(config_specs()[0])
    tag = cfg.round_tag()

    # -- round keys of the session's clients, and the session id
    clients = []
    pairs: dict[int, tuple[X25519KeyPair, X25519KeyPair]] = {}
    for cid in cfg.participants:
        enc = X25519KeyPair(SecretBytes(fixed(f"enc/{cid}")))
        mask = X25519KeyPair(SecretBytes(fixed(f"mask/{cid}")))
        pairs[cid] = (enc, mask)
        clients.append(
            {
                "client_id": cid,
                "enc_private": enc.private.expose_secret().hex(),
                "enc_public": enc.public_bytes.hex(),
                "mask_private": mask.private.expose_secret().hex(),
                "mask_public": mask.public_bytes.hex(),
            }
        )
    ads = tuple(KeyAdvertisement(c, pairs[c][0].public_bytes, pairs[c][1].public_bytes) for c in cfg.participants)
    sid = recipes.session_id(tag, ads)
    preimage = Writer().raw(tag).u32(len(ads))
    for a in ads:
        preimage.u32(a.client_id).raw(a.enc_public).raw(a.mask_public)
    out["session"] = {
        "config": "session",
        "round_tag": tag.hex(),
        "clients": clients,
        "label": domain("session-id").decode(),
        "preimage": preimage.getvalue().hex(),
        "session_id": sid.hex(),
    }

    # -- Shamir shares of clients 1 and 4: [self-mask seed, mask private key] at x = 1..5, threshold t
    xs = list(cfg.participants)
    shares: dict[int, dict[str, Any]] = {}
    for owner, rng_seed in ((1, 2031), (4, 2034)):
        seed = fixed(f"self-mask-seed/{owner}")
        ys = shamir.split_many([SecretBytes(seed), pairs[owner][1].private], xs, cfg.t, DeterministicRandom(rng_seed))
        shares[owner] = {
            "owner": owner,
            "self_mask_seed": seed.hex(),
            "xs": xs,
            "t": cfg.t,
            "seed_shares": [b.hex() for b in recipes.encode_shares(xs, ys[0])],
            "key_shares": [b.hex() for b in recipes.encode_shares(xs, ys[1])],
        }
    out["shares"] = [shares[1], shares[4]]

    # -- one share message: sender 1 to recipient 2
    sender, recipient = 1, 2
    key = recipes.share_key(pairs[sender][0], pairs[recipient][0].public_bytes, sid, sender, recipient)
    seed_share = bytes.fromhex(shares[sender]["seed_shares"][xs.index(recipient)])
    key_share = bytes.fromhex(shares[sender]["key_shares"][xs.index(recipient)])
    plaintext = recipes.encode_share_plaintext(sender, recipient, seed_share, key_share)
    ad = recipes.share_associated_data(sid, sender, recipient)
    ciphertext = aead.seal(key, plaintext, associated_data=ad, rng=DeterministicRandom(2032))
    out["share_message"] = {
        "session_id": sid.hex(),
        "sender": sender,
        "recipient": recipient,
        "enc_shared_secret": pairs[sender][0].agree(pairs[recipient][0].public_bytes).expose_secret().hex(),
        "share_key": key.expose_secret().hex(),
        "associated_data": ad.hex(),
        "seed_share": seed_share.hex(),
        "key_share": key_share.hex(),
        "plaintext": plaintext.hex(),
        "nonce": ciphertext[: aead.NONCE_BYTES].hex(),
        "ciphertext": ciphertext.hex(),
    }

    # -- seed commitment of client 1
    seed_1 = SecretBytes(bytes.fromhex(shares[1]["self_mask_seed"]))
    out["seed_commitment"] = {
        "session_id": sid.hex(),
        "client_id": 1,
        "seed": seed_1.expose_secret().hex(),
        "label": domain("seed-commitment").decode(),
        "commitment": recipes.seed_commitment(sid, 1, seed_1).hex(),
    }

    # -- pairwise mask seeds: a fixed shared secret, and the agreement of clients 1 and 2
    fixed_secret = bytes(range(32))
    agreed = pairs[1][1].agree(pairs[2][1].public_bytes)
    out["pairwise"] = [
        {
            "shared_secret": fixed_secret.hex(),
            "session_id": sid.hex(),
            "parties": [4, 9],
            "seed": recipes.pairwise_seed(SecretBytes(fixed_secret), sid, 4, 9).expose_secret().hex(),
            "sign_first": recipes.pairwise_sign(4, 9),
            "sign_second": recipes.pairwise_sign(9, 4),
        },
        {
            "shared_secret": agreed.expose_secret().hex(),
            "session_id": sid.hex(),
            "parties": [1, 2],
            "seed": recipes.pairwise_seed(agreed, sid, 1, 2).expose_secret().hex(),
            "sign_first": recipes.pairwise_sign(1, 2),
            "sign_second": recipes.pairwise_sign(2, 1),
        },
    ]

    # -- signed payloads (hardened mode), signed by client 1's identity key
    ident_seed = fixed("identity/1")
    ident = IdentityKey.generate(_Fixed(ident_seed))
    adv_payload = recipes.advertisement_payload(tag, 1, pairs[1][0].public_bytes, pairs[1][1].public_bytes)
    survivors_given = [5, 1, 3, 2]
    cons_payload = recipes.consistency_payload(sid, survivors_given)
    signed = []
    for context, payload, extra in (
        (recipes.SIG_ADVERTISE, adv_payload, {"round_tag": tag.hex(), "client_id": 1}),
        (recipes.SIG_CONSISTENCY, cons_payload, {"session_id": sid.hex(), "survivors_given": survivors_given}),
    ):
        signed.append(
            {
                "context": context,
                **extra,
                "payload": payload.hex(),
                "signed_bytes": Writer().bytes_(domain("sig", context)).bytes_(payload).getvalue().hex(),
                "signature": ident.sign(payload, context=context).hex(),
            }
        )
    out["signatures"] = {
        "identity_private": ident_seed.hex(),
        "identity_public": ident.public_bytes.hex(),
        "payloads": signed,
    }
    adv_sig = bytes.fromhex(signed[0]["signature"])
    cons_sig = bytes.fromhex(signed[1]["signature"])

    # -- one canonical encoding per message type
    key_share_4_at_2 = bytes.fromhex(shares[4]["key_shares"][xs.index(2)])
    messages: list[tuple[str, Message]] = [
        ("SetupRequest", SetupRequest(cfg)),
        ("SetupRequest/integers", SetupRequest(make_config(config_specs()[3]))),
        ("KeysBroadcast", KeysBroadcast(tag, sid, ads)),
        ("SharesDelivery", SharesDelivery(sid, ((sender, ciphertext),))),
        ("ConsistencyRequest", ConsistencyRequest(sid, (1, 2, 3, 5))),
        ("UnmaskRequest", UnmaskRequest(sid, (1, 3, 5), (4,), (1, 2, 3, 5), ((1, cons_sig),))),
        ("ServerAbort", ServerAbort(tag, "TOO_FEW_CLIENTS", "2 clients advertised keys, fewer than 3")),
        ("RoundComplete", RoundComplete(sid, (1, 2, 3, 5))),
        (
            "AdvertiseKeys",
            AdvertiseKeys(tag, KeyAdvertisement(1, pairs[1][0].public_bytes, pairs[1][1].public_bytes, adv_sig)),
        ),
        (
            "ShareKeys",
            ShareKeys(sid, ((recipient, ciphertext),), recipes.seed_commitment(sid, 1, seed_1)),
        ),
        ("MaskedInputChunk/u32", MaskedInputChunk(sid, 1, 2, 4, np.array([0, 1, (1 << 32) - 1], dtype=np.uint32))),
        ("MaskedInputChunk/u64", MaskedInputChunk(sid, 0, 1, 0, np.array([(1 << 64) - 1, 2], dtype=np.uint64))),
        ("ConsistencySignature", ConsistencySignature(sid, cons_sig)),
        (
            "UnmaskResponse",
            UnmaskResponse(
                sid,
                ((1, bytes.fromhex(shares[1]["seed_shares"][xs.index(2)])),),
                ((4, key_share_4_at_2),),
            ),
        ),
        ("ClientAbort", ClientAbort("BAD_INPUT", "input must be a float32 vector of length 6")),
    ]
    out["messages"] = [
        {"name": name, "type": msg.TYPE, "fields": _fields(msg), "encoding": encode_message(msg).hex()}
        for name, msg in messages
    ]
    return out


class _Fixed:
    """A RandomSource that hands out one fixed byte string (to build an identity key from known bytes)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def random_bytes(self, n: int) -> bytes:
        if n != len(self._data):
            raise ValueError("unexpected draw")
        return self._data


def _fields(msg: Message) -> dict[str, Any]:
    """A message's fields as JSON values (bytes as hex, chunk data as decimal strings with its width)."""
    if isinstance(msg, SetupRequest):
        return {"config": next(c["name"] for c in config_specs() if make_config(c) == msg.config)}
    if isinstance(msg, MaskedInputChunk):
        return {
            "session_id": msg.session_id.hex(),
            "index": msg.index,
            "count": msg.count,
            "offset": msg.offset,
            "width": msg.data.dtype.itemsize,
            "data": [str(int(v)) for v in msg.data],
        }
    out: dict[str, Any] = {}
    for name, value in vars(msg).items():
        out[name] = _json(value)
    return out


def _json(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, KeyAdvertisement):
        return {k: _json(v) for k, v in vars(value).items()}
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    return value


def main() -> None:
    """Write the vectors next to this script."""
    path = Path(__file__).with_name("protocol.json")
    path.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
