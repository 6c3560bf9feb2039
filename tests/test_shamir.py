"""Shamir sharing over gf(2^31 - 1): round trips, thresholds, corruption, errors, encoding, kernels, KATs."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import galois
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from secagg.native import field

from secagg.crypto import shamir
from secagg.crypto.rng import DeterministicRandom
from secagg.crypto.secret import SecretBytes
from secagg.errors import EncodingError, SecAggError, ShamirError
from tests.vectors import VECTORS, load_vectors, regenerate

P = 2**31 - 1
FIELD_X = st.integers(min_value=1, max_value=P - 1)
SECRET = st.binary(min_size=32, max_size=32)


class Replay:
    """A RandomSource that hands out fixed bytes and fails past their end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def random_bytes(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), "replay stream exhausted"
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def limbs_of(secret: bytes) -> list[int]:
    return [int.from_bytes(secret[2 * j : 2 * j + 2], "big") for j in range(16)]


def corrupt(share: shamir.Share, rng: np.random.Generator) -> shamir.Share:
    """A share with every y value replaced by a fresh random field element."""
    return shamir.Share(share.x, tuple(int(v) for v in rng.integers(0, P, 16)))


def nudge(share: shamir.Share, lam: int, limb: int) -> shamir.Share:
    """Change one y value so that, with Lagrange coefficient lam, the reconstructed limb grows by exactly 1.

    The result stays in range, so only the caller's verify() can notice it.
    """
    y = list(share.y)
    y[limb] = (y[limb] + pow(lam, P - 2, P)) % P
    return shamir.Share(share.x, tuple(y))


@pytest.fixture(scope="module")
def gf() -> Any:
    return galois.GF(P)


# --- constants ------------------------------------------------------------------------------------------


def test_constants_agree() -> None:
    assert shamir.P == field.P == P
    assert shamir.SHARE_BYTES == 68 == shamir.Share.ENCODED_LEN


# --- round trips ----------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data(), secret=SECRET, seed=st.integers(0, 2**32))
def test_round_trip_any_t_subset(data: st.DataObject, secret: bytes, seed: int) -> None:
    n = data.draw(st.integers(1, 12), label="n")
    t = data.draw(st.integers(1, n), label="t")
    xs = data.draw(st.lists(FIELD_X, min_size=n, max_size=n, unique=True), label="xs")
    shares = shamir.split(SecretBytes(secret), xs, t, DeterministicRandom(seed))
    assert [s.x for s in shares] == xs
    chosen = data.draw(st.permutations(shares), label="order")[:t]
    assert shamir.reconstruct(chosen, t).expose_secret() == secret


def test_every_t_subset_and_order_reconstructs() -> None:
    secret = bytes(range(32))
    shares = shamir.split(SecretBytes(secret), [2, 3, 5, 7, 11, 13], 3, DeterministicRandom(9))
    for subset in itertools.combinations(shares, 3):
        for order in itertools.permutations(subset):
            assert shamir.reconstruct(list(order), 3).expose_secret() == secret


def test_reconstruct_uses_the_first_t_shares_only() -> None:
    secret = b"\x42" * 32
    shares = shamir.split(SecretBytes(secret), [1, 2, 3, 4], 2, DeterministicRandom(1))
    garbage = shamir.Share(4, tuple(range(100, 116)))
    assert shamir.reconstruct([*shares[:3], garbage], 2).expose_secret() == secret


def test_threshold_one_is_replication() -> None:
    secret = bytes(range(1, 33))
    shares = shamir.split(SecretBytes(secret), [1, 9, 77], 1, Replay(b""))
    assert all(list(s.y) == limbs_of(secret) for s in shares)


def test_fewer_than_t_shares_refused() -> None:
    shares = shamir.split(SecretBytes(bytes(32)), list(range(1, 8)), 5, DeterministicRandom(2))
    with pytest.raises(ShamirError, match="need 5 shares, got 4"):
        shamir.reconstruct(shares[:4], 5)
    with pytest.raises(ShamirError):
        shamir.reconstruct_verified(shares[:4], 5, lambda s: True)


def test_randomness_does_not_depend_on_the_secret() -> None:
    # Same random stream, two secrets: every share differs by exactly the limb difference, so the random
    # part of each share (what hides the secret in any t - 1 shares) is independent of the secret.
    xs = [5, 6, 7, 8, 9]
    a, b = bytes(range(32)), bytes(range(100, 132))
    ya = shamir.split_many([SecretBytes(a)], xs, 4, DeterministicRandom(3))[0].astype(np.int64)
    yb = shamir.split_many([SecretBytes(b)], xs, 4, DeterministicRandom(3))[0].astype(np.int64)
    diff = np.array(limbs_of(a), dtype=np.int64) - np.array(limbs_of(b), dtype=np.int64)
    assert np.array_equal((ya - yb) % P, np.broadcast_to(diff % P, ya.shape))
    assert not np.array_equal(ya[0], limbs_of(a))  # and the shares are not the limbs themselves


# --- split_many / reconstruct_many ----------------------------------------------------------------------


def test_split_many_matches_sequential_splits_from_one_stream() -> None:
    secrets = [SecretBytes(bytes([k]) * 32) for k in range(5)]
    xs = [10, 20, 30, 40]
    together = shamir.split_many(secrets, xs, 3, DeterministicRandom(77))
    assert together.shape == (5, 4, 16) and together.dtype == np.uint32
    one_stream = DeterministicRandom(77)
    for k, secret in enumerate(secrets):
        alone = shamir.split(secret, xs, 3, one_stream)
        assert [list(s.y) for s in alone] == together[k].tolist()


def test_reconstruct_many_matches_reconstruct() -> None:
    rng = np.random.default_rng(5)
    raw = [rng.bytes(32) for _ in range(40)]
    xs = [int(v) for v in rng.choice(np.arange(1, 10_000), size=30, replace=False)]
    ys = shamir.split_many([SecretBytes(r) for r in raw], xs, 17, DeterministicRandom(5))
    used = [3, 0, 29, *range(5, 19)]  # any 17 of the 30 points, in any order
    out = shamir.reconstruct_many([xs[i] for i in used], ys[:, used, :])
    assert [s.expose_secret() for s in out] == raw
    one = shamir.reconstruct([shamir.Share(xs[i], tuple(ys[7, i].tolist())) for i in used], 17)
    assert one.expose_secret() == raw[7]


