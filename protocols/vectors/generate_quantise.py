"""Generate protocols/vectors/quantise.json: known answers for quantise / dequantise (native/quantise.py).

Floats are given both as numbers and as little-endian IEEE hex (float32 inputs, float64 outputs) so other
implementations can compare bit for bit. Run `python protocols/vectors/generate_quantise.py`; tests check
the file byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from secagg.native.quantise import dequantise, quantise

from secagg.crypto.rng import DeterministicRandom, random_uint32

EDGE_X = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 0.3, -0.7, 1e-30, 3.0, -3.0, float("inf"), float("-inf")]


def _quantise_case(
    x: list[float], clip: float, bits: int, weight: int, modulus: int, rng_seed: int
) -> dict[str, object]:
    xs = np.array(x, dtype=np.float32)
    rand = random_uint32(DeterministicRandom(rng_seed), xs.size).copy()
    rand[:2] = [0, 0xFFFFFFFF]  # both rounding extremes
    out = quantise(xs, clip, bits, weight, rand, modulus)
    return {
        "x": [float(v) if np.isfinite(v) else str(v) for v in xs.tolist()],
        "x_f32le": [v.tobytes().hex() for v in xs],
        "clip": clip,
        "bits": bits,
        "weight": weight,
        "modulus": str(modulus),
        "rand": [int(v) for v in rand.tolist()],
        "out": [str(int(v)) for v in out.tolist()],
    }


def _quantise_case_rand(
    x: list[float], clip: float, bits: int, weight: int, modulus: int, rand_words: list[int]
) -> dict[str, object]:
    """As _quantise_case, with the rounding words given (b > 53: SPEC 6.7, the clamp to the integer qmax)."""
    xs = np.array(x, dtype=np.float32)
    rand = np.array(rand_words, dtype=np.uint32)
    out = quantise(xs, clip, bits, weight, rand, modulus)
    return {
        "x": [float(v) if np.isfinite(v) else str(v) for v in xs.tolist()],
        "x_f32le": [v.tobytes().hex() for v in xs],
        "clip": clip,
        "bits": bits,
        "weight": weight,
        "modulus": str(modulus),
        "rand": [int(v) for v in rand.tolist()],
        "out": [str(int(v)) for v in out.tolist()],
    }


# x = c (the product reaches fl(qmax), which is 2^b for b >= 54), the float32 just below c, 0, -c, c/2, a tiny
# value, and out-of-range and infinite inputs; every one with both rounding extremes (0 and 2^32 - 1).
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
TOP_X = [v for x in [1.0, _BELOW_ONE, 0.0, -1.0, 0.5, 1e-7, 3.0, float("inf")] for v in (x, x)]
TOP_RAND = [0, 0xFFFFFFFF] * 8


def _dequantise_case(sums: list[int], total_weight: int, clip: float, bits: int, modulus: int) -> dict[str, object]:
    dtype = np.uint32 if modulus <= 1 << 32 else np.uint64
    out = dequantise(np.array(sums, dtype=dtype), total_weight, clip, bits)
    return {
        "sums": [str(v) for v in sums],
        "modulus": str(modulus),
        "total_weight": total_weight,
        "clip": clip,
        "bits": bits,
        "out": [float(v) for v in out.tolist()],
        "out_f64le": [v.tobytes().hex() for v in out],
    }


def build() -> dict[str, object]:
    """Every vector, from fixed inputs."""
    spread = [float(v) for v in np.linspace(-1.25, 1.25, 11, dtype=np.float32)]
    quantise_cases = [
        _quantise_case(EDGE_X, 1.0, 8, 1, 1 << 32, 1),
        _quantise_case(EDGE_X, 1.0, 1, 1, 1 << 32, 2),
        _quantise_case(EDGE_X + spread, 1.25, 16, 7, 1 << 32, 3),
        _quantise_case(spread, 0.01, 24, 100, 1 << 32, 4),
        _quantise_case(EDGE_X, 2.5, 40, 3, 1 << 64, 5),
        _quantise_case(EDGE_X, 1.0, 62, 3, 1 << 64, 6),
        _quantise_case(spread, 1.0, 12, 5, 1000003, 7),
        _quantise_case(spread, 1.0, 30, 9, (1 << 61) - 1, 8),
        # b around 53, where binary64 stops representing qmax = 2^b - 1 (b >= 54: fl(qmax) = 2^b)
        _quantise_case_rand(TOP_X, 1.0, 52, 1, 1 << 64, TOP_RAND),
        _quantise_case_rand(TOP_X, 1.0, 53, 1, 1 << 64, TOP_RAND),
        _quantise_case_rand(TOP_X, 1.0, 54, 1, 1 << 64, TOP_RAND),
        _quantise_case_rand(TOP_X, 0.75, 54, 2, 1 << 64, TOP_RAND),
        _quantise_case_rand(TOP_X, 1.0, 55, 1, 1 << 64, TOP_RAND),
        _quantise_case_rand(TOP_X, 1.0, 62, 1, 1 << 64, TOP_RAND),
    ]
    dequantise_cases = [
        _dequantise_case([0, 1, 127, 128, 255], 1, 1.0, 8, 1 << 32),
        _dequantise_case([0, 300, 765, 1000], 4, 0.5, 8, 1 << 32),
        _dequantise_case([0, 12345, 65535 * 10], 10, 1.25, 16, 1 << 32),
        _dequantise_case([0, 1 << 40, 3 * ((1 << 62) - 1)], 3, 1.0, 62, 1 << 64),
        _dequantise_case([0, 2047, 4095 * 5], 5, 1.0, 12, 1000003),
        _dequantise_case([0, 1 << 52, (1 << 53) - 1], 1, 1.0, 53, 1 << 64),
        _dequantise_case([0, 1 << 53, (1 << 54) - 1, 3 * ((1 << 54) - 1)], 3, 1.0, 54, 1 << 64),
        _dequantise_case([1, (1 << 62) - 2, (1 << 62) - 1], 1, 0.75, 62, 1 << 64),
    ]
    return {"format": 1, "quantise": quantise_cases, "dequantise": dequantise_cases}


def main() -> None:
    """Write the vectors next to this script."""
    path = Path(__file__).with_name("quantise.json")
    path.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
