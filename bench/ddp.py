"""Distributed DP encode/decode throughput: one silo's encode and the server's decode at model sizes.

Run: python bench/ddp.py [--dims 65536 1048576] [--mechanism gaussian skellam]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from secagg.crypto.rng import SystemRandom
from secagg.fl import ddp
from secagg.ring import Ring


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dims", type=int, nargs="+", default=[1 << 16, 1 << 20])
    ap.add_argument("--mechanism", nargs="+", default=["gaussian", "skellam"])
    ap.add_argument("--silos", type=int, default=10)
    args = ap.parse_args()
    rng = SystemRandom()
    seed = b"\x01" * 32
    for mech in args.mechanism:
        for d in args.dims:
            t0 = time.perf_counter()
            p = ddp.calibrate(
                mechanism=mech, epsilon=3.0, delta=1e-5, dim=d, clip=1.0, n_min=args.silos // 2,
                n_max=args.silos, rounds=100, bits=32,
            )  # fmt: skip
            t1 = time.perf_counter()
            x = np.random.default_rng(0).normal(size=d).astype(np.float32)
            enc = ddp.encode(x, p, seed, rng)
            t2 = time.perf_counter()
            acc = Ring(p.modulus).zeros(p.padded_dim)
            Ring(p.modulus).add_into(acc, enc)
            ddp.decode(acc, p, seed, p.n_min)
            t3 = time.perf_counter()
            print(
                f"{mech:8s} d={d:>8d} calibrate {t1 - t0:6.2f}s  encode {t2 - t1:6.2f}s "
                f"({d / (t2 - t1) / 1e6:5.2f} M coord/s)  decode {t3 - t2:6.2f}s  gamma={p.gamma:.3g} "
                f"local_var={p.local_variance:.3g} noise_std(n_min)={p.noise_std():.3g}"
            )


if __name__ == "__main__":
    main()
