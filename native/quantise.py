"""Quantisation of float32 updates into ring elements, and back, with unbiased stochastic rounding.

All arithmetic inside is float64, in this order (the known-answer vectors pin it):

    v = min(max(x, -c), c)                      clip
    q = floor((v + c) * ((2^b - 1) / (2c)) + r / 2^32)
    q = min(max(q, 0), 2^b - 1)                 clamp
    out = q * w                                 (= (q * w) mod M: the wrapper refuses w * (2^b - 1) >= M)

with r a uniform uint32 per coordinate (E[q] = the unrounded value, so the sum is unbiased). Dequantising
a sum S of n such vectors with total weight W = sum(w) gives the weighted mean of the clipped inputs:
x = (S / W) * (2c / (2^b - 1)) - c.

NaN policy: the typed wrappers raise ConfigurationError on any NaN input (a NaN never silently becomes a
random value); the kernels themselves map NaN to q = 0 deterministically. +-inf is clipped to +-c.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import float32, float64, uint32, uint64, void
from numpy.typing import NDArray

from secagg.errors import ConfigurationError

from .ring import dtype_for_modulus

__all__ = [
    "MAX_BITS",
    "check_capacity",
    "dequantise",
    "dequantise_kernel",
    "dequantise_kernel_reference",
    "quantisation_step",
    "quantise",
    "quantise_kernel",
    "quantise_kernel_reference",
]

MAX_BITS = 62
_TWO_NEG_32 = 1.0 / 4294967296.0

# ---------------------------------------------------------------------------------------------- kernels


# The input may be read-only (e.g. a model held in a read-only or memory-mapped buffer).
_RO_F32 = numba.types.Array(float32, 1, "C", readonly=True)


@numba.njit(
    [
        void(float32[::1], float64, uint64, uint64, uint32[::1], uint32[::1]),
        void(float32[::1], float64, uint64, uint64, uint32[::1], uint64[::1]),
        void(_RO_F32, float64, uint64, uint64, uint32[::1], uint32[::1]),
        void(_RO_F32, float64, uint64, uint64, uint32[::1], uint64[::1]),
    ],
    cache=True,
    nogil=True,
)
def quantise_kernel(x: Any, clip: Any, qmax: Any, weight: Any, rand: Any, out: Any) -> None:
    """out[i] = weight * stochastic_round((clip(x[i]) + c) * qmax / 2c), with qmax = 2^b - 1."""
    # Every step is a select, not a branch, so the loop vectorises; the arithmetic is that of the module
    # docstring, in that order (the twin and the known-answer vectors pin it).
    qmax_f = np.float64(qmax)
    scale = qmax_f / (2.0 * clip)
    low = -clip
    zero = np.uint64(0)
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        finite_or_inf = v == v  # NaN: deterministic zero (the wrapper refuses NaN before getting here)
        v = v if finite_or_inf else np.float64(0.0)
        v = low if v < low else v
        v = clip if v > clip else v
        t = np.floor((v + clip) * scale + np.float64(rand[i]) * _TWO_NEG_32)
        t = np.float64(0.0) if t < 0.0 else t
        t = qmax_f if t > qmax_f else t
        q = np.uint64(t)
        q = qmax if q > qmax else q  # qmax_f may round up to 2^b when b > 53
        q = q if finite_or_inf else zero
        out[i] = q * weight


@numba.njit(
    [
        void(uint32[::1], float64, float64, uint64, float64[::1]),
        void(uint64[::1], float64, float64, uint64, float64[::1]),
    ],
    cache=True,
    nogil=True,
)
def dequantise_kernel(sums: Any, total_weight: Any, clip: Any, qmax: Any, out: Any) -> None:
    """out[i] = (sums[i] / W) * (2c / qmax) - c."""
    step = (2.0 * clip) / np.float64(qmax)
    for i in range(sums.shape[0]):
        out[i] = (np.float64(sums[i]) / total_weight) * step - clip


# ------------------------------------------------------------------------------------- reference twins


def quantise_kernel_reference(
    x: NDArray[np.float32],
    clip: float,
    qmax: int,
    weight: int,
    rand: NDArray[np.uint32],
    out: NDArray[Any],
) -> None:
    """Twin of quantise_kernel in whole-array NumPy."""
    qmax_f = np.float64(qmax)
    scale = qmax_f / (2.0 * clip)
    v = x.astype(np.float64)
    nan = np.isnan(v)
    v = np.minimum(np.maximum(np.where(nan, 0.0, v), -clip), clip)
    t = np.floor((v + clip) * scale + rand.astype(np.float64) * _TWO_NEG_32)
    t = np.clip(t, 0.0, qmax_f)
    q = np.minimum(t.astype(np.uint64), np.uint64(qmax))
    q[nan] = 0
    out[:] = (q * np.uint64(weight)).astype(out.dtype)


def dequantise_kernel_reference(
    sums: NDArray[Any], total_weight: float, clip: float, qmax: int, out: NDArray[np.float64]
) -> None:
    """Twin of dequantise_kernel in whole-array NumPy."""
    step = (2.0 * clip) / np.float64(qmax)
    out[:] = (sums.astype(np.float64) / np.float64(total_weight)) * step - clip


# ------------------------------------------------------------------------------------ typed entry points


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= MAX_BITS:
        raise ConfigurationError(f"bits must be an int in [1, {MAX_BITS}]")
    return int(bits)


def _check_clip(clip: float) -> float:
    if isinstance(clip, bool) or not isinstance(clip, (int, float, np.floating, np.integer)):
        raise ConfigurationError("clip must be a positive finite number")
    c = float(clip)
    if not (math.isfinite(c) and c > 0.0):
        raise ConfigurationError("clip must be a positive finite number")
    return c


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ConfigurationError(f"{name} must be an int >= 1")
    return int(value)


def quantisation_step(clip: float, bits: int) -> float:
    """The width of one quantisation level: 2c / (2^b - 1)."""
    return 2.0 * _check_clip(clip) / float((1 << _check_bits(bits)) - 1)


def check_capacity(n_clients: int, max_weight: int, bits: int, modulus: int) -> None:
    """Refuse (ConfigurationError) unless n * max_weight * 2^b < M, so the ring sum can never wrap."""
    n = _check_positive_int(n_clients, "n_clients")
    w = _check_positive_int(max_weight, "max_weight")
    b = _check_bits(bits)
    dtype_for_modulus(modulus)
    if n * w * (1 << b) >= modulus:
        raise ConfigurationError(
            f"capacity: n_clients * max_weight * 2^bits = {n} * {w} * 2^{b} does not fit below the modulus"
        )


def quantise(
    x: NDArray[np.float32],
    clip: float,
    bits: int,
    weight: int,
    rand: NDArray[np.uint32],
    modulus: int,
    out: NDArray[Any] | None = None,
) -> NDArray[Any]:
    """Clip, stochastically round to `bits` bits, multiply by `weight`; returns ring elements (into `out`)."""
    c = _check_clip(clip)
    b = _check_bits(bits)
    w = _check_positive_int(weight, "weight")
    dtype = dtype_for_modulus(modulus)
    qmax = (1 << b) - 1
    if w * qmax >= modulus:
        raise ConfigurationError("weight * (2^bits - 1) must be below the modulus")
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 1:
        raise ConfigurationError("x must be a 1-D float32 array")
    if not isinstance(rand, np.ndarray) or rand.dtype != np.uint32 or rand.shape != x.shape:
        raise ConfigurationError("rand must be a uint32 array of the same length as x")
    if x.size and np.isnan(x.min()):  # min propagates NaN (and, unlike a sum, +inf and -inf do not make one)
        raise ConfigurationError("x contains NaN")
    if out is None:
        out = np.empty(x.shape[0], dtype=dtype)
    elif (
        not isinstance(out, np.ndarray)
        or out.dtype != dtype
        or out.shape != x.shape
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ConfigurationError(f"out must be a writeable C-contiguous {dtype.name} array of x's length")
    quantise_kernel(np.ascontiguousarray(x), c, np.uint64(qmax), np.uint64(w), np.ascontiguousarray(rand), out)
    return out


def dequantise(
    sums: NDArray[Any], total_weight: int, clip: float, bits: int, *, strict: bool = True
) -> NDArray[np.float64]:
    """The weighted mean of the clipped inputs from a ring sum of quantised vectors and its total weight.

    With strict (the default), a coordinate above total_weight * (2^b - 1), which no honest sum reaches
    (wrong total weight, or a sum that wrapped), raises ConfigurationError instead of decoding to garbage.
    """
    c = _check_clip(clip)
    b = _check_bits(bits)
    total = _check_positive_int(total_weight, "total_weight")
    if total >= 1 << 53:
        raise ConfigurationError("total_weight must be below 2^53")
    if not isinstance(sums, np.ndarray) or sums.dtype not in (np.uint32, np.uint64) or sums.ndim != 1:
        raise ConfigurationError("sums must be a 1-D uint32 or uint64 array")
    qmax = (1 << b) - 1
    if strict and sums.size and int(sums.max()) > total * qmax:
        raise ConfigurationError("a sum exceeds total_weight * (2^bits - 1): wrong weight or wrapped sum")
    out = np.empty(sums.shape[0], dtype=np.float64)
    dequantise_kernel(np.ascontiguousarray(sums), float(total), c, np.uint64(qmax), out)
    return out