def test_reconstruct_many_names_the_inconsistent_secrets() -> None:
    raw = [bytes([k]) * 32 for k in range(10)]
    xs = [1, 2, 3, 4, 5]
    ys = shamir.split_many([SecretBytes(r) for r in raw], xs, 5, DeterministicRandom(6)).copy()
    ys[3, 2, :] = np.random.default_rng(0).integers(0, P, 16)
    ys[8, 0, :] = np.random.default_rng(1).integers(0, P, 16)
    with pytest.raises(ShamirError, match=r"2 secret\(s\) \(indices 3, 8\)"):
        shamir.reconstruct_many(xs, ys)
    good = [k for k in range(10) if k not in (3, 8)]
    assert [s.expose_secret() for s in shamir.reconstruct_many(xs, ys[good])] == [raw[k] for k in good]


def test_limb_bound_is_exactly_2_to_the_16() -> None:
    # With t = 1 the coefficient is 1, so each y value is the limb itself.
    ys = np.zeros((1, 1, 16), dtype=np.uint32)
    ys[0, 0, 5] = 0xFFFF
    assert shamir.reconstruct_many([7], ys)[0].expose_secret() == bytes(10) + b"\xff\xff" + bytes(20)
    ys[0, 0, 5] = 0x10000
    with pytest.raises(ShamirError, match="inconsistent"):
        shamir.reconstruct_many([7], ys)


def test_empty_batches() -> None:
    assert shamir.split_many([], [1, 2], 2, Replay(b"")).shape == (0, 2, 16)
    assert shamir.reconstruct_many([1, 2], np.zeros((0, 2, 16), dtype=np.uint32)) == []


# --- corruption -----------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), which=st.integers(0, 4))
def test_a_randomised_share_is_detected_by_the_limb_check(seed: int, which: int) -> None:
    # All 16 values random: a limb lands below 2^16 with probability 2^-15, all 16 with 2^-240.
    shares = shamir.split(SecretBytes(bytes(32)), [1, 2, 3, 4, 5, 6], 5, DeterministicRandom(seed))
    shares[which] = corrupt(shares[which], np.random.default_rng(seed))
    with pytest.raises(ShamirError, match="inconsistent"):
        shamir.reconstruct(shares, 5)


@pytest.mark.property("P6")
def test_limb_check_catches_a_bit_flip_only_when_the_lagrange_coefficient_is_large() -> None:
    secret = bytes(range(32))

    def flipped_reconstruct(xs: list[int]) -> bytes:
        shares = shamir.split(SecretBytes(secret), xs, 3, DeterministicRandom(8))
        raw = bytearray(shares[1].to_bytes())
        raw[-1] ^= 0x01  # lowest bit of y_15: limb 15 moves by +-lambda_1
        shares[1] = shamir.Share.from_bytes(bytes(raw))
        return shamir.reconstruct(shares, 3).expose_secret()

    # Points with "random-looking" Lagrange coefficients: the flip is caught.
    with pytest.raises(ShamirError, match="inconsistent"):
        flipped_reconstruct([1_000_003, 2_000_029, 3_000_017])
    # For x = 1, 2, 3 the coefficient of x = 2 is -3: the flip shifts limb 15 by 3 and stays in range.
    # This is why the limb check is only a first filter and callers pass verify() (see below).
    wrong = flipped_reconstruct([1, 2, 3])
    assert wrong[:30] == secret[:30] and wrong != secret


@pytest.mark.property("P6")
def test_reconstruct_verified_skips_randomised_shares() -> None:
    secret = bytes(range(200, 232))
    xs = list(range(1, 11))
    shares = shamir.split(SecretBytes(secret), xs, 4, DeterministicRandom(10))
    gen = np.random.default_rng(10)
    shares[0] = corrupt(shares[0], gen)
    shares[2] = corrupt(shares[2], gen)
    calls: list[bytes] = []

    def verify(s: SecretBytes) -> bool:
        calls.append(s.expose_secret())
        return s.expose_secret() == secret

    got, used = shamir.reconstruct_verified(shares, 4, verify)
    assert got.expose_secret() == secret
    assert len(used) == 4 and 1 not in used and 3 not in used
    # verify() only ever sees candidates that passed the limb check, and here that is the right one.
    assert calls == [secret]


@pytest.mark.property("P6")
def test_reconstruct_verified_relies_on_verify_for_in_range_corruption() -> None:
    secret = bytes(range(32))
    xs = [1, 2, 3, 4, 5, 6]
    shares = shamir.split(SecretBytes(secret), xs, 3, DeterministicRandom(11))
    lam = shamir.lagrange_coefficients(xs[:3])
    shares[1] = nudge(shares[1], int(lam[1]), limb=0)
    # The limb check alone cannot see this corruption: plain reconstruct is off by one in limb 0.
    wrong = shamir.reconstruct(shares, 3).expose_secret()
    assert wrong != secret and limbs_of(wrong)[0] == limbs_of(secret)[0] + 1
    seen: list[bytes] = []

    def verify(s: SecretBytes) -> bool:
        seen.append(s.expose_secret())
        return s.expose_secret() == secret

    got, used = shamir.reconstruct_verified(shares, 3, verify)
    assert got.expose_secret() == secret and 2 not in used
    assert seen[0] == wrong and seen[-1] == secret


def test_reconstruct_verified_gives_up_rather_than_guess() -> None:
    shares = shamir.split(SecretBytes(bytes(32)), [1, 2, 3, 4], 3, DeterministicRandom(12))
    gen = np.random.default_rng(12)
    shares[0], shares[1] = corrupt(shares[0], gen), corrupt(shares[1], gen)
    with pytest.raises(ShamirError, match="no consistent subset"):
        shamir.reconstruct_verified(shares, 3, lambda s: True)
    calls = []

    def never(s: SecretBytes) -> bool:
        calls.append(1)
        return False

    good = shamir.split(SecretBytes(bytes(32)), list(range(1, 9)), 3, DeterministicRandom(13))
    with pytest.raises(ShamirError, match="no consistent subset"):
        shamir.reconstruct_verified(good, 3, never, max_attempts=5)
    assert len(calls) == 5
    with pytest.raises(ShamirError, match="max_attempts"):
        shamir.reconstruct_verified(good, 3, never, max_attempts=0)


