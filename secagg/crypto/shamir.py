"""Shamir secret sharing of 32-byte secrets over GF(p), p = 2^31 - 1, vectorised with NumPy and Numba.

The scheme, precisely enough to reimplement it (known answers: protocols/vectors/shamir.json):

- Field: integers modulo p = 2^31 - 1 (a Mersenne prime). A product of two elements fits in 62 bits.
- Secret: exactly 32 bytes, read as 16 limbs of 16 bits, big-endian: limb j = 256 * b[2j] + b[2j + 1].
- Split with threshold t (1 <= t <= n) for distinct points x_1..x_n (1 <= x < p): each limb j gets its own
  polynomial f_j(X) = limb_j + a_{j,1} X + ... + a_{j,t-1} X^(t-1) over GF(p).
- Randomness: the coefficients a_{j,k} are uniform in GF(p), drawn from an injected RandomSource by
  rejection sampling: read 32-bit little-endian words from the byte stream, clear the top bit (w & 0x7fffffff)
  and reject the value p itself; accepted values are used in stream order. For a call sharing S secrets the
  order is secret s = 0..S-1, then limb j = 0..15, then degree k = 1..t-1 (so sharing secrets one by one
  from one stream gives the same shares as sharing them together). t = 1 draws nothing.
- Share for x: (x, y_0..y_15) with y_j = f_j(x). Wire encoding, 68 bytes: u32 big-endian x, then the 16
  y_j as u32 big-endian. Decoding refuses any other length (EncodingError) and x = 0, x >= p or y_j >= p
  (ShamirError).
- Reconstruct from t shares with distinct x: f_j(0) = sum_i lambda_i y_{i,j} mod p with Lagrange
  coefficients lambda_i = prod_{m != i} x_m / (x_m - x_i) mod p, cached per set of x's. Every recovered
  limb must be < 2^16, else the shares are inconsistent (ShamirError): a share with random garbage in it
  turns each limb into a uniform field element, which lands below 2^16 with probability 2^-15, so this is
  a cheap first filter. It is not a proof of integrity: a small or deliberate change (a bit flip when the
  Lagrange coefficients are small, or a shift crafted as k / lambda_i) keeps the limbs in range, so callers
  that face malicious shares must check the result themselves (a reconstructed key against its
  advertised public key) and use `reconstruct_verified`.
- Robust reconstruction (`reconstruct_verified`): with m > t shares, t-subsets of share indices are tried in
  colexicographic order (first the first t; then subsets of the first t + 1, dropping index t - 1, t - 2,
  ..., 0; then subsets of the first t + 2, ...), up to max_attempts, until the limbs are in range and the
  caller's verify() accepts the secret. Later shares are used only when earlier ones cannot work.

Shares are secret material: `Share` has a redacted repr and refuses to be pickled; secrets go in and come out
as SecretBytes. Errors name what failed (indices, counts), never share values or secret bytes.
"""

from __future__ import annotations

import functools
import operator
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from secagg.crypto.rng import RandomSource
from secagg.crypto.secret import NoPickle, SecretBytes
from secagg.errors import EncodingError, ShamirError
from secagg.native import field  # type: ignore[import-not-found, unused-ignore]

P = (1 << 31) - 1
"""The field modulus 2^31 - 1 (equal to secagg.native.field.P)."""
SECRET_BYTES = 32
"""Length of a shared secret."""
LIMBS = 16
"""16-bit limbs per secret (each shared with its own polynomial)."""
LIMB_BOUND = 1 << 16
"""Every reconstructed limb must be below this, else the shares are inconsistent."""
SHARE_BYTES = 4 + 4 * LIMBS
"""Length of an encoded share: u32 x, then 16 u32 y values."""
LAGRANGE_CACHE_SIZE = 512
"""How many x-sets keep their Lagrange coefficients cached."""

_MASK31 = np.uint32(0x7FFFFFFF)
_SHARE_STRUCT = struct.Struct(f">{1 + LIMBS}I")  # the canonical encoding: u32 BE x, then 16 x u32 BE y

U32Array = npt.NDArray[np.uint32]


@dataclass(frozen=True, repr=False)
class Share(NoPickle):
    """One party's share of a 32-byte secret: the point x and the 16 limb values y_j = f_j(x)."""

    x: int
    y: tuple[int, ...]

    ENCODED_LEN: ClassVar[int] = SHARE_BYTES

    def __post_init__(self) -> None:
        object.__setattr__(self, "x", _check_x(self.x))
        y = self.y
        if type(y) is not tuple or not all(type(v) is int for v in y):
            try:
                y = tuple(operator.index(v) for v in y)
            except TypeError:
                raise ShamirError("share values must be a sequence of integers") from None
            object.__setattr__(self, "y", y)
        if len(y) != LIMBS:
            raise ShamirError(f"a share has exactly {LIMBS} values")
        if min(y) < 0 or max(y) >= P:
            raise ShamirError("share value outside the field")

    def __repr__(self) -> str:
        return f"Share(x={self.x}, y=<{LIMBS} values redacted>)"

    __str__ = __repr__

    def to_bytes(self) -> bytes:
        """The canonical 68-byte encoding: u32 BE x, then 16 x u32 BE y."""
        return _SHARE_STRUCT.pack(self.x, *self.y)

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Decode a share; wrong length is EncodingError, x = 0, x >= p or y >= p is ShamirError."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) != SHARE_BYTES:
            raise EncodingError(f"a share is exactly {SHARE_BYTES} bytes")
        values = _SHARE_STRUCT.unpack(bytes(data))
        return cls(values[0], values[1:])


