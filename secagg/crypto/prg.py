"""Mask PRG: expands a 32-byte seed into a vector of ring elements, with random access.

Specification (another implementation must reproduce `protocols/vectors/prg.json` from this text):

- Key: ``K = HKDF-SHA256(ikm = seed, salt = empty, info, length = 32)`` with
  ``info = b"secagg/v1/prg/aes256ctr"`` when M is a power of two and ``b"secagg/v1/prg/aes256-rejection"``
  otherwise.
- M = 2^k: the AES-256-CTR keystream under K, whose counter block for block n is the 128-bit big-endian
  integer n (the first block is 0). With w = 4 bytes when M <= 2^32 and w = 8 otherwise, element i is the
  little-endian w-byte word at byte offset w*i of the keystream, reduced mod M (masked to k bits).
- Other M (2 <= M < 2^63): rejection sampling with random access. Let L = bitlength(M - 1). For element i
  and j = 0, 1, 2, ...: encrypt the block ``BE64(j) || BE64(i)`` with AES-256-ECB under K; the 16 output
  bytes are two little-endian uint64 candidates (bytes 0..7 first, then 8..15), each masked to its low L
  bits. Element i is the first candidate < M (each is accepted with probability > 1/2).

Speed: `MaskExpander.accumulate` writes the keystream chunk by chunk into one reused buffer with
`update_into`, views it as words without copying and adds it into the accumulator with the ring kernels
(power-of-two kernels reduce raw words themselves), so memory stays O(chunk). `accumulate_many` (and the
`MaskStreams` it is built on) opens several masks side by side and adds all of them to one chunk of the
accumulator before moving to the next, so the accumulator crosses memory once rather than once per mask.
Masks never come from numpy.random or random.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from secagg.crypto.kdf import hkdf_sha256
from secagg.crypto.secret import NoPickle, SecretBytes
from secagg.encoding import domain
from secagg.errors import ConfigurationError
from secagg.native import ring as _kernels  # type: ignore[import-not-found, unused-ignore]
from secagg.ring import Ring

__all__ = [
    "DEFAULT_CHUNK_ELEMS",
    "INFO_CTR",
    "INFO_REJECTION",
    "SEED_BYTES",
    "MaskExpander",
    "MaskStreams",
    "derive_prg_key",
    "expand_mask",
]

SEED_BYTES = 32
INFO_CTR = domain("prg", "aes256ctr")
INFO_REJECTION = domain("prg", "aes256-rejection")

DEFAULT_CHUNK_ELEMS = 1 << 16
"""Elements per keystream chunk (256 KiB of keystream for uint32). bench/masking.py: 2^16 to 2^18 are within
noise of each other and about 3% above the CTR + add floor; 2^14 costs about 10% more (per-call overhead)."""

_BLOCK = 16
_PAD = _BLOCK - 1  # pyca's update_into wants len(out) >= len(in) + block_size - 1
_LITTLE_ENDIAN = sys.byteorder == "little"


def derive_prg_key(seed: SecretBytes, ring: Ring) -> SecretBytes:
    """The AES-256 key of the mask PRG for this seed and ring kind (CTR or rejection sampling)."""
    _check_seed(seed)
    info = INFO_CTR if ring.is_power_of_two else INFO_REJECTION
    return SecretBytes(hkdf_sha256(seed.expose_secret(), info=info, length=32), label="prg-key")


def _check_seed(seed: SecretBytes) -> None:
    if not isinstance(seed, SecretBytes) or len(seed) != SEED_BYTES:
        raise ConfigurationError("mask seed must be a 32-byte SecretBytes")


def _check_index(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise ConfigurationError(f"{name} must be a non-negative int")
    if int(value) >= 1 << 62:
        raise ConfigurationError(f"{name} is out of range")
    return int(value)


class MaskExpander(NoPickle):
    """Expands and accumulates masks for one ring, owning reused buffers (not thread-safe: one per thread)."""

    __slots__ = (
        "_chunk",
        "_ecb_cands",
        "_ecb_in",
        "_ecb_out",
        "_ks",
        "_ks_bytes",
        "_ks_words",
        "_pending",
        "_positions",
        "_ring",
        "_words",
        "_zeros",
    )

    def __init__(self, ring: Ring, chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> None:
        if not isinstance(ring, Ring):
            raise ConfigurationError("MaskExpander needs a Ring")
        if isinstance(chunk_elems, bool) or not isinstance(chunk_elems, int) or not 1 <= chunk_elems <= 1 << 24:
            raise ConfigurationError("chunk_elems must be an int in [1, 2^24]")
        self._ring = ring
        self._chunk = chunk_elems
        if ring.is_power_of_two:
            nbytes = chunk_elems * ring.word_bytes
            self._zeros = memoryview(bytes(nbytes + _BLOCK))
            self._ks = bytearray(nbytes + _PAD + 1)
            self._ks_bytes: NDArray[np.uint8] = np.frombuffer(self._ks, dtype=np.uint8)
            self._ks_words: NDArray[Any] = np.frombuffer(
                self._ks, dtype=ring.dtype.newbyteorder("<"), count=chunk_elems
            )
            self._ecb_in = np.zeros(0, dtype=np.uint8)
            self._ecb_out = bytearray(0)
            self._ecb_cands = np.zeros(0, dtype="<u8")
            self._pending = np.zeros(0, dtype=np.int64)
            self._positions = self._pending
            self._words = np.empty(0, dtype=ring.dtype)
        else:
            self._zeros = memoryview(b"")
            self._ks = bytearray(0)
            self._ks_bytes = np.frombuffer(self._ks, dtype=np.uint8)
            self._ks_words = np.empty(0, dtype=ring.dtype)
            self._ecb_in = np.zeros(_BLOCK * chunk_elems, dtype=np.uint8)
            self._ecb_out = bytearray(_BLOCK * chunk_elems + _PAD + 1)
            self._ecb_cands = np.frombuffer(self._ecb_out, dtype="<u8", count=2 * chunk_elems)
            self._pending = np.empty(chunk_elems, dtype=np.int64)
            self._positions = np.arange(chunk_elems, dtype=np.int64)
            self._words = np.empty(chunk_elems, dtype=ring.dtype)

    @property
    def ring(self) -> Ring:
        """The ring this expander produces elements of."""
        return self._ring

    @property
    def chunk_elems(self) -> int:
        """Elements generated per internal chunk."""
        return self._chunk

    def expand(self, seed: SecretBytes, start: int, count: int) -> NDArray[Any]:
        """mask[start : start + count] as a new ring array."""
        count = _check_index(count, "count")
        out = np.zeros(count, dtype=self._ring.dtype)
        self.accumulate(out, seed, +1, start)
        return out

    def accumulate(self, acc: NDArray[Any], seed: SecretBytes, sign: int = +1, start: int = 0) -> None:
        """acc = (acc + sign * mask[start : start + len(acc)]) mod M, in place; sign is +1 or -1."""
        self._check_acc(acc)
        with MaskStreams(self, ((seed, sign),), start, _direct=True) as streams:
            streams.add_next(acc)

    def accumulate_many(self, acc: NDArray[Any], masks: Iterable[tuple[SecretBytes, int]], start: int = 0) -> None:
        """acc = (acc + sum of sign * mask(seed)[start : start + len(acc)]) mod M, in place, for (seed, sign) in
        masks: the same result as one `accumulate` per mask, but block by block, every mask added to a block
        while it is in cache (the accumulator is read and written once, not once per mask)."""
        self._check_acc(acc)
        with self.streams(masks, start) as streams:
            streams.add_next(acc)

    def streams(self, masks: Iterable[tuple[SecretBytes, int]], start: int = 0) -> MaskStreams:
        """The masks (seed, sign) opened side by side at element `start`, to be added block after block with
        `MaskStreams.add_next` (close it, or use it as a context manager, to wipe the keystream buffers)."""
        return MaskStreams(self, masks, start)

    def _check_acc(self, acc: NDArray[Any]) -> None:
        ring = self._ring
        if not isinstance(acc, np.ndarray) or acc.dtype != ring.dtype or acc.ndim != 1:
            raise ConfigurationError(f"acc must be a 1-D {ring.dtype.name} array for this ring")
        if not acc.flags.c_contiguous or not acc.flags.writeable:
            raise ConfigurationError("acc must be C-contiguous and writeable")

    # -- power-of-two M: AES-256-CTR keystream words ------------------------------------------------------

    def _open_ctr(self, key: SecretBytes, start: int) -> Any:
        """A CTR encryptor positioned at element `start` (the bytes before it in its block are skipped)."""
        first_byte = start * self._ring.word_bytes
        counter = (first_byte // _BLOCK).to_bytes(_BLOCK, "big")
        enc = Cipher(algorithms.AES(key.expose_secret()), modes.CTR(counter)).encryptor()
        skip = first_byte % _BLOCK
        if skip:
            enc.update_into(self._zeros[:skip], self._ks)
        return enc

    def _add_ctr(self, acc: NDArray[Any], streams: list[tuple[Any, Any, Any]]) -> None:
        """Add the next len(acc) keystream words of every stream, one chunk of acc at a time."""
        w = self._ring.word_bytes
        ks, words, zeros, chunk = self._ks, self._ks_words, self._zeros, self._chunk
        n = acc.shape[0]
        for pos in range(0, n, chunk):
            m = min(chunk, n - pos)
            seg = acc[pos : pos + m]
            z = zeros[: m * w]
            view = words[:m] if _LITTLE_ENDIAN else None
            for enc, kernel, arg in streams:
                enc.update_into(z, ks)
                kernel(seg, view if view is not None else words[:m].astype(self._ring.dtype), arg)

    # -- other M: rejection sampling from AES-256-ECB blocks BE64(j) || BE64(i) ----------------------------

    def _open_ecb(self, key: SecretBytes) -> Any:
        # ECB here is a block-wise PRF on distinct counter blocks (j, i), not a mode for encrypting data.
        return Cipher(algorithms.AES(key.expose_secret()), modes.ECB()).encryptor()  # noqa: S305

    def _add_rejection(self, acc: NDArray[Any], streams: list[tuple[Any, Any, Any]], first: int) -> None:
        """Add elements first .. first + len(acc) - 1 of every stream's mask, one chunk of acc at a time."""
        words = self._words
        n = acc.shape[0]
        for pos in range(0, n, self._chunk):
            m = min(self._chunk, n - pos)
            seg = acc[pos : pos + m]
            for ecb, kernel, arg in streams:
                self._sample_rejection(ecb, first + pos, m, words[:m])
                kernel(seg, words[:m], arg)

    def _wipe(self, ks_bytes: int) -> None:
        """Leave no mask material behind in the reused buffers."""
        if self._ring.is_power_of_two:
            self._ks_bytes[:ks_bytes].fill(0)
        else:
            self._words.fill(0)
            np.frombuffer(self._ecb_out, dtype=np.uint8).fill(0)

    def _sample_rejection(self, ecb: Any, first: int, m: int, out: NDArray[Any]) -> None:
        """Fill out with elements first .. first+m-1; round j draws only for still-rejected elements."""
        modulus = np.uint64(self._ring.modulus)
        low_bits = np.uint64((1 << self._ring.bits) - 1)
        pending = self._pending
        pending[:m] = self._positions[:m]  # positions in out still without an accepted candidate
        blocks, cands = self._ecb_in, self._ecb_cands
        k = m
        j = 0
        while k:  # terminates: each candidate is accepted with probability > 1/2
            _kernels.fill_rejection_blocks(np.uint64(j), np.uint64(first), pending, k, blocks)
            ecb.update_into(blocks[: _BLOCK * k], self._ecb_out)
            words = cands[: 2 * k] if _LITTLE_ENDIAN else cands[: 2 * k].astype(np.uint64)
            k = _kernels.select_rejection(words, low_bits, modulus, pending, k, out)
            j += 1