def test_reconstruct_verified_tries_colex_order(monkeypatch: pytest.MonkeyPatch) -> None:
    for m, t in [(5, 3), (6, 1), (6, 6), (7, 4), (4, 2)]:
        expected = sorted(itertools.combinations(range(m), t), key=lambda c: c[::-1])
        assert list(shamir._colex_subsets(m, t)) == expected
    # Observable order: with verify() always false, the x-sets tried are the colex subsets.
    shares = shamir.split(SecretBytes(bytes(32)), [10, 20, 30, 40], 2, DeterministicRandom(14))
    tried: list[tuple[int, ...]] = []
    orig = shamir._combine

    def spy(xs: tuple[int, ...], ys: Any) -> Any:
        tried.append(xs)
        return orig(xs, ys)

    monkeypatch.setattr(shamir, "_combine", spy)
    with pytest.raises(ShamirError):
        shamir.reconstruct_verified(shares, 2, lambda s: False)
    assert tried == [(10, 20), (10, 30), (20, 30), (10, 40), (20, 40), (30, 40)]


# --- errors ---------------------------------------------------------------------------------------------


class HugeSequence(Sequence[int]):
    """Claims p elements without holding them (to reach the n >= p check)."""

    def __len__(self) -> int:
        return P

    def __getitem__(self, i: Any) -> Any:
        raise AssertionError("should be refused before reading")

    def __iter__(self) -> Iterator[int]:
        raise AssertionError("should be refused before reading")


@pytest.mark.parametrize(
    ("xs", "t", "match"),
    [
        ([0, 1, 2], 2, "x = 0"),
        ([1, P, 2], 2, r"\[1, p\)"),
        ([1, -3, 2], 2, r"\[1, p\)"),
        ([1, True, 2], 2, "integer"),
        ([1, 2.0, 3], 2, "integer"),
        ([1, 2, 2], 2, "duplicate"),
        ([1, 2, 3], 0, "at least 1"),
        ([1, 2, 3], 4, "larger than"),
        ([1, 2, 3], 2.5, "integer"),
        ([], 1, "larger than"),
        (HugeSequence(), 2, "too many points"),
    ],
)
def test_split_parameter_errors(xs: Any, t: Any, match: str) -> None:
    with pytest.raises(ShamirError, match=match):
        shamir.split(SecretBytes(bytes(32)), xs, t, DeterministicRandom(0))


@pytest.mark.parametrize("secret", [SecretBytes(bytes(31)), SecretBytes(bytes(33)), SecretBytes(b""), bytes(32)])
def test_split_refuses_bad_secrets(secret: Any) -> None:
    with pytest.raises(ShamirError):
        shamir.split_many([SecretBytes(bytes(32)), secret], [1, 2], 2, DeterministicRandom(0))


def test_reconstruct_errors() -> None:
    shares = shamir.split(SecretBytes(bytes(32)), [1, 2, 3], 2, DeterministicRandom(0))
    with pytest.raises(ShamirError, match="duplicate"):
        shamir.reconstruct([shares[0], shares[1], shares[0]], 2)
    with pytest.raises(ShamirError, match="threshold"):
        shamir.reconstruct(shares, 0)
    with pytest.raises(ShamirError, match="Share"):
        shamir.reconstruct([shares[0], (2, shares[1].y)], 2)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("xs", "ys", "match"),
    [
        ([1, 2], np.zeros((1, 3, 16), dtype=np.uint32), "shape"),
        ([1, 2], np.zeros((1, 2, 15), dtype=np.uint32), "shape"),
        ([1, 2], np.zeros((2, 16), dtype=np.uint32), "shape"),
        ([1, 2], np.full((1, 2, 16), P, dtype=np.uint32), "outside"),
        ([1, 2], np.full((1, 2, 16), -1, dtype=np.int64), "outside"),
        ([1, 2], np.zeros((1, 2, 16), dtype=np.float64), "integer"),
        ([], np.zeros((1, 0, 16), dtype=np.uint32), "at least one"),
        ([1, 1], np.zeros((1, 2, 16), dtype=np.uint32), "duplicate"),
        ([0, 1], np.zeros((1, 2, 16), dtype=np.uint32), "x = 0"),
    ],
)
def test_reconstruct_many_errors(xs: list[int], ys: Any, match: str) -> None:
    with pytest.raises(ShamirError, match=match):
        shamir.reconstruct_many(xs, ys)


def test_share_validation() -> None:
    assert shamir.Share(np.uint32(5), np.arange(16, dtype=np.uint32)).y == tuple(range(16))  # type: ignore[arg-type]
    for x, y in [
        (0, (0,) * 16),
        (P, (0,) * 16),
        (1, (0,) * 15),
        (1, (0,) * 15 + (P,)),
        (1, (-1,) + (0,) * 15),
    ]:
        with pytest.raises(ShamirError):
            shamir.Share(x, y)
    with pytest.raises(ShamirError):
        shamir.Share(1, (0.5,) * 16)  # type: ignore[arg-type]


def test_errors_are_typed() -> None:
    assert issubclass(ShamirError, SecAggError) and issubclass(EncodingError, SecAggError)


# --- encoding and secrecy of shares ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(x=FIELD_X, y=st.lists(st.integers(0, P - 1), min_size=16, max_size=16))
def test_share_encoding_round_trip(x: int, y: list[int]) -> None:
    share = shamir.Share(x, tuple(y))
    raw = share.to_bytes()
    assert len(raw) == 68
    assert raw == b"".join(v.to_bytes(4, "big") for v in [x, *y])
    assert shamir.Share.from_bytes(raw) == share


