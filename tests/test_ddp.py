"""Distributed discrete Gaussian / Skellam: samplers, rotation, rounding, accounting, calibration, round trip."""

from __future__ import annotations

import decimal
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.crypto.rng import DeterministicRandom
from secagg.errors import ConfigurationError
from secagg.fl import ddp
from secagg.ring import Ring

SEED = b"round-seed-0123456789abcdef"


def _exact_dg_pmf(s2: float, lo: int, hi: int) -> dict[int, float]:
    ks = np.arange(-2000, 2001)
    w = np.exp(-(ks.astype(float) ** 2) / (2 * s2))
    w /= w.sum()
    return {int(k): float(p) for k, p in zip(ks, w, strict=True) if lo <= k <= hi}


# ------------------------------------------------------------------------------------- rotation


def test_fwht_matches_explicit_hadamard() -> None:
    h = np.array([[1.0]])
    for _ in range(4):
        h = np.block([[h, h], [h, -h]])
    x = np.random.default_rng(0).normal(size=16)
    assert np.allclose(ddp.fwht(x), h @ x)


@pytest.mark.parametrize("dim", [1, 5, 16, 100])
def test_rotation_is_orthogonal_and_invertible(dim: int) -> None:
    dp = 1 << max(0, (dim - 1).bit_length())
    cols = [ddp.rotate(np.eye(dim)[i], SEED) for i in range(dim)]
    r = np.stack(cols, axis=1)  # dp x dim: the rotation restricted to the unpadded inputs
    assert r.shape == (dp, dim)
    assert np.allclose(r.T @ r, np.eye(dim), atol=1e-12)
    full = np.stack([ddp.fwht(np.eye(dp)[i] * ddp.rotation_signs(SEED, dp)) for i in range(dp)], axis=1)
    full /= math.sqrt(dp)
    assert np.allclose(full @ full.T, np.eye(dp), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=70), st.binary(min_size=16, max_size=32))
def test_rotation_round_trip(values: list[float], seed: bytes) -> None:
    x = np.array(values)
    y = ddp.rotate(x, seed)
    assert np.isclose(np.linalg.norm(y), np.linalg.norm(x), rtol=1e-12, atol=1e-9)
    assert np.allclose(ddp.unrotate(y, seed, len(values)), x, atol=1e-9)


def test_rotation_signs_depend_on_seed_only() -> None:
    a = ddp.rotation_signs(SEED, 1024)
    assert np.array_equal(a, ddp.rotation_signs(SEED, 1024))
    assert not np.array_equal(a, ddp.rotation_signs(SEED[::-1], 1024))
    assert set(np.unique(a)) == {-1.0, 1.0}
    assert abs(a.mean()) < 0.15
    with pytest.raises(ConfigurationError):
        ddp.rotation_signs(b"short", 8)


# -------------------------------------------------------------------------------------- samplers


def test_discrete_laplace_moments() -> None:
    rng = DeterministicRandom(1)
    for t in (1, 3, 40):
        x = ddp.sample_discrete_laplace(rng, t, 100_000).astype(float)
        q = math.exp(-1 / t)
        var = 2 * q / (1 - q) ** 2
        assert abs(x.mean()) < 5 * math.sqrt(var / x.size)
        assert abs(x.var() / var - 1) < 0.04


@pytest.mark.parametrize("variance", [Fraction(5, 2), Fraction(1), 0.3, 50.0, 1e6, 2.0**40])
def test_discrete_gaussian_mean_and_variance(variance: float | Fraction) -> None:
    rng = DeterministicRandom(2)
    n = 200_000
    x = ddp.sample_discrete_gaussian(rng, variance, n).astype(float)
    s2 = float(variance)
    # exact variance of N_Z(0, s2) (below s2 for small s2)
    ks = np.arange(-4000, 4001, dtype=float)
    w = np.exp(-(ks**2) / (2 * s2)) if s2 < 1e5 else None
    exact_var = float((w * ks**2).sum() / w.sum()) if w is not None else s2
    assert abs(x.mean()) < 5 * math.sqrt(exact_var / n)
    assert abs(x.var() / exact_var - 1) < 5 * math.sqrt(2 / n) + 1e-3


