"""Distributed discrete Gaussian and Skellam noise for updates summed in SecAgg's ring Z_M.

Follows Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation" (ICML 2021, "KLS") and Agarwal, Kairouz, Liu, "The Skellam Mechanism for
Differentially Private Federated Learning" (NeurIPS 2021, "AKL"). Each silo, for a float vector x of
dimension d:

    clip to L2 norm c -> zero-pad to d' = 2^ceil(log2 d) -> rotate: y = H D x / sqrt(d') (D: random signs
    from the round's public seed, H: Walsh-Hadamard) -> scale by gamma -> conditional randomised rounding
    (re-round until ||z||_2 <= Delta_2, KLS Theorem 1's bound) -> add discrete noise (N_Z(0, v) or
    Skellam(v) per coordinate, v the per-silo variance) -> reduce mod M.

SecAgg sums the silos' vectors exactly mod M. The server maps the sum to the centred range [-M/2, M/2),
divides by gamma, rotates back and drops the padding: the sum of the clipped inputs plus noise of variance
n * v / gamma^2 per coordinate. Privacy accounting assumes only the minimum number of survivors n_min, so
the central noise it relies on is n_min * v (the "sigma^2 / n_min per silo" of the papers).

All randomness comes from an injected RandomSource: the samplers below are exact (integer arithmetic), see
`sample_discrete_gaussian` and `sample_poisson` for the methods. The rotation seed is public; it must be
fixed after the silos' data (it is drawn per round by the server or from the round's public seed).
"""

from __future__ import annotations

import decimal
import functools
import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from secagg.crypto.rng import RandomSource
from secagg.encoding import domain
from secagg.errors import ConfigurationError, SecAggError
from secagg.ring import Ring

__all__ = [
    "DEFAULT_BETA",
    "MAX_GAUSSIAN_VARIANCE",
    "MAX_POISSON_RATE",
    "ConditionalRoundingError",
    "DDPParams",
    "Mechanism",
    "Neighbouring",
    "calibrate",
    "conditional_round",
    "ddp_epsilon",
    "ddp_rdp",
    "decode",
    "encode",
    "fwht",
    "rdp_to_epsilon",
    "rotate",
    "rotation_signs",
    "rounded_l1_bound",
    "rounded_l2_bound",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
    "sample_poisson",
    "sample_skellam",
    "unrotate",
    "wrap_probability",
]

Mechanism = Literal["gaussian", "skellam"]
Neighbouring = Literal["add_remove", "replace"]

DEFAULT_BETA = math.exp(-0.5)
"""KLS's default for conditional rounding: sqrt(2 ln(1/beta)) = 1, and a round is accepted w.p. >= 1 - beta."""

MAX_GAUSSIAN_VARIANCE = float(2**60)
"""Largest per-silo discrete Gaussian variance the exact int64 sampler supports (sigma ~ 2^30)."""

MAX_POISSON_RATE = float(2**50)
"""Largest Poisson rate (Skellam per-silo variance / 2) the sampler supports."""

MAX_PADDED_DIM = 1 << 28

# RDP orders: a fine grid near 1, the integers to 63, then geometric up to 1e5 (small epsilons need large
# orders). Skellam uses the integer orders only (AKL state their bound for integer alpha).
_ORDERS = np.unique(
    np.concatenate(
        [
            1.0 + np.arange(1, 100) / 10.0,
            np.arange(11, 64, dtype=np.float64),
            np.round(np.geomspace(64, 1e5, 80)),
        ]
    )
)
_INT_ORDERS = _ORDERS[(np.floor(_ORDERS) == _ORDERS) & (_ORDERS >= 2)]


class ConditionalRoundingError(SecAggError, RuntimeError):
    """Conditional randomised rounding hit its retry cap (the clip, gamma or beta are badly chosen)."""

    code = "DDP_ROUNDING"


# ---------------------------------------------------------------------------- exact random primitives


def _words(rng: RandomSource, n: int) -> NDArray[np.uint64]:
    """n uniform 64-bit words."""
    return np.frombuffer(bytearray(rng.random_bytes(8 * n)), dtype="<u8").astype(np.uint64, copy=False)