def test_share_decoding_rejects_malformed_bytes() -> None:
    good = shamir.Share(7, tuple(range(16))).to_bytes()
    for bad in (good[:-1], good + b"\x00", b"", bytes(64)):
        with pytest.raises(EncodingError):
            shamir.Share.from_bytes(bad)
    with pytest.raises(EncodingError):
        shamir.Share.from_bytes("00" * 68)  # type: ignore[arg-type]
    for patched in (
        bytes(4) + good[4:],  # x = 0
        P.to_bytes(4, "big") + good[4:],  # x = p
        b"\xff\xff\xff\xff" + good[4:],  # x >= p
        good[:8] + P.to_bytes(4, "big") + good[12:],  # y_1 = p
        good[:-4] + b"\xff\xff\xff\xff",  # y_15 >= p
    ):
        with pytest.raises(ShamirError):
            shamir.Share.from_bytes(patched)


@pytest.mark.property("P11")
def test_share_repr_hides_y_and_pickling_is_refused() -> None:
    share = shamir.split(SecretBytes(bytes(range(32))), [1, 2, 3], 2, DeterministicRandom(21))[0]
    assert all(v > 1000 for v in share.y)  # distinctive values, so a leak would show
    for text in (repr(share), str(share), f"{share}", f"{[share]}"):
        assert "redacted" in text and "x=1" in text
        for v in share.y:
            assert str(v) not in text and f"{v:x}" not in text
    with pytest.raises(TypeError):
        pickle.dumps(share)


def test_reconstructed_secret_is_secret_bytes() -> None:
    shares = shamir.split(SecretBytes(bytes(range(32))), [1, 2], 2, DeterministicRandom(22))
    out = shamir.reconstruct(shares, 2)
    assert isinstance(out, SecretBytes) and "redacted" in repr(out)


# --- randomness -----------------------------------------------------------------------------------------


def test_rejection_sampling_of_coefficients() -> None:
    words = [0xFFFFFFFF, 0x80000005, 0x7FFFFFFF, 0xFFFFFFFE, 0x12345678]
    stream = Replay(b"".join(w.to_bytes(4, "little") for w in words))
    got = shamir.random_field_elements(stream, 3)
    assert got.tolist() == [5, P - 1, 0x12345678]
    assert stream.pos == len(stream.data)  # two rejected words were replaced by exactly two more reads


def test_random_source_returning_short_output_is_refused() -> None:
    class Short:
        def random_bytes(self, n: int) -> bytes:
            return bytes(n - 1)

    with pytest.raises(ShamirError, match="wrong number of bytes"):
        shamir.split(SecretBytes(bytes(32)), [1, 2], 2, Short())


def test_split_draws_exactly_16_times_t_minus_1_elements() -> None:
    t, n_sec = 4, 3
    stream = Replay(DeterministicRandom(30).random_bytes(4 * 16 * (t - 1) * n_sec))
    shamir.split_many([SecretBytes(bytes(32))] * n_sec, [1, 2, 3, 4, 5], t, stream)
    assert stream.pos == len(stream.data)


# --- Lagrange coefficients and the galois cross-check ---------------------------------------------------


def test_lagrange_coefficients_follow_the_given_order_and_cache_is_safe() -> None:
    xs = [9, 4, 17, 2]
    lam = shamir.lagrange_coefficients(xs)
    for i, x in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num, den = num * xj % P, den * (xj - x) % P
        assert int(lam[i]) == num * pow(den, P - 2, P) % P
    lam[:] = 0  # the caller's copy; the cache must be unaffected
    assert shamir.lagrange_coefficients(xs).tolist() != [0, 0, 0, 0]
    perm = shamir.lagrange_coefficients([2, 17, 9, 4])
    assert perm.tolist() == [shamir.lagrange_coefficients(xs)[k] for k in (3, 2, 0, 1)]
    assert sum(int(v) for v in perm) % P == 1  # the coefficients interpolate the constant 1


@pytest.mark.property("P12")
@settings(max_examples=15, deadline=None)
@given(data=st.data(), secret=SECRET, seed=st.integers(0, 2**32))
def test_split_and_reconstruct_agree_with_galois(gf: Any, data: st.DataObject, secret: bytes, seed: int) -> None:
    n = data.draw(st.integers(2, 10), label="n")
    t = data.draw(st.integers(1, n), label="t")
    xs = data.draw(st.lists(FIELD_X, min_size=n, max_size=n, unique=True), label="xs")
    ys = shamir.split_many([SecretBytes(secret)], xs, t, DeterministicRandom(seed))[0]
    for j, limb in enumerate(limbs_of(secret)):
        # All n points lie on one polynomial whose value at 0 is the limb.
        poly = galois.lagrange_poly(gf(xs), gf(ys[:, j].tolist()))
        # Degree exactly t - 1 (the top coefficient is 0 with probability 2^-31): fewer random
        # coefficients than t - 1 would let t - 1 shares reveal the limb.
        assert poly.degree == t - 1
        assert int(poly(gf(0))) == limb
        # And galois interpolating the same t points our reconstruct uses gives the same answer.
        assert int(galois.lagrange_poly(gf(xs[:t]), gf(ys[:t, j].tolist()))(gf(0))) == limb


@settings(max_examples=15, deadline=None)
@given(
    xs=st.lists(FIELD_X, min_size=1, max_size=12, unique=True),
    seed=st.integers(0, 2**32),
)
def test_lagrange_combination_of_arbitrary_values_matches_galois(gf: Any, xs: list[int], seed: int) -> None:
    # Arbitrary (inconsistent) y values too: interpolation at 0 must match galois for any input.
    ys = np.random.default_rng(seed).integers(0, P, size=(2, len(xs), 16), dtype=np.uint32)
    ys[0, 0, 0] = P - 1
    got = field.lagrange_combine(shamir.lagrange_coefficients(xs), ys)
    for s in range(2):
        for j in (0, 7, 15):
            expected = galois.lagrange_poly(gf(xs), gf(ys[s, :, j].tolist()))(gf(0))
            assert int(got[s, j]) == int(expected)


# --- kernels against their twins ------------------------------------------------------------------------

ELEMENT = st.one_of(st.integers(0, P - 1), st.sampled_from([0, 1, P - 2, P - 1]))
SHAPE3 = hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=5)
SHAPE3_EMPTY_OK = hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=6)


