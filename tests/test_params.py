"""SecAgg+ parameters: fcp's Harary rule (anchors and fcp's own table), exact tail checks, validation."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import ConfigurationError
from secagg.protocol import params as params_mod
from secagg.protocol.graph import Graph
from secagg.protocol.params import (
    COMPLETE_BELOW,
    HARDENED,
    MAX_CLIENTS,
    SEMI_HONEST,
    Mode,
    SecAggParams,
    check_params,
    corrupt_neighbour_bound,
    derive_params,
    log_prob_disconnected,
    max_corrupt,
    max_degree,
    max_dropouts,
    min_threshold,
    survivor_threshold_bound,
)
from tests.vectors import load_vectors

SH, HD = SEMI_HONEST, HARDENED

# Expected (degree, threshold) from fcp/secagg/server/graph_parameter_finder_test.cc (google-parfait/
# federated-compute), security 40, correctness 20: (n, corrupt, dropout, mode, k, t).
FCP_TABLE: list[tuple[int, float, float, Mode, int, int]] = [
    (100, 0.45, 0.45, SH, 92, 46),
    (1000, 0.45, 0.45, SH, 822, 417),
    (10000, 0.45, 0.45, SH, 3494, 1771),
    (100, 0.33, 0.33, SH, 68, 34),
    (1000, 0.33, 0.33, SH, 286, 150),
    (10000, 0.33, 0.33, SH, 422, 221),
    (100000, 0.33, 0.33, SH, 480, 251),
    (100, 0.05, 0.33, SH, 28, 6),
    (1000, 0.05, 0.33, SH, 72, 24),
    (10000, 0.05, 0.33, SH, 86, 29),
    (1000000, 0.05, 0.33, SH, 102, 34),
    (10, 0.33, 0.05, SH, 4, 4),
    (100, 0.33, 0.05, SH, 34, 29),
    (1000, 0.33, 0.05, SH, 78, 60),
    (100000, 0.33, 0.05, SH, 102, 77),
    (10, 0.05, 0.05, SH, 2, 2),
    (100, 0.05, 0.05, SH, 12, 6),
    (1000, 0.05, 0.05, SH, 30, 17),
    (10000, 0.05, 0.05, SH, 34, 20),
    (1000000, 0.05, 0.05, SH, 38, 22),
    (10, 0.33, 0.0, SH, 4, 4),
    (100, 0.33, 0.0, SH, 26, 25),
    (1000, 0.33, 0.0, SH, 38, 36),
    (100, 0.0, 0.33, SH, 26, 2),
    (10000, 0.0, 0.33, SH, 42, 2),
    (1000, 0.0, 0.0, SH, 2, 2),
    (10, 0.05, 0.33, HD, 8, 5),
    (100, 0.05, 0.33, HD, 72, 39),
    (1000, 0.05, 0.33, HD, 398, 223),
    (10000, 0.05, 0.33, HD, 746, 420),
    (100, 0.33, 0.05, HD, 42, 37),
    (1000, 0.33, 0.05, HD, 132, 109),
    (100, 0.05, 0.05, HD, 16, 11),
    (1000, 0.05, 0.05, HD, 52, 37),
    (100000, 0.05, 0.05, HD, 68, 48),
    (10, 0.33, 0.0, HD, 4, 4),
    (100, 0.33, 0.0, HD, 26, 26),
    (1000, 0.33, 0.0, HD, 38, 37),
    (100, 0.0, 0.33, HD, 68, 35),
    (1000, 0.0, 0.33, HD, 228, 115),
    (100, 0.0, 0.0, HD, 2, 2),
]

# fcp's finder accepts a hardened t with 2t > k + c; we require 2t > k + 1 + c (a share the client may keep
# for itself counts among the holders), so for these rows our search stops at a larger k: ours (k, t).
OURS_HARDENED = {
    (100, 0.05, 0.33): (74, 41),
    (100, 0.33, 0.05): (44, 39),
    (1000, 0.33, 0.05): (138, 114),
    (100, 0.05, 0.05): (18, 13),
    (100000, 0.05, 0.05): (72, 51),
    (10, 0.33, 0.0): (6, 6),
    (1000, 0.33, 0.0): (38, 38),
}


def _fcp_hardened_threshold(k: int, corrupt_neighbours: int, mode: Mode) -> int:
    """fcp's CheckNumberOfNeighbors: t1 -> ceil((t1 + k - 1.25) / 2) in the semi-malicious case."""
    t1 = corrupt_neighbours
    if mode == HARDENED:
        t1 = math.ceil((t1 + k - 1.25) / 2)
    return max(t1 + 1, 2)


