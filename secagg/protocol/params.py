"""SecAgg+ parameters: neighbour count k and Shamir threshold t from (n, corrupt fraction, dropout fraction).

The rule is the one of Google's federated-compute, `fcp/secagg/server/graph_parameter_finder.cc`
(`HararyGraphParameterFinder`, with `HypergeometricDistribution` from `distribution_utilities.cc`), which
implements the analysis of Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead",
CCS 2020, for the Harary graph with random relabelling. With sigma = 40 (security) and eta = 20
(correctness), `C = floor((gamma + 1e-14) * n)` corrupt and `D = floor((delta + 1e-14) * n)` dropped
clients, it tries k = 2, 4, 6, ... < n - 1 and returns the first k for which:

1. the graph stays connected once corrupt and dropped clients are removed: a union bound over the
   n (n - k - 1) / 2 pairs of gaps of k/2 consecutive ring positions, each fully bad with probability
   (C + D)! (n - k)! / (n! (C + D - k)!), is below 2^-(sigma + 1);
2. a threshold t exists with t1 < t <= t2, where, over a client's k neighbours drawn from n clients
   (hypergeometric), t1 is the smallest count with P[corrupt neighbours > t1] <= 2^-(sigma + 1) / n and
   t2 the largest t with P[surviving neighbours < t] < 2^-eta / n (survivors: ceil((1 - delta - 1e-14) n));
   the semi-honest threshold is t = max(t1 + 1, 2).

The probabilities are computed in log-space doubles exactly as fcp does, so the results are fcp's, e.g.
n = 100, gamma = delta = 0.1 gives k = 22, t = 11 and n = 1000 gives k = 48, t = 27 (tests check these and
fcp's own table of expected values). fcp tries the Harary search only when gamma + delta <= 0.9
(semi-honest) or gamma + 2 delta <= 0.9 (hardened), and falls back to the complete graph otherwise.

Hardened mode (a server that may lie about who dropped out) needs 2t > k + 1 + c, the neighbourhood analogue
of Bonawitz et al.'s 2t > n + c, where c bounds the corrupt clients among a neighbourhood (t1 above) and
k + 1 counts the neighbours plus a share the client may keep for itself. fcp's finder uses 2t > k + t1
(its `ceil((t1 + k - 1.25) / 2) + 1`), one share looser; we keep the stricter form, so our hardened k and t
are often a little larger than fcp's (n = 100, gamma = delta = 0.05: k = 18, t = 13 against fcp's 16, 11).
One more deliberate difference: fcp clamps t to at least 2 after its window check, so for tiny n it can
return t = 2 > t2 (n = 10, gamma = 0.05, delta = 0.33: fcp k = 4); we require t <= t2 (and get k = 6).

Small federations (n < `complete_below`, 64 by default) use the complete graph, k = n - 1, where the bounds
are worst-case counts rather than probabilities: c = C, t = C + 1 (semi-honest) or floor((n + C) / 2) + 1
(hardened), and t <= k - D so that every client keeps t live neighbours after D dropouts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from secagg.errors import ConfigurationError
from secagg.protocol.graph import Graph

__all__ = [
    "COMPLETE_BELOW",
    "CORRECTNESS_BITS",
    "HARDENED",
    "MAX_CLIENTS",
    "MODES",
    "SECURITY_BITS",
    "SEMI_HONEST",
    "Mode",
    "SecAggParams",
    "check_params",
    "consistency_quorum",
    "corrupt_neighbour_bound",
    "derive_params",
    "log_prob_disconnected",
    "max_corrupt",
    "max_degree",
    "max_dropouts",
    "min_aggregate_floor",
    "min_threshold",
    "survivor_threshold_bound",
]

Mode = Literal["semi-honest", "hardened"]
SEMI_HONEST: Final = "semi-honest"
HARDENED: Final = "hardened"
MODES: Final = (SEMI_HONEST, HARDENED)

SECURITY_BITS: Final = 40
"""Statistical security: a client's input stays hidden except with probability 2^-40."""
CORRECTNESS_BITS: Final = 20
"""Correctness: a round fails for lack of live neighbours with probability below 2^-20."""
COMPLETE_BELOW: Final = 64
"""Below this many clients the complete graph is used (cross-silo default)."""
MAX_CLIENTS: Final = 1_000_000
"""Upper bound on n, as in fcp (no fundamental reason; the computations are validated up to here)."""