@settings(max_examples=40, deadline=None)
@given(
    coeffs=hnp.arrays(np.uint32, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=5), elements=ELEMENT),
    xs=hnp.arrays(np.uint32, st.integers(0, 6), elements=ELEMENT),
)
def test_horner_eval_equals_twin(coeffs: Any, xs: Any) -> None:
    got = field.horner_eval(coeffs, xs)
    want = field.horner_eval_reference(coeffs, xs)
    assert got.dtype == want.dtype == np.uint32
    assert got.shape == want.shape == (coeffs.shape[0], xs.shape[0], coeffs.shape[1])
    assert np.array_equal(got, want)


@settings(max_examples=40, deadline=None)
@given(
    ys=hnp.arrays(np.uint32, hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=6), elements=ELEMENT),
    data=st.data(),
)
def test_lagrange_combine_equals_twin(ys: Any, data: st.DataObject) -> None:
    lam = data.draw(hnp.arrays(np.uint32, ys.shape[1], elements=ELEMENT), label="lambdas")
    got = field.lagrange_combine(lam, ys)
    want = field.lagrange_combine_reference(lam, ys)
    assert got.shape == want.shape == (ys.shape[0], ys.shape[2])
    assert np.array_equal(got, want)


def test_kernels_on_extreme_values_match_python_integers() -> None:
    t, n = 7, 5
    coeffs = np.full((1, 2, t), P - 1, dtype=np.uint32)
    xs = np.array([1, 2, P - 2, P - 1, 1 << 30], dtype=np.uint32)
    got = field.horner_eval(coeffs, xs)
    for i, x in enumerate(xs.tolist()):
        assert int(got[0, i, 0]) == sum((P - 1) * pow(x, k, P) for k in range(t)) % P
    ys = np.full((1, n, 16), P - 1, dtype=np.uint32)
    lam = np.full(n, P - 1, dtype=np.uint32)
    assert field.lagrange_combine(lam, ys).tolist() == [[n % P] * 16]  # (-1)(-1) summed n times
    assert np.array_equal(field.horner_eval_reference(coeffs, xs), got)
    assert np.array_equal(field.lagrange_combine_reference(lam, ys), field.lagrange_combine(lam, ys))


# --- known-answer vectors -------------------------------------------------------------------------------


def test_vector_file_is_reproducible() -> None:
    assert (VECTORS / "shamir.json").read_text() == regenerate("shamir")


@pytest.mark.property("P12")
def test_vectors_replay_and_reconstruct() -> None:
    vectors = load_vectors("shamir")
    assert vectors["field_modulus"] == P and vectors["share_bytes"] == 68
    names = set()
    for case in vectors["cases"]:
        names.add(case["name"])
        xs, t = case["xs"], case["t"]
        secrets = [SecretBytes(bytes.fromhex(h)) for h in case["secrets"]]
        stream = Replay(bytes.fromhex(case["random"]))
        ys = shamir.split_many(secrets, xs, t, stream)
        assert stream.pos == len(stream.data)
        for s, encoded in enumerate(case["shares"]):
            shares = [shamir.Share.from_bytes(bytes.fromhex(h)) for h in encoded]
            assert [sh.x for sh in shares] == xs
            assert [list(sh.y) for sh in shares] == ys[s].tolist()
            assert shamir.reconstruct(shares, t) == secrets[s]
            assert shamir.reconstruct(shares[::-1], t) == secrets[s]
        assert shamir.lagrange_coefficients(xs[:t]).tolist() == case["lagrange_at_zero"]
    assert "rejection-sampling" in names


# --- decoding: Reed-Solomon error correction (decode, and reconstruct_verified through it) ---------------


def sharing(secret: bytes, xs: Sequence[int], t: int, seed: int) -> list[shamir.Share]:
    """shamir.split through the NumPy twin of the Horner kernel (fast at n = 1000 also without the JIT)."""
    coeffs = np.empty((1, 16, t), dtype=np.uint32)
    coeffs[0, :, 0] = limbs_of(secret)
    coeffs[0, :, 1:] = shamir.random_field_elements(DeterministicRandom(seed), 16 * (t - 1)).reshape(16, t - 1)
    ys = field.horner_eval_reference(coeffs, np.array(xs, dtype=np.uint32))[0]
    return [shamir.Share(x, tuple(row)) for x, row in zip(xs, ys.tolist(), strict=True)]


def shift_limbs(share: shamir.Share, limbs: Sequence[int], rng: np.random.Generator) -> shamir.Share:
    """The share with each of the given limbs moved by a random nonzero field element."""
    y = list(share.y)
    for j in limbs:
        y[j] = (y[j] + int(rng.integers(1, P))) % P
    return shamir.Share(share.x, tuple(y))


PATTERNS = ("whole", "one-limb", "some-limbs", "in-range")


def apply_pattern(shares: list[shamir.Share], i: int, pattern: str, t: int, rng: np.random.Generator) -> shamir.Share:
    """Corrupt share i: all 16 values random, one limb, a random subset of limbs, or a crafted in-range shift."""
    s = shares[i]
    if pattern == "whole":
        while True:  # a fresh random share equal to the honest one would not be a corruption
            out = corrupt(s, rng)
            if out.y != s.y:
                return out
    if pattern == "one-limb":
        return shift_limbs(s, [int(rng.integers(0, 16))], rng)
    if pattern == "some-limbs":
        return shift_limbs(s, rng.choice(16, int(rng.integers(1, 17)), replace=False).tolist(), rng)
    # in-range: the limb reconstructed from the first t x's moves by exactly +1 (if i is among them), so the
    # limb check cannot see it; decoding does not rely on the limb check.
    xs = [sh.x for sh in shares[:t]] if i < t else [sh.x for sh in shares[: t - 1]] + [s.x]
    lam = int(shamir.lagrange_coefficients(xs)[-1 if i >= t else i])
    return nudge(s, lam, int(rng.integers(0, 16)))


def corrupt_some(
    shares: list[shamir.Share], bad: Sequence[int], t: int, rng: np.random.Generator, patterns: Sequence[str] = PATTERNS
) -> tuple[list[shamir.Share], tuple[int, ...]]:
    """Corrupt the shares at the indices `bad`, each with a random pattern; returns them and the bad x's."""
    out = list(shares)
    for i in bad:
        out[i] = apply_pattern(shares, i, patterns[int(rng.integers(0, len(patterns)))], t, rng)
    return out, tuple(sorted(shares[i].x for i in bad))