@pytest.mark.property("P15")
def test_discrete_gaussian_pmf() -> None:
    rng = DeterministicRandom(3)
    n = 200_000
    x = ddp.sample_discrete_gaussian(rng, Fraction(1), n)
    pmf = _exact_dg_pmf(1.0, -4, 4)
    for k, p in pmf.items():
        freq = float(np.mean(x == k))
        assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-5, (k, freq, p)


def test_discrete_gaussian_is_deterministic_given_the_source() -> None:
    a = ddp.sample_discrete_gaussian(DeterministicRandom(9), 1e4, 1000)
    b = ddp.sample_discrete_gaussian(DeterministicRandom(9), 1e4, 1000)
    c = ddp.sample_discrete_gaussian(DeterministicRandom(10), 1e4, 1000)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_discrete_gaussian_refuses_bad_variance() -> None:
    rng = DeterministicRandom(0)
    for bad in (0.0, -1.0, float("nan"), float("inf"), 2.0**61):
        with pytest.raises(ConfigurationError):
            ddp.sample_discrete_gaussian(rng, bad, 3)


@pytest.mark.parametrize("lam", [0.3, 3.0, 7.5, 1000.0, 1e6, 1e12, 2.0**50])
def test_poisson_mean_and_variance(lam: float) -> None:
    rng = DeterministicRandom(4)
    n = 200_000
    x = ddp.sample_poisson(rng, lam, n).astype(float)
    assert x.min() >= 0
    assert abs(x.mean() - lam) < 5 * math.sqrt(lam / n)
    assert abs(x.var() / lam - 1) < 5 * math.sqrt((2 + 1 / lam) / n)


def test_poisson_pmf() -> None:
    rng = DeterministicRandom(5)
    n = 200_000
    lam = 3.0
    x = ddp.sample_poisson(rng, lam, n)
    for k in range(10):
        p = math.exp(-lam) * lam**k / math.factorial(k)
        freq = float(np.mean(x == k))
        assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-5, (k, freq, p)


def test_poisson_exact_path_agrees_with_fast_decisions() -> None:
    """The decimal comparison reaches the same verdict as the float path wherever the float path decides."""
    gen = np.random.default_rng(7)
    for lam in (2.5, 900.0, 3e7):
        m = math.floor(lam)
        t = math.isqrt(m) + 1
        log_c = ddp._poisson_envelope(lam, m, t)
        js = gen.integers(-min(m, 3 * t), 3 * t + 1, size=25)
        lv = ddp._poisson_log_ratio(lam, m, t, js.astype(np.int64)) - log_c
        assert np.all(lv <= 1e-5)  # the envelope dominates
        for j, lval in zip(js, lv, strict=True):
            for target in (lval - 0.01, lval + 0.01):  # U just below / above the threshold
                u = int(min(max(math.exp(target), 0.0), 1 - 2**-52) * 2.0**64)
                expected = target < lval
                got = ddp._poisson_accept_exact(None, lam, m, t, log_c, int(j), u, 64)
                assert got == expected


def test_poisson_exact_path_refines_a_near_tie() -> None:
    lam, m = 900.0, 900
    t = math.isqrt(m) + 1
    log_c = ddp._poisson_envelope(lam, m, t)
    j = 5
    with decimal.localcontext(decimal.Context(prec=80)):
        D = decimal.Decimal
        ln_ratio = j * D(lam).ln() - (D(math.factorial(m + j)) / D(math.factorial(m))).ln()
        threshold = (ln_ratio + D(j) / D(t) - D(log_c)).exp()
        u = int(threshold * D(2) ** 64)  # U's 64-bit interval contains exp(L): 64 bits cannot decide
    with pytest.raises(Exception, match="undecided"):
        ddp._poisson_accept_exact(None, lam, m, t, log_c, j, u, 64)
    verdicts = {ddp._poisson_accept_exact(DeterministicRandom(k), lam, m, t, log_c, j, u, 64) for k in range(16)}
    assert verdicts == {True, False}  # more bits of U land on both sides of the threshold


