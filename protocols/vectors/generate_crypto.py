"""Generate protocols/vectors/crypto.json: known answers for KDF, X25519, AEAD, signatures, encodings.

Run `python protocols/vectors/generate_crypto.py` to regenerate; tests check the file byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

from secagg.crypto import aead, kdf, keys
from secagg.crypto.rng import DeterministicRandom
from secagg.crypto.secret import SecretBytes
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
    return out


def main() -> None:
    """Write the vectors next to this script."""
    path = Path(__file__).with_name("crypto.json")
    path.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
