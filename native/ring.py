"""In-place ring arithmetic kernels: acc = (acc + x) mod M and acc = (acc - x) mod M.

Elements are uint32 when M <= 2^32, else uint64. Two families of kernels:

- ``*_pow2_*`` for M = 2^k (k = 1..64), given ``mask = M - 1``. ``x`` may be any word (it is reduced by the
  mask, since (a + x) mod 2^k = (a + (x mod 2^k)) mod 2^k), so raw keystream words can be added directly.
- ``*_mod_*`` for any other M (M < 2^63 for uint64): inputs must already be < M; one conditional
  subtraction (or addition) reduces the result. No intermediate ever overflows uint64.

Every kernel is written so that it also runs unchanged, without warnings, under NUMBA_DISABLE_JIT=1
(no unsigned overflow anywhere), and has a plain NumPy twin ``<kernel>_reference`` computed with exact
Python integers. `add_into` / `sub_into` are the validated, typed entry points.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import int64, uint8, uint32, uint64, void
from numpy.typing import NDArray

from secagg.errors import ConfigurationError

__all__ = [
    "MAX_GENERAL_MODULUS",
    "add_into",
    "add_mod_u32",
    "add_mod_u32_reference",
    "add_mod_u64",
    "add_mod_u64_reference",
    "add_pow2_u32",
    "add_pow2_u32_reference",
    "add_pow2_u64",
    "add_pow2_u64_reference",
    "dtype_for_modulus",
    "fill_rejection_blocks",
    "fill_rejection_blocks_reference",
    "is_valid_modulus",
    "select_kernel",
    "select_rejection",
    "select_rejection_reference",
    "sub_into",
    "sub_mod_u32",
    "sub_mod_u32_reference",
    "sub_mod_u64",
    "sub_mod_u64_reference",
    "sub_pow2_u32",
    "sub_pow2_u32_reference",
    "sub_pow2_u64",
    "sub_pow2_u64_reference",
]

MAX_GENERAL_MODULUS = 1 << 63
"""A modulus that is not a power of two must be below this (so a + b never overflows uint64)."""

_ONE = np.uint64(1)
# The added vector may be read-only (e.g. a chunk decoded in place from a received message).
_RO_U32 = numba.types.Array(uint32, 1, "C", readonly=True)
_RO_U64 = numba.types.Array(uint64, 1, "C", readonly=True)

# ---------------------------------------------------------------------------------------------- kernels


@numba.njit([void(uint32[::1], uint32[::1], uint32), void(uint32[::1], _RO_U32, uint32)], cache=True, nogil=True)
def add_pow2_u32(acc: Any, x: Any, mask: Any) -> None:
    """acc = (acc + x) & mask on uint32 (M = mask + 1 <= 2^32 a power of two); x need not be reduced."""
    # A uint32 mask lets LLVM narrow the widened sum back to 32-bit SIMD lanes.
    for i in range(acc.shape[0]):
        acc[i] = np.uint32((np.uint64(acc[i]) + np.uint64(x[i])) & np.uint64(mask))


@numba.njit([void(uint32[::1], uint32[::1], uint32), void(uint32[::1], _RO_U32, uint32)], cache=True, nogil=True)
def sub_pow2_u32(acc: Any, x: Any, mask: Any) -> None:
    """acc = (acc - x) & mask on uint32 (M = mask + 1 <= 2^32 a power of two); x need not be reduced."""
    for i in range(acc.shape[0]):
        # 2^32 - x[i] >= 1, so the sum stays positive and below 2^33: no overflow, then reduce.
        acc[i] = np.uint32((np.uint64(acc[i]) + (np.uint64(4294967296) - np.uint64(x[i]))) & np.uint64(mask))


@numba.njit([void(uint64[::1], uint64[::1], uint64), void(uint64[::1], _RO_U64, uint64)], cache=True, nogil=True)
def add_pow2_u64(acc: Any, x: Any, mask: Any) -> None:
    """acc = (acc + x) mod (mask + 1) on uint64, M = mask + 1 <= 2^64 a power of two; x may be unreduced."""
    for i in range(acc.shape[0]):
        a = acc[i] & mask
        xm = x[i] & mask
        room = mask - xm  # a + xm wraps past mask iff a > room
        acc[i] = a - room - _ONE if a > room else a + xm


@numba.njit([void(uint64[::1], uint64[::1], uint64), void(uint64[::1], _RO_U64, uint64)], cache=True, nogil=True)
def sub_pow2_u64(acc: Any, x: Any, mask: Any) -> None:
    """acc = (acc - x) mod (mask + 1) on uint64, M = mask + 1 <= 2^64 a power of two; x may be unreduced."""
    for i in range(acc.shape[0]):
        a = acc[i] & mask
        xm = x[i] & mask
        # a < xm: result a + (M - xm) = a + (mask - xm) + 1 <= mask, no overflow.
        acc[i] = a - xm if a >= xm else a + (mask - xm) + _ONE


@numba.njit([void(uint32[::1], uint32[::1], uint64), void(uint32[::1], _RO_U32, uint64)], cache=True, nogil=True)
def add_mod_u32(acc: Any, x: Any, m: Any) -> None:
    """acc = (acc + x) mod m on uint32, for any 2 <= m <= 2^32 and inputs already < m."""
    for i in range(acc.shape[0]):
        s = np.uint64(acc[i]) + np.uint64(x[i])
        acc[i] = s - m if s >= m else s


@numba.njit([void(uint32[::1], uint32[::1], uint64), void(uint32[::1], _RO_U32, uint64)], cache=True, nogil=True)
def sub_mod_u32(acc: Any, x: Any, m: Any) -> None:
    """acc = (acc - x) mod m on uint32, for any 2 <= m <= 2^32 and inputs already < m."""
    for i in range(acc.shape[0]):
        a = np.uint64(acc[i])
        b = np.uint64(x[i])
        acc[i] = a - b if a >= b else a + (m - b)


@numba.njit([void(uint64[::1], uint64[::1], uint64), void(uint64[::1], _RO_U64, uint64)], cache=True, nogil=True)
def add_mod_u64(acc: Any, x: Any, m: Any) -> None:
    """acc = (acc + x) mod m on uint64, for any 2 <= m < 2^63 and inputs already < m (sum < 2^64)."""
    for i in range(acc.shape[0]):
        s = acc[i] + x[i]
        acc[i] = s - m if s >= m else s


@numba.njit([void(uint64[::1], uint64[::1], uint64), void(uint64[::1], _RO_U64, uint64)], cache=True, nogil=True)
def sub_mod_u64(acc: Any, x: Any, m: Any) -> None:
    """acc = (acc - x) mod m on uint64, for any 2 <= m < 2^63 and inputs already < m."""
    for i in range(acc.shape[0]):
        a = acc[i]
        b = x[i]
        acc[i] = a - b if a >= b else a + (m - b)


# Rejection-sampling helpers for the mask PRG (secagg.crypto.prg): build the AES-ECB input blocks
# BE64(j) || BE64(i) for the still-pending elements, then keep the first candidate < M of each.


@numba.njit(void(uint64, uint64, int64[::1], int64, uint8[::1]), cache=True, nogil=True)
def fill_rejection_blocks(j: Any, first: Any, pending: Any, k: Any, blocks: Any) -> None:
    """blocks[16t : 16t+16] = BE64(j) || BE64(first + pending[t]) for t < k (byte order independent)."""
    for t in range(k):
        i = first + np.uint64(pending[t])
        base = 16 * t
        for b in range(8):
            shift = np.uint64(56 - 8 * b)
            blocks[base + b] = np.uint8((j >> shift) & np.uint64(255))
            blocks[base + 8 + b] = np.uint8((i >> shift) & np.uint64(255))


@numba.njit(
    [
        int64(uint64[::1], uint64, uint64, int64[::1], int64, uint32[::1]),
        int64(uint64[::1], uint64, uint64, int64[::1], int64, uint64[::1]),
    ],
    cache=True,
    nogil=True,
)
def select_rejection(cands: Any, low_bits: Any, modulus: Any, pending: Any, k: Any, out: Any) -> Any:
    """For t < k: out[pending[t]] = first of (cands[2t], cands[2t+1]) & low_bits that is < modulus.

    Elements with no accepted candidate stay pending: they are compacted to the front of `pending`, and
    their count is returned.
    """
    left = 0
    for t in range(k):
        pos = pending[t]
        c0 = cands[2 * t] & low_bits
        if c0 < modulus:
            out[pos] = c0
            continue
        c1 = cands[2 * t + 1] & low_bits
        if c1 < modulus:
            out[pos] = c1
            continue
        pending[left] = pos
        left += 1
    return left


# ------------------------------------------------------------------------------------- reference twins
# Exact Python-integer arithmetic: slow, obviously right, independent of the kernels'
# overflow-avoiding formulas.


def _exact(acc: NDArray[Any], x: NDArray[Any], modulus: int, sign: int) -> None:
    values = [(int(u) + sign * int(v)) % modulus for u, v in zip(acc.tolist(), x.tolist(), strict=True)]
    acc[:] = np.array(values, dtype=acc.dtype)


def add_pow2_u32_reference(acc: NDArray[np.uint32], x: NDArray[np.uint32], mask: int) -> None:
    """Twin of add_pow2_u32."""
    _exact(acc, x, int(mask) + 1, +1)


def sub_pow2_u32_reference(acc: NDArray[np.uint32], x: NDArray[np.uint32], mask: int) -> None:
    """Twin of sub_pow2_u32."""
    _exact(acc, x, int(mask) + 1, -1)


def add_pow2_u64_reference(acc: NDArray[np.uint64], x: NDArray[np.uint64], mask: int) -> None:
    """Twin of add_pow2_u64."""
    _exact(acc, x, int(mask) + 1, +1)


def sub_pow2_u64_reference(acc: NDArray[np.uint64], x: NDArray[np.uint64], mask: int) -> None:
    """Twin of sub_pow2_u64."""
    _exact(acc, x, int(mask) + 1, -1)


def add_mod_u32_reference(acc: NDArray[np.uint32], x: NDArray[np.uint32], m: int) -> None:
    """Twin of add_mod_u32."""
    _exact(acc, x, int(m), +1)


def sub_mod_u32_reference(acc: NDArray[np.uint32], x: NDArray[np.uint32], m: int) -> None:
    """Twin of sub_mod_u32."""
    _exact(acc, x, int(m), -1)


def add_mod_u64_reference(acc: NDArray[np.uint64], x: NDArray[np.uint64], m: int) -> None:
    """Twin of add_mod_u64."""
    _exact(acc, x, int(m), +1)


def sub_mod_u64_reference(acc: NDArray[np.uint64], x: NDArray[np.uint64], m: int) -> None:
    """Twin of sub_mod_u64."""
    _exact(acc, x, int(m), -1)


def fill_rejection_blocks_reference(
    j: int, first: int, pending: NDArray[np.int64], k: int, blocks: NDArray[np.uint8]
) -> None:
    """Twin of fill_rejection_blocks."""
    for t in range(int(k)):
        i = int(first) + int(pending[t])
        blocks[16 * t : 16 * t + 16] = np.frombuffer(int(j).to_bytes(8, "big") + i.to_bytes(8, "big"), np.uint8)


def select_rejection_reference(
    cands: NDArray[np.uint64],
    low_bits: int,
    modulus: int,
    pending: NDArray[np.int64],
    k: int,
    out: NDArray[Any],
) -> int:
    """Twin of select_rejection."""
    pairs = cands[: 2 * k].reshape(k, 2) & np.uint64(low_bits)
    ok0 = pairs[:, 0] < np.uint64(modulus)
    ok1 = pairs[:, 1] < np.uint64(modulus)
    accepted = ok0 | ok1
    pos = pending[:k].copy()
    out[pos[accepted]] = np.where(ok0, pairs[:, 0], pairs[:, 1])[accepted].astype(out.dtype)
    rest = pos[~accepted]
    pending[: rest.size] = rest
    return int(rest.size)


# ------------------------------------------------------------------------------------ typed entry points


def is_valid_modulus(modulus: int) -> bool:
    """True for 2^k (1 <= k <= 64) and for any integer 2 <= M < 2^63."""
    if isinstance(modulus, bool) or not isinstance(modulus, int) or modulus < 2:
        return False
    is_pow2 = modulus & (modulus - 1) == 0
    return modulus < MAX_GENERAL_MODULUS or (is_pow2 and modulus <= 1 << 64)


def dtype_for_modulus(modulus: int) -> np.dtype[Any]:
    """uint32 when M <= 2^32, else uint64. Raises ConfigurationError for an unsupported modulus."""
    if not is_valid_modulus(modulus):
        raise ConfigurationError("modulus must be 2^k (k <= 64) or an integer 2 <= M < 2^63")
    return np.dtype(np.uint32) if modulus <= 1 << 32 else np.dtype(np.uint64)


def select_kernel(modulus: int, sign: int) -> tuple[Any, np.unsignedinteger[Any]]:
    """The kernel and its scalar argument (mask for powers of two, M otherwise) for this modulus and sign."""
    dtype = dtype_for_modulus(modulus)
    wide = dtype == np.uint64
    kernel: Any
    if modulus & (modulus - 1) == 0:
        kernel = (add_pow2_u64 if sign > 0 else sub_pow2_u64) if wide else (add_pow2_u32 if sign > 0 else sub_pow2_u32)
        return kernel, (np.uint64(modulus - 1) if wide else np.uint32(modulus - 1))
    kernel = (add_mod_u64 if sign > 0 else sub_mod_u64) if wide else (add_mod_u32 if sign > 0 else sub_mod_u32)
    return kernel, np.uint64(modulus)


def _check(acc: NDArray[Any], x: NDArray[Any], modulus: int) -> None:
    dtype = dtype_for_modulus(modulus)
    for name, arr in (("acc", acc), ("x", x)):
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1:
            raise ConfigurationError(f"{name} must be a 1-D {dtype.name} array for this modulus")
        if not arr.flags.c_contiguous:
            raise ConfigurationError(f"{name} must be C-contiguous")
    if not acc.flags.writeable:
        raise ConfigurationError("acc must be writeable")
    if acc.shape != x.shape:
        raise ConfigurationError("acc and x must have the same length")
    # Conditional-subtraction kernels need reduced inputs; an unreduced one would give a wrong sum.
    if modulus & (modulus - 1) != 0 and acc.size and (int(acc.max()) >= modulus or int(x.max()) >= modulus):
        raise ConfigurationError("ring elements must be < modulus")


def add_into(acc: NDArray[Any], x: NDArray[Any], modulus: int) -> None:
    """acc = (acc + x) mod modulus, in place, after checking dtype, shape and (general M) ranges."""
    _check(acc, x, modulus)
    kernel, arg = select_kernel(modulus, +1)
    kernel(acc, x, arg)


def sub_into(acc: NDArray[Any], x: NDArray[Any], modulus: int) -> None:
    """acc = (acc - x) mod modulus, in place, after checking dtype, shape and (general M) ranges."""
    _check(acc, x, modulus)
    kernel, arg = select_kernel(modulus, -1)
    kernel(acc, x, arg)