class MaskStreams(NoPickle):
    """Several masks (seed, sign) of one expander, open side by side at one element position.

    `add_next(block)` adds the next len(block) elements of every mask into block and moves on, so a caller can
    fill a block of its vector and mask it while the block is still in cache. Holds AES contexts (key
    material) until `close` (or the end of a `with` block), which also wipes the expander's buffers.
    """

    __slots__ = ("_expander", "_per_mask", "_position", "_streams", "_used")

    def __init__(
        self, expander: MaskExpander, masks: Iterable[tuple[SecretBytes, int]], start: int, *, _direct: bool = False
    ) -> None:
        ring = expander.ring
        start = _check_index(start, "start")
        masks = list(masks)  # iterated twice below
        checked: list[tuple[SecretBytes, int]] = []
        for seed, sign in masks:
            if sign not in (1, -1) or isinstance(sign, bool):
                raise ConfigurationError("sign must be +1 or -1")
            checked.append((derive_prg_key(seed, ring), sign))
        self._expander: MaskExpander | None = expander
        self._position = start
        # An expander subclass that overrides `accumulate` (an instrumented or another backend) is honoured:
        # its masks are then added one `accumulate` call per mask and block.
        self._per_mask: list[tuple[SecretBytes, int]] = []
        if not _direct and type(expander).accumulate is not MaskExpander.accumulate:
            self._per_mask = [(seed, sign) for seed, sign in masks]
        self._used = (start * ring.word_bytes) % _BLOCK if ring.is_power_of_two else 0
        streams: list[tuple[Any, Any, Any]] = []
        try:
            for key, sign in checked if not self._per_mask else ():
                kernel, arg = _kernels.select_kernel(ring.modulus, sign)
                ctx = expander._open_ctr(key, start) if ring.is_power_of_two else expander._open_ecb(key)
                streams.append((ctx, kernel, arg))
        except BaseException:
            expander._wipe(self._used)
            raise
        self._streams = streams

    @property
    def position(self) -> int:
        """The element index the next `add_next` starts at."""
        return self._position

    def add_next(self, acc: NDArray[Any]) -> None:
        """acc = (acc + sum of sign * mask[position : position + len(acc)]) mod M, in place; then position moves
        past acc. For a modulus that is not a power of two, acc's elements must be < M."""
        expander = self._expander
        if expander is None:
            raise ConfigurationError("these mask streams are closed")
        expander._check_acc(acc)
        n = acc.shape[0]
        if self._per_mask:
            for seed, sign in self._per_mask:
                expander.accumulate(acc, seed, sign, self._position)
            self._position += n
            return
        if n == 0 or not self._streams:
            self._position += n
            return
        ring = expander.ring
        if ring.is_power_of_two:
            self._used = max(self._used, min(expander.chunk_elems, n) * ring.word_bytes)
            expander._add_ctr(acc, self._streams)
        else:
            if int(acc.max()) >= ring.modulus:
                raise ConfigurationError("ring elements must be < modulus")
            expander._add_rejection(acc, self._streams, self._position)
        self._position += n

    def close(self) -> None:
        """Drop the AES contexts and wipe the expander's keystream buffers (idempotent)."""
        expander, self._expander = self._expander, None
        self._streams = []
        self._per_mask = []
        if expander is not None:
            expander._wipe(self._used)

    def __enter__(self) -> MaskStreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MaskStreams(masks={len(self._streams)}, position={self._position})"


def expand_mask(ring: Ring, seed: SecretBytes, start: int, count: int) -> NDArray[Any]:
    """Convenience: mask[start : start + count] for a ring (allocates a fresh expander)."""
    return MaskExpander(ring, chunk_elems=min(max(count, 1), DEFAULT_CHUNK_ELEMS)).expand(seed, start, count)