@pytest.mark.parametrize("mu", [1.0, 50.0, 1e9])
def test_skellam_mean_and_variance(mu: float) -> None:
    rng = DeterministicRandom(8)
    n = 200_000
    x = ddp.sample_skellam(rng, mu, n).astype(float)
    assert abs(x.mean()) < 5 * math.sqrt(mu / n)
    assert abs(x.var() / mu - 1) < 5 * math.sqrt((2 + 1 / mu) / n)


# -------------------------------------------------------------------------------------- rounding


def test_conditional_rounding_respects_the_bound_and_is_unbiased() -> None:
    rng = DeterministicRandom(11)
    y = np.random.default_rng(1).normal(size=64) * 3.0
    bound = ddp.rounded_l2_bound(float(np.linalg.norm(y)), 64, ddp.DEFAULT_BETA)
    zs = np.stack([ddp.conditional_round(y, bound, rng) for _ in range(2000)])
    assert np.all(np.abs(zs - y) < 1.0)
    assert np.all(np.linalg.norm(zs, axis=1) <= bound)
    # conditioning on the norm leaves a small bias only; the mean is close to y
    assert np.max(np.abs(zs.mean(axis=0) - y)) < 0.06


def test_conditional_rounding_gives_up_after_the_cap() -> None:
    y = np.full(16, 0.5)
    with pytest.raises(ddp.ConditionalRoundingError):
        ddp.conditional_round(y, 0.1, DeterministicRandom(0), max_attempts=5)


def test_rounded_bounds() -> None:
    assert ddp.rounded_l2_bound(10.0, 100, 0.0) == pytest.approx(20.0)
    b = ddp.rounded_l2_bound(10.0, 100, math.exp(-0.5))
    assert b == pytest.approx(math.sqrt(100 + 25 + 10 + 5))
    assert ddp.rounded_l1_bound(3.0, 100) == pytest.approx(9.0)
    assert ddp.rounded_l1_bound(30.0, 100) == pytest.approx(300.0)


# ------------------------------------------------------------------------------------ accounting


def test_epsilon_monotone_in_variance_and_rounds() -> None:
    kw: dict[str, object] = {"dim": 1000, "clip": 1.0, "gamma": 1000.0, "n_min": 5}
    for mech in ("gaussian", "skellam"):
        eps_v = [ddp.ddp_epsilon(mech, v, 10, 1e-5, **kw) for v in (1e4, 1e5, 1e6, 1e7)]  # type: ignore[arg-type]
        assert all(a > b for a, b in itertools.pairwise(eps_v))
        eps_r = [ddp.ddp_epsilon(mech, 1e5, r, 1e-5, **kw) for r in (1, 2, 10, 100)]  # type: ignore[arg-type]
        assert all(a < b for a, b in itertools.pairwise(eps_r))
        assert ddp.ddp_epsilon(mech, 1e5, 0, 1e-5, **kw) == 0.0  # type: ignore[arg-type]


def test_single_silo_gaussian_matches_the_continuous_gaussian_bound() -> None:
    """n_min = 1: tau = 0, and the RDP is alpha Delta^2 / (2 sigma^2) per round, computed here by hand."""
    dim, clip, gamma, v, rounds, delta = 64, 1.0, 100.0, 1e5, 20, 1e-6
    eps = ddp.ddp_epsilon("gaussian", v, rounds, delta, dim=dim, clip=clip, gamma=gamma, n_min=1)
    delta2 = min(
        gamma * clip + math.sqrt(dim), math.sqrt((gamma * clip) ** 2 + dim / 4 + gamma * clip + math.sqrt(dim) / 2)
    )
    rho = rounds * delta2**2 / (2 * v)  # zCDP parameter
    alphas = [1 + i / 100 for i in range(1, 100_000)]
    by_hand = min(rho * a + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1) for a in alphas)
    assert eps == pytest.approx(by_hand, rel=2e-3)
    assert eps <= rho + 2 * math.sqrt(rho * math.log(1 / delta))  # the classic zCDP conversion is looser


