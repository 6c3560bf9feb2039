"""Benchmark Shamir sharing over GF(2^31 - 1): the client/server hot path, batch reconstruction, compile cost.

Run: `python bench/shamir.py [--repeat N]`. Prints a table and writes bench/results/shamir.json.

- client+server: a client shares 2 secrets (self-mask seed, mask key) with n = 100 peers at t = 51 (Share
  objects, ready to encrypt) and a server reconstructs both from 51 Share objects. Target: < 5 ms total.
  Measured with the Lagrange cache warm (same responders as last time) and cold (new responder set).
- reconstruct_many: 200 secrets, t = 51, one x set (the server's batch path).
- kernels vs NumPy twins at those sizes.
- decode: error-correcting reconstruction (the server's fallback when a secret fails its check) of one
  secret from m shares at threshold t with `errors` corrupted shares (random y values), for (m, t, errors) =
  (100, 51, 20) and (1000, 501, 100); cold = Lagrange cache cleared before each call (a new good x-set).
- compile: a fresh interpreter importing the kernels and running one split + reconstruct, with an empty
  NUMBA_CACHE_DIR (compiles) and again with that cache filled (loads from disk).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from secagg.native import field

from secagg.crypto import shamir
from secagg.crypto.rng import SystemRandom
from secagg.crypto.secret import SecretBytes

N, T, S_CLIENT, S_BATCH = 100, 51, 2, 200
DECODE_CASES = ((100, 51, 20), (1000, 501, 100))
TARGET_MS = 5.0


def timeit_ms(fn: Callable[[], Any], repeat: int, setup: Callable[[], Any] | None = None) -> dict[str, float]:
    """Run fn `repeat` times (after 3 warm-up calls); per-call milliseconds: median, min, p90."""
    for _ in range(3):
        if setup:
            setup()
        fn()
    samples = []
    for _ in range(repeat):
        if setup:
            setup()
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    samples.sort()
    return {
        "median_ms": statistics.median(samples),
        "min_ms": samples[0],
        "p90_ms": samples[int(0.9 * (len(samples) - 1))],
    }


_CHILD = r"""
import json, time, os
t0 = time.perf_counter()
import numba, numpy
t1 = time.perf_counter()
from secagg.native import field  # explicit signatures: compiled (or loaded from cache) at import
t2 = time.perf_counter()
from secagg.crypto import shamir
from secagg.crypto.rng import SystemRandom
from secagg.crypto.secret import SecretBytes
t3 = time.perf_counter()
secret = SecretBytes(os.urandom(32))
shares = shamir.split(secret, list(range(1, 101)), 51, SystemRandom())
assert shamir.reconstruct(shares, 51) == secret
t4 = time.perf_counter()
print(json.dumps({"import_numba_numpy_s": t1 - t0, "import_kernels_s": t2 - t1,
                  "import_shamir_s": t3 - t2, "first_split_reconstruct_s": t4 - t3, "total_s": t4 - t0}))
