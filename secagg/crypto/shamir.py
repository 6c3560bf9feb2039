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
- Decoding (`decode`): m >= t shares of one secret form a Reed-Solomon codeword, 16 limbs at the same x's,
  and a corrupted share may change any subset of its limbs. With e = floor((m - t) / 2), decode finds the
  secret and the x's of the corrupted shares whenever at most e shares are corrupted, and otherwise raises
  ShamirError (beyond e it may instead find a different codeword within distance e: only a crafted change of
  at least m - t + 1 - e shares does that, and the caller's verify() is what refuses it). The algorithm is
  the Berlekamp-Welch key equation in syndrome form: with u_i = 1 / prod_{l != i} (x_i - x_l), the
  syndromes S_{j,s} = sum_i u_i x_i^s y_{i,j}, s = 0..m-t-1, vanish for an uncorrupted limb and satisfy
  the linear recurrence prod_{i bad} (z - x_i) otherwise; Berlekamp-Massey finds each limb's shortest
  recurrence (its error locator), the bad set is the union over the limbs of the x's where the locators
  vanish (refused if larger than e, or if some locator has fewer such roots than its degree), the shares
  outside the bad set are checked to lie on polynomials of degree < t in every limb (their own syndromes
  are all zero), and the secret is interpolated from the first t of them. Then the limb range check and
  verify(). Vectorised over the limbs with NumPy uint64 arithmetic (reduced mod p after every product;
  matrix products as integer matmuls against 16-bit halves, exact below 2^63); m = 1000, t = 501 decodes
  in about 0.1 s.
- Robust reconstruction (`reconstruct_verified`): the first t shares; if that fails the limb check or
  verify(), decode(); if that fails too, the colexicographic t-subset search of earlier versions as a
  fallback (first the first t; then subsets of the first t + 1, dropping index t - 1, t - 2, ..., 0; then
  subsets of the first t + 2, ...), up to max_attempts subsets in all, until the limbs are in range and
  verify() accepts the secret.

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
    """Recover a secret that verify() accepts despite corrupted shares; returns it and t good x's.

    In order: the first t shares (the fast path: nothing more is done if their secret is in range and
    verifies); then decode(), returning the first t x's it did not find corrupted (its candidate is not
    shown to verify() again if it equals the rejected fast-path one); then, as a fallback for more than
    floor((m - t) / 2) corrupted shares, the colex t-subset search, max_attempts subsets in all counting the
    first. Never returns a secret that failed the limb range check or verify(); raises ShamirError when
    nothing works.
    """
    _check_shares(shares, t)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ShamirError("max_attempts must be a positive integer")
    xs_all = [s.x for s in shares]
    ys_all = np.array([s.y for s in shares], dtype=np.uint32)

    def attempt(idx: tuple[int, ...]) -> tuple[SecretBytes | None, tuple[int, ...]]:
        xs_used = tuple(xs_all[i] for i in idx)
        limbs = _combine(xs_used, np.ascontiguousarray(ys_all[list(idx)]).reshape(1, t, LIMBS))
        if (limbs >= LIMB_BOUND).any():
            limbs.fill(0)
            return None, xs_used
        return _limbs_to_secrets(limbs)[0], xs_used

    subsets = _colex_subsets(len(shares), t)
    first, xs_first = attempt(next(subsets))
    if first is not None and verify(first):
        return first, xs_first
    if len(shares) > t:
        try:
            secret, bad = decode(shares, t)
        except ShamirError:
            pass
        else:
            if (first is None or secret != first) and verify(secret):
                bad_set = set(bad)
                return secret, tuple(x for x in xs_all if x not in bad_set)[:t]
    for n_tried, idx in enumerate(subsets, start=1):
        if n_tried >= max_attempts:
            break
        candidate, xs_used = attempt(idx)
        if candidate is not None and verify(candidate):
            return candidate, xs_used
    raise ShamirError("shares not decodable and no consistent subset of shares found within max_attempts")


def decode(
    shares: Sequence[Share], t: int, verify: Callable[[SecretBytes], bool] | None = None
) -> tuple[SecretBytes, tuple[int, ...]]:
    """The secret and the x's of the shares found corrupted (ascending), from m >= t shares.

    Corrects up to e = floor((m - t) / 2) corrupted shares, whichever of their limbs are changed. Raises
    ShamirError if the shares are not within e corrupted shares of a sharing (uncorrectable), or if the
    decoded secret fails the limb range check or verify(). With more than e corrupted shares the result is
    ShamirError or, for a crafted corruption of at least m - t + 1 - e shares, a different sharing: pass
    verify() (a commitment check) wherever shares may be malicious.
    """
    _check_shares(shares, t)
    xs = tuple(s.x for s in shares)
    ys = np.array([s.y for s in shares], dtype=np.uint64).reshape(len(shares), LIMBS)
    used = np.zeros((1, t, LIMBS), dtype=np.uint32)
    try:
        bad = _decode_errors(np.array(xs, dtype=np.uint64), ys, t)
        bad_set = set(bad.tolist())
        good = [i for i in range(len(xs)) if i not in bad_set][:t]
        used[0] = ys[good]
        limbs: U32Array = field.lagrange_combine(lagrange_coefficients([xs[i] for i in good]), used)
    finally:
        # Best effort, as in split_many: share values determine the secret; do not leave them in freed memory.
        ys.fill(0)
        used.fill(0)
    if (limbs >= LIMB_BOUND).any():
        limbs.fill(0)
        raise ShamirError("decoded secret has a limb out of range (shares are not a valid sharing)")
    secret = _limbs_to_secrets(limbs)[0]
    if verify is not None and not verify(secret):
        raise ShamirError("decoded secret failed verification")
    return secret, tuple(sorted(xs[i] for i in bad_set))


# --- decoding: arithmetic on uint64 arrays of field elements -------------------------------------------------

_P64 = np.uint64(P)
_DECODE_BLOCK = 256  # Vandermonde columns / difference-matrix rows held at once
_EXACT_TERMS = 1 << 16  # sums of this many products of a field element and a 16-bit half stay below 2^63

U64Array = npt.NDArray[np.uint64]


def _uncorrectable(m: int, t: int) -> ShamirError:
    return ShamirError(f"shares uncorrectable: more than {(m - t) // 2} of {m} corrupted (t={t})")


def _decode_errors(x: U64Array, y: U64Array, t: int) -> npt.NDArray[np.intp]:
    """Indices of the corrupted shares (x: (m,), y: (m, 16), values in [0, p)); ShamirError if uncorrectable.

    On return the shares outside the result are checked to lie on polynomials of degree < t in every limb,
    and there are at most floor((m - t) / 2) indices in the result.
    """
    m = x.shape[0]
    n_syn = m - t
    none = np.empty(0, dtype=np.intp)
    if n_syn == 0:
        return none  # no redundancy: every word is a sharing
    e = n_syn // 2
    u = _inv(_products_of_differences(x, x))  # u_i = 1 / prod_{l != i} (x_i - x_l)
    syn = _power_sums(y * u[:, None] % _P64, x, n_syn)  # (16, m - t): zero for an uncorrupted limb
    if not syn.any():
        return none
    if e == 0:
        raise _uncorrectable(m, t)
    conn, lengths = _berlekamp_massey(syn, e)
    if conn is None:
        raise _uncorrectable(m, t)
    # conn[j](z) = c * prod_{i in bad_j} (1 - x_i z): its roots are the inverses of the bad x's of limb j.
    roots = _poly_eval(conn, _inv(x)) == 0  # (m, 16)
    if (roots.sum(axis=0) != lengths).any():
        raise _uncorrectable(m, t)  # a locator not splitting over the x's: no codeword within e shares
    bad_mask = roots.any(axis=1)
    bad = np.flatnonzero(bad_mask)
    if bad.size > e:
        raise _uncorrectable(m, t)
    # Re-check the shares outside the bad set: syndromes for the good points alone, with their own weights
    # u_i * prod_{c bad} (x_i - x_c) = 1 / prod_{l good, l != i} (x_i - x_l), must all vanish.
    good = np.flatnonzero(~bad_mask)
    w = u[good]
    if bad.size:
        w = w * _products_of_differences(x[good], x[bad]) % _P64
    if good.size > t and _power_sums(y[good] * w[:, None] % _P64, x[good], good.size - t).any():
        raise _uncorrectable(m, t)
    return bad


def _berlekamp_massey(syn: U64Array, max_len: int) -> tuple[U64Array | None, npt.NDArray[np.int64]]:
    """Shortest linear recurrence of each row of syn (L, N), all rows at once; (None, ...) if one is > max_len.

    Returns connection polynomials conn (L, max_len + 1), ascending coefficients, with conn[j, 0] != 0 and
    sum_i conn[j, i] syn[j, n - i] = 0 for lengths[j] <= n < N, and lengths (L,). Massey's algorithm without
    divisions (C <- b C - d B, which scales C by b != 0 and leaves its roots alone), B kept pre-shifted as
    x^k B. Polynomials are stored to degree max_len + 1: BM keeps deg x^k B <= L after any update using it,
    so a coefficient cut off here could only matter in a step that makes L > max_len, which returns None.
    """
    n_rows, n_terms = syn.shape
    width = max_len + 2
    conn = np.zeros((n_rows, width), dtype=np.uint64)
    conn[:, 0] = 1
    prev = np.zeros((n_rows, width), dtype=np.uint64)  # x^k B
    prev[:, 1] = 1
    b = np.ones(n_rows, dtype=np.uint64)
    lengths = np.zeros(n_rows, dtype=np.int64)
    rev = np.ascontiguousarray(syn[:, ::-1])  # rev[:, N - 1 - s] = syn[:, s]
    for n in range(n_terms):
        k = min(n, int(lengths.max())) + 1  # deg conn <= L, so terms i > L vanish
        window = rev[:, n_terms - 1 - n : n_terms - 1 - n + k]  # syn[:, n - i] for i = 0..k-1
        d = (conn[:, :k] * window % _P64).sum(axis=1, dtype=np.uint64) % _P64
        nonzero = d != 0
        if nonzero.any():
            change = nonzero & (2 * lengths <= n)
            updated = (b[:, None] * conn + (_P64 - d)[:, None] * prev % _P64) % _P64
            prev = np.where(change[:, None], conn, prev)
            conn = np.where(nonzero[:, None], updated, conn)
            b = np.where(change, d, b)
            lengths = np.where(change, n + 1 - lengths, lengths)
            if int(lengths.max()) > max_len:
                return None, lengths
        prev[:, 1:] = prev[:, :-1].copy()
        prev[:, 0] = 0
    return np.ascontiguousarray(conn[:, : max_len + 1]), lengths


def _inv(a: U64Array) -> U64Array:
    """Elementwise inverse mod p of nonzero elements (Fermat: a^(p-2)), vectorised square-and-multiply."""
    out = np.ones_like(a)
    base = a % _P64
    exp = P - 2
    while exp:
        if exp & 1:
            out = out * base % _P64
        base = base * base % _P64
        exp >>= 1
    return out


def _products_of_differences(x: U64Array, z: U64Array) -> U64Array:
    """out[i] = prod_l (x_i - z_l) mod p over the l with z_l != x_i."""
    out = np.empty(x.shape[0], dtype=np.uint64)
    for r0 in range(0, x.shape[0], _DECODE_BLOCK):
        diff = (x[r0 : r0 + _DECODE_BLOCK, None] + _P64 - z[None, :]) % _P64
        diff[diff == 0] = 1
        while diff.shape[1] > 1:  # pairwise products: log2(len(z)) passes
            if diff.shape[1] % 2:
                diff = np.concatenate([diff, np.ones((diff.shape[0], 1), dtype=np.uint64)], axis=1)
            half = diff.shape[1] // 2
            diff = diff[:, :half] * diff[:, half:] % _P64
        out[r0 : r0 + _DECODE_BLOCK] = diff[:, 0] if diff.shape[1] else 1
    return out


def _matmul_mod(a: U64Array, b: U64Array) -> U64Array:
    """a @ b mod p for matrices of field elements, exactly, in uint64 integer matrix products.

    b is split into 16-bit halves, b = b1 2^16 + b0: a product a_ik b_kj,h is below 2^47, so a sum of up to
    2^16 of them stays below 2^63. (NumPy's integer matmul, not BLAS: no threads to contend for.)
    """
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.uint64)
    for k0 in range(0, a.shape[1], _EXACT_TERMS):
        ak, bk = a[:, k0 : k0 + _EXACT_TERMS], b[k0 : k0 + _EXACT_TERMS]
        hi = (ak @ (bk >> np.uint64(16))) % _P64
        lo = (ak @ (bk & np.uint64(0xFFFF))) % _P64
        out = (out + hi * np.uint64(1 << 16) + lo) % _P64
    return out