@pytest.mark.property("P15")
def test_single_silo_gaussian_matches_opacus_rdp() -> None:
    analysis = pytest.importorskip("opacus.accountants.analysis.rdp")
    dim, clip, gamma, v, rounds, delta = 256, 2.0, 50.0, 4e4, 7, 1e-5
    p = ddp.DDPParams("gaussian", dim, clip, gamma, v, n_min=1)
    orders = list(ddp._ORDERS)
    rdp = analysis.compute_rdp(q=1.0, noise_multiplier=math.sqrt(v) / p.l2_bound, steps=rounds, orders=orders)
    eps_opacus, _ = analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    assert p.epsilon(rounds, delta) == pytest.approx(float(eps_opacus), rel=1e-9)


def test_tau_and_many_silos() -> None:
    assert ddp._tau(1.0, 1) == 0.0
    assert ddp._tau(1.0, 2) == pytest.approx(10 * math.exp(-(math.pi**2)))
    # with large local variance tau vanishes and n silos of variance v act as one of variance n v
    a = ddp.ddp_epsilon("gaussian", 1e4, 5, 1e-5, dim=128, clip=1.0, gamma=100.0, n_min=10)
    b = ddp.ddp_epsilon("gaussian", 1e5, 5, 1e-5, dim=128, clip=1.0, gamma=100.0, n_min=1)
    assert a == pytest.approx(b, rel=1e-9)
    # with tiny local variance tau dominates and privacy degrades
    c = ddp.ddp_epsilon("gaussian", 0.3, 5, 1e-5, dim=128, clip=1.0, gamma=0.1, n_min=10)
    d = ddp.ddp_epsilon("gaussian", 3.0, 5, 1e-5, dim=128, clip=1.0, gamma=0.1, n_min=1)
    assert c > d


def test_skellam_approaches_gaussian_for_large_variance() -> None:
    kw: dict[str, object] = {"dim": 512, "clip": 1.0, "gamma": 1e4, "n_min": 4}
    g = ddp.ddp_epsilon("gaussian", 1e7, 10, 1e-5, **kw)  # type: ignore[arg-type]
    s = ddp.ddp_epsilon("skellam", 1e7, 10, 1e-5, **kw)  # type: ignore[arg-type]
    assert s >= g * 0.999
    assert s == pytest.approx(g, rel=0.01)


def test_replace_neighbouring_costs_more() -> None:
    kw: dict[str, object] = {"dim": 512, "clip": 1.0, "gamma": 1e4, "n_min": 4}
    a = ddp.ddp_epsilon("gaussian", 1e8, 10, 1e-5, **kw)  # type: ignore[arg-type]
    b = ddp.ddp_epsilon("gaussian", 1e8, 10, 1e-5, neighbouring="replace", **kw)  # type: ignore[arg-type]
    assert b > 1.8 * a


# ---------------------------------------------------------------------------- calibration, wrap


@pytest.mark.property("P15")
@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_calibrate_meets_the_target(mechanism: ddp.Mechanism) -> None:
    p = ddp.calibrate(
        mechanism=mechanism, epsilon=3.0, delta=1e-5, dim=2000, clip=0.5, n_min=4, n_max=10, rounds=50, bits=32
    )
    eps = p.epsilon(50, 1e-5)
    assert 0.99 * 3.0 <= eps <= 3.0
    assert p.wrap_probability() <= 2.0**-40
    assert p.max_silos == 10 and p.modulus == 1 << 32
    wider = ddp.calibrate(
        mechanism=mechanism, epsilon=3.0, delta=1e-5, dim=2000, clip=0.5, n_min=4, n_max=10, rounds=50, bits=40
    )
    assert wider.gamma >= p.gamma
    assert wider.noise_std() <= p.noise_std() * 1.0001