def test_decode_without_corruption_returns_an_empty_bad_set() -> None:
    for m, t in [(1, 1), (5, 1), (5, 5), (6, 3), (7, 3), (40, 13)]:
        secret = bytes(range(m, m + 32))
        shares = sharing(secret, list(range(3, 3 + 7 * m, 7)), t, m)
        got, bad = shamir.decode(shares, t)
        assert got.expose_secret() == secret and bad == ()
        assert isinstance(got, SecretBytes)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), secret=SECRET, seed=st.integers(0, 2**32))
def test_decode_corrects_up_to_e_corrupted_shares(data: st.DataObject, secret: bytes, seed: int) -> None:
    t = data.draw(st.integers(1, 12), label="t")
    m = data.draw(st.integers(t, t + 24), label="m")
    e = (m - t) // 2
    xs = data.draw(st.lists(FIELD_X, min_size=m, max_size=m, unique=True), label="xs")
    bad_idx = data.draw(st.lists(st.integers(0, m - 1), max_size=e, unique=True), label="bad")
    rng = np.random.default_rng(seed)
    shares, bad_xs = corrupt_some(sharing(secret, xs, t, seed), bad_idx, t, rng)
    got, bad = shamir.decode(shares, t)
    assert got.expose_secret() == secret
    assert bad == bad_xs
    # and reconstruct_verified, which the server calls, returns t of the good x's
    got2, used = shamir.reconstruct_verified(shares, t, lambda s: s.expose_secret() == secret)
    assert got2.expose_secret() == secret and len(used) == t and not set(used) & set(bad_xs)


def test_decode_with_different_limbs_corrupted_in_different_shares() -> None:
    # Each limb sees at most one or two errors, but the shares they are in differ: the error locator has to
    # be the union over the limbs (16 bad shares among 40 at t = 8, e = 16).
    t, m = 8, 40
    secret = bytes(range(100, 132))
    xs = list(range(1000, 1000 + 3 * m, 3))
    rng = np.random.default_rng(20)
    honest = sharing(secret, xs, t, 20)
    shares = list(honest)
    for k in range(16):
        shares[2 * k + 1] = shift_limbs(honest[2 * k + 1], [k], rng)
    got, bad = shamir.decode(shares, t)
    assert got.expose_secret() == secret and bad == tuple(xs[2 * k + 1] for k in range(16))
    # one share with every limb wrong, the others with one limb each, a few limbs with no error at all
    shares = list(honest)
    shares[0] = shift_limbs(honest[0], range(16), rng)
    for k in range(1, 16):
        shares[k] = shift_limbs(honest[k], [k % 5], rng)
    got, bad = shamir.decode(shares, t)
    assert got.expose_secret() == secret and bad == tuple(xs[:16])


def test_decode_exactly_e_and_e_plus_one_corrupted_shares() -> None:
    for m, t, seed in [(30, 10, 1), (31, 10, 2), (12, 2, 3), (100, 51, 4), (9, 1, 5), (60, 3, 6)]:
        e = (m - t) // 2
        secret = bytes(range(seed, seed + 32))
        xs = [7 * i + 5 for i in range(m)]
        honest = sharing(secret, xs, t, seed)
        rng = np.random.default_rng(seed)
        order = rng.permutation(m).tolist()
        shares, bad_xs = corrupt_some(honest, order[:e], t, rng)
        got, bad = shamir.decode(shares, t)
        assert got.expose_secret() == secret and bad == bad_xs and len(bad) == e
        # one more, random: beyond the unique-decoding radius, and not within e of any other sharing
        shares, _ = corrupt_some(honest, order[: e + 1], t, rng, patterns=("whole", "some-limbs"))
        with pytest.raises(ShamirError, match="uncorrectable"):
            shamir.decode(shares, t)
        with pytest.raises(ShamirError, match="uncorrectable"):
            shamir.decode(shares, t, lambda s: True)
        # the server's path: the right secret (the colex fallback may still find t good shares) or an error
        try:
            got, _ = shamir.reconstruct_verified(shares, t, lambda s, want=secret: s.expose_secret() == want)
        except ShamirError:
            pass
        else:
            assert got.expose_secret() == secret


def crafted_other_sharing(
    secret: bytes, xs: list[int], t: int, seed: int
) -> tuple[list[shamir.Share], bytes, tuple[int, ...]]:
    """e + 1 corrupted shares that put the word within e shares of a different valid sharing.

    f + h, with h of degree t - 1 vanishing on the first t - 1 points and h(0) = 1 in limb 0: the two
    sharings agree on those t - 1 points and differ on the other m - t + 1 = 2e + 1 (m - t even). The last
    e + 1 shares are taken from f + h. Returns the shares, the other secret and the x's that differ from it.
    """
    m = len(xs)
    e = (m - t) // 2

    def h(x: int) -> int:  # prod_{z} (x - z) / prod_{z} (0 - z) over the first t - 1 points
        num = den = 1
        for z in xs[: t - 1]:
            num, den = num * (x - z) % P, den * -z % P
        return num * pow(den, P - 2, P) % P

    honest = sharing(secret, xs, t, seed)
    shift = [h(x) for x in xs]
    shares = list(honest)
    for i in range(m - e - 1, m):
        y = list(honest[i].y)
        y[0] = (y[0] + shift[i]) % P
        shares[i] = shamir.Share(xs[i], tuple(y))
    other = bytearray(secret)
    other[0:2] = (limbs_of(secret)[0] + 1).to_bytes(2, "big")
    return shares, bytes(other), tuple(xs[t - 1 : m - e - 1])


def test_beyond_the_radius_only_verify_stops_a_crafted_wrong_secret() -> None:
    t, m = 5, 13  # e = 4; 5 crafted corruptions
    secret = bytes(range(1, 33))
    xs = list(range(1, m + 1))
    shares, other, other_bad = crafted_other_sharing(secret, xs, t, 30)
    # Without verify() decoding returns the unique sharing within e shares, which is not the dealt one: this
    # is the information-theoretic limit, and why the protocol always passes a commitment check.
    got, bad = shamir.decode(shares, t)
    assert got.expose_secret() == other and bad == other_bad and len(bad) == (m - t) // 2
    with pytest.raises(ShamirError, match="verification"):
        shamir.decode(shares, t, lambda s: s.expose_secret() == secret)
    # reconstruct_verified never returns the wrong one: here the first t shares are honest, so the fast path
    got, used = shamir.reconstruct_verified(shares, t, lambda s: s.expose_secret() == secret)
    assert got.expose_secret() == secret and used == tuple(xs[:t])
    # and with the honest shares last, nothing verifies within the subset budget: an error, not `other`
    seen: list[bytes] = []

    def verify(s: SecretBytes) -> bool:
        seen.append(s.expose_secret())
        return s.expose_secret() == secret

    with pytest.raises(ShamirError, match="no consistent subset"):
        shamir.reconstruct_verified(shares[::-1], t, verify, max_attempts=8)
    assert other in seen and secret not in seen