_SMALL = 1e-14  # keeps float rounding of fraction * n from counting one client too few (fcp's kSmall)
_FEASIBLE_SUM = 0.9  # fcp: gamma + delta (semi-honest) or gamma + 2 delta (hardened) at most this


# -- counts ---------------------------------------------------------------------------------------------


def max_corrupt(n: int, corrupt_fraction: float) -> int:
    """Most clients that may be corrupt: floor(gamma * n), guarded against float rounding."""
    return math.floor((corrupt_fraction + _SMALL) * n)


def max_dropouts(n: int, dropout_fraction: float) -> int:
    """Most clients that may drop out: floor(delta * n), guarded against float rounding."""
    return math.floor((dropout_fraction + _SMALL) * n)


def max_degree(n: int, k: int) -> int:
    """Largest neighbourhood in H(n, k): k, or k + 1 for one client when k and n are odd (k < n - 1)."""
    return k + 1 if k % 2 == 1 and n % 2 == 1 and k < n - 1 else k


# -- hypergeometric tails (port of fcp's HypergeometricDistribution, same floating-point steps) ---------


def _lchoose_terms(total: int, sampled: int, x: float, counted: int) -> float:
    return (
        math.lgamma(sampled + 1)
        + math.lgamma(counted + 1)
        + math.lgamma(total - counted + 1)
        + math.lgamma(total - sampled + 1)
        - math.lgamma(x + 1)
        - math.lgamma(sampled - x + 1)
        - math.lgamma(counted - x + 1)
        - math.lgamma(total + 1)
        - math.lgamma(total - sampled - counted + x + 1)
    )


def _pmf(total: int, sampled: int, x: float, counted: int) -> float:
    """P[X = x], X the marked count in `sampled` draws without replacement, `counted` of `total` marked."""
    if x < 0 or x > sampled or x > counted or total + x < counted + sampled:
        return 0.0
    return math.exp(_lchoose_terms(total, sampled, x, counted))


def _cdf_low(total: int, sampled: int, x: float, counted: int) -> float:
    """P[X <= x] summed downwards from x until the terms vanish."""
    current = _pmf(total, sampled, x, counted)
    result = 0.0
    while current > result * 1e-16:
        result += current
        current *= x
        current *= total - counted - sampled + x
        current /= counted - x + 1
        current /= sampled - x + 1
        x -= 1
    return result


def _cdf(total: int, marked: int, sampled: int, x: float) -> float:
    """P[X <= x], summing the shorter tail."""
    x = math.floor(x)
    if x > marked * sampled / total:
        return 1.0 - _cdf_low(total, sampled, sampled - x - 1, total - marked)
    return _cdf_low(total, sampled, x, marked)


def _quantile_low(total: int, sampled: int, q: float, counted: int) -> int:
    """The largest x with P[X <= x] < q (starting from a Hoeffding lower bound)."""
    basic = counted + sampled - total - 1
    hoeffding = sampled * (counted / total - math.sqrt(-math.log(q) / (2 * sampled)))
    result = math.floor(max(-1.0, float(basic), hoeffding))
    cdf = _cdf_low(total, sampled, result, counted)
    pmf = _pmf(total, sampled, result, counted)
    while cdf < q and result < sampled:
        if pmf > 0:
            pmf /= result + 1
            pmf /= total - counted - sampled + result + 1
            pmf *= counted - result
            pmf *= sampled - result
        else:
            pmf = _pmf(total, sampled, result + 1, counted)
        cdf += pmf
        result += 1
    return result - 1


def _quantile(total: int, marked: int, sampled: int, q: float, complement: bool = False) -> int:
    """fcp's FindQuantile: largest x with P[X <= x] < q, or with complement the smallest x with
    P[X > x] < q."""
    if q > 0.5:
        q = 1.0 - q
        complement = not complement
    if complement:
        return sampled - _quantile_low(total, sampled, q, total - marked) - 1
    return _quantile_low(total, sampled, q, marked)