def split(secret: SecretBytes, xs: Sequence[int], t: int, rng: RandomSource) -> list[Share]:
    """Share one 32-byte secret at the points xs with threshold t: any t shares recover it."""
    ys = split_many([secret], xs, t, rng)[0]
    return [Share(x, tuple(row)) for x, row in zip(xs, ys.tolist(), strict=True)]


def split_many(secrets: Sequence[SecretBytes], xs: Sequence[int], t: int, rng: RandomSource) -> U32Array:
    """Share S secrets at the same points: returns y values of shape (S, n, 16), uint32, in [0, p)."""
    xs_t = _check_xs(xs)
    _check_threshold(t, len(xs_t))
    n_sec = len(secrets)
    buf = bytearray(SECRET_BYTES * n_sec)
    for s, secret in enumerate(secrets):
        if not isinstance(secret, SecretBytes):
            raise ShamirError("secrets must be SecretBytes")
        if len(secret) != SECRET_BYTES:
            raise ShamirError(f"a secret is exactly {SECRET_BYTES} bytes")
        buf[SECRET_BYTES * s : SECRET_BYTES * (s + 1)] = secret.expose_secret()
    coeffs = np.empty((n_sec, LIMBS, t), dtype=np.uint32)
    try:
        coeffs[:, :, 0] = np.frombuffer(buf, dtype=">u2").reshape(n_sec, LIMBS)
        coeffs[:, :, 1:] = random_field_elements(rng, n_sec * LIMBS * (t - 1)).reshape(n_sec, LIMBS, t - 1)
        out: U32Array = field.horner_eval(coeffs, np.array(xs_t, dtype=np.uint32))
    finally:
        # Best effort: the polynomials determine the secrets; do not leave them in freed memory.
        coeffs.fill(0)
        buf[:] = bytes(len(buf))
    return out


def random_field_elements(rng: RandomSource, count: int) -> U32Array:
    """count uniform elements of GF(p): 32-bit LE words masked to 31 bits, the value p rejected."""
    out = np.empty(count, dtype=np.uint32)
    filled = 0
    while filled < count:
        need = count - filled
        raw = rng.random_bytes(4 * need)
        if len(raw) != 4 * need:
            raise ShamirError("random source returned the wrong number of bytes")
        words = np.frombuffer(raw, dtype="<u4") & _MASK31
        good = words[words != P]
        out[filled : filled + good.size] = good
        filled += good.size
    return out


def reconstruct(shares: Sequence[Share], t: int) -> SecretBytes:
    """Recover the secret from the first t shares (ShamirError if fewer, or if the limbs are out of range)."""
    _check_shares(shares, t)
    used = shares[:t]
    ys = np.array([s.y for s in used], dtype=np.uint32).reshape(1, t, LIMBS)
    return reconstruct_many([s.x for s in used], ys)[0]