def test_calibrate_refuses_an_impossible_ring() -> None:
    with pytest.raises(ConfigurationError, match="wrap"):
        ddp.calibrate(
            mechanism="gaussian", epsilon=0.1, delta=1e-6, dim=1 << 16, clip=1.0, n_min=2, n_max=500,
            rounds=1000, bits=12,
        )  # fmt: skip
    with pytest.raises(ConfigurationError):
        ddp.calibrate(mechanism="gaussian", epsilon=1.0, delta=1e-5, dim=8, clip=1.0, n_min=2, rounds=1)


@pytest.mark.property("P15")
def test_params_refuse_a_likely_wrap() -> None:
    ok = ddp.DDPParams("gaussian", 1000, 1.0, 1e5, 1e10, n_min=5, n_max=10)
    assert ok.wrap_probability() < 2.0**-40
    with pytest.raises(ConfigurationError, match="wrap"):  # signal: 10 * 1e9 / sqrt(1024) per coordinate
        ddp.DDPParams("gaussian", 1000, 1.0, 1e9, 1e10, n_min=5, n_max=10)
    with pytest.raises(ConfigurationError, match="wrap"):  # noise: sqrt(1000 * 1e15) per coordinate
        ddp.DDPParams("skellam", 1000, 1.0, 1e3, 1e15, n_min=5, n_max=1000)
    # a bigger ring accepts the same parameters
    assert ddp.DDPParams("gaussian", 1000, 1.0, 1e9, 1e10, n_min=5, n_max=10, modulus=1 << 64)


def test_wrap_probability_grows_with_gamma_silos_and_noise() -> None:
    kw: dict[str, object] = {"dim": 1000, "clip": 1.0, "modulus": 1 << 32}
    for mech in ("gaussian", "skellam"):
        w = [ddp.wrap_probability(mech, 1e12, gamma=g, n_max=10, **kw) for g in (2e8, 4e8, 8e8)]  # type: ignore[arg-type]
        assert 0 < w[0] < w[1] < w[2] < 1e-10
        assert ddp.wrap_probability(mech, 1e15, gamma=2e8, n_max=10, **kw) > w[0]  # type: ignore[arg-type]
        assert ddp.wrap_probability(mech, 1e12, gamma=2e8, n_max=20, **kw) > w[0]  # type: ignore[arg-type]