# -- the bounds ------------------------------------------------------------------------------------------


def log_prob_disconnected(n: int, k: int, corrupt_fraction: float, dropout_fraction: float) -> float:
    """Natural log of a union bound on H(n, k), randomly relabelled, disconnecting once bad clients leave.

    For odd k only the even part H(n, k - 1) is counted: extra edges can only help, so the bound holds.
    """
    k_even = k - (k % 2)
    bad = max_corrupt(n, corrupt_fraction) + max_dropouts(n, dropout_fraction)
    if k >= n - 1:
        return -math.inf  # the complete graph minus any clients stays connected
    if k_even > bad:
        return -math.inf
    return (
        math.log(n)
        + math.log(n - k_even - 1)
        - math.log(2)
        + math.lgamma(bad + 1)
        + math.lgamma(n - k_even + 1)
        - math.lgamma(n + 1)
        - math.lgamma(bad - k_even + 1)
    )


def corrupt_neighbour_bound(n: int, k: int, corrupt_fraction: float, security_bits: int = SECURITY_BITS) -> int:
    """Corrupt neighbours a client may have: exact worst case on the complete graph, otherwise the
    smallest c with P[more than c of k random neighbours corrupt] <= 2^-(security_bits + 1) / n."""
    corrupt = max_corrupt(n, corrupt_fraction)
    if k >= n - 1:
        return min(corrupt, n - 1)
    q = 2.0 ** -(security_bits + 1) / n
    return _quantile(n, corrupt, k, q, complement=True)


def survivor_threshold_bound(n: int, k: int, dropout_fraction: float, correctness_bits: int = CORRECTNESS_BITS) -> int:
    """Largest threshold that live neighbours meet: exact worst case k - D on the complete graph,
    otherwise the largest t with P[fewer than t of k random neighbours survive] < 2^-correctness_bits / n."""
    if k >= n - 1:
        return k - max_dropouts(n, dropout_fraction)
    survivors = math.ceil((1 - dropout_fraction - _SMALL) * n)
    q = 2.0**-correctness_bits / n
    t2 = _quantile(n, survivors, k, q)
    if _cdf(n, survivors, k, t2) < q:
        t2 += 1
    return t2


def min_aggregate_floor(n: int, corrupt_fraction: float) -> int:
    """The smallest aggregate that holds at least two honest inputs whatever the C = floor(gamma n) corrupt
    clients do: C + 2. With C corrupt survivors the aggregate minus their inputs is still a sum of two honest
    ones; with C + 1 it could be one honest input alone (threat_model.md R2)."""
    return max_corrupt(n, corrupt_fraction) + 2


def consistency_quorum(advertised: int, corrupt: int) -> int:
    """Signatures a hardened client needs over the survivor set before it reveals anything (SPEC §10.5).

    Q = floor((|U1| + c) / 2) + 1 with c = min(corrupt, |U1|): each honest client signs one set per session,
    so two different sets with Q signatures each would need 2Q <= (|U1| - c) + 2c signers, which Q exceeds.
    Hence at most one survivor set per session reaches the quorum (threat_model.md P2).
    """
    return (advertised + min(corrupt, advertised)) // 2 + 1


def min_threshold(k: int, corrupt_neighbours: int, mode: Mode) -> int:
    """Smallest secure t: t > c (semi-honest) or 2t > k + 1 + c (hardened); at least 2 when k >= 2."""
    t = corrupt_neighbours + 1 if mode == SEMI_HONEST else (k + 1 + corrupt_neighbours) // 2 + 1
    return max(t, min(2, k))


# -- validation ------------------------------------------------------------------------------------------


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int")
    return value


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number")
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v < 1.0):
        raise ConfigurationError(f"{name} must be in [0, 1), got {value}")
    return v


