"""Arithmetic in GF(p), p = 2^31 - 1, for Shamir secret sharing: Numba kernels and their NumPy twins.

Elements are stored as uint32 in [0, p). A product of two elements is below 2^62, so the kernels work in
uint64 and reduce after every multiply-add; no intermediate ever exceeds 2^63. Each kernel `<name>` has a
plain NumPy twin `<name>_reference` in this module, and the tests check that they agree on random inputs
(also with NUMBA_DISABLE_JIT=1, where the kernels run as ordinary Python).

- `horner_eval(coeffs, xs)`: evaluate S x L polynomials of degree t-1 at n points (Shamir split).
- `lagrange_combine(lambdas, ys)`: sum_i lambda_i * ys[s, i, l] mod p for every s, l (Shamir reconstruct).

The kernels take C-contiguous uint32 arrays with every value already in [0, p); callers validate
(secagg.crypto.shamir does). The kernels beat their twins at every size measured (bench/shamir.py), so the
library calls the kernels; the twins are the executable specification.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

P = (1 << 31) - 1
"""The field modulus, the Mersenne prime 2^31 - 1."""

_P64 = np.uint64(P)
_ZERO = np.uint64(0)
_S31 = np.uint64(31)

U32Array = npt.NDArray[np.uint32]

_F = TypeVar("_F", bound=Callable[..., Any])


def _kernel(signature: str) -> Callable[[_F], _F]:
    """numba.njit with an explicit signature, on-disk cache and no GIL; typed so mypy keeps the signature."""
    return cast(Callable[[_F], _F], numba.njit(signature, cache=True, nogil=True))


@_kernel("uint64(uint64)")
def _reduce(v: np.uint64) -> np.uint64:
    """v mod p for v < 2^63, by folding twice at bit 31 (2^31 = 1 mod p) and one conditional subtract."""
    r = (v & _P64) + (v >> _S31)  # < 2^31 + 2^32
    r = (r & _P64) + (r >> _S31)  # <= p + 2
    return r - _P64 if r >= _P64 else r


@_kernel("uint32[:, :, ::1](uint32[:, :, ::1], uint32[::1])")
def horner_eval(coeffs: U32Array, xs: U32Array) -> U32Array:
    """out[s, i, l] = sum_k coeffs[s, l, k] * xs[i]^k mod p (Horner's rule, vectorised over the points)."""
    n_poly = coeffs.shape[0]
    n_limb = coeffs.shape[1]
    t = coeffs.shape[2]
    n = xs.shape[0]
    out = np.empty((n_poly, n, n_limb), dtype=np.uint32)
    xw = np.empty(n, dtype=np.uint64)
    for i in range(n):
        xw[i] = np.uint64(xs[i])
    acc = np.empty(n, dtype=np.uint64)
    for s in range(n_poly):
        for limb in range(n_limb):
            top = np.uint64(coeffs[s, limb, t - 1])
            for i in range(n):
                acc[i] = top
            for k in range(t - 2, -1, -1):
                c = np.uint64(coeffs[s, limb, k])
                for i in range(n):
                    acc[i] = _reduce(acc[i] * xw[i] + c)
            for i in range(n):
                out[s, i, limb] = np.uint32(acc[i])
    return out


def horner_eval_reference(coeffs: U32Array, xs: U32Array) -> U32Array:
    """NumPy twin of horner_eval."""
    c = coeffs.astype(np.uint64)
    x = xs.astype(np.uint64)[None, None, :]
    acc = np.broadcast_to(c[:, :, -1:], (c.shape[0], c.shape[1], x.shape[2])).copy()
    for k in range(c.shape[2] - 2, -1, -1):
        acc = (acc * x + c[:, :, k : k + 1]) % _P64
    return np.ascontiguousarray(acc.transpose(0, 2, 1)).astype(np.uint32)


@_kernel("uint32[:, ::1](uint32[::1], uint32[:, :, ::1])")
def lagrange_combine(lambdas: U32Array, ys: U32Array) -> U32Array:
    """out[s, l] = sum_i lambdas[i] * ys[s, i, l] mod p (each product reduced, sums kept below 2^63)."""
    n_sec = ys.shape[0]
    t = ys.shape[1]
    n_limb = ys.shape[2]
    out = np.empty((n_sec, n_limb), dtype=np.uint32)
    acc = np.empty(n_limb, dtype=np.uint64)
    for s in range(n_sec):
        for limb in range(n_limb):
            acc[limb] = _ZERO
        for i in range(t):
            lam = np.uint64(lambdas[i])
            for limb in range(n_limb):
                # acc < p and the reduced product is < p, so the sum is < 2p; one subtraction brings it back.
                acc[limb] = acc[limb] + _reduce(lam * np.uint64(ys[s, i, limb]))
                if acc[limb] >= _P64:
                    acc[limb] -= _P64
        for limb in range(n_limb):
            out[s, limb] = np.uint32(acc[limb])
    return out


def lagrange_combine_reference(lambdas: U32Array, ys: U32Array) -> U32Array:
    """NumPy twin of lagrange_combine."""
    prod = (ys.astype(np.uint64) * lambdas.astype(np.uint64)[None, :, None]) % _P64
    # t products below p each sum to < t * 2^31, far below 2^64 for any t this library accepts.
    total: npt.NDArray[np.uint64] = prod.sum(axis=1, dtype=np.uint64) % _P64
    return total.astype(np.uint32)