def _vandermonde(z: U64Array, cols: int) -> U64Array:
    """v[i, s] = z_i^s mod p for s < cols (by doubling: v[:, c:2c] = v[:, :c] * z^c)."""
    v = np.empty((z.shape[0], cols), dtype=np.uint64)
    if cols == 0:
        return v
    v[:, 0] = 1
    done, zc = 1, z % _P64  # zc = z^done
    while done < cols:
        step = min(done, cols - done)
        v[:, done : done + step] = v[:, :step] * zc[:, None] % _P64
        zc = zc * zc % _P64
        done += step
    return v


def _power_sums(w: U64Array, z: U64Array, count: int) -> U64Array:
    """out[j, s] = sum_i w[i, j] z_i^s mod p for s < count; w is (m, L), z is (m,); out is (L, count)."""
    out = np.empty((w.shape[1], count), dtype=np.uint64)
    if count == 0:
        return out
    block = min(count, _DECODE_BLOCK)
    v = _vandermonde(z, block)
    z_block = _vandermonde(z, block + 1)[:, block]
    cur = w
    for s0 in range(0, count, block):
        width = min(block, count - s0)
        out[:, s0 : s0 + width] = _matmul_mod(cur.T, v[:, :width])
        cur = cur * z_block[:, None] % _P64
    return out