def _check_common(
    n: object,
    corrupt_fraction: object,
    dropout_fraction: object,
    mode: object,
    security_bits: object,
    correctness_bits: object,
) -> None:
    n = _check_int("n (number of clients)", n)
    if not 2 <= n <= MAX_CLIENTS:
        raise ConfigurationError(f"n (number of clients) must be in 2..{MAX_CLIENTS}, got {n}")
    _check_fraction("corrupt_fraction", corrupt_fraction)
    _check_fraction("dropout_fraction", dropout_fraction)
    if mode not in MODES:
        raise ConfigurationError(f"mode must be one of {MODES}, got {mode!r}")
    sec = _check_int("security_bits", security_bits)
    cor = _check_int("correctness_bits", correctness_bits)
    if not 1 <= sec <= 256 or not 1 <= cor <= 256:
        raise ConfigurationError("security_bits and correctness_bits must be in 1..256")


def check_params(
    n: int,
    k: int,
    t: int,
    mode: Mode,
    corrupt_fraction: float,
    dropout_fraction: float,
    security_bits: int = SECURITY_BITS,
    correctness_bits: int = CORRECTNESS_BITS,
) -> None:
    """Refuse (ConfigurationError) a (n, k, t, mode) that is insecure or fails too often for the fractions."""
    _check_common(n, corrupt_fraction, dropout_fraction, mode, security_bits, correctness_bits)
    k = _check_int("k (neighbour count)", k)
    t = _check_int("t (threshold)", t)
    if not 1 <= k <= n - 1:
        raise ConfigurationError(f"k (neighbour count) must be in 1..n-1 = 1..{n - 1}, got {k}")
    if t < 1:
        raise ConfigurationError(f"t (threshold) must be at least 1, got {t}")
    complete = k == n - 1
    k_hi = max_degree(n, k)
    if not complete:
        log_p = log_prob_disconnected(n, k, corrupt_fraction, dropout_fraction)
        if log_p >= -(security_bits + 1) * math.log(2):
            raise ConfigurationError(
                f"k={k} is too sparse for n={n}: once corrupt and dropped clients are removed the graph "
                f"may disconnect with probability above 2^-{security_bits + 1}; raise k"
            )
    c = corrupt_neighbour_bound(n, k_hi, corrupt_fraction, security_bits)
    where = "in total" if complete else f"among {k_hi} neighbours (except with probability 2^-{security_bits})"
    if mode == SEMI_HONEST and not t > c:
        raise ConfigurationError(f"semi-honest mode needs t > corrupt neighbours: up to {c} corrupt {where}, got t={t}")
    if mode == HARDENED and not 2 * t > k_hi + 1 + c:
        raise ConfigurationError(
            f"hardened mode needs 2t > k + 1 + corrupt neighbours = {k_hi + 1 + c} "
            f"(up to {c} corrupt {where}), got t={t}"
        )
    if t > k:
        raise ConfigurationError(f"t={t} exceeds the {k} shares a client hands out (t must be in 1..k)")
    if mode == HARDENED:
        corrupt, dropped = max_corrupt(n, corrupt_fraction), max_dropouts(n, dropout_fraction)
        quorum = consistency_quorum(n, corrupt)
        if n - dropped < quorum:
            raise ConfigurationError(
                f"hardened mode needs a signature quorum of {quorum} of {n} clients (floor((n + {corrupt} "
                f"corrupt) / 2) + 1) but only {n - dropped} may be left after {dropped} dropouts; "
                f"lower corrupt_fraction or dropout_fraction"
            )
    t_max = survivor_threshold_bound(n, k, dropout_fraction, correctness_bits)
    if t > t_max:
        if complete:
            dropped = max_dropouts(n, dropout_fraction)
            detail = f"after {dropped} dropouts a client may keep {t_max} live neighbours"
        else:
            detail = f"a client keeps {t_max} live neighbours only with probability 1 - 2^-{correctness_bits}"
        raise ConfigurationError(f"t={t} cannot be met: {detail}; lower t or dropout_fraction, or raise k")


