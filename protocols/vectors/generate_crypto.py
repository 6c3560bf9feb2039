"""Generate protocols/vectors/crypto.json: known answers for KDF, X25519, AEAD, signatures, encodings,
and the deterministic random source (DeterministicRandom, SPEC section 15).

Run `python protocols/vectors/generate_crypto.py` to regenerate; tests check the file byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from secagg.crypto import aead, kdf, keys
from secagg.crypto.rng import DeterministicRandom, random_uint32
from secagg.crypto.secret import SecretBytes
from secagg.crypto.shamir import random_field_elements
from secagg.encoding import digest, domain


def build() -> dict[str, object]:
    """Every vector, computed from fixed inputs."""
    rng = DeterministicRandom(2026)
    out: dict[str, object] = {"format": 1}

    ikm = bytes(range(32))
    out["kdf"] = [
        {
            "ikm": ikm.hex(),
            "purpose": purpose,
            "session_id": sid.hex(),
            "parties": list(parties),
            "info": kdf.kdf_info(purpose, sid, *parties).hex(),
            "okm": kdf.derive_key(SecretBytes(ikm), purpose=purpose, session_id=sid, parties=parties)
            .expose_secret()
            .hex(),
        }
        for purpose, sid, parties in [
            ("pairwise-mask", bytes(32), (3, 7)),
            ("pairwise-mask", bytes(32), (7, 3)),
            ("share-encryption", b"\x01" * 32, (0, 1)),
            ("self-mask", b"\x02" * 32, ()),
        ]
    ]

    a = keys.X25519KeyPair.generate(rng)
    b = keys.X25519KeyPair.generate(rng)
    out["x25519"] = {
        "a_private": a.private.expose_secret().hex(),
        "a_public": a.public_bytes.hex(),
        "b_private": b.private.expose_secret().hex(),
        "b_public": b.public_bytes.hex(),
        "shared": a.agree(b.public_bytes).expose_secret().hex(),
    }

    key = SecretBytes(bytes(range(100, 132)))
    ad = b"secagg/v1/test-associated-data"
    pt = b"shamir share bytes"
    out["aead"] = {
        "key": key.expose_secret().hex(),
        "associated_data": ad.hex(),
        "plaintext": pt.hex(),
        "ciphertext": aead.seal(key, pt, associated_data=ad, rng=DeterministicRandom(7)).hex(),
    }

    ident = keys.IdentityKey.generate(DeterministicRandom(11))
    msg = b"round keys"
    out["ed25519"] = {
        "seed_rng": 11,
        "public": ident.public_bytes.hex(),
        "context": "advertise-keys",
        "message": msg.hex(),
        "signature": ident.sign(msg, context="advertise-keys").hex(),
    }
    out["digest"] = {
        "tag": domain("test").hex(),
        "payload": b"abc".hex(),
        "sha256": digest(domain("test"), b"abc").hex(),
    }
    out["deterministic_random"] = _deterministic_random()
    return out


DEFAULT_LABEL = b"secagg/v1/deterministic-random"
ROUNDING_LABEL = b"secagg/v1/client/stochastic-rounding"
READS = [5, 16, 27, 1, 0, 31]  # unaligned on purpose: consecutive reads continue the one stream


def _stream_case(seed: int | bytes, label: bytes | None) -> dict[str, object]:
    """The key (recomputed here from SPEC section 15), the bytes of READS, then four random_uint32 words."""
    rng = DeterministicRandom(seed) if label is None else DeterministicRandom(seed, label=label)
    used = DEFAULT_LABEL if label is None else label
    seed_bytes = seed if isinstance(seed, bytes) else seed.to_bytes(16, "big")
    return {
        "seed": seed.hex() if isinstance(seed, bytes) else str(seed),
        "seed_type": "bytes" if isinstance(seed, bytes) else "int",
        "label": used.hex(),
        "seed_bytes": seed_bytes.hex(),
        "key": hashlib.sha256(used + b"\x00" + seed_bytes).hexdigest(),
        "reads": [{"n": n, "bytes": rng.random_bytes(n).hex()} for n in READS],
        "then_uint32": [int(w) for w in random_uint32(rng, 4)],
    }


def _deterministic_random() -> dict[str, object]:
    """DeterministicRandom (SPEC section 15): int and bytes seeds, a fork, and the draws built on it."""
    parent = DeterministicRandom(bytes(range(32)), label=ROUNDING_LABEL)
    before = parent.random_bytes(7)
    child_seed = DeterministicRandom(bytes(range(32)), label=ROUNDING_LABEL).random_bytes(39)[7:]  # the fork's 32
    child = parent.fork(b"client-3")
    fork = {
        "parent_seed": bytes(range(32)).hex(),
        "parent_label": ROUNDING_LABEL.hex(),
        "parent_read_before": before.hex(),
        "label": b"client-3".hex(),
        "child_seed": child_seed.hex(),
        "child_label": (b"secagg/v1/fork/" + b"client-3").hex(),
        "child_key": hashlib.sha256(b"secagg/v1/fork/client-3" + b"\x00" + child_seed).hexdigest(),
        "child_first_32": child.random_bytes(32).hex(),
        "parent_next_16": parent.random_bytes(16).hex(),
    }
    fe = DeterministicRandom(5)
    return {
        "int_seed": _stream_case(2026, None),
        "int_seed_zero": _stream_case(0, None),
        "int_seed_max": _stream_case((1 << 128) - 1, b"secagg/v1/vectors/graph"),
        "bytes_seed": _stream_case(bytes(range(32)), ROUNDING_LABEL),
        "bytes_seed_empty": _stream_case(b"", None),
        "fork": fork,
        "field_elements": {
            "seed": "5",
            "count": 8,
            "elements": [int(v) for v in random_field_elements(fe, 8)],
        },
    }


def main() -> None:
    """Write the vectors next to this script."""
    path = Path(__file__).with_name("crypto.json")
    path.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