def _uniform_below(rng: RandomSource, bound: int, n: int) -> NDArray[np.uint64]:
    """n exact uniform integers in [0, bound), 1 <= bound <= 2^63, by rejection from 64-bit words."""
    if bound == 1:
        return np.zeros(n, dtype=np.uint64)
    if bound & (bound - 1) == 0:
        return _words(rng, n) & np.uint64(bound - 1)
    limit = np.uint64(((1 << 64) // bound) * bound)
    b = np.uint64(bound)
    out = np.empty(n, dtype=np.uint64)
    todo = np.arange(n)
    while todo.size:
        w = _words(rng, todo.size)
        ok = w < limit
        out[todo[ok]] = w[ok] % b
        todo = todo[~ok]
    return out


def _bernoulli_exp_neg_fraction(rng: RandomSource, num: NDArray[np.int64], den: int) -> NDArray[np.bool_]:
    """Exact Bernoulli(exp(-num/den)) per element, 0 <= num <= den (Canonne-Kamath-Steinke Algorithm 1).

    K = 1; while Bernoulli(gamma / K): K += 1; return K odd. Bernoulli(gamma / K) is drawn as
    [U_den < num] and [U_K = 0], with U_n uniform on [0, n).
    """
    n = num.shape[0]
    out = np.zeros(n, dtype=np.bool_)
    active = np.arange(n)
    k = 1
    while active.size:
        a = _uniform_below(rng, den, active.size) < num[active].astype(np.uint64)
        if k > 1:
            a &= _uniform_below(rng, k, active.size) == 0
        out[active[~a]] = k % 2 == 1
        active = active[a]
        k += 1
    return out


def _bernoulli_exp_neg(
    rng: RandomSource, whole: NDArray[np.int64], num: NDArray[np.int64], den: int
) -> NDArray[np.bool_]:
    """Exact Bernoulli(exp(-(whole + num/den))): `whole` Bernoulli(exp(-1)) trials, then the fraction."""
    n = whole.shape[0]
    out = np.ones(n, dtype=np.bool_)
    active = np.flatnonzero(whole > 0)
    j = 0
    while active.size:
        b = _bernoulli_exp_neg_fraction(rng, np.ones(active.size, dtype=np.int64), 1)
        out[active[~b]] = False
        j += 1
        active = active[b & (whole[active] > j)]
    idx = np.flatnonzero(out)
    if idx.size:
        out[idx] = _bernoulli_exp_neg_fraction(rng, num[idx], den)
    return out


def _geometric_exp_neg1(rng: RandomSource, n: int) -> NDArray[np.int64]:
    """Number of Bernoulli(exp(-1)) successes before the first failure (geometric, ratio 1/e)."""
    v = np.zeros(n, dtype=np.int64)
    alive = np.arange(n)
    while alive.size:
        b = _bernoulli_exp_neg_fraction(rng, np.ones(alive.size, dtype=np.int64), 1)
        alive = alive[b]
        v[alive] += 1
    return v


def sample_discrete_laplace(rng: RandomSource, t: int, n: int) -> NDArray[np.int64]:
    """n exact samples of the discrete Laplace P(z) ∝ exp(-|z|/t), t >= 1 an integer (CKS Algorithm 2)."""
    if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t < (1 << 62):
        raise ConfigurationError("discrete Laplace scale must be an int in [1, 2^62)")
    out = np.empty(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        k = pending.size
        u = _uniform_below(rng, t, k).astype(np.int64)
        d = _bernoulli_exp_neg_fraction(rng, u, t)
        keep = np.flatnonzero(d)
        x = u[keep] + np.int64(t) * _geometric_exp_neg1(rng, keep.size)
        neg = _uniform_below(rng, 2, keep.size) == 1
        ok = ~(neg & (x == 0))
        vals = np.where(neg, -x, x)
        done = keep[ok]
        out[pending[done]] = vals[ok]
        mask = np.ones(k, dtype=np.bool_)
        mask[done] = False
        pending = pending[mask]
    return out


# ------------------------------------------------------------------------------ discrete Gaussian


def _gaussian_representation(variance: float | Fraction) -> tuple[Fraction, int]:
    """(sigma^2, t) actually sampled: sigma^2 >= variance, rational with a small denominator.

    A Fraction is used as given. A float v is rounded UP to sigma^2 = t * p / q with t = floor(sqrt(v)) + 1
    and q a power of two (q <= 2^20, sigma * q <= 2^25), so sigma^2 / t = p / q keeps every integer of the
    sampler below 2^62; the relative increase is below 1 / (sigma * q) <= 2^-20 (more noise, never less).
    """
    if isinstance(variance, Fraction):
        s2 = variance
        if s2 <= 0:
            raise ConfigurationError("discrete Gaussian variance must be positive")
        return s2, math.isqrt(math.floor(s2)) + 1
    v = float(variance)
    if not math.isfinite(v) or v <= 0:
        raise ConfigurationError("discrete Gaussian variance must be a positive finite number")
    if v > MAX_GAUSSIAN_VARIANCE:
        raise ConfigurationError("discrete Gaussian variance above the sampler's limit of 2^60")
    t = math.isqrt(math.floor(v)) + 1
    j = 20
    while j > 0 and math.sqrt(v) * (1 << j) > 2**25:
        j -= 1
    q = 1 << j
    p = math.ceil(Fraction(v) * q / t)
    return Fraction(t * p, q), t


def sample_discrete_gaussian(rng: RandomSource, variance: float | Fraction, n: int) -> NDArray[np.int64]:
    """n exact samples of N_Z(0, sigma^2): P(z) ∝ exp(-z^2 / (2 sigma^2)) (CKS Algorithm 3).

    Rejection from a discrete Laplace of integer scale t: Y ~ Lap_Z(t) is kept with probability
    exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)), drawn exactly as Bernoulli(exp(-(w + r/den))) with integers
    w, r, den computed from Y (int64 when they fit, Python ints otherwise). A float variance is first rounded
    up to a nearby rational (see `_gaussian_representation`); pass a Fraction to sample an exact value.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigurationError("sample count must be a non-negative int")
    s2, t = _gaussian_representation(variance)
    # gamma(Y) = (|Y| - P/Q)^2 / (2 s2) = (|Y| Q - P)^2 * mult / den, reduced.
    pq = s2 / t
    big_p, big_q = pq.numerator, pq.denominator
    mult_raw, den_raw = s2.denominator, 2 * s2.numerator * big_q * big_q
    g = math.gcd(mult_raw, den_raw)
    mult, den = mult_raw // g, den_raw // g
    if den >= (1 << 62) or t >= (1 << 62):
        raise ConfigurationError("discrete Gaussian variance has too large a denominator for the sampler")
    # Fast (int64) path for |Y| with |u| = ||Y| Q - P| <= u_max, so that u^2 * mult < 2^63.
    u_max = math.isqrt(((1 << 63) - 1) // mult)
    fast_lo = min(max(0, -((u_max - big_p) // big_q)), 1 << 62)
    fast_hi = min((u_max + big_p) // big_q, 1 << 62) if big_p < (1 << 62) else -1
    out = np.empty(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        y = sample_discrete_laplace(rng, t, pending.size)
        ay = np.abs(y)
        fast = (ay >= fast_lo) & (ay <= fast_hi)
        accept = np.zeros(pending.size, dtype=np.bool_)
        fi = np.flatnonzero(fast)
        if fi.size:
            u = ay[fi] * np.int64(big_q) - np.int64(big_p)
            num = u * u * np.int64(mult)
            accept[fi] = _bernoulli_exp_neg(rng, num // np.int64(den), num % np.int64(den), den)
        for i in np.flatnonzero(~fast):
            num_i = (int(ay[i]) * big_q - big_p) ** 2 * mult
            accept[i] = _bernoulli_exp_neg_scalar(rng, num_i // den, num_i % den, den)
        out[pending[accept]] = y[accept]
        pending = pending[~accept]
    return out


def _bernoulli_exp_neg_scalar(rng: RandomSource, whole: int, num: int, den: int) -> bool:
    """Exact Bernoulli(exp(-(whole + num/den))) for one element with Python-int `whole`."""
    for _ in range(whole):
        if not bool(_bernoulli_exp_neg_fraction(rng, np.ones(1, dtype=np.int64), 1)[0]):
            return False
    return bool(_bernoulli_exp_neg_fraction(rng, np.array([num], dtype=np.int64), den)[0])


# ---------------------------------------------------------------------------- Poisson and Skellam

_LF_TABLE_N = 256
_LF_TABLE = np.array([math.fsum(math.log(i) for i in range(2, k + 1)) for k in range(_LF_TABLE_N)])
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LN2 = math.log(2.0)
_STIRLING_TERMS = 100
_FAST_MARGIN = 2.0**-20  # log-domain allowance for float error in the fast path (actual error < 1e-9)


def _stirling_tail(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """ln x! - [(x + 1/2) ln x - x + ln(2 pi)/2] for x >= 256 (error < 1e-24)."""
    inv = 1.0 / x
    inv2 = inv * inv
    return np.asarray(inv * (1.0 / 12 - inv2 * (1.0 / 360 - inv2 * (1.0 / 1260 - inv2 / 1680))))


def _log_factorial(k: NDArray[np.int64]) -> NDArray[np.float64]:
    """ln k! in float64 (table below 256, Stirling series above)."""
    out = np.empty(k.shape, dtype=np.float64)
    small = k < _LF_TABLE_N
    out[small] = _LF_TABLE[k[small]]
    x = k[~small].astype(np.float64)
    out[~small] = (x + 0.5) * np.log(x) - x + _HALF_LOG_2PI + _stirling_tail(x)
    return out


def _poisson_log_ratio(lam: float, m: int, t: int, j: NDArray[np.int64]) -> NDArray[np.float64]:
    """ln[p(m + j) / p(m)] + |j| / t for the Poisson(lam) pmf p, m + j >= 0 (float, cancellation-free)."""
    k = j + np.int64(m)
    jf = j.astype(np.float64)
    if m < (1 << 20):
        base = jf * math.log(lam) - (_log_factorial(k) - _log_factorial(np.array([m], dtype=np.int64))[0])
    else:
        mf = float(m)
        kk = np.maximum(k, _LF_TABLE_N).astype(np.float64)
        base = (
            jf * math.log1p((lam - mf) / mf)
            - (mf + jf + 0.5) * np.log1p(jf / mf)
            + jf
            - (_stirling_tail(kk) - _stirling_tail(np.array([mf]))[0])
        )
        tail = k < _LF_TABLE_N
        if tail.any():
            base[tail] = jf[tail] * math.log(lam) - (
                _log_factorial(k[tail]) - _log_factorial(np.array([m], dtype=np.int64))[0]
            )
    return np.asarray(base + np.abs(jf) / t)


@functools.cache
def _bernoulli_numbers(count: int) -> tuple[Fraction, ...]:
    """B_0 .. B_{count-1} (B_1 = -1/2)."""
    b: list[Fraction] = []
    for m in range(count):
        acc = Fraction(0)
        for k in range(m):
            acc += math.comb(m + 1, k) * b[k]
        b.append(Fraction(1) if m == 0 else -acc / (m + 1))
    return tuple(b)


def _dec_pi(ctx: decimal.Context) -> decimal.Decimal:
    """pi to the context's precision (the series from the decimal module's documentation)."""
    with decimal.localcontext(ctx) as c:
        c.prec += 5
        three = decimal.Decimal(3)
        lasts, t, s, n, na, d, da = decimal.Decimal(0), three, three, 1, 0, 0, 24
        while s != lasts:
            lasts = s
            n, na = n + na, na + 8
            d, da = d + da, da + 32
            t = (t * n) / d
            s += t
    return +s


def _dec_log_factorial(x: int, ctx: decimal.Context) -> tuple[decimal.Decimal, decimal.Decimal]:
    """(ln x!, error bound) in Decimal: exact factorial below 2000, Stirling series with its remainder above."""
    D = decimal.Decimal  # noqa: N806
    with decimal.localcontext(ctx) as c:
        ulp = D(10) ** (-c.prec + 1)
        if x < 2000:
            v = D(math.factorial(x)).ln()
            return v, abs(v) * ulp * 2
        xd = D(x)
        v = (xd + D("0.5")) * xd.ln() - xd + (2 * _dec_pi(c)).ln() / 2
        bern = _bernoulli_numbers(2 * _STIRLING_TERMS + 3)
        k = 1
        rem = D(0)
        while k <= _STIRLING_TERMS:
            b = bern[2 * k]
            v += D(b.numerator) / D(b.denominator) / (D(2 * k * (2 * k - 1)) * xd ** (2 * k - 1))
            b_next = bern[2 * k + 2]
            rem = abs(D(b_next.numerator) / D(b_next.denominator)) / (D((2 * k + 2) * (2 * k + 1)) * xd ** (2 * k + 1))
            if rem < ulp * abs(v):
                break
            k += 1
        return v, rem + abs(v) * ulp * 50


def _poisson_accept_exact(
    rng: RandomSource | None, lam: float, m: int, t: int, log_c: float, j: int, u: int, bits: int
) -> bool:
    """Decide U < exp(L(j)) exactly, U in [u, u+1) / 2^bits, refining U's bits and the precision as needed.

    L(j) = ln p(m+j) - ln p(m) + |j|/t - log_c is evaluated in decimal arithmetic (correctly rounded ln)
    with a rigorous error bound; if U's interval and L's interval overlap, 64 more bits of U are drawn
    (from rng) and the precision grows. Without rng (tests), an undecided comparison raises.
    """
    D = decimal.Decimal  # noqa: N806
    prec = 50
    while prec <= 3000:
        ctx = decimal.Context(prec=prec, rounding=decimal.ROUND_HALF_EVEN)
        with decimal.localcontext(ctx):
            ulp = D(10) ** (-prec + 1)
            lf_k, e_k = _dec_log_factorial(m + j, ctx)
            lf_m, e_m = _dec_log_factorial(m, ctx)
            ln_lam = D(lam).ln()
            jl = D(j) * ln_lam
            value = jl - (lf_k - lf_m) + D(abs(j)) / D(t) - D(log_c)
            mag = max(abs(jl), abs(lf_k), abs(lf_m), D(1))
            err = e_k + e_m + 100 * mag * ulp
            ln2 = D(2).ln()
            ln_hi = D(u + 1).ln() - bits * ln2
            e_u = (abs(ln_hi) + 1) * ulp * 10
            if ln_hi + e_u <= value - err:
                return True
            if u > 0:
                ln_lo = D(u).ln() - bits * ln2
                if ln_lo - e_u >= value + err:
                    return False
        if rng is None:
            raise SecAggError("undecided comparison without a random source")
        u = (u << 64) | int(_words(rng, 1)[0])
        bits += 64
        prec += 40
    raise SecAggError("Poisson acceptance undecided at 3000 digits")  # probability ~ 2^-10000


def _poisson_envelope(lam: float, m: int, t: int) -> float:
    """log C >= max_j ln r(j), r(j) = p(m+j)/p(m) * exp(|j|/t) (per-side log-concavity: two maximisers)."""
    jr = max(0, math.floor(lam * math.exp(1.0 / t)) - m)
    jl = -min(m, max(0, math.floor(m + 1 - lam * math.exp(-1.0 / t))))
    cands = sorted({c for base in (0, jr, jl) for c in range(base - 3, base + 4) if m + c >= 0})
    vals = _poisson_log_ratio(lam, m, t, np.array(cands, dtype=np.int64))
    best = float(np.max(vals))
    return best + 1e-6 + 1e-12 * abs(best)


def sample_poisson(rng: RandomSource, lam: float, n: int) -> NDArray[np.int64]:
    """n samples of Poisson(lam), exact: rejection from a discrete Laplace centred on the mode.

    Proposal: m + Y with m = floor(lam), Y ~ Lap_Z(t) (exact, CKS Algorithm 2), t = floor(sqrt(lam)) + 1.
    Since the Poisson pmf p is log-concave, p(m+j) e^{|j|/t} is maximal at one point per side, giving the
    envelope constant C. Acceptance U < p(m+j) e^{|j|/t} / (p(m) C) with U uniform: decided in float64 when
    the two sides differ by more than 2^-20 in the log domain (the float error is below 1e-9), otherwise in
    decimal arithmetic with rigorous error bounds and lazily extended bits of U, so the output law is
    exactly Poisson(lam) (lam is the exact value of the float).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigurationError("sample count must be a non-negative int")
    lam = float(lam)
    if not math.isfinite(lam) or lam < 0 or lam > MAX_POISSON_RATE:
        raise ConfigurationError("Poisson rate must be finite and in [0, 2^50]")
    out = np.zeros(n, dtype=np.int64)
    if lam == 0.0 or n == 0:
        return out
    m = math.floor(lam)
    t = math.isqrt(m) + 1
    log_c = _poisson_envelope(lam, m, t)
    pending = np.arange(n)
    while pending.size:
        j = sample_discrete_laplace(rng, t, pending.size)
        u = _words(rng, pending.size)
        valid = j >= -m
        accept = np.zeros(pending.size, dtype=np.bool_)
        vi = np.flatnonzero(valid)
        if vi.size:
            jj = j[vi]
            lv = _poisson_log_ratio(lam, m, t, jj) - log_c
            uf = u[vi].astype(np.float64)
            with np.errstate(divide="ignore"):
                ln_lo = np.log(uf) - 64 * _LN2
            ln_hi = np.log(uf + 1.0) - 64 * _LN2
            margin = _FAST_MARGIN + 2.0**-40 * np.abs(jj.astype(np.float64))
            yes = ln_hi < lv - margin
            no = ln_lo > lv + margin
            accept[vi[yes]] = True
            for idx in np.flatnonzero(~yes & ~no):
                accept[vi[idx]] = _poisson_accept_exact(rng, lam, m, t, log_c, int(jj[idx]), int(u[vi[idx]]), 64)
        out[pending[accept]] = m + j[accept]
        pending = pending[~accept]
    return out


def sample_skellam(rng: RandomSource, mu: float, n: int) -> NDArray[np.int64]:
    """n exact samples of Skellam with variance mu: Poisson(mu/2) - Poisson(mu/2), both from `sample_poisson`."""
    mu = float(mu)
    if not math.isfinite(mu) or mu < 0 or mu / 2 > MAX_POISSON_RATE:
        raise ConfigurationError("Skellam variance must be finite and in [0, 2^51]")
    a = sample_poisson(rng, mu / 2, n)
    b = sample_poisson(rng, mu / 2, n)
    return a - b


# ------------------------------------------------------------------------------------- rotation


def fwht(x: NDArray[Any]) -> NDArray[np.float64]:
    """Unnormalised Walsh-Hadamard transform (Sylvester order) of a power-of-two-length vector."""
    a = np.array(x, dtype=np.float64).reshape(-1)
    n = a.shape[0]
    if n == 0 or n & (n - 1):
        raise ConfigurationError("Hadamard transform length must be a power of two")
    h = 1
    while h < n:
        v = a.reshape(-1, 2, h)
        a = np.stack((v[:, 0, :] + v[:, 1, :], v[:, 0, :] - v[:, 1, :]), axis=1).reshape(n)
        h *= 2
    return a


def _padded_dim(d: int) -> int:
    return 1 << max(0, (d - 1).bit_length())


def rotation_signs(seed: bytes, padded_dim: int) -> NDArray[np.float64]:
    """The round's public random signs D (+-1.0): SHAKE-256 of a domain label and the seed."""
    if not isinstance(seed, (bytes, bytearray)) or len(seed) < 16:
        raise ConfigurationError("rotation seed must be at least 16 bytes")
    if padded_dim <= 0 or padded_dim & (padded_dim - 1):
        raise ConfigurationError("padded dimension must be a power of two")
    tag = domain("fl", "ddp", "rotation")
    h = hashlib.shake_256(len(tag).to_bytes(4, "big") + tag + padded_dim.to_bytes(8, "big") + bytes(seed))
    bits = np.unpackbits(np.frombuffer(h.digest((padded_dim + 7) // 8), dtype=np.uint8))[:padded_dim]
    return 1.0 - 2.0 * bits.astype(np.float64)


def rotate(x: NDArray[Any], seed: bytes) -> NDArray[np.float64]:
    """Zero-pad x to a power of two and apply the orthogonal map R = H D / sqrt(d')."""
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    dp = _padded_dim(v.shape[0])
    padded = np.zeros(dp, dtype=np.float64)
    padded[: v.shape[0]] = v
    return fwht(padded * rotation_signs(seed, dp)) / math.sqrt(dp)


def unrotate(y: NDArray[Any], seed: bytes, dim: int) -> NDArray[np.float64]:
    """Inverse of `rotate`: x = D H y / sqrt(d'), truncated to dim."""
    v = np.asarray(y, dtype=np.float64).reshape(-1)
    dp = v.shape[0]
    if not 1 <= dim <= dp or _padded_dim(dim) != dp:
        raise ConfigurationError("dimension does not match the rotated vector")
    return (fwht(v) * rotation_signs(seed, dp) / math.sqrt(dp))[:dim]


# ---------------------------------------------------------------------------- rounding and bounds


def rounded_l2_bound(scaled_clip: float, dim: int, beta: float) -> float:
    """KLS Theorem 1: Delta_2 = min(c + sqrt(d), sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2)))."""
    c, d = float(scaled_clip), float(dim)
    b1 = c + math.sqrt(d)
    if beta == 0:
        return b1
    b2 = math.sqrt(c * c + d / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + math.sqrt(d) / 2))
    return min(b1, b2)


def rounded_l1_bound(l2_bound: float, dim: int) -> float:
    """L1 bound of an integer vector of L2 norm <= Delta_2: min(sqrt(d) Delta_2, Delta_2^2)."""
    return l2_bound * min(math.sqrt(dim), l2_bound)


def conditional_round(
    y: NDArray[Any], l2_bound: float, rng: RandomSource, max_attempts: int = 100
) -> NDArray[np.int64]:
    """Unbiased randomised rounding to Z^d, repeated until ||z||_2 <= l2_bound (KLS Algorithm 2).

    Each coordinate rounds up with probability frac(y_i) (53-bit uniforms from rng). The norm test is done in
    floats with a rigorous error allowance, and in exact integers when the float sum is too close to call.
    """
    v = np.asarray(y, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)) or np.max(np.abs(v), initial=0.0) >= 2.0**62:
        raise ConfigurationError("values to round must be finite and below 2^62 in magnitude")
    floor = np.floor(v)
    frac = v - floor
    base = floor.astype(np.int64)
    bound_sq = Fraction(l2_bound) ** 2
    limit = float(bound_sq)
    slack = (v.shape[0] + 2) * 2.0**-52  # relative error bound of a float sum of d non-negative squares
    for _ in range(max_attempts):
        u = (_words(rng, v.shape[0]) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        z = base + (u < frac).astype(np.int64)
        zf = z.astype(np.float64)
        s = float(np.dot(zf, zf))
        if s * (1 + slack) <= limit * (1 - 2.0**-52):
            return z
        if s * (1 - slack) > limit * (1 + 2.0**-52):
            continue
        if sum(int(a) * int(a) for a in z.tolist()) <= bound_sq:  # too close to call in floats: exact
            return z
    raise ConditionalRoundingError(f"conditional rounding failed {max_attempts} times")


# ----------------------------------------------------------------------------------- accounting


def _tau(local_variance: float, n: int) -> float:
    """KLS Theorem 1: tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1)), sigma^2 per silo."""
    if n <= 1:
        return 0.0
    k = np.arange(1, n, dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * local_variance * k / (k + 1.0))))


def ddp_rdp(
    mechanism: Mechanism,
    local_variance: float,
    *,
    l2_bound: float,
    l1_bound: float,
    padded_dim: int,
    n_min: int,
    orders: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(orders, RDP of one round) for the sum of n_min silos' noise, in the integer domain.

    Gaussian (KLS Proposition 14 with Theorem 1), sigma^2 = local variance, n = n_min, d = padded dim,
    a = Delta_2 / (sqrt(n) sigma), b = Delta_1 / (sqrt(n) sigma):
        eps(alpha) = min(alpha/2 a^2 + tau d,  alpha/2 (a^2 + 2 b tau + tau^2 d),  alpha/2 (a + tau sqrt d)^2).
    Skellam (AKL Theorem 3.5), the sum of n_min silos being Skellam of variance V = n_min * mu:
        eps(alpha) = alpha Delta_2^2 / (2 V) + min(((2 alpha - 1) Delta_2^2 + 6 Delta_1) / (4 V^2),
                                                   3 Delta_1 / (2 V)),   integer alpha >= 2.
    """
    if mechanism == "gaussian":
        al = _ORDERS if orders is None else np.asarray(orders, dtype=np.float64)
        sig = math.sqrt(n_min * local_variance)
        a, b = l2_bound / sig, l1_bound / sig
        tau = _tau(local_variance, n_min)
        d = float(padded_dim)
        t1 = al / 2 * a * a + tau * d
        t2 = al / 2 * (a * a + 2 * b * tau + tau * tau * d)
        t3 = al / 2 * (a + tau * math.sqrt(d)) ** 2
        return al, np.minimum(np.minimum(t1, t2), t3)
    if mechanism == "skellam":
        al = _INT_ORDERS if orders is None else np.asarray(orders, dtype=np.float64)
        var = n_min * local_variance
        l2s = l2_bound * l2_bound
        extra = np.minimum(((2 * al - 1) * l2s + 6 * l1_bound) / (4 * var * var), 3 * l1_bound / (2 * var))
        return al, al * l2s / (2 * var) + extra
    raise ConfigurationError("mechanism must be 'gaussian' or 'skellam'")


def rdp_to_epsilon(orders: NDArray[np.float64], rdp: NDArray[np.float64], delta: float) -> float:
    """Balle et al. 2020 (Theorem 21): eps = min_alpha rdp + ln((alpha-1)/alpha) - (ln delta + ln alpha)/(alpha-1)."""
    if not 0 < delta < 1:
        raise ConfigurationError("delta must be in (0, 1)")
    al = np.asarray(orders, dtype=np.float64)
    keep = al > 1
    al, r = al[keep], np.asarray(rdp, dtype=np.float64)[keep]
    eps = r + np.log((al - 1) / al) - (math.log(delta) + np.log(al)) / (al - 1)
    return float(max(0.0, float(np.min(eps))))


def ddp_epsilon(
    mechanism: Mechanism,
    local_variance: float,
    rounds: int,
    delta: float,
    *,
    dim: int,
    clip: float,
    gamma: float,
    n_min: int,
    beta: float = DEFAULT_BETA,
    neighbouring: Neighbouring = "add_remove",
) -> float:
    """Epsilon after `rounds` rounds (RDP composes additively), for the bound stated in `ddp_rdp`.

    Sensitivities: Delta_2 = `rounded_l2_bound(gamma * clip, d', beta)`, Delta_1 = `rounded_l1_bound`, both
    doubled for replace-one neighbouring (one silo's contribution swapped rather than added or removed).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ConfigurationError("rounds must be a non-negative int")
    if rounds == 0:
        return 0.0
    dp = _padded_dim(dim)
    l2 = rounded_l2_bound(gamma * clip, dp, beta)
    l1 = rounded_l1_bound(l2, dp)
    if neighbouring == "replace":
        l2, l1 = 2 * l2, 2 * l1
    elif neighbouring != "add_remove":
        raise ConfigurationError("neighbouring must be 'add_remove' or 'replace'")
    al, rdp = ddp_rdp(mechanism, local_variance, l2_bound=l2, l1_bound=l1, padded_dim=dp, n_min=n_min)
    return rdp_to_epsilon(al, rounds * rdp, delta)


def wrap_probability(
    mechanism: Mechanism,
    local_variance: float,
    *,
    dim: int,
    clip: float,
    gamma: float,
    n_max: int,
    modulus: int,
) -> float:
    """Union bound on P(some coordinate of the sum of n_max silos leaves [-M/2, M/2)), i.e. wraps mod M.

    Per coordinate, the rotated scaled signal of the sum is sub-Gaussian with variance proxy
    (gamma n c)^2 / d' (Hoeffding over the random signs; ||sum x|| <= n c); rounding moves it by less
    than n; N_Z(0, s^2) is s^2-sub-Gaussian (CKS), so DG noise adds n s^2 to the proxy; Skellam noise of
    variance n mu has MGF exp(n mu (cosh t - 1)), bounded by a Chernoff bound optimised over t.
    """
    dp = _padded_dim(dim)
    proxy = (gamma * n_max * clip) ** 2 / dp
    a = float(modulus // 2 - 1 - n_max)
    if a <= 0:
        return 1.0
    if mechanism == "gaussian":
        # the sampler rounds the variance up by less than 2^-20 relative
        total = proxy + n_max * local_variance * (1 + 2.0**-19)
        log_tail = -(a * a) / (2 * total)
    else:
        nv = n_max * local_variance

        def exponent(t: float) -> float:
            return proxy * t * t / 2 + nv * (math.cosh(t) - 1) - t * a if t < 700 else math.inf

        # derivative proxy t + nv sinh t - a is increasing: bisect for its root.
        lo, hi = 0.0, 1.0
        while proxy * hi + nv * math.sinh(min(hi, 700.0)) < a and hi < 700:
            hi *= 2
        for _ in range(200):
            mid = (lo + hi) / 2
            if proxy * mid + nv * math.sinh(mid) < a:
                lo = mid
            else:
                hi = mid
        log_tail = exponent(lo)
    return float(min(1.0, math.exp(max(math.log(2.0 * dp) + log_tail, -745.0))))


# ------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class DDPParams:
    """A validated distributed-DP configuration: mechanism, geometry, noise, ring and survivor range.

    `local_variance` is each silo's noise variance in the scaled integer domain (sigma^2 / n_min of the
    papers' central sigma^2 for the Gaussian, mu for Skellam). Construction refuses a configuration whose
    modular-wrap probability (`wrap_probability`, for n_max silos) exceeds `max_wrap_probability`.
    """

    mechanism: Mechanism
    dim: int
    clip: float
    gamma: float
    local_variance: float
    n_min: int
    modulus: int = 1 << 32
    n_max: int | None = None
    beta: float = DEFAULT_BETA
    neighbouring: Neighbouring = "add_remove"
    max_rounding_attempts: int = 100
    max_wrap_probability: float = 2.0**-40

    def __post_init__(self) -> None:
        if self.mechanism not in ("gaussian", "skellam"):
            raise ConfigurationError("mechanism must be 'gaussian' or 'skellam'")
        if self.neighbouring not in ("add_remove", "replace"):
            raise ConfigurationError("neighbouring must be 'add_remove' or 'replace'")
        for name in ("dim", "n_min", "modulus", "max_rounding_attempts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigurationError(f"{name} must be a positive int")
        if self.n_max is None:
            object.__setattr__(self, "n_max", self.n_min)
        n_max = self.n_max
        if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < self.n_min:
            raise ConfigurationError("n_max must be an int >= n_min")
        if _padded_dim(self.dim) > MAX_PADDED_DIM:
            raise ConfigurationError("dimension too large (padded dimension above 2^28)")
        for name in ("clip", "gamma", "local_variance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigurationError(f"{name} must be a positive finite number")
        if self.mechanism == "gaussian" and not 0.25 <= self.local_variance <= MAX_GAUSSIAN_VARIANCE:
            raise ConfigurationError("discrete Gaussian local variance must be in [1/4, 2^60] (sigma >= 1/2)")
        if self.mechanism == "skellam" and self.local_variance / 2 > MAX_POISSON_RATE:
            raise ConfigurationError("Skellam local variance must be at most 2^51")
        if not 0 <= self.beta < 1:
            raise ConfigurationError("beta must be in [0, 1)")
        if not 0 < self.max_wrap_probability < 1:
            raise ConfigurationError("max_wrap_probability must be in (0, 1)")
        if self.modulus > (1 << 64):
            raise ConfigurationError("modulus must be at most 2^64")
        Ring(self.modulus)  # validates the modulus
        p = self.wrap_probability()
        if p > self.max_wrap_probability:
            raise ConfigurationError(
                f"modular wrap probability {p:.3g} exceeds {self.max_wrap_probability:.3g}: "
                "use a larger modulus, a smaller gamma or fewer silos"
            )

    @property
    def local_noise_multiplier(self) -> float:
        """One silo's own noise standard deviation over the L2 bound of its rounded vector, both in the integer
        domain (sqrt(v) / Delta_2): what a silo's policy floors, whatever the server assumes about the others."""
        return math.sqrt(self.local_variance) / self.l2_bound

    @property
    def padded_dim(self) -> int:
        """d' = the next power of two >= dim."""
        return _padded_dim(self.dim)

    @property
    def max_silos(self) -> int:
        """n_max as an int (n_min when not given)."""
        return int(self.n_max) if self.n_max is not None else self.n_min

    @property
    def l2_bound(self) -> float:
        """Delta_2: the L2 norm bound of a silo's rounded vector (integer domain)."""
        return rounded_l2_bound(self.gamma * self.clip, self.padded_dim, self.beta)

    @property
    def central_variance(self) -> float:
        """Variance of the summed noise per coordinate with n_min survivors, integer domain."""
        return self.n_min * self.local_variance

    def noise_std(self, n_survivors: int | None = None) -> float:
        """Std of the decoded noise per coordinate (original units) for n survivors (default n_min)."""
        n = self.n_min if n_survivors is None else n_survivors
        return math.sqrt(n * self.local_variance) / self.gamma

    def wrap_probability(self) -> float:
        """Union bound on a modular wrap of the n_max-silo sum (see the module function)."""
        return wrap_probability(
            self.mechanism,
            self.local_variance,
            dim=self.dim,
            clip=self.clip,
            gamma=self.gamma,
            n_max=self.max_silos,
            modulus=self.modulus,
        )

    def epsilon(self, rounds: int, delta: float) -> float:
        """Epsilon after `rounds` rounds with at least n_min survivors each (see `ddp_epsilon`)."""
        return ddp_epsilon(
            self.mechanism,
            self.local_variance,
            rounds,
            delta,
            dim=self.dim,
            clip=self.clip,
            gamma=self.gamma,
            n_min=self.n_min,
            beta=self.beta,
            neighbouring=self.neighbouring,
        )


def _min_variance(
    mechanism: Mechanism,
    epsilon: float,
    delta: float,
    rounds: int,
    gamma: float,
    *,
    dim: int,
    clip: float,
    n_min: int,
    beta: float,
    neighbouring: Neighbouring,
) -> float | None:
    """Smallest local variance (to 1e-4 relative) giving <= epsilon, or None above the sampler's limit."""
    lo = 0.25 if mechanism == "gaussian" else 2.0**-20
    hi = MAX_GAUSSIAN_VARIANCE if mechanism == "gaussian" else 2 * MAX_POISSON_RATE

    def eps(v: float) -> float:
        return ddp_epsilon(
            mechanism, v, rounds, delta, dim=dim, clip=clip, gamma=gamma, n_min=n_min, beta=beta,
            neighbouring=neighbouring,
        )  # fmt: skip

    if eps(hi) > epsilon:
        return None
    if eps(lo) <= epsilon:
        return lo
    llo, lhi = math.log2(lo), math.log2(hi)
    while lhi - llo > 1e-5:
        mid = (llo + lhi) / 2
        if eps(2.0**mid) <= epsilon:
            lhi = mid
        else:
            llo = mid
    return float(2.0**lhi)


def calibrate(
    *,
    mechanism: Mechanism,
    epsilon: float,
    delta: float,
    dim: int,
    clip: float,
    n_min: int,
    rounds: int,
    modulus: int | None = None,
    bits: int | None = None,
    n_max: int | None = None,
    beta: float = DEFAULT_BETA,
    neighbouring: Neighbouring = "add_remove",
    max_wrap_probability: float = 2.0**-40,
) -> DDPParams:
    """Per-silo noise and gamma for a total (epsilon, delta) over `rounds` rounds, with n_min survivors.

    For each gamma the smallest local variance meeting epsilon is found by bisection (epsilon decreases with
    the variance); gamma is then the largest (to 2^-8 in log2) whose modular-wrap bound with n_max silos
    stays below max_wrap_probability, since a larger gamma means finer rounding and less noise in original
    units. The ring is `modulus` or 2^bits. Raises ConfigurationError when no gamma fits.
    """
    if (modulus is None) == (bits is None):
        raise ConfigurationError("give exactly one of modulus and bits")
    if bits is not None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 64:
            raise ConfigurationError("bits must be an int in [2, 64]")
        modulus = 1 << bits
    assert modulus is not None
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ConfigurationError("epsilon must be positive and finite")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigurationError("rounds must be a positive int")
    if not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
        raise ConfigurationError("clip must be positive and finite")
    if isinstance(n_min, bool) or not isinstance(n_min, int) or n_min < 1:
        raise ConfigurationError("n_min must be a positive int")
    nmax = n_min if n_max is None else n_max
    if isinstance(nmax, bool) or not isinstance(nmax, int) or nmax < n_min:
        raise ConfigurationError("n_max must be an int >= n_min")

    def attempt(log2_gamma: float) -> DDPParams | None:
        gamma = 2.0**log2_gamma
        v = _min_variance(
            mechanism, epsilon, delta, rounds, gamma, dim=dim, clip=clip, n_min=n_min, beta=beta,
            neighbouring=neighbouring,
        )  # fmt: skip
        if v is None:
            return None
        p = wrap_probability(mechanism, v, dim=dim, clip=clip, gamma=gamma, n_max=nmax, modulus=modulus)
        if p > max_wrap_probability:
            return None
        return DDPParams(
            mechanism=mechanism, dim=dim, clip=float(clip), gamma=gamma, local_variance=v, n_min=n_min,
            modulus=modulus, n_max=nmax, beta=beta, neighbouring=neighbouring,
            max_wrap_probability=max_wrap_probability,
        )  # fmt: skip

    lo = math.log2(1e-3 / clip)
    hi = math.log2(2.0**62 / clip)
    best = attempt(lo)
    if best is None:
        raise ConfigurationError(
            "no gamma meets the target epsilon without risking a modular wrap: "
            "increase the modulus or epsilon, or lower n_max"
        )
    while hi - lo > 2.0**-8:
        mid = (lo + hi) / 2
        got = attempt(mid)
        if got is not None:
            best, lo = got, mid
        else:
            hi = mid
    return best


# ------------------------------------------------------------------------------ encode / decode


def encode(x: NDArray[Any], params: DDPParams, rotation_seed: bytes, rng: RandomSource) -> NDArray[Any]:
    """One silo's ring vector (length padded_dim, the ring's dtype): clip, rotate, scale, round, noise, mod M."""
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    if v.shape[0] != params.dim:
        raise ConfigurationError(f"update must have dimension {params.dim}")
    if not np.all(np.isfinite(v)):
        raise ConfigurationError("update contains NaN or infinity")
    norm = float(np.linalg.norm(v))
    if norm > params.clip:
        v = v * (params.clip / norm)
    y = rotate(v, rotation_seed) * params.gamma
    z = conditional_round(y, params.l2_bound, rng, params.max_rounding_attempts)
    dp = params.padded_dim
    if params.mechanism == "gaussian":
        noise = sample_discrete_gaussian(rng, params.local_variance, dp)
    else:
        noise = sample_skellam(rng, params.local_variance, dp)
    if np.max(np.abs(noise), initial=0) >= (1 << 61) or np.max(np.abs(z), initial=0) >= (1 << 61):
        raise SecAggError("noisy value out of the int64 range")
    return Ring(params.modulus).reduce(z + noise)


def decode(ring_sum: NDArray[Any], params: DDPParams, rotation_seed: bytes, n_survivors: int) -> NDArray[np.float64]:
    """The noisy sum (float64, length dim) from SecAgg's modular sum of n_survivors silos' `encode` outputs.

    Refuses fewer than n_min survivors (the accounting assumed at least n_min noise shares) and more than
    n_max (the wrap check assumed at most n_max).
    """
    s = np.asarray(ring_sum)
    if s.ndim != 1 or s.shape[0] != params.padded_dim or not np.issubdtype(s.dtype, np.integer):
        raise ConfigurationError(f"ring sum must be an integer vector of length {params.padded_dim}")
    if isinstance(n_survivors, bool) or not isinstance(n_survivors, int):
        raise ConfigurationError("n_survivors must be an int")
    if n_survivors < params.n_min:
        raise ConfigurationError(
            f"{n_survivors} survivors is below n_min = {params.n_min}: the privacy accounting does not hold"
        )
    if n_survivors > params.max_silos:
        raise ConfigurationError(f"{n_survivors} survivors is above n_max = {params.max_silos}")
    m = params.modulus
    if m == 1 << 64:
        centred = s.astype(np.uint64).view(np.int64).astype(np.float64)
    else:
        w = s.astype(np.int64)
        if np.any(w < 0) or np.any(w >= m):
            raise ConfigurationError("ring sum has values outside [0, M)")
        centred = np.where(w >= (m + 1) // 2, w - m, w).astype(np.float64)
    return unrotate(centred / params.gamma, rotation_seed, params.dim)