def _poly_eval(coeffs: U64Array, z: U64Array) -> U64Array:
    """out[i, j] = sum_k coeffs[j, k] z_i^k mod p; coeffs is (L, d) ascending, z is (m,); out is (m, L)."""
    d = coeffs.shape[1]
    acc = np.zeros((z.shape[0], coeffs.shape[0]), dtype=np.uint64)
    if d == 0:
        return acc
    block = min(d, _DECODE_BLOCK)
    v = _vandermonde(z, block)
    z_block = _vandermonde(z, block + 1)[:, block]
    for s0 in reversed(range(0, d, block)):  # Horner over blocks of `block` coefficients, top block first
        width = min(block, d - s0)
        acc = (acc * z_block[:, None] % _P64 + _matmul_mod(v[:, :width], coeffs[:, s0 : s0 + width].T)) % _P64
    return acc


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


def off_polynomial(shares: Sequence[Share], good_xs: Sequence[int]) -> tuple[int, ...]:
    """The x's (ascending) of the shares that do not lie, in every limb, on the polynomials through the
    shares at good_xs (t of them, e.g. those a verified secret was taken from). Share s lies on them iff
    interpolating t - 1 good shares and s gives the same value at 0 as the t good shares do (the two
    polynomials differ by c * prod(x - x_i) over the t - 1 common points, which is 0 at 0 only if c = 0)."""
    by_x = {s.x: s for s in shares}
    good = tuple(_check_x(x) for x in good_xs)
    if len(set(good)) != len(good) or any(x not in by_x for x in good):
        raise ShamirError("good_xs must be distinct x's of the shares given")
    t = len(good)
    ys = np.array([by_x[x].y for x in good], dtype=np.uint32).reshape(1, t, LIMBS)
    want = _combine(good, ys)
    base, base_ys = good[:-1], ys[0, :-1]
    bad = []
    for x in sorted(set(by_x) - set(good)):
        trial = np.concatenate([base_ys, np.array([by_x[x].y], dtype=np.uint32)]).reshape(1, t, LIMBS)
        if not np.array_equal(_combine((*base, x), trial), want):
            bad.append(x)
    want.fill(0)
    return tuple(bad)


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