def _harary(n: int, gamma: float, delta: float, mode: Mode) -> tuple[int, int]:
    p = derive_params(n, gamma, delta, mode, complete_below=0)
    return p.k, p.t


# -- the anchors ----------------------------------------------------------------------------------------


@pytest.mark.property("P1")
def test_anchor_n100() -> None:
    p = derive_params(100, corrupt_fraction=0.1, dropout_fraction=0.1, mode=SEMI_HONEST)
    assert (p.k, p.t) == (22, 11)
    assert not p.is_complete and p.mode == SEMI_HONEST


@pytest.mark.property("P1")
def test_anchor_n1000() -> None:
    p = derive_params(1000, corrupt_fraction=0.1, dropout_fraction=0.1)
    assert (p.k, p.t) == (48, 27)


@pytest.mark.parametrize(("n", "gamma", "delta", "mode", "k", "t"), FCP_TABLE)
def test_port_reproduces_fcp_table(
    n: int, gamma: float, delta: float, mode: Mode, k: int, t: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With fcp's own hardened threshold rule swapped in, the search returns fcp's numbers exactly.
    monkeypatch.setattr(params_mod, "min_threshold", _fcp_hardened_threshold)
    assert params_mod._harary_degree(n, gamma, delta, mode, 40, 20) == (k, t)


@pytest.mark.property("P1")
@pytest.mark.parametrize(("n", "gamma", "delta", "mode", "k", "t"), FCP_TABLE)
def test_derived_params_against_fcp_table(n: int, gamma: float, delta: float, mode: Mode, k: int, t: int) -> None:
    ours = _harary(n, gamma, delta, mode)
    if mode == SEMI_HONEST:
        assert ours == (k, t)
        return
    assert ours == OURS_HARDENED.get((n, gamma, delta), (k, t))
    k_ours, t_ours = ours
    assert k_ours >= k
    assert 2 * t_ours > k_ours + 1 + corrupt_neighbour_bound(n, k_ours, gamma)
    if ours != (k, t):  # fcp's pair misses 2t > k + 1 + c
        assert not 2 * t > k + 1 + corrupt_neighbour_bound(n, k, gamma)


def test_tiny_n_deviation_from_fcp_keeps_the_correctness_bound() -> None:
    # fcp returns k=4, t=2 for n=10, 5% corrupt, 33% dropout: it clamps t to 2 after checking t1 < t2,
    # though t2 = 1 there. We keep t <= t2 and move on to k=6.
    assert survivor_threshold_bound(10, 4, 0.33) == 1
    assert _harary(10, 0.05, 0.33, SH) == (6, 2)
    assert _harary(10, 0.0, 0.33, SH) == (6, 2)
    # Exact: with 7 of 10 clients surviving, 4 random neighbours hold fewer than 2 survivors w.p. 7/210.
    assert _tail_below(10, 7, 4, 2) == Fraction(7, 210) > Fraction(1, 10 * 2**20)


# -- exact arithmetic -----------------------------------------------------------------------------------


def _hyper_pmf(total: int, marked: int, sampled: int, x: int) -> Fraction:
    if x < 0 or x > sampled or x > marked or sampled - x > total - marked:
        return Fraction(0)
    return Fraction(math.comb(marked, x) * math.comb(total - marked, sampled - x), math.comb(total, sampled))


def _tail_above(total: int, marked: int, sampled: int, c: int) -> Fraction:
    """P[X > c]."""
    return sum((_hyper_pmf(total, marked, sampled, x) for x in range(c + 1, sampled + 1)), Fraction(0))


def _tail_below(total: int, marked: int, sampled: int, t: int) -> Fraction:
    """P[X < t]."""
    return sum((_hyper_pmf(total, marked, sampled, x) for x in range(0, t)), Fraction(0))


def _disconnect_bound(n: int, k: int, bad: int) -> Fraction:
    ways = Fraction(n * (n - k - 1), 2)
    p = Fraction(1)
    for i in range(k):
        p *= Fraction(max(bad - i, 0), n - i)
    return ways * p


@pytest.mark.parametrize(("n", "k", "t"), [(100, 22, 11), (1000, 48, 27)])
def test_anchor_bounds_hold_exactly(n: int, k: int, t: int) -> None:
    corrupt, dropped = n // 10, n // 10
    q_sec = Fraction(1, 2**41 * n)
    q_cor = Fraction(1, 2**20 * n)
    assert _disconnect_bound(n, k, corrupt + dropped) < Fraction(1, 2**41)
    assert _tail_above(n, corrupt, k, t - 1) <= q_sec  # P[corrupt neighbours >= t]
    assert _tail_above(n, corrupt, k, t - 2) > q_sec  # t is the smallest such threshold
    assert _tail_below(n, n - dropped, k, t) < q_cor  # P[live neighbours < t]
    # k - 2 cannot work: either the gap bound or the threshold window fails.
    with pytest.raises(ConfigurationError):
        derive_params(n, 0.1, 0.1, k=k - 2)
    k2 = k - 2
    gap_fails = _disconnect_bound(n, k2, corrupt + dropped) >= Fraction(1, 2**41)
    t_lo = next(c for c in range(k2 + 1) if _tail_above(n, corrupt, k2, c) <= q_sec) + 1
    window_fails = _tail_below(n, n - dropped, k2, t_lo) >= q_cor
    assert gap_fails or window_fails


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=8, max_value=300),
    marked_frac=st.floats(min_value=0.0, max_value=0.6),
    k_frac=st.floats(min_value=0.0, max_value=1.0),
)
def test_tail_bounds_match_exact_hypergeometric(n: int, marked_frac: float, k_frac: float) -> None:
    marked = int(marked_frac * n)
    k = 1 + int(k_frac * min(n - 3, 70))
    fraction = marked / n
    assert max_corrupt(n, fraction) == marked == max_dropouts(n, fraction)
    tol = Fraction(1, 10**9)

    q = Fraction(1, 2**41 * n)
    c = corrupt_neighbour_bound(n, k, fraction)
    assert 0 <= c <= k
    assert _tail_above(n, marked, k, c) <= q * (1 + tol)
    if c >= 1:
        assert _tail_above(n, marked, k, c - 1) >= q * (1 - tol)

    q2 = Fraction(1, 2**20 * n)
    t2 = survivor_threshold_bound(n, k, fraction)
    assert _tail_below(n, n - marked, k, t2) <= q2 * (1 + tol)
    if t2 < k:
        assert _tail_below(n, n - marked, k, t2 + 1) >= q2 * (1 - tol)