def test_decode_refuses_a_sharing_of_out_of_range_limbs() -> None:
    t, xs = 4, list(range(1, 15))
    coeffs = np.array(shamir.random_field_elements(DeterministicRandom(40), 16 * t)).reshape(1, 16, t)
    coeffs[0, :, 0] = np.arange(16, dtype=np.uint32) * 1000
    coeffs[0, 7, 0] = 1 << 16  # one limb at exactly the bound
    ys = field.horner_eval_reference(coeffs, np.array(xs, dtype=np.uint32))[0]
    shares = [shamir.Share(x, tuple(row)) for x, row in zip(xs, ys.tolist(), strict=True)]
    with pytest.raises(ShamirError, match="out of range"):
        shamir.decode(shares, t)
    shares[3] = corrupt(shares[3], np.random.default_rng(40))  # also after correcting an error
    with pytest.raises(ShamirError, match="out of range"):
        shamir.decode(shares, t)
    coeffs[0, 7, 0] = (1 << 16) - 1  # the largest valid limb decodes
    ys = field.horner_eval_reference(coeffs, np.array(xs, dtype=np.uint32))[0]
    shares = [shamir.Share(x, tuple(row)) for x, row in zip(xs, ys.tolist(), strict=True)]
    got, bad = shamir.decode(shares, t)
    assert limbs_of(got.expose_secret())[7] == 0xFFFF and bad == ()


def test_decode_verify_and_errors() -> None:
    secret = bytes(range(50, 82))
    shares = shamir.split(SecretBytes(secret), list(range(1, 9)), 3, DeterministicRandom(50))
    shares[6] = corrupt(shares[6], np.random.default_rng(50))
    calls: list[bytes] = []

    def verify(s: SecretBytes) -> bool:
        calls.append(s.expose_secret())
        return s.expose_secret() == secret

    got, bad = shamir.decode(shares, 3, verify)
    assert got.expose_secret() == secret and bad == (7,) and calls == [secret]
    with pytest.raises(ShamirError, match="failed verification") as info:
        shamir.decode(shares, 3, lambda s: False)
    assert secret.hex() not in str(info.value)
    with pytest.raises(ShamirError, match="need 3 shares"):
        shamir.decode(shares[:2], 3)
    with pytest.raises(ShamirError, match="duplicate"):
        shamir.decode([shares[0], shares[1], shares[0]], 2)
    with pytest.raises(ShamirError, match="threshold"):
        shamir.decode(shares, 0)
    with pytest.raises(ShamirError, match="Share objects"):
        shamir.decode([*shares[:3], b"x" * 68], 3)  # type: ignore[list-item]
    with pytest.raises(ShamirError, match=r"more than 2 of 8 corrupted \(t=3\)") as info:
        shamir.decode([corrupt(s, np.random.default_rng(i)) for i, s in enumerate(shares)], 3)
    assert "redacted" not in str(info.value) and secret.hex() not in str(info.value)


def test_decode_handles_what_the_64_subset_search_could_not() -> None:
    # n = 100 holders, t = 51, 20 corrupted (e = 24): the first 64 colex subsets all lie in the first 53
    # shares and each leaves out at most 2 of them, so 3 corrupted shares among those defeat the old search.
    t, m = 51, 100
    secret = bytes(range(60, 92))
    xs = list(range(1, m + 1))
    rng = np.random.default_rng(60)
    bad_idx = sorted([0, 17, 40, *rng.choice(np.arange(53, m), 17, replace=False).tolist()])
    shares, bad_xs = corrupt_some(sharing(secret, xs, t, 60), bad_idx, t, rng)
    assert all(set(idx) & set(bad_idx) for idx in itertools.islice(shamir._colex_subsets(m, t), 64))

    def verify(s: SecretBytes) -> bool:
        return s.expose_secret() == secret

    got, bad = shamir.decode(shares, t, verify)
    assert got.expose_secret() == secret and bad == bad_xs
    got, used = shamir.reconstruct_verified(shares, t, verify)
    assert got.expose_secret() == secret
    assert used == tuple(x for x in xs if x not in bad_xs)[:t]


def test_reconstruct_verified_without_decode_is_the_old_subset_search(monkeypatch: pytest.MonkeyPatch) -> None:
    t, m = 51, 100
    secret = bytes(range(60, 92))
    rng = np.random.default_rng(61)
    shares, _ = corrupt_some(sharing(secret, list(range(1, m + 1)), t, 61), [1, 2, 3, 70, 80], t, rng)

    def no_decode(*args: Any, **kwargs: Any) -> Any:
        raise ShamirError("decoding disabled")

    monkeypatch.setattr(shamir, "decode", no_decode)
    with pytest.raises(ShamirError, match="no consistent subset"):
        shamir.reconstruct_verified(shares, t, lambda s: s.expose_secret() == secret)
    monkeypatch.undo()
    assert shamir.reconstruct_verified(shares, t, lambda s: s.expose_secret() == secret)[0].expose_secret() == secret


def test_reconstruct_verified_fast_path_does_not_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = bytes(range(70, 102))
    shares = shamir.split(SecretBytes(secret), list(range(1, 11)), 4, DeterministicRandom(70))
    shares[7] = corrupt(shares[7], np.random.default_rng(70))  # outside the first t: not looked at

    def no_decode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decode called on the fast path")

    monkeypatch.setattr(shamir, "decode", no_decode)
    got, used = shamir.reconstruct_verified(shares, 4, lambda s: s.expose_secret() == secret)
    assert got.expose_secret() == secret and used == (1, 2, 3, 4)


