"""Generate protocols/vectors/graph.json: neighbourhood graphs and derived SecAgg+ parameters.

Run `python protocols/vectors/generate_graph.py` to regenerate; tests check the file byte for byte.
Seeds come from DeterministicRandom, so the output never changes unless the construction does.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.crypto.rng import DeterministicRandom
from secagg.protocol.graph import PERMUTATION_INFO, Graph
from secagg.protocol.params import Mode, derive_params

GRAPH_CASES = [(2, 1), (5, 2), (7, 3), (8, 3), (10, 4), (12, 11), (12, 40), (20, 5), (33, 8)]
PARAM_CASES: list[tuple[int, float, float, Mode]] = [
    (10, 0.1, 0.1, "semi-honest"),
    (10, 0.1, 0.1, "hardened"),
    (64, 0.1, 0.1, "semi-honest"),
    (100, 0.1, 0.1, "semi-honest"),
    (100, 0.1, 0.1, "hardened"),
    (1000, 0.1, 0.1, "semi-honest"),
    (1000, 0.1, 0.1, "hardened"),
    (1000, 0.05, 0.33, "semi-honest"),
    (10000, 0.05, 0.05, "semi-honest"),
]


def build() -> dict[str, object]:
    """Every vector, computed from fixed inputs."""
    rng = DeterministicRandom(2026, label=b"secagg/v1/vectors/graph")
    out: dict[str, object] = {"format": 1, "permutation_info": PERMUTATION_INFO.hex()}

    seed = rng.random_bytes(32)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PERMUTATION_INFO).derive(seed)
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(32))
    out["keystream"] = {"seed": seed.hex(), "key": key.hex(), "first_32_bytes": stream.hex()}

    graphs = []
    for n, k in GRAPH_CASES:
        seed = rng.random_bytes(32)
        g = Graph(n, k, seed)
        graphs.append(
            {
                "n": n,
                "k": k,
                "seed": seed.hex(),
                "ring": list(g.ring),
                "neighbours": [sorted(s) for s in g.all_neighbours()],
            }
        )
    unseeded = Graph(9, 4, None)
    graphs.append(
        {
            "n": 9,
            "k": 4,
            "seed": None,
            "ring": list(unseeded.ring),
            "neighbours": [sorted(s) for s in unseeded.all_neighbours()],
        }
    )
    out["graphs"] = graphs

    params = []
    for n, gamma, delta, mode in PARAM_CASES:
        p = derive_params(n, gamma, delta, mode)
        params.append(
            {
                "n": n,
                "corrupt_fraction": gamma,
                "dropout_fraction": delta,
                "mode": mode,
                "security_bits": p.security_bits,
                "correctness_bits": p.correctness_bits,
                "k": p.k,
                "t": p.t,
            }
        )
    out["params"] = params
    return out


def main() -> None:
    """Write the vectors next to this script."""
    path = Path(__file__).with_name("graph.json")
    path.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