@pytest.mark.property("P1")
def test_disconnection_bound() -> None:
    # Matches the exact union bound, uses the even part for odd k, and vanishes when it cannot happen.
    lp = log_prob_disconnected(100, 16, 0.1, 0.1)
    assert math.isclose(math.exp(lp), float(_disconnect_bound(100, 16, 20)), rel_tol=1e-9)
    assert log_prob_disconnected(100, 17, 0.1, 0.1) == lp
    assert lp > log_prob_disconnected(100, 18, 0.1, 0.1) > -math.inf
    assert log_prob_disconnected(100, 22, 0.1, 0.0) == -math.inf  # 22 > 10 bad clients
    assert log_prob_disconnected(50, 49, 0.4, 0.4) == -math.inf  # complete graph
    assert log_prob_disconnected(50, 1, 0.0, 0.0) > 0  # a matching is disconnected anyway


# -- the complete graph ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 10, 17, 40, 63])
@pytest.mark.parametrize(("gamma", "delta"), [(0.0, 0.0), (0.1, 0.1), (0.2, 0.1), (0.1, 0.3)])
def test_complete_graph_below_64(n: int, gamma: float, delta: float) -> None:
    corrupt, dropped = max_corrupt(n, gamma), max_dropouts(n, delta)
    for mode in (SH, HD):
        t_expected = corrupt + 1 if mode == SH else (n + corrupt) // 2 + 1
        t_expected = max(t_expected, min(2, n - 1))
        if t_expected > n - 1 - dropped:
            with pytest.raises(ConfigurationError, match="no threshold works"):
                derive_params(n, gamma, delta, mode)
            continue
        p = derive_params(n, gamma, delta, mode)
        assert p.is_complete and p.k == n - 1
        assert p.t == t_expected
        assert p.corrupt_neighbours == corrupt
        assert p.graph(None).is_complete