def test_decode_1000_shares_100_corrupted() -> None:
    t, m = 501, 1000
    secret = bytes(range(80, 112))
    xs = [int(x) for x in np.random.default_rng(80).choice(np.arange(1, 1 << 24), m, replace=False)]
    rng = np.random.default_rng(81)
    bad_idx = rng.choice(m, 100, replace=False).tolist()
    shares, bad_xs = corrupt_some(sharing(secret, xs, t, 80), bad_idx, t, rng)
    got, bad = shamir.decode(shares, t)
    assert got.expose_secret() == secret and bad == bad_xs
    got, used = shamir.reconstruct_verified(shares, t, lambda s: s.expose_secret() == secret)
    assert got.expose_secret() == secret and len(used) == t and not set(used) & set(bad_xs)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), secret=SECRET, seed=st.integers(0, 2**32))
def test_decode_never_returns_a_sharing_farther_than_e(data: st.DataObject, secret: bytes, seed: int) -> None:
    # Any number of corrupted shares, any pattern: decode either raises or returns a secret whose sharing
    # agrees with all shares outside the reported bad set (at most e of them); with verify(), only the
    # dealt secret; reconstruct_verified likewise.
    t = data.draw(st.integers(1, 8), label="t")
    m = data.draw(st.integers(t, t + 14), label="m")
    e = (m - t) // 2
    xs = data.draw(st.lists(FIELD_X, min_size=m, max_size=m, unique=True), label="xs")
    bad_idx = data.draw(st.lists(st.integers(0, m - 1), max_size=m, unique=True), label="bad")
    rng = np.random.default_rng(seed)
    shares, bad_xs = corrupt_some(sharing(secret, xs, t, seed), bad_idx, t, rng)
    try:
        got, bad = shamir.decode(shares, t)
    except ShamirError:
        assert len(bad_idx) > e
    else:
        assert len(bad) <= e
        rest = [s for s in shares if s.x not in set(bad)]
        for _ in range(3):
            pick = [rest[int(i)] for i in rng.permutation(len(rest))[:t]]
            assert shamir.reconstruct(pick, t) == got
        if len(bad_idx) <= e:
            assert got.expose_secret() == secret and bad == bad_xs

    def verify(s: SecretBytes) -> bool:
        return s.expose_secret() == secret

    for call in (lambda: shamir.decode(shares, t, verify), lambda: shamir.reconstruct_verified(shares, t, verify)):
        try:
            assert call()[0].expose_secret() == secret
        except ShamirError:
            assert len(bad_idx) > e


def test_decoding_arithmetic_agrees_with_galois(gf: Any) -> None:
    gen = np.random.default_rng(90)
    a = gen.integers(0, P, (5, 37), dtype=np.uint64)
    b = gen.integers(0, P, (37, 9), dtype=np.uint64)
    a[0], b[:, 0] = P - 1, P - 1  # extremes
    assert (shamir._matmul_mod(a, b) == np.array(gf(a.tolist()) @ gf(b.tolist()), dtype=np.uint64)).all()
    # more terms than one exact chunk (2^16): p - 1 everywhere, against Python integers
    k = shamir._EXACT_TERMS + 5
    big = shamir._matmul_mod(np.full((1, k), P - 1, dtype=np.uint64), np.full((k, 2), P - 1, dtype=np.uint64))
    assert big.tolist() == [[k * (P - 1) ** 2 % P] * 2]
    x = gen.choice(np.arange(1, P, 9973, dtype=np.uint64), 300, replace=False)
    assert (shamir._inv(x) == np.array(np.reciprocal(gf(x.tolist())), dtype=np.uint64)).all()
    z = gen.choice(np.arange(1, P, 7919, dtype=np.uint64), 40, replace=False)
    expected = [int(np.prod(gf([(int(xi) - int(zl)) % P for zl in z]))) for xi in x[:20]]
    assert shamir._products_of_differences(x[:20], z).tolist() == expected
    # power sums and polynomial evaluation, across more than one block of columns / coefficients
    pts = x[:25]
    w = gen.integers(0, P, (25, 3), dtype=np.uint64)
    count = shamir._DECODE_BLOCK + 44
    sums = shamir._power_sums(w, pts, count)
    powers = gf(pts.tolist())[:, None] ** np.arange(count)[None, :]
    assert (sums == np.array(gf(w.T.tolist()) @ powers, dtype=np.uint64)).all()
    coeffs = gen.integers(0, P, (3, count), dtype=np.uint64)
    vals = shamir._poly_eval(coeffs, pts)
    for j in range(3):
        poly = galois.Poly(gf(coeffs[j].tolist())[::-1])
        assert (vals[:, j] == np.array(poly(gf(pts.tolist())), dtype=np.uint64)).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), lengths=st.lists(st.integers(0, 12), min_size=1, max_size=5))
def test_berlekamp_massey_agrees_with_galois(gf: Any, seed: int, lengths: list[int]) -> None:
    # Rows generated by random recurrences of the given lengths, 2L + extra terms (the minimal recurrence
    # is then unique); ours is scaled by a nonzero constant, galois's has constant term 1.
    gen = np.random.default_rng(seed)
    n_terms = 2 * max(lengths) + int(gen.integers(0, 4))
    rows = []
    for length in lengths:
        roots = gen.integers(1, P, length).tolist()
        amps = gen.integers(1, P, length).tolist()
        rows.append([sum(a * pow(r, s, P) for a, r in zip(amps, roots, strict=True)) % P for s in range(n_terms)])
    syn = np.array(rows, dtype=np.uint64).reshape(len(lengths), n_terms)
    conn, got_len = shamir._berlekamp_massey(syn, n_terms)
    assert conn is not None
    for j, row in enumerate(rows):
        expected = galois.berlekamp_massey(gf(row), output="connection") if any(row) else galois.Poly.One(gf)
        assert got_len[j] == expected.degree
        mine = gf(conn[j].tolist()) / gf(int(conn[j, 0]))
        assert galois.Poly(mine[::-1]) == expected
    # the length cap: a row needing more than max_len is reported as None
    if got_len.max() > 0:
        capped, _ = shamir._berlekamp_massey(syn, int(got_len.max()) - 1)
        assert capped is None
