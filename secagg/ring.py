"""The ring Z_M in which masked, quantised updates are summed.

M is 2^32 (default), 2^64, any other power of two 2^k (k <= 64), or any integer 2 <= M < 2^63 ("general" M,
used with rejection-sampled masks). Elements are numpy uint32 when M <= 2^32, else uint64. `Ring` is a
small frozen value; its helpers validate their inputs and dispatch to the kernels in `secagg.native.ring`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from secagg.errors import ConfigurationError
from secagg.native import ring as _kernels  # type: ignore[import-not-found, unused-ignore]

__all__ = ["RING_2_32", "RING_2_64", "Ring"]


@dataclass(frozen=True, slots=True)
class Ring:
    """Z_M with numpy storage: `modulus`, `dtype`, `is_power_of_two`, `bits` (= bit length of M - 1)."""

    modulus: int = 1 << 32
    dtype: np.dtype[Any] = field(init=False, repr=False, compare=False)
    is_power_of_two: bool = field(init=False, repr=False, compare=False)
    bits: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = self.modulus
        if not _kernels.is_valid_modulus(m):
            raise ConfigurationError("ring modulus must be 2^k (1 <= k <= 64) or an integer 2 <= M < 2^63")
        object.__setattr__(self, "dtype", _kernels.dtype_for_modulus(m))
        object.__setattr__(self, "is_power_of_two", m & (m - 1) == 0)
        object.__setattr__(self, "bits", (m - 1).bit_length())

    @property
    def word_bytes(self) -> int:
        """Bytes per stored element (4 or 8)."""
        return int(self.dtype.itemsize)

    def zeros(self, n: int) -> NDArray[Any]:
        """A zero vector of n ring elements."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError("length must be a non-negative int")
        return np.zeros(n, dtype=self.dtype)

    def add_into(self, acc: NDArray[Any], x: NDArray[Any]) -> None:
        """acc = (acc + x) mod M, in place."""
        _kernels.add_into(acc, x, self.modulus)

    def sub_into(self, acc: NDArray[Any], x: NDArray[Any]) -> None:
        """acc = (acc - x) mod M, in place."""
        _kernels.sub_into(acc, x, self.modulus)

    def neg(self, x: NDArray[Any]) -> NDArray[Any]:
        """A new array holding (-x) mod M."""
        out = np.zeros(np.shape(x), dtype=self.dtype)
        _kernels.sub_into(out, x, self.modulus)
        return out

    def reduce(self, values: Iterable[int] | NDArray[Any]) -> NDArray[Any]:
        """Map integers (Python ints of any size and sign, or an integer array) to ring elements mod M."""
        m = self.modulus
        if isinstance(values, np.ndarray):
            if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer):
                raise ConfigurationError("reduce takes integers")
            arr = values.reshape(-1)
            if self.is_power_of_two:
                # Casting a signed array to uint64 is reduction mod 2^64 (two's complement); then mask.
                wide = arr.astype(np.uint64) & np.uint64(m - 1)
            elif np.issubdtype(arr.dtype, np.signedinteger):
                wide = np.mod(arr.astype(np.int64), np.int64(m)).astype(np.uint64)
            else:
                wide = np.mod(arr.astype(np.uint64), np.uint64(m))
            return wide.astype(self.dtype).reshape(values.shape)
        items = list(values)
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ConfigurationError("reduce takes integers")
        return np.array([int(v) % m for v in items], dtype=self.dtype)

    def __repr__(self) -> str:
        return f"Ring(modulus={self.modulus})"


RING_2_32 = Ring(1 << 32)
RING_2_64 = Ring(1 << 64)
