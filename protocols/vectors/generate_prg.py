"""Generate protocols/vectors/prg.json: known answers for the mask PRG (secagg/crypto/prg.py).

Each vector: seed, modulus, the derived AES-256 key, a start offset and the first elements of
mask[start:]. Run `python protocols/vectors/generate_prg.py` to regenerate; tests check it byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

from secagg.crypto.prg import INFO_CTR, INFO_REJECTION, MaskExpander, derive_prg_key
from secagg.crypto.rng import DeterministicRandom
from secagg.crypto.secret import SecretBytes
from secagg.ring import Ring

COUNT = 8
MODULI = [
    1 << 32,  # default: uint32 keystream words
    1 << 64,  # uint64 keystream words
    1 << 16,  # uint32 words masked to 16 bits
    1 << 40,  # uint64 words masked to 40 bits
    2,  # one bit
    3,  # rejection sampling, tiny modulus
    1000003,  # rejection sampling, uint32 elements
    (1 << 32) - 5,  # rejection sampling, largest uint32 prime
    (1 << 61) - 1,  # rejection sampling, uint64 elements
]
STARTS = [0, 3, 1000001, (1 << 40) + 5]


def build() -> dict[str, object]:
    """Every vector, from fixed seeds."""
    seeds = [bytes(range(32)), DeterministicRandom(2026).fork(b"prg-vectors").random_bytes(32)]
    vectors = []
    for seed_bytes in seeds:
        seed = SecretBytes(seed_bytes)
        for modulus in MODULI:
            ring = Ring(modulus)
            expander = MaskExpander(ring, chunk_elems=COUNT)
            for start in STARTS:
                elements = expander.expand(seed, start, COUNT)
                vectors.append(
                    {
                        "seed": seed_bytes.hex(),
                        "modulus": str(modulus),
                        "info": (INFO_CTR if ring.is_power_of_two else INFO_REJECTION).hex(),
                        "key": derive_prg_key(seed, ring).expose_secret().hex(),
                        "start": start,
                        "elements": [str(int(v)) for v in elements.tolist()],
                    }
                )
    return {
        "format": 1,
        "description": "mask[start:start+8] for (seed, modulus); integers as decimal strings",
        "vectors": vectors,
    }


def main() -> None:
    """Write the vectors next to this script."""
    path = Path(__file__).with_name("prg.json")
    path.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