def test_complete_below_is_a_parameter() -> None:
    assert COMPLETE_BELOW == 64
    assert derive_params(63).is_complete
    assert not derive_params(64).is_complete
    assert derive_params(100, complete_below=101).k == 99
    assert derive_params(100, complete_below=101).t == 11  # 10 corrupt in total
    assert derive_params(40, complete_below=0).k < 39


def test_infeasible_harary_falls_back_to_the_complete_graph() -> None:
    # fcp: the finder refuses gamma + delta > 0.9 (gamma + 2 delta > 0.9 hardened); then the full graph.
    p = derive_params(1000, 0.5, 0.45, SH)
    assert p.is_complete and p.t == 501
    h = derive_params(1000, 0.33, 0.33, HD)
    assert h.is_complete and h.t == (1000 + 330) // 2 + 1
    with pytest.raises(ConfigurationError):
        derive_params(1000, 0.5, 0.5, SH)  # no threshold can work: 500 corrupt, 500 dropped


# -- overrides and validation ---------------------------------------------------------------------------


def test_explicit_k_gets_the_smallest_secure_t() -> None:
    p = derive_params(100, k=30)
    assert p.k == 30 and p.t == corrupt_neighbour_bound(100, 30, 0.1) + 1
    with pytest.raises(ConfigurationError):
        derive_params(100, k=30, t=p.t - 1)
    assert derive_params(100, k=30, t=p.t + 3).t == p.t + 3


def test_odd_k_override_counts_the_larger_neighbourhood() -> None:
    # n and k odd: one client has k + 1 neighbours; bounds use k + 1.
    assert max_degree(101, 31) == 32 and max_degree(100, 31) == 31 and max_degree(101, 100) == 100
    p = derive_params(101, k=31)
    assert p.corrupt_neighbours == corrupt_neighbour_bound(101, 32, 0.1)
    assert p.t == p.corrupt_neighbours + 1
    g = p.graph(bytes(16))
    assert max(g.degree(i) for i in range(101)) == 32
    h = derive_params(101, 0.1, 0.0, k=31, mode=HD)
    assert h.t == 22
    assert 2 * h.t > 32 + 1 + h.corrupt_neighbours
    assert 2 * (h.t - 1) <= 32 + 1 + h.corrupt_neighbours


@pytest.mark.property("P1")
def test_semi_honest_needs_t_above_corrupt() -> None:
    # complete graph, 3 of 10 corrupt
    assert derive_params(10, 0.3, 0.1, t=4).t == 4
    with pytest.raises(ConfigurationError, match="semi-honest mode needs t > corrupt"):
        derive_params(10, 0.3, 0.1, t=3)
    # Harary graph: the probabilistic bound among neighbours
    c = corrupt_neighbour_bound(1000, 48, 0.1)
    assert c == 26
    with pytest.raises(ConfigurationError, match="among 48 neighbours"):
        check_params(1000, 48, c, SH, 0.1, 0.1)
    check_params(1000, 48, c + 1, SH, 0.1, 0.1)


@pytest.mark.property("P2")
def test_hardened_needs_2t_above_k_plus_1_plus_corrupt() -> None:
    # complete graph: 2t > n + c = 11, so t >= 6
    assert derive_params(10, 0.1, 0.1, HD).t == 6
    with pytest.raises(ConfigurationError, match="hardened mode needs 2t > k"):
        derive_params(10, 0.1, 0.1, HD, t=5)
    # Harary: 2t > k + 1 + c with the neighbourhood bound
    k = 80
    c = corrupt_neighbour_bound(1000, k, 0.05)
    assert c == 24
    t_min = (k + 1 + c) // 2 + 1
    assert min_threshold(k, c, HD) == t_min
    with pytest.raises(ConfigurationError, match="hardened"):
        check_params(1000, k, t_min - 1, HD, 0.05, 0.05)
    check_params(1000, k, t_min, HD, 0.05, 0.05)


def test_threshold_must_be_reachable_after_dropouts() -> None:
    # complete graph, 3 of 10 drop: a client keeps 9 - 3 = 6 live neighbours
    assert derive_params(10, 0.1, 0.3, t=6).t == 6
    with pytest.raises(ConfigurationError, match="cannot be met"):
        derive_params(10, 0.1, 0.3, t=7)
    with pytest.raises(ConfigurationError, match="cannot be met"):
        check_params(1000, 48, 40, SH, 0.1, 0.1)


