"""Masking benchmark: our mask accumulation against the AES-CTR + vector-add floor, and Numba start-up cost.

Run `python bench/masking.py` (options: --dim, --peers, --repeats). It measures, in one process, single
threaded, the median of the repeats:
  (a) floor: for each of `peers` keys, the AES-256-CTR keystream of 4*D bytes into one reused buffer plus
      one NumPy vector add into the accumulator;
  (b) MaskExpander.accumulate for `peers` seeds over D elements (HKDF per seed included), for several
      chunk sizes, and the ratio (b)/(a) for the default chunk size (target <= 1.2);
  (b') MaskExpander.accumulate_many: the same masks added block by block (what a client and the server's
      unmasking do), for the same chunk sizes, and its ratio to (a);
  (c) the first-call cost of every kernel in a fresh subprocess with an empty NUMBA_CACHE_DIR, then again
      with that cache warm.
Prints a small table and writes bench/results/masking.json.
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

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from secagg.native import ring as ring_kernels

from secagg.crypto.prg import DEFAULT_CHUNK_ELEMS, MaskExpander
from secagg.crypto.rng import DeterministicRandom
from secagg.crypto.secret import SecretBytes
from secagg.ring import Ring

RESULTS = Path(__file__).resolve().parent / "results" / "masking.json"

# Runs in a fresh interpreter: import (loads or compiles the kernels), then the first call of each.
_STARTUP_PROBE = r"""
import json, time
t0 = time.perf_counter()
import numpy as np, numba
t1 = time.perf_counter()
from secagg.native import ring as r, quantise as q
t2 = time.perf_counter()
out = {"import_numpy_numba_s": t1 - t0, "import_s": t2 - t1, "first_call_s": {}}
def first(name, fn, *args):
    t = time.perf_counter(); fn(*args); out["first_call_s"][name] = time.perf_counter() - t
a32 = np.zeros(8, np.uint32); a64 = np.zeros(8, np.uint64)
for name in ("add_pow2_u32", "sub_pow2_u32", "add_mod_u32", "sub_mod_u32"):
    first(name, getattr(r, name), a32, a32.copy(), np.uint64(5) if "mod" in name else np.uint32(0xFFFFFFFF))
for name in ("add_pow2_u64", "sub_pow2_u64", "add_mod_u64", "sub_mod_u64"):
    first(name, getattr(r, name), a64, a64.copy(), np.uint64(5 if "mod" in name else 2**64 - 1))
