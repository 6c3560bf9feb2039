"""Injected randomness. Protocol and crypto code never call a global RNG; they take a RandomSource.

`SystemRandom` reads the operating system's CSPRNG. `DeterministicRandom` is an AES-256-CTR stream from a
seed, for reproducible simulations, golden transcripts and tests; it is not for production secrets.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Protocol, runtime_checkable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.crypto.secret import NoPickle


@runtime_checkable
class RandomSource(Protocol):
    """A source of cryptographically strong random bytes."""

    def random_bytes(self, n: int) -> bytes:
        """Return n uniformly random bytes."""
        ...


class SystemRandom(NoPickle):
    """The operating system's CSPRNG (os.urandom)."""

    __slots__ = ()

    def random_bytes(self, n: int) -> bytes:
        """Return n random bytes from the OS."""
        return os.urandom(n)

    def __repr__(self) -> str:
        return "SystemRandom()"


class DeterministicRandom(NoPickle):
    """A reproducible AES-256-CTR byte stream keyed by SHA-256(label || seed). For tests and simulation."""

    __slots__ = ("_enc",)

    def __init__(self, seed: int | bytes, label: bytes = b"secagg/v1/deterministic-random") -> None:
        seed_bytes = seed if isinstance(seed, bytes) else int(seed).to_bytes(16, "big", signed=False)
        key = hashlib.sha256(label + b"\x00" + seed_bytes).digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def random_bytes(self, n: int) -> bytes:
        """Return the next n bytes of the stream."""
        return self._enc.update(bytes(n))

    def fill(self, out: np.ndarray) -> None:
        """Overwrite out (a writable uint8 array) with the next len(out) bytes of the stream, in place.

        The same bytes random_bytes(len(out)) would return, without allocating them (bulk randomness).
        """
        n = out.shape[0]
        done = 0
        # update_into wants room for len(in) + 15 bytes: write in place while that room exists in out, and go
        # through a scratch buffer only for the tail
        while n - done >= _FILL_BLOCK + 16:
            self._enc.update_into(_ZEROS, out[done : done + _FILL_BLOCK + 16].data)
            done += _FILL_BLOCK
        while done < n:
            m = min(n - done, _FILL_BLOCK)
            tmp = _fill_buffer()
            self._enc.update_into(_ZEROS[:m], tmp)
            out[done : done + m] = np.frombuffer(tmp, dtype=np.uint8, count=m)
            done += m

    def fork(self, label: bytes) -> DeterministicRandom:
        """A child stream, independent of this one, named by label (used to give each party its own)."""
        return DeterministicRandom(self.random_bytes(32), label=b"secagg/v1/fork/" + label)

    def __repr__(self) -> str:
        return "DeterministicRandom(<seeded>)"


def random_uint32(rng: RandomSource, n: int) -> np.ndarray:
    """n uniform uint32 words from rng (used for stochastic rounding): the next 4n bytes, little-endian."""
    if isinstance(rng, DeterministicRandom):
        out = np.empty(n, dtype="<u4")
        rng.fill(out.view(np.uint8))
        return out.astype(np.uint32, copy=False)
    return np.frombuffer(bytearray(rng.random_bytes(4 * n)), dtype="<u4").astype(np.uint32, copy=False)


_FILL_BLOCK = 1 << 18
_ZEROS = memoryview(bytes(_FILL_BLOCK))
_FILL_LOCAL = threading.local()


def _fill_buffer() -> bytearray:
    """A per-thread scratch buffer for DeterministicRandom.fill (keystream is copied out, then overwritten)."""
    buf: bytearray | None = getattr(_FILL_LOCAL, "buf", None)
    if buf is None:
        buf = bytearray(_FILL_BLOCK + 16)
        _FILL_LOCAL.buf = buf
    return buf