@pytest.mark.property("P1")
def test_sparse_k_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="too sparse"):
        derive_params(1000, 0.1, 0.1, k=4)
    with pytest.raises(ConfigurationError, match="too sparse"):
        derive_params(100, 0.0, 0.0, k=1)  # a matching is not connected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 1},
        {"n": 0},
        {"n": MAX_CLIENTS + 1},
        {"n": 10.0},
        {"n": True},
        {"n": 10, "corrupt_fraction": 1.0},
        {"n": 10, "corrupt_fraction": -0.1},
        {"n": 10, "dropout_fraction": float("nan")},
        {"n": 10, "dropout_fraction": True},
        {"n": 10, "dropout_fraction": "0.1"},
        {"n": 10, "mode": "malicious"},
        {"n": 10, "k": 0},
        {"n": 10, "k": 10},
        {"n": 10, "k": 2.0},
        {"n": 10, "t": 0},
        {"n": 10, "t": 10},
        {"n": 10, "k": 4, "t": 5},
        {"n": 10, "security_bits": 0},
        {"n": 10, "correctness_bits": 300},
        {"n": 10, "complete_below": None},
    ],
)
def test_invalid_arguments_are_configuration_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        derive_params(**kwargs)  # type: ignore[arg-type]


def test_params_object_validates_itself_and_is_frozen() -> None:
    p = SecAggParams(n=100, k=22, t=11, mode=SH, corrupt_fraction=0.1, dropout_fraction=0.1)
    assert p == derive_params(100)
    assert (p.max_corrupt, p.max_dropouts, p.min_survivors) == (10, 10, 90)
    assert p.corrupt_neighbours == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.t = 5  # type: ignore[misc]
    with pytest.raises(ConfigurationError):
        SecAggParams(n=100, k=22, t=10, mode=SH, corrupt_fraction=0.1, dropout_fraction=0.1)
    with pytest.raises(ConfigurationError):
        SecAggParams(n=100, k=22, t=11, mode="other", corrupt_fraction=0.1, dropout_fraction=0.1)  # type: ignore[arg-type]
    seed = bytes(range(32))
    assert p.graph(seed) == Graph(100, 22, seed)


def test_security_and_correctness_bits_are_parameters() -> None:
    base = derive_params(1000)
    strict = derive_params(1000, security_bits=80, correctness_bits=40)
    assert (strict.security_bits, strict.correctness_bits) == (80, 40)
    assert strict.k > base.k and strict.t > base.t


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=400),
    gamma=st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.33]),
    delta=st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.33]),
    mode=st.sampled_from([SH, HD]),
)
def test_derived_params_satisfy_their_own_checks(n: int, gamma: float, delta: float, mode: Mode) -> None:
    try:
        p = derive_params(n, gamma, delta, mode, complete_below=16)
    except ConfigurationError:
        # only the complete-graph fallback can be infeasible, and then its threshold is out of reach
        corrupt = max_corrupt(n, gamma)
        t = corrupt + 1 if mode == SH else (n + corrupt) // 2 + 1
        assert max(t, min(2, n - 1)) > n - 1 - max_dropouts(n, delta)
        return
    check_params(p.n, p.k, p.t, p.mode, gamma, delta)
    assert 1 <= p.t <= p.k <= n - 1
    c = p.corrupt_neighbours
    assert p.t > c if mode == SH else 2 * p.t > p.k + 1 + c
    if not p.is_complete:
        assert p.k % 2 == 0 and n >= 16
        assert p.t <= survivor_threshold_bound(n, p.k, delta)


@pytest.mark.property("P12")
def test_param_vectors() -> None:
    cases = load_vectors("graph")["params"]
    assert len(cases) >= 9
    for v in cases:
        p = derive_params(
            v["n"],
            v["corrupt_fraction"],
            v["dropout_fraction"],
            v["mode"],
            security_bits=v["security_bits"],
            correctness_bits=v["correctness_bits"],
        )
        assert (p.k, p.t) == (v["k"], v["t"])
    anchors = {(v["n"], v["mode"]): (v["k"], v["t"]) for v in cases if v["corrupt_fraction"] == 0.1}
    assert anchors[(100, SH)] == (22, 11) and anchors[(1000, SH)] == (48, 27)