def test_params_validation() -> None:
    with pytest.raises(ConfigurationError):
        ddp.DDPParams("laplace", 10, 1.0, 1.0, 1.0, n_min=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ddp.DDPParams("gaussian", 10, 1.0, 1.0, 0.1, n_min=1)  # sigma < 1/2
    with pytest.raises(ConfigurationError):
        ddp.DDPParams("gaussian", 10, 1.0, 1.0, 1.0, n_min=3, n_max=2)
    with pytest.raises(ConfigurationError):
        ddp.DDPParams("gaussian", 10, -1.0, 1.0, 1.0, n_min=1)


# ------------------------------------------------------------------------------------ round trip


def _round(params: ddp.DDPParams, xs: list[np.ndarray], rng: DeterministicRandom, seed: bytes) -> np.ndarray:
    ring = Ring(params.modulus)
    acc = ring.zeros(params.padded_dim)
    for x in xs:
        enc = ddp.encode(x, params, seed, rng)
        assert enc.dtype == ring.dtype and enc.shape == (params.padded_dim,)
        ring.add_into(acc, enc)  # what SecAgg's server reconstructs: the exact sum mod M
    return ddp.decode(acc, params, seed, len(xs))


def _clipped(x: np.ndarray, c: float) -> np.ndarray:
    n = float(np.linalg.norm(x))
    return x * min(1.0, c / n)


@pytest.mark.property("P15")
@pytest.mark.parametrize("modulus", [1 << 32, 1 << 64, (1 << 40) - 87])
def test_decode_is_the_sum_up_to_rounding_when_noise_is_tiny(modulus: int) -> None:
    dim, n = 300, 6
    params = ddp.DDPParams("gaussian", dim, 1.0, 1e6, 0.25, n_min=n, modulus=modulus)
    gen = np.random.default_rng(3)
    xs = [gen.normal(size=dim) * s for s in (0.01, 0.1, 1.0, 3.0, 0.5, 0.05)]
    out = _round(params, xs, DeterministicRandom(12), SEED)
    true = sum(_clipped(x, 1.0) for x in xs)
    # rounding moves each rotated coordinate by < 1 per silo, noise of variance n/4: a few units / gamma
    assert np.linalg.norm(out - true) < (n * math.sqrt(params.padded_dim) + 50) / params.gamma
    assert np.max(np.abs(out - true)) < 1e-4


@pytest.mark.property("P15")
@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_decoded_noise_is_unbiased_with_the_calibrated_variance(mechanism: ddp.Mechanism) -> None:
    dim, n_min, n = 200, 3, 5
    params = ddp.calibrate(
        mechanism=mechanism, epsilon=4.0, delta=1e-5, dim=dim, clip=1.0, n_min=n_min, n_max=8, rounds=5, bits=32
    )
    gen = np.random.default_rng(4)
    rng = DeterministicRandom(13)
    errs = []
    for rep in range(25):
        xs = [gen.normal(size=dim) * 0.2 for _ in range(n)]
        seed = rep.to_bytes(4, "big") * 4
        errs.append(_round(params, xs, rng, seed) - sum(_clipped(x, 1.0) for x in xs))
    e = np.stack(errs)
    expected_var = params.noise_std(n) ** 2  # n survivors' noise, original units
    assert e.var() == pytest.approx(expected_var, rel=5 * math.sqrt(2 / e.size))
    assert abs(e.mean()) < 5 * math.sqrt(expected_var / e.size)
    # per coordinate, averaged over the repeats: no coordinate is systematically off
    assert np.max(np.abs(e.mean(axis=0))) < 5 * math.sqrt(expected_var / e.shape[0])
    # fewer survivors than n_min breaks the accounting: refused
    with pytest.raises(ConfigurationError, match="n_min"):
        ddp.decode(np.zeros(params.padded_dim, dtype=np.uint32), params, SEED, n_min - 1)
    with pytest.raises(ConfigurationError, match="n_max"):
        ddp.decode(np.zeros(params.padded_dim, dtype=np.uint32), params, SEED, 9)


def test_encode_refuses_bad_input() -> None:
    params = ddp.DDPParams("gaussian", 10, 1.0, 100.0, 100.0, n_min=2)
    rng = DeterministicRandom(0)
    with pytest.raises(ConfigurationError):
        ddp.encode(np.full(10, np.nan), params, SEED, rng)
    with pytest.raises(ConfigurationError):
        ddp.encode(np.zeros(11), params, SEED, rng)
    with pytest.raises(ConfigurationError):
        ddp.decode(np.zeros(15, dtype=np.uint32), params, SEED, 2)


def test_conditional_rounding_decides_ties_exactly() -> None:
    y = np.array([3.0, 4.0, 12.0] + [0.0] * 5)  # integral: rounding is deterministic, norm exactly 13
    rng = DeterministicRandom(0)
    assert np.array_equal(ddp.conditional_round(y, 13.0, rng), y.astype(np.int64))
    with pytest.raises(ddp.ConditionalRoundingError):
        ddp.conditional_round(y, math.nextafter(13.0, 0.0), rng, max_attempts=3)


@pytest.mark.property("P15")
def test_encode_is_reproducible_from_the_random_source() -> None:
    params = ddp.DDPParams("skellam", 50, 1.0, 1000.0, 1e4, n_min=2)
    x = np.linspace(-1, 1, 50)
    a = ddp.encode(x, params, SEED, DeterministicRandom(21))
    b = ddp.encode(x, params, SEED, DeterministicRandom(21))
    c = ddp.encode(x, params, SEED, DeterministicRandom(22))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # the same randomness under another public rotation seed gives another vector
    assert not np.array_equal(a, ddp.encode(x, params, SEED[::-1], DeterministicRandom(21)))
