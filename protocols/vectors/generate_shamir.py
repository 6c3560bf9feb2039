"""Generate protocols/vectors/shamir.json: known answers for Shamir sharing over GF(2^31 - 1).

Run `python protocols/vectors/generate_shamir.py` to regenerate; tests check the file byte for byte.
Each case lists the secrets, the points xs, the threshold t, the exact random bytes the split consumed
("random", so another implementation can replay them without our DeterministicRandom), the encoded shares
(68 bytes each, per secret, in the order of xs) and the Lagrange coefficients at 0 for the first t points.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from secagg.crypto import shamir
from secagg.crypto.rng import DeterministicRandom, RandomSource
from secagg.crypto.secret import SecretBytes

P = (1 << 31) - 1


class _Recording:
    """Pass-through RandomSource that remembers every byte handed out."""

    def __init__(self, inner: RandomSource) -> None:
        self.inner = inner
        self.taken = bytearray()

    def random_bytes(self, n: int) -> bytes:
        out = self.inner.random_bytes(n)
        self.taken += out
        return out


class _Replay:
    """RandomSource that hands out a fixed byte string, and refuses to run past its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def random_bytes(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("replay stream exhausted")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _case(name: str, secrets: list[bytes], xs: list[int], t: int, rng: RandomSource) -> dict[str, object]:
    rec = _Recording(rng)
    ys = shamir.split_many([SecretBytes(s) for s in secrets], xs, t, rec)
    shares = [
        [shamir.Share(x, tuple(row)).to_bytes().hex() for x, row in zip(xs, ys[s].tolist(), strict=True)]
        for s in range(len(secrets))
    ]
    return {
        "name": name,
        "secrets": [s.hex() for s in secrets],
        "xs": xs,
        "t": t,
        "random": bytes(rec.taken).hex(),
        "shares": shares,
        "lagrange_at_zero": [int(v) for v in shamir.lagrange_coefficients(xs[:t])],
    }


def build() -> dict[str, object]:
    """Every vector, computed from fixed inputs and DeterministicRandom streams."""
    words = [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0xFFFFFFFE, 0x00000001, 0x7FFFFFFE]
    words += [0x01020304 * (k + 1) & 0xFFFFFFFF for k in range(12)]
    # 18 words; 0xffffffff and 0x7fffffff both mask to p and are rejected, leaving the 16 coefficients.
    rejection_stream = b"".join(w.to_bytes(4, "little") for w in words)
    cases = [
        _case("t1-single", [bytes(range(32))], [1], 1, DeterministicRandom(1)),
        _case("t2-n3-max-limbs", [b"\xff" * 32], [1, 2, 3], 2, DeterministicRandom(2)),
        _case("t3-n5-zero-secret", [bytes(32)], [1, 2, 3, 4, 5], 3, DeterministicRandom(3)),
        _case(
            "t5-n8-large-x",
            [hashlib.sha256(b"secagg shamir vector").digest()],
            [P - 1, P - 2, 1, 1 << 30, 7, 12345, 1 << 16, 99],
            5,
            DeterministicRandom(4),
        ),
        _case(
            "t11-n20",
            [hashlib.sha256(b"t11").digest()],
            list(range(1, 21)),
            11,
            DeterministicRandom(5),
        ),
        _case("rejection-sampling", [bytes(range(100, 132))], [1, 2], 2, _Replay(rejection_stream)),
        _case(
            "many-secrets-one-stream",
            [bytes([k]) * 32 for k in (1, 2, 3)],
            [3, 1, 4, 15],
            3,
            DeterministicRandom(6),
        ),
    ]
    return {"format": 1, "field_modulus": P, "limbs": 16, "share_bytes": 68, "cases": cases}


def main() -> None:
    """Write the vectors next to this script."""
    path = Path(__file__).with_name("shamir.json")
    path.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