def reconstruct_many(xs: Sequence[int], ys: npt.ArrayLike) -> list[SecretBytes]:
    """Recover S secrets shared at the same points xs; ys[s, i, j] is limb j of secret s at xs[i].

    ys has shape (S, t, 16) with t = len(xs). Raises ShamirError naming the secrets whose limbs are out of
    range (all or nothing: a caller wanting the others falls back to reconstruct_verified per secret).
    """
    xs_t = _check_xs(xs)
    arr = _check_ys(ys, len(xs_t))
    limbs = _combine(xs_t, arr)
    bad = np.flatnonzero((limbs >= LIMB_BOUND).any(axis=1))
    if bad.size:
        shown = ", ".join(str(int(i)) for i in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise ShamirError(f"shares inconsistent for {bad.size} secret(s) (indices {shown})")
    return _limbs_to_secrets(limbs)


def reconstruct_verified(
    shares: Sequence[Share],
    t: int,
    verify: Callable[[SecretBytes], bool],
    max_attempts: int = 64,
) -> tuple[SecretBytes, tuple[int, ...]]:
    """Recover a secret that verify() accepts, trying t-subsets in colex order; returns it and the x's used.

    Survives corrupted shares when enough good ones arrived; never returns a secret that failed the limb
    range check or verify(). Raises ShamirError when no subset within max_attempts works.
    """
    _check_shares(shares, t)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ShamirError("max_attempts must be a positive integer")
    xs_all = [s.x for s in shares]
    ys_all = np.array([s.y for s in shares], dtype=np.uint32)
    for attempt, idx in enumerate(_colex_subsets(len(shares), t)):
        if attempt >= max_attempts:
            break
        xs_used = tuple(xs_all[i] for i in idx)
        limbs = _combine(xs_used, np.ascontiguousarray(ys_all[list(idx)]).reshape(1, t, LIMBS))
        if (limbs >= LIMB_BOUND).any():
            continue
        secret = _limbs_to_secrets(limbs)[0]
        if verify(secret):
            return secret, xs_used
    raise ShamirError("no consistent subset of shares found within max_attempts")


def lagrange_coefficients(xs: Sequence[int]) -> U32Array:
    """Lagrange coefficients at 0 for the points xs, in the order given (cached per set of points)."""
    xs_t = _check_xs(xs)
    order = sorted(range(len(xs_t)), key=xs_t.__getitem__)
    cached = _lagrange_sorted(tuple(xs_t[i] for i in order))
    out = np.empty(len(xs_t), dtype=np.uint32)
    out[order] = cached
    return out


@functools.lru_cache(maxsize=LAGRANGE_CACHE_SIZE)
def _lagrange_sorted(xs: tuple[int, ...]) -> U32Array:
    """lambda_i = prod_{j != i} x_j / (x_j - x_i) = (prod_j x_j) / (x_i prod_{j != i} (x_j - x_i)) mod p."""
    t = len(xs)
    x = np.array(xs, dtype=np.uint64)
    diff = (x[None, :] + np.uint64(P) - x[:, None]) % np.uint64(P)  # diff[i, j] = x_j - x_i
    np.fill_diagonal(diff, x)
    den = np.ones(t, dtype=np.uint64)
    for j in range(t):
        den = den * diff[:, j] % np.uint64(P)
    num = 1
    for v in xs:
        num = num * v % P
    lam = np.array([num * pow(int(d), P - 2, P) % P for d in den], dtype=np.uint32)
    lam.flags.writeable = False
    return lam


def _combine(xs: tuple[int, ...], ys: U32Array) -> U32Array:
    lam = lagrange_coefficients(xs)
    limbs: U32Array = field.lagrange_combine(lam, ys)
    return limbs


def _limbs_to_secrets(limbs: U32Array) -> list[SecretBytes]:
    raw = limbs.astype(">u2").tobytes()
    out = [
        SecretBytes(raw[SECRET_BYTES * s : SECRET_BYTES * (s + 1)], label="shamir-secret")
        for s in range(limbs.shape[0])
    ]
    limbs.fill(0)
    return out


def _colex_subsets(m: int, t: int) -> Iterator[tuple[int, ...]]:
    """All t-subsets of range(m) in colexicographic order, lazily; the first is (0, ..., t - 1)."""
    c = list(range(t))
    while True:
        yield tuple(c)
        j = 0
        while j < t - 1 and c[j] + 1 == c[j + 1]:
            j += 1
        if t == 0 or c[j] + 1 >= (c[j + 1] if j < t - 1 else m):
            return
        c[j] += 1
        c[:j] = range(j)


def _check_x(x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise ShamirError("x must be an integer")
    v = int(x)
    if v == 0:
        raise ShamirError("x = 0 would reveal the secret")
    if v < 0 or v >= P:
        raise ShamirError("x must be in [1, p)")
    return v


def _check_xs(xs: Sequence[int]) -> tuple[int, ...]:
    if len(xs) >= P:
        raise ShamirError("too many points for the field")
    out = tuple(_check_x(x) for x in xs)
    if len(set(out)) != len(out):
        raise ShamirError("duplicate x")
    return out


def _check_threshold(t: int, n: int) -> None:
    if isinstance(t, bool) or not isinstance(t, int):
        raise ShamirError("threshold must be an integer")
    if t < 1:
        raise ShamirError("threshold must be at least 1")
    if t > n:
        raise ShamirError("threshold larger than the number of shares")


def _check_shares(shares: Sequence[Share], t: int) -> None:
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ShamirError("threshold must be a positive integer")
    for s in shares:
        if not isinstance(s, Share):
            raise ShamirError("expected Share objects")
    if len(shares) < t:
        raise ShamirError(f"need {t} shares, got {len(shares)}")
    xs = [s.x for s in shares]
    if len(set(xs)) != len(xs):
        raise ShamirError("duplicate x")


def _check_ys(ys: npt.ArrayLike, t: int) -> U32Array:
    arr = np.asarray(ys)
    if arr.ndim != 3 or arr.shape[1] != t or arr.shape[2] != LIMBS:
        raise ShamirError(f"ys must have shape (S, {t}, {LIMBS})")
    if t == 0:
        raise ShamirError("need at least one share")
    if arr.dtype.kind not in "ui":
        raise ShamirError("ys must be an integer array")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= P):
        raise ShamirError("share value outside the field")
    return np.ascontiguousarray(arr, dtype=np.uint32)