# -- SPEC section 4, reimplemented from its text (interoperability, P12) --------------------------------

_EPS = 1e-14


def _spec_counts(n: int, gamma: float, delta: float, *, eps: bool = True, survivors: str = "ceil") -> tuple[int, ...]:
    """Step 1: C, D, S. eps=False and survivors="floor" / "round" are misreadings kept for the tests below."""
    e = _EPS if eps else 0.0
    corrupt = math.floor((gamma + e) * n)
    dropped = math.floor((delta + e) * n)
    alive = (1 - delta - e) * n
    s = {"ceil": math.ceil(alive), "floor": math.floor(alive), "round": round(alive)}[survivors]
    return corrupt, dropped, s


def _exact_pmf(total: int, marked: int, k: int, x: int) -> Fraction:
    if x < 0 or x > k or x > marked or k - x > total - marked:
        return Fraction(0)
    return Fraction(math.comb(marked, x) * math.comb(total - marked, k - x), math.comb(total, k))


def _exact_c(total: int, corrupt: int, k: int, q: Fraction) -> int:
    """The smallest c >= 0 with P[X > c] < q, X ~ H(total, corrupt, k)."""
    c, tail = k, Fraction(0)  # tail = P[X > c]
    while c > 0 and tail + _exact_pmf(total, corrupt, k, c) < q:
        tail += _exact_pmf(total, corrupt, k, c)
        c -= 1
    return c


def _exact_t2(total: int, alive: int, k: int, q: Fraction) -> int:
    """The largest t in 0..k with P[X < t] < q, X ~ H(total, alive, k)."""
    t, below = 0, Fraction(0)  # below = P[X < t]
    while t < k and below + _exact_pmf(total, alive, k, t) < q:
        below += _exact_pmf(total, alive, k, t)
        t += 1
    return t


def _exact_disconnect_ok(n: int, k: int, bad: int, *, zero_at_equal: bool = False) -> bool:
    k_even = k - k % 2
    if k >= n - 1 or k_even > bad or (zero_at_equal and k_even == bad):
        return True
    return _disconnect_bound(n, k_even, bad) < Fraction(1, 2**41)


