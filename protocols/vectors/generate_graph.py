"""Generate protocols/vectors/graph.json: neighbourhood graphs and derived SecAgg+ parameters.

Run `python protocols/vectors/generate_graph.py` to regenerate; tests check the file byte for byte.
Seeds come from DeterministicRandom, so the output never changes unless the construction does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.crypto.rng import DeterministicRandom
from secagg.errors import ConfigurationError
from secagg.protocol.graph import PERMUTATION_INFO, Graph
from secagg.protocol.params import (
    Mode,
    SecAggParams,
    check_params,
    corrupt_neighbour_bound,
    derive_params,
    max_corrupt,
    max_degree,
    max_dropouts,
    survivor_threshold_bound,
)

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

SH: Mode = "semi-honest"
HD: Mode = "hardened"

# Appended after PARAM_CASES (SPEC section 4): cases where a plausible misreading of the rule gives another
# (k, t). Each note names the rule the case pins and what the misreading gives.
PARAM_EDGE_CASES: list[tuple[int, float, float, Mode, str]] = [
    (
        70,
        0.3,
        0.05,
        SH,
        "S = ceil((1 - delta - 1e-14) n) = ceil(66.4999999999993) = 67; S = round or floor "
        "of (1 - delta) n = 66 gives (26, 22); drawing from the n - 1 others gives (24, 22) with S survivors and "
        "(26, 22) with S - 1",
    ),
    (70, 0.3, 0.05, HD, "as the semi-honest case: S = 66 gives (32, 28); n - 1 others with S survivors (28, 26)"),
    (
        180,
        0.35,
        0.15,
        SH,
        "C = floor((0.35 + 1e-14) 180) = 63; floor(0.35 * 180) = floor(62.99999999999999) = 62 gives (76, 51)",
    ),
    (180, 0.35, 0.1, HD, "C = 63; without the 1e-14, C = 62 gives (94, 76); n - 1 others: (92, 75)"),
    (100, 0.29, 0.05, SH, "C = 29 although 0.29 * 100 = 28.999999999999996; C = 28 gives (30, 25)"),
    (300, 0.41, 0.06, HD, "C = 123 although 0.41 * 300 = 122.99999999999999; C = 122 gives (118, 100)"),
    (90, 0.1, 0.7, SH, "D = floor((0.7 + 1e-14) 90) = 63 although 0.7 * 90 = 62.99999999999999; D = 62 gives (68, 10)"),
    (
        100,
        0.15,
        0.45,
        SH,
        "S = ceil((1 - 0.45 - 1e-14) 100) = 55; ceil((1 - 0.45) 100) = ceil(55.00000000000001) = 56 gives (52, 16)",
    ),
    (300, 0.25, 0.42, SH, "S = 174; S = ceil((1 - delta) n) = 175 gives (158, 68)"),
    (64, 0.15, 0.0, SH, "C = floor(9.6) = 9; C = round(9.6) = 10 gives (12, 11)"),
    (64, 0.0, 0.15, SH, "D = floor(9.6) = 9; D = round or ceil = 10 gives (12, 2)"),
    (
        64,
        0.0,
        0.0,
        SH,
        "n = 64 is the first Harary n; C + D = 0 < k = 2, so the disconnection bound is 0 and k = 2 "
        "passes; evaluating it with (C + D - k)! := 1 gives (10, 2), the complete graph (63, 2)",
    ),
    (
        64,
        0.0,
        0.0,
        HD,
        "hardened k = 2, t = 2 (2t = 4 > k + 1 + c = 3); (C + D - k)! := 1 gives (10, 6), the complete graph (63, 33)",
    ),
    (139, 0.0, 0.02, SH, "C + D = 2 < k = 4: bound 0; (C + D - k)! := 1 gives (8, 2); S = floor or round gives (6, 2)"),
    (133, 0.04, 0.0, HD, "C + D = 5 < k = 8: bound 0; (C + D - k)! := 1 gives (10, 9)"),
    (
        64,
        0.25,
        0.0,
        SH,
        "C + D = 16: at k = 16 the bound is evaluated, (C + D - k)! = 0! = 1, n (n - k - 1) / 2 / "
        "binom(n, k) >= 2^-41, so k = 16 fails; treating k >= C + D as bound 0 gives (16, 16)",
    ),
    (64, 0.05, 0.15, SH, "C + D = 3 + 9 = 12: k = 12 fails the evaluated bound; bound 0 at k = C + D gives (12, 4)"),
    (100, 0.03, 0.07, SH, "C + D = 10: k = 10 fails the evaluated bound; bound 0 at k = C + D gives (10, 4)"),
    (
        100,
        0.34,
        0.28,
        HD,
        "gamma + 2 delta = 0.34 + 0.56 = 0.9000000000000001 > 0.9 in binary64: no Harary search, "
        "complete graph; the decimal sum 0.9 would allow the search and give (92, 64)",
    ),
    (100, 0.34, 0.56, SH, "gamma + delta = 0.9000000000000001 > 0.9: complete graph; the decimal sum gives (92, 35)"),
    (63, 0.1, 0.1, SH, "n = 63 < 64: complete graph, k = 62, t = C + 1 = 7"),
    (63, 0.1, 0.1, HD, "n = 63: complete graph, t = floor((63 + 6) / 2) + 1 = 35"),
    (64, 0.1, 0.1, HD, "n = 64: Harary; n - 1 others with S survivors gives (18, 13), the complete graph (63, 36)"),
    (64, 0.16, 0.07, SH, "n = 64: Harary (16, 11); the complete graph would be (63, 11)"),
    (64, 0.02, 0.33, HD, "n = 64 hardened: (46, 25); n - 1 others: (44, 24); S = floor((1 - delta) n): (48, 26)"),
    (
        62,
        0.2,
        0.1,
        HD,
        "complete graph with odd k = 61 (n even): max_degree = k, c = C = 12, "
        "t = floor((62 + 12) / 2) + 1 = 38 <= k - D = 55",
    ),
    (2, 0.0, 0.0, SH, "smallest n: k = 1, t = max(0 + 1, min(2, k)) = 1"),
    (3, 0.0, 0.0, HD, "k = 2, t = floor((3 + 0) / 2) + 1 = 2"),
]

# derive_params with an explicit k (odd k: the larger neighbourhood max_degree(n, k) counts for c and the
# hardened bound, the degree k itself for the survivor bound).
GIVEN_K_CASES: list[tuple[int, float, float, Mode, int, str]] = [
    (101, 0.1, 0.1, SH, 31, "n and k odd: max_degree = 32; c = c(32) = 10, t = 11"),
    (100, 0.1, 0.1, SH, 31, "n even: max_degree = k = 31"),
    (65, 0.05, 0.05, HD, 21, "max_degree = 22: t = floor((22 + 1 + 3) / 2) + 1 = 14 (13 with k = 21)"),
    (101, 0.1, 0.0, HD, 31, "max_degree = 32: 2 t = 44 > 32 + 1 + 10"),
    (65, 0.0, 0.0, HD, 3, "odd k = 3, max_degree = 4: t = floor((4 + 1 + 0) / 2) + 1 = 3"),
    (64, 0.1, 0.1, SH, 63, "explicit complete graph: c = C = 6, t = 7"),
    (1000, 0.1, 0.1, SH, 61, "odd k, n even: c(61) = 29, t = 30"),
]

# check_params(n, k, t, mode, gamma, delta): accepted or refused (what a client checks, SPEC 10.1).
CHECK_CASES: list[tuple[int, float, float, Mode, int, int, str]] = [
    (101, 0.1, 0.1, SH, 21, 11, "odd k: the survivor bound uses k = 21 (t2 = 11)"),
    (101, 0.1, 0.1, SH, 21, 12, "refused: t = 12 > t2(21) = 11 (t2(max_degree 22) would be 12)"),
    (65, 0.05, 0.05, HD, 21, 13, "refused: 2 t = 26 <= max_degree + 1 + c = 22 + 1 + 3"),
    (65, 0.05, 0.05, HD, 21, 14, "accepted: 2 t = 28 > 26"),
    (
        65,
        0.05,
        0.05,
        SH,
        7,
        4,
        "refused (too sparse): the bound uses k' = 6 = C + D and is evaluated; k = 7 > C + D would otherwise make it 0",
    ),
    (65, 0.05, 0.05, SH, 8, 4, "accepted: k' = 8 > C + D = 6, bound 0"),
    (100, 0.1, 0.1, SH, 22, 11, "fcp's anchor"),
    (100, 0.1, 0.1, SH, 22, 10, "refused: t = 10 <= c = 10"),
    (10, 0.1, 0.1, HD, 9, 5, "refused: complete graph, 2 t = 10 <= n + C = 11"),
    (10, 0.1, 0.1, HD, 9, 6, "accepted"),
    (10, 0.1, 0.3, SH, 9, 7, "refused: complete graph, t = 7 > k - D = 6"),
    (10, 0.1, 0.3, SH, 9, 6, "accepted"),
]

# derive_params refuses: no (k, t) meets the bounds.
INFEASIBLE_CASES: list[tuple[int, float, float, Mode, str]] = [
    (2, 0.0, 0.0, HD, "complete graph k = 1: t = floor((2 + 0) / 2) + 1 = 2 > k"),
    (10, 0.1, 0.45, HD, "complete graph: t = 6 > k - D = 9 - 4"),
    (20, 0.3, 0.3, HD, "complete graph: t = 14 > k - D = 19 - 6"),
    (
        50,
        0.4,
        0.58,
        SH,
        "D = floor((0.58 + 1e-14) 50) = 29 (0.58 * 50 = 28.999999999999996): t = 21 > k - D = 20; "
        "D = 28 would accept (49, 21)",
    ),
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
    for n, gamma, delta, mode, note in PARAM_EDGE_CASES:
        p = derive_params(n, gamma, delta, mode)
        params.append({**_param_entry(p, n, gamma, delta, mode), "note": note, **_intermediates(p)})
    out["params"] = params

    given = []
    for n, gamma, delta, mode, k, note in GIVEN_K_CASES:
        p = derive_params(n, gamma, delta, mode, k=k)
        given.append({**_param_entry(p, n, gamma, delta, mode), "note": note, **_intermediates(p)})
    out["params_given_k"] = given

    checks = []
    for n, gamma, delta, mode, k, t, note in CHECK_CASES:
        try:
            check_params(n, k, t, mode, gamma, delta)
            accepted = True
        except ConfigurationError:
            accepted = False
        checks.append(
            {
                "n": n,
                "corrupt_fraction": gamma,
                "dropout_fraction": delta,
                "mode": mode,
                "k": k,
                "t": t,
                "accepted": accepted,
                "note": note,
            }
        )
    out["params_checks"] = checks

    infeasible = []
    for n, gamma, delta, mode, note in INFEASIBLE_CASES:
        try:
            derive_params(n, gamma, delta, mode)
        except ConfigurationError:
            infeasible.append(
                {"n": n, "corrupt_fraction": gamma, "dropout_fraction": delta, "mode": mode, "note": note}
            )
        else:
            raise RuntimeError(f"expected no parameters for {(n, gamma, delta, mode)}")
    out["params_infeasible"] = infeasible
    return out


def _param_entry(p: SecAggParams, n: int, gamma: float, delta: float, mode: Mode) -> dict[str, object]:
    return {
        "n": n,
        "corrupt_fraction": gamma,
        "dropout_fraction": delta,
        "mode": mode,
        "security_bits": p.security_bits,
        "correctness_bits": p.correctness_bits,
        "k": p.k,
        "t": p.t,
    }


def _intermediates(p: SecAggParams) -> dict[str, object]:
    """The counts of SPEC section 4 step 1 and the bounds at the chosen k (for debugging an implementation)."""
    n, gamma, delta = p.n, p.corrupt_fraction, p.dropout_fraction
    return {
        "corrupt": max_corrupt(n, gamma),
        "dropouts": max_dropouts(n, delta),
        "survivors": math.ceil((1 - delta - 1e-14) * n),
        "max_degree": max_degree(n, p.k),
        "corrupt_neighbours": corrupt_neighbour_bound(n, max_degree(n, p.k), gamma),
        "survivor_bound": survivor_threshold_bound(n, p.k, delta),
    }


def main() -> None:
    """Write the vectors next to this script."""
    path = Path(__file__).with_name("graph.json")
    path.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