x = np.zeros(8, np.float32); rand = np.zeros(8, np.uint32)
first("quantise_kernel[u32]", q.quantise_kernel, x, 1.0, np.uint64(255), np.uint64(1), rand, a32)
first("quantise_kernel[u64]", q.quantise_kernel, x, 1.0, np.uint64(255), np.uint64(1), rand, a64)
blocks = np.zeros(16 * 8, np.uint8); pending = np.arange(8, dtype=np.int64); c = np.zeros(16, np.uint64)
first("fill_rejection_blocks", r.fill_rejection_blocks, np.uint64(0), np.uint64(0), pending, 8, blocks)
first("select_rejection[u32]", r.select_rejection, c, np.uint64(7), np.uint64(5), pending.copy(), 8, a32)
first("select_rejection[u64]", r.select_rejection, c, np.uint64(7), np.uint64(5), pending.copy(), 8, a64)
f = np.zeros(8, np.float64)
first("dequantise_kernel[u32]", q.dequantise_kernel, a32, 1.0, 1.0, np.uint64(255), f)
first("dequantise_kernel[u64]", q.dequantise_kernel, a64, 1.0, 1.0, np.uint64(255), f)
print(json.dumps(out))
"""


def _median_time(fn: Callable[[], None], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def floor_fn(dim: int, keys: list[bytes], acc: np.ndarray) -> Callable[[], None]:
    """(a): CTR keystream of 4*D bytes into a reused buffer + one NumPy add, per key."""
    zeros = memoryview(bytes(4 * dim))
    buf = bytearray(4 * dim + 15)
    words = np.frombuffer(buf, dtype=np.uint32, count=dim)

    def run() -> None:
        for key in keys:
            enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
            enc.update_into(zeros, buf)
            np.add(acc, words, out=acc)

    return run


def ours_fn(ring: Ring, seeds: list[SecretBytes], acc: np.ndarray, chunk: int) -> Callable[[], None]:
    """(b): MaskExpander.accumulate for every seed."""
    expander = MaskExpander(ring, chunk_elems=chunk)

    def run() -> None:
        for s in seeds:
            expander.accumulate(acc, s, +1, 0)

    return run


def many_fn(ring: Ring, seeds: list[SecretBytes], acc: np.ndarray, chunk: int) -> Callable[[], None]:
    """(b'): MaskExpander.accumulate_many, every seed in one blocked pass."""
    expander = MaskExpander(ring, chunk_elems=chunk)
    masks = [(s, +1) for s in seeds]

    def run() -> None:
        expander.accumulate_many(acc, masks, 0)

    return run


def startup_costs() -> dict[str, Any]:
    """(c): kernel first-call cost with a cold, then a warm, Numba cache (fresh subprocess each)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        env.pop("NUMBA_DISABLE_JIT", None)
        runs = {}
        for label in ("cold", "warm"):
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", _STARTUP_PROBE], env=env, capture_output=True, text=True, check=True
            )
            data = json.loads(proc.stdout)
            data["process_s"] = time.perf_counter() - t
            runs[label] = data
        return runs


def main() -> None:
    """Run the three measurements, print a table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=1_000_000)
    parser.add_argument("--peers", type=int, default=22)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-startup", action="store_true", help="skip (c), the subprocess measurement")
    args = parser.parse_args()
    dim, peers, repeats = args.dim, args.peers, max(5, args.repeats)

    rng = DeterministicRandom(b"bench/masking")
    keys = [rng.random_bytes(32) for _ in range(peers)]
    seeds = [SecretBytes(rng.random_bytes(32)) for _ in range(peers)]
    ring = Ring(1 << 32)
    acc = np.zeros(dim, dtype=np.uint32)

    floor = floor_fn(dim, keys, acc)
    chunk_choices = sorted({1 << 14, 1 << 15, DEFAULT_CHUNK_ELEMS, 1 << 17, 1 << 18})
    ours = {f"chunk={c}": ours_fn(ring, seeds, acc, c) for c in chunk_choices}
    ours |= {f"many, chunk={c}": many_fn(ring, seeds, acc, c) for c in chunk_choices}
    for fn in (floor, *ours.values()):  # warm up: kernels loaded, pages touched
        fn()

    # Interleave the candidates in every repeat so that drift on a shared machine hits them alike.
    samples: dict[str, list[float]] = {"floor": []} | {k: [] for k in ours}
    for _ in range(repeats):
        samples["floor"].append(_median_time(floor, 1)[0])
        for k, fn in ours.items():
            samples[k].append(_median_time(fn, 1)[0])
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratio = med[f"chunk={DEFAULT_CHUNK_ELEMS}"] / med["floor"]
    ratio_many = med[f"many, chunk={DEFAULT_CHUNK_ELEMS}"] / med["floor"]

    other: dict[str, float] = {}
    for modulus, label in ((1 << 64, "ring 2^64"), ((1 << 61) - 1, "ring 2^61-1 (rejection)")):
        r = Ring(modulus)
        a = r.zeros(dim)
        fn = ours_fn(r, seeds[:2], a, DEFAULT_CHUNK_ELEMS)
        fn()
        other[label] = _median_time(fn, 3)[0] / 2 * peers

    kernel_ms = {}
    a32 = np.zeros(dim, np.uint32)
    b32 = np.arange(dim, dtype=np.uint32)
    full = np.uint32(2**32 - 1)
    kernel_ms["add_pow2_u32 (D)"] = _median_time(lambda: ring_kernels.add_pow2_u32(a32, b32, full), 9)[0]
    kernel_ms["numpy add u32 (D)"] = _median_time(lambda: np.add(a32, b32, out=a32), 9)[0]

    print(f"masking: D={dim}, peers={peers}, repeats={repeats}, single thread, ring 2^32")
    print(f"{'what':<40}{'median ms':>12}{'per peer ms':>14}{'vs floor':>10}")
    for k, v in med.items():
        label = (
            "(a) floor: CTR + numpy add"
            if k == "floor"
            else f"(b') accumulate_{k}"
            if "many" in k
            else f"(b) accumulate, {k}"
        )
        print(f"{label:<40}{v * 1e3:>12.2f}{v * 1e3 / peers:>14.3f}{v / med['floor']:>10.3f}")
    for k, v in other.items():
        print(f"{'    accumulate, ' + k:<40}{v * 1e3:>12.2f}{v * 1e3 / peers:>14.3f}{v / med['floor']:>10.3f}")
    for k, v in kernel_ms.items():
        print(f"{'    kernel ' + k:<40}{v * 1e3:>12.3f}")
    print(f"ratio (b)/(a) at the default chunk ({DEFAULT_CHUNK_ELEMS} elements): {ratio:.3f}  (target <= 1.2)")
    print(f"ratio (b')/(a), accumulate_many at the default chunk: {ratio_many:.3f}")

    result: dict[str, Any] = {
        "dim": dim,
        "peers": peers,
        "repeats": repeats,
        "default_chunk_elems": DEFAULT_CHUNK_ELEMS,
        "median_s": med,
        "samples_s": samples,
        "ratio_b_over_a": ratio,
        "ratio_many_over_a": ratio_many,
        "other_rings_s": other,
        "kernel_s": kernel_ms,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if not args.skip_startup:
        start = startup_costs()
        result["numba_startup"] = start
        print("(c) Numba start-up in a fresh process (s):   cold cache   warm cache")
        cold_s, warm_s = start["cold"]["import_s"], start["warm"]["import_s"]
        base_c, base_w = start["cold"]["import_numpy_numba_s"], start["warm"]["import_numpy_numba_s"]
        print(f"    {'import numpy + numba':<38}{base_c:>10.3f}{base_w:>12.3f}")
        print(f"    {'import kernels (compile or load all)':<38}{cold_s:>10.3f}{warm_s:>12.3f}")
        for name in start["cold"]["first_call_s"]:
            cold, warm = start["cold"]["first_call_s"][name], start["warm"]["first_call_s"][name]
            print(f"    first call {name:<27}{cold:>10.5f}{warm:>12.5f}")
        print(f"    {'whole process':<38}{start['cold']['process_s']:>10.3f}{start['warm']['process_s']:>12.3f}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