# -- the parameters --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecAggParams:
    """Validated SecAgg+ parameters: n clients, k neighbours each, Shamir threshold t, threat mode."""

    n: int
    k: int
    t: int
    mode: Mode
    corrupt_fraction: float
    dropout_fraction: float
    security_bits: int = SECURITY_BITS
    correctness_bits: int = CORRECTNESS_BITS

    def __post_init__(self) -> None:
        check_params(
            self.n,
            self.k,
            self.t,
            self.mode,
            self.corrupt_fraction,
            self.dropout_fraction,
            self.security_bits,
            self.correctness_bits,
        )

    @property
    def is_complete(self) -> bool:
        """True when every client neighbours every other one."""
        return self.k == self.n - 1

    @property
    def max_corrupt(self) -> int:
        """Most clients assumed corrupt."""
        return max_corrupt(self.n, self.corrupt_fraction)

    @property
    def max_dropouts(self) -> int:
        """Most clients assumed to drop out."""
        return max_dropouts(self.n, self.dropout_fraction)

    @property
    def min_survivors(self) -> int:
        """Fewest clients that must survive to the end for the guarantees above (n - max_dropouts)."""
        return self.n - self.max_dropouts

    @property
    def corrupt_neighbours(self) -> int:
        """Bound on corrupt neighbours of a client that t was checked against."""
        k_hi = max_degree(self.n, self.k)
        return corrupt_neighbour_bound(self.n, k_hi, self.corrupt_fraction, self.security_bits)

    def graph(self, permutation_seed: bytes | None) -> Graph:
        """The round's neighbourhood graph H(n, k), relabelled by the public per-round seed."""
        return Graph(self.n, self.k, permutation_seed)


def _harary_degree(
    n: int, corrupt_fraction: float, dropout_fraction: float, mode: Mode, sec: int, cor: int
) -> tuple[int, int] | None:
    """fcp's search: the first even k < n - 1 (and its smallest t) meeting both bounds, if any."""
    spread = corrupt_fraction + (dropout_fraction if mode == SEMI_HONEST else 2 * dropout_fraction)
    if spread > _FEASIBLE_SUM:
        return None
    log_q = -(sec + 1) * math.log(2)
    for k in range(2, n - 1, 2):
        if log_prob_disconnected(n, k, corrupt_fraction, dropout_fraction) >= log_q:
            continue
        t = min_threshold(k, corrupt_neighbour_bound(n, k, corrupt_fraction, sec), mode)
        if t <= survivor_threshold_bound(n, k, dropout_fraction, cor):
            return k, t
    return None


def derive_params(
    n: int,
    corrupt_fraction: float = 0.1,
    dropout_fraction: float = 0.1,
    mode: Mode = SEMI_HONEST,
    k: int | None = None,
    t: int | None = None,
    complete_below: int = COMPLETE_BELOW,
    *,
    security_bits: int = SECURITY_BITS,
    correctness_bits: int = CORRECTNESS_BITS,
) -> SecAggParams:
    """Neighbour count k and threshold t for n clients (fcp's rule), or validate the k / t given.

    With k and t both None: the complete graph below `complete_below` clients, otherwise the smallest
    even Harary degree that meets the bounds (the complete graph when none does). An explicit k or t is
    kept and checked; a missing t is then the smallest secure one for that k.
    """
    _check_common(n, corrupt_fraction, dropout_fraction, mode, security_bits, correctness_bits)
    _check_int("complete_below", complete_below)
    if k is None:
        found = None
        if n >= complete_below:
            found = _harary_degree(n, corrupt_fraction, dropout_fraction, mode, security_bits, correctness_bits)
        if found is not None:
            k, t_found = found
            t = t_found if t is None else t
        else:
            k = n - 1
    else:
        _check_int("k (neighbour count)", k)
        if not 1 <= k <= n - 1:
            raise ConfigurationError(f"k (neighbour count) must be in 1..n-1 = 1..{n - 1}, got {k}")
    chosen = t is not None
    if t is None:
        k_hi = max_degree(n, k)
        t = min_threshold(k_hi, corrupt_neighbour_bound(n, k_hi, corrupt_fraction, security_bits), mode)
    try:
        return SecAggParams(
            n=n,
            k=k,
            t=t,
            mode=mode,
            corrupt_fraction=float(corrupt_fraction),
            dropout_fraction=float(dropout_fraction),
            security_bits=security_bits,
            correctness_bits=correctness_bits,
        )
    except ConfigurationError as exc:
        if chosen:
            raise
        raise ConfigurationError(
            f"no threshold works for n={n}, k={k}, corrupt_fraction={corrupt_fraction}, "
            f"dropout_fraction={dropout_fraction} in {mode} mode: {exc}"
        ) from exc