"""


def compile_cost() -> dict[str, dict[str, float]]:
    """Fresh interpreters: empty NUMBA_CACHE_DIR (compile), then the same, now filled, directory (load)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        env.pop("NUMBA_DISABLE_JIT", None)
        for label in ("cold_cache", "warm_cache"):
            res = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
            out[label] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per measurement")
    parser.add_argument("--no-compile", action="store_true", help="skip the fresh-interpreter compile runs")
    args = parser.parse_args()
    rng = SystemRandom()
    secrets = [SecretBytes(os.urandom(32)) for _ in range(S_CLIENT)]
    xs = list(range(1, N + 1))
    results: dict[str, Any] = {}

    state: dict[str, Any] = {}

    def client_split() -> None:
        state["shares"] = [shamir.split(s, xs, T, rng) for s in secrets]

    def server_reconstruct() -> None:
        out = [shamir.reconstruct(sh[N - T :], T) for sh in state["shares"]]
        assert out == secrets

    def both() -> None:
        client_split()
        server_reconstruct()

    client_split()
    results["client_split_2"] = timeit_ms(client_split, args.repeat)
    results["server_reconstruct_2_warm"] = timeit_ms(server_reconstruct, args.repeat)
    results["server_reconstruct_2_cold"] = timeit_ms(
        server_reconstruct, args.repeat, setup=shamir._lagrange_sorted.cache_clear
    )
    results["split_plus_reconstruct_warm"] = timeit_ms(both, args.repeat)
    results["split_plus_reconstruct_cold"] = timeit_ms(both, args.repeat, setup=shamir._lagrange_sorted.cache_clear)
    results["split_many_2_arrays_only"] = timeit_ms(lambda: shamir.split_many(secrets, xs, T, rng), args.repeat)

    batch = [SecretBytes(os.urandom(32)) for _ in range(S_BATCH)]
    ys = shamir.split_many(batch, xs, T, rng)[:, :T, :].copy()
    bxs = xs[:T]
    assert shamir.reconstruct_many(bxs, ys) == batch
    results["reconstruct_many_200_warm"] = timeit_ms(lambda: shamir.reconstruct_many(bxs, ys), args.repeat)
    results["reconstruct_many_200_cold"] = timeit_ms(
        lambda: shamir.reconstruct_many(bxs, ys), args.repeat, setup=shamir._lagrange_sorted.cache_clear
    )
    results["lagrange_coefficients_t51_cold"] = timeit_ms(
        lambda: shamir.lagrange_coefficients(bxs), args.repeat, setup=shamir._lagrange_sorted.cache_clear
    )

    gen = np.random.default_rng(0)
    coeffs = gen.integers(0, field.P, size=(S_CLIENT, 16, T), dtype=np.uint32)
    xarr = np.arange(1, N + 1, dtype=np.uint32)
    lam = shamir.lagrange_coefficients(bxs)
    results["kernel_horner_2x16_t51_n100"] = timeit_ms(lambda: field.horner_eval(coeffs, xarr), args.repeat)
    results["twin_horner_2x16_t51_n100"] = timeit_ms(lambda: field.horner_eval_reference(coeffs, xarr), args.repeat)
    results["kernel_combine_200x51x16"] = timeit_ms(lambda: field.lagrange_combine(lam, ys), args.repeat)
    results["twin_combine_200x51x16"] = timeit_ms(lambda: field.lagrange_combine_reference(lam, ys), args.repeat)

    for m, t, errors in DECODE_CASES:
        dec_secret = SecretBytes(os.urandom(32))
        dec_shares = shamir.split(dec_secret, list(range(1, m + 1)), t, rng)
        for i in gen.choice(m, errors, replace=False).tolist():
            dec_shares[i] = shamir.Share(dec_shares[i].x, tuple(gen.integers(0, field.P, 16).tolist()))

        def run_decode(shares: list[shamir.Share] = dec_shares, t: int = t, want: int = errors) -> None:
            assert len(shamir.decode(shares, t)[1]) == want

        assert shamir.decode(dec_shares, t)[0] == dec_secret
        reps = max(5, args.repeat * 50 // m)
        results[f"decode_m{m}_t{t}_errors{errors}_warm"] = timeit_ms(run_decode, reps)
        results[f"decode_m{m}_t{t}_errors{errors}_cold"] = timeit_ms(
            run_decode, reps, setup=shamir._lagrange_sorted.cache_clear
        )

    print(f"Shamir GF(2^31-1), n={N}, t={T}; {args.repeat} timed calls each (decode: fewer); per call, ms")
    print(f"{'measurement':<36}{'median':>10}{'min':>10}{'p90':>10}")
    for name, r in results.items():
        print(f"{name:<36}{r['median_ms']:>10.3f}{r['min_ms']:>10.3f}{r['p90_ms']:>10.3f}")
    verdict = results["split_plus_reconstruct_cold"]["median_ms"] < TARGET_MS
    status = "met" if verdict else "MISSED"
    print(f"target split + reconstruct < {TARGET_MS} ms (cold Lagrange cache, median): {status}")

    compile_info: dict[str, Any] = {}
    if not args.no_compile:
        compile_info = compile_cost()
        print("fresh interpreter, seconds:")
        keys = list(next(iter(compile_info.values())).keys())
        print(f"{'':<16}" + "".join(f"{k:>28}" for k in keys))
        for label, row in compile_info.items():
            print(f"{label:<16}" + "".join(f"{row[k]:>28.3f}" for k in keys))

    doc = {
        "benchmark": "shamir",
        "params": {
            "n": N,
            "t": T,
            "client_secrets": S_CLIENT,
            "batch_secrets": S_BATCH,
            "decode_cases": [list(c) for c in DECODE_CASES],
            "repeat": args.repeat,
        },
        "target_ms": TARGET_MS,
        "target_met": verdict,
        "timings_ms": results,
        "compile_s": compile_info,
        "env": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
    out = Path(__file__).resolve().parent / "results" / "shamir.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    main()