def _t_min(k: int, c: int, mode: Mode) -> int:
    return max(c + 1 if mode == SH else (k + 1 + c) // 2 + 1, min(2, k))


def _spec_derive(
    n: int,
    gamma: float,
    delta: float,
    mode: Mode,
    *,
    others: bool = False,
    eps: bool = True,
    survivors: str = "ceil",
    zero_at_equal: bool = False,
    decimal_spread: bool = False,
) -> tuple[int, int] | None:
    """SPEC 4 in exact rational arithmetic (sigma = 40, eta = 20); the keywords switch to misreadings."""
    corrupt, dropped, alive = _spec_counts(n, gamma, delta, eps=eps, survivors=survivors)
    total = n - 1 if others else n  # misreading: the k neighbours drawn from the n - 1 others
    if decimal_spread:
        spread_ok = Fraction(repr(gamma)) + (1 if mode == SH else 2) * Fraction(repr(delta)) <= Fraction(9, 10)
    else:
        spread_ok = gamma + (delta if mode == SH else 2 * delta) <= 0.9
    if n >= COMPLETE_BELOW and spread_ok:
        q_s, q_c = Fraction(1, 2**41 * n), Fraction(1, 2**20 * n)
        for k in range(2, n - 1, 2):
            if not _exact_disconnect_ok(n, k, corrupt + dropped, zero_at_equal=zero_at_equal):
                continue
            t = _t_min(k, _exact_c(total, corrupt, k, q_s), mode)
            if t <= _exact_t2(total, min(alive, total), k, q_c):
                return k, t
    k = n - 1
    t = _t_min(k, min(corrupt, n - 1), mode)
    if t > k - dropped:
        return None
    return k, t


@pytest.mark.property("P12")
def test_param_vectors_follow_the_spec_definitions_in_exact_arithmetic() -> None:
    # Every pinned (k, t) is what SPEC 4's definitions give with exact rationals (no lgamma, no float tails).
    for v in load_vectors("graph")["params"]:
        args = (v["n"], v["corrupt_fraction"], v["dropout_fraction"], v["mode"])
        assert _spec_derive(*args) == (v["k"], v["t"]), args
    for v in load_vectors("graph")["params_infeasible"]:
        assert _spec_derive(v["n"], v["corrupt_fraction"], v["dropout_fraction"], v["mode"]) is None


@pytest.mark.property("P12")
@pytest.mark.parametrize(
    ("misreading", "kwargs"),
    [
        ("neighbours drawn from the n - 1 others", {"others": True}),
        ("counts without the 1e-14", {"eps": False}),
        ("survivors rounded down", {"survivors": "floor"}),
        ("survivors rounded to nearest", {"survivors": "round"}),
        ("disconnection bound 0 already at k = C + D", {"zero_at_equal": True}),
        ("spread compared as decimals", {"decimal_spread": True}),
    ],
)
def test_param_vectors_separate_the_misreadings(misreading: str, kwargs: dict[str, bool | str]) -> None:
    # The edge vectors exist because each of these readings of an older SPEC 4 gives another (k, t) on them.
    cases = load_vectors("graph")["params"]
    wrong = [
        (v["n"], v["corrupt_fraction"], v["dropout_fraction"], v["mode"])
        for v in cases
        if _spec_derive(v["n"], v["corrupt_fraction"], v["dropout_fraction"], v["mode"], **kwargs)  # type: ignore[arg-type]
        != (v["k"], v["t"])
    ]
    assert wrong, misreading
    if misreading.startswith("survivors"):
        assert (70, 0.3, 0.05, SH) in wrong  # the second implementer's case: (26, 22) instead of (24, 21)
        assert _spec_derive(70, 0.3, 0.05, SH, **kwargs) == (26, 22)  # type: ignore[arg-type]


# The binary64 procedure of SPEC 4 ("Reference evaluation"), written from the text.


def _lg(v: float) -> float:
    return math.lgamma(v)


def _f_pmf(pop: int, k: int, x: float, m: int) -> float:
    if x < 0 or x > k or x > m or pop + x < m + k:
        return 0.0
    return math.exp(
        _lg(k + 1) + _lg(m + 1) + _lg(pop - m + 1) + _lg(pop - k + 1)
        - _lg(x + 1) - _lg(k - x + 1) - _lg(m - x + 1) - _lg(pop + 1) - _lg(pop - k - m + x + 1)
    )  # fmt: skip


def _f_cdf_low(pop: int, k: int, x: float, m: int) -> float:
    p, s = _f_pmf(pop, k, x, m), 0.0
    while p > s * 1e-16:
        s += p
        p *= x
        p *= pop - m - k + x
        p /= m - x + 1
        p /= k - x + 1
        x -= 1
    return s


def _f_cdf(pop: int, m: int, k: int, x: int) -> float:
    if x > m * k / pop:
        return 1.0 - _f_cdf_low(pop, k, k - x - 1, pop - m)
    return _f_cdf_low(pop, k, x, m)


def _f_quantile_low(pop: int, k: int, q: float, m: int) -> int:
    r = math.floor(max(-1.0, float(m + k - pop - 1), k * (m / pop - math.sqrt(-math.log(q) / (2 * k)))))
    s, p = _f_cdf_low(pop, k, r, m), _f_pmf(pop, k, r, m)
    while s < q and r < k:
        if p > 0:
            p /= r + 1
            p /= pop - m - k + r + 1
            p *= m - r
            p *= k - r
        else:
            p = _f_pmf(pop, k, r + 1, m)
        s += p
        r += 1
    return r - 1


def _f_bounds(n: int, k: int, corrupt: int, alive: int) -> tuple[int, int]:
    q_s, q_c = 2.0**-41 / n, 2.0**-20 / n
    c = k - _f_quantile_low(n, k, q_s, n - corrupt) - 1
    u = _f_quantile_low(n, k, q_c, alive)
    return c, (u + 1 if _f_cdf(n, alive, k, u) < q_c else u)


def _f_disconnect_ok(n: int, k: int, bad: int) -> bool:
    k_even = k - k % 2
    if k >= n - 1 or k_even > bad:
        return True
    log_p = (
        math.log(n) + math.log(n - k_even - 1) - math.log(2) + math.lgamma(bad + 1) + math.lgamma(n - k_even + 1)
        - math.lgamma(n + 1) - math.lgamma(bad - k_even + 1)
    )  # fmt: skip
    return log_p < -41 * math.log(2)


def _f_derive(n: int, gamma: float, delta: float, mode: Mode) -> tuple[int, int] | None:
    corrupt, dropped, alive = _spec_counts(n, gamma, delta)
    if n >= 64 and gamma + (delta if mode == SH else 2 * delta) <= 0.9:
        for k in range(2, n - 1, 2):
            if _f_disconnect_ok(n, k, corrupt + dropped):
                c, t2 = _f_bounds(n, k, corrupt, alive)
                if _t_min(k, c, mode) <= t2:
                    return k, _t_min(k, c, mode)
    t = _t_min(n - 1, min(corrupt, n - 1), mode)
    return None if t > n - 1 - dropped else (n - 1, t)


@pytest.mark.property("P12")
def test_spec_binary64_procedure_reproduces_derive_params() -> None:
    fractions = [0.0, 0.03, 0.05, 0.1, 0.15, 0.29, 0.33, 0.45]
    cases = [
        (n, g, d, m)
        for n in [*range(2, 70), *range(70, 301, 7)]
        for g in fractions
        for d in fractions
        for m in (SH, HD)
    ]
    cases += [
        (v["n"], v["corrupt_fraction"], v["dropout_fraction"], v["mode"]) for v in load_vectors("graph")["params"]
    ]
    for n, g, d, mode in cases:
        try:
            p = derive_params(n, g, d, mode)
            want: tuple[int, int] | None = (p.k, p.t)
        except ConfigurationError:
            want = None
        assert _f_derive(n, g, d, mode) == want, (n, g, d, mode)
    # the bounds themselves, on every even k of a few n
    for n, g, d in [(64, 0.1, 0.1), (100, 0.29, 0.05), (299, 0.33, 0.45)]:
        corrupt, _, alive = _spec_counts(n, g, d)
        for k in range(2, n - 1, 2):
            assert _f_bounds(n, k, corrupt, alive) == (
                corrupt_neighbour_bound(n, k, g),
                survivor_threshold_bound(n, k, d),
            )


@pytest.mark.property("P12")
def test_survivor_count_is_n_minus_dropouts_on_decimal_fractions() -> None:
    # SPEC 4 step 1: S = ceil((1 - delta - 1e-14) n) equals n - D for every two- and three-decimal delta here.
    for n in [*range(2, 400), 1000, 4096, 10**5, 10**6]:
        for i in range(1000):
            d = i / 1000
            _, dropped, alive = _spec_counts(n, 0.0, d)
            assert alive == n - dropped, (n, d)


@pytest.mark.property("P12")
def test_given_k_check_and_infeasible_vectors() -> None:
    v = load_vectors("graph")
    for case in v["params_given_k"] + v["params"][9:]:
        n, g, d, mode = case["n"], case["corrupt_fraction"], case["dropout_fraction"], case["mode"]
        corrupt, dropped, alive = _spec_counts(n, g, d)
        assert (case["corrupt"], case["dropouts"], case["survivors"]) == (corrupt, dropped, alive)
        assert case["max_degree"] == max_degree(n, case["k"])
        k_hi, complete = case["max_degree"], case["k"] == n - 1
        c = min(corrupt, n - 1) if complete else _exact_c(n, corrupt, k_hi, Fraction(1, 2**41 * n))
        t2 = case["k"] - dropped if complete else _exact_t2(n, alive, case["k"], Fraction(1, 2**20 * n))
        assert (case["corrupt_neighbours"], case["survivor_bound"]) == (c, t2)
    for case in v["params_given_k"]:
        n, g, d, mode, k = case["n"], case["corrupt_fraction"], case["dropout_fraction"], case["mode"], case["k"]
        p = derive_params(n, g, d, mode, k=k)
        assert (p.k, p.t) == (k, case["t"]) == (k, _t_min(case["max_degree"], case["corrupt_neighbours"], mode))
    for case in v["params_checks"]:
        args = (case["n"], case["k"], case["t"], case["mode"], case["corrupt_fraction"], case["dropout_fraction"])
        if case["accepted"]:
            check_params(*args)
        else:
            with pytest.raises(ConfigurationError):
                check_params(*args)
    assert {c["accepted"] for c in v["params_checks"]} == {True, False}
    for case in v["params_infeasible"]:
        with pytest.raises(ConfigurationError, match="no threshold works"):
            derive_params(case["n"], case["corrupt_fraction"], case["dropout_fraction"], case["mode"])
