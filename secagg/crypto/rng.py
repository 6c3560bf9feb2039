"""Injected randomness. Protocol and crypto code never call a global RNG; they take a RandomSource.

`SystemRandom` reads the operating system's CSPRNG. `DeterministicRandom` is an AES-256-CTR stream from a
seed, for reproducible simulations, golden transcripts and tests; it is not for production secrets.
"""

from __future__ import annotations

import hashlib
import os
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

    def fork(self, label: bytes) -> DeterministicRandom:
        """A child stream, independent of this one, named by label (used to give each party its own)."""
        return DeterministicRandom(self.random_bytes(32), label=b"secagg/v1/fork/" + label)

    def __repr__(self) -> str:
        return "DeterministicRandom(<seeded>)"


def random_uint32(rng: RandomSource, n: int) -> np.ndarray:
    """n uniform uint32 words from rng (used for stochastic rounding)."""
    return np.frombuffer(bytearray(rng.random_bytes(4 * n)), dtype="<u4").astype(np.uint32, copy=False)
