"""Ring arithmetic: kernels against their exact twins for every modulus kind, and the Ring value class."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from secagg.native import ring as kernels

from secagg.errors import ConfigurationError
from secagg.ring import RING_2_32, RING_2_64, Ring

# (kind, modulus strategy, kernels) for the four kernel families.
POW2_U32 = st.integers(1, 32).map(lambda k: 1 << k)
POW2_U64 = st.integers(33, 64).map(lambda k: 1 << k)
GENERAL_U32 = st.integers(3, (1 << 32) - 1).filter(lambda m: m & (m - 1) != 0)
GENERAL_U64 = st.integers((1 << 32) + 1, (1 << 63) - 1).filter(lambda m: m & (m - 1) != 0)

KernelPair = tuple[Callable[..., None], Callable[..., None]]
FAMILIES: list[tuple[str, st.SearchStrategy[int], Any, KernelPair, KernelPair]] = [
    (
        "pow2-u32",
        POW2_U32,
        np.uint32,
        (kernels.add_pow2_u32, kernels.add_pow2_u32_reference),
        (kernels.sub_pow2_u32, kernels.sub_pow2_u32_reference),
    ),
    (
        "pow2-u64",
        POW2_U64,
        np.uint64,
        (kernels.add_pow2_u64, kernels.add_pow2_u64_reference),
        (kernels.sub_pow2_u64, kernels.sub_pow2_u64_reference),
    ),
    (
        "mod-u32",
        GENERAL_U32,
        np.uint32,
        (kernels.add_mod_u32, kernels.add_mod_u32_reference),
        (kernels.sub_mod_u32, kernels.sub_mod_u32_reference),
    ),
    (
        "mod-u64",
        GENERAL_U64,
        np.uint64,
        (kernels.add_mod_u64, kernels.add_mod_u64_reference),
        (kernels.sub_mod_u64, kernels.sub_mod_u64_reference),
    ),
]


@st.composite
def operands(draw: st.DrawFn, family: int) -> tuple[int, np.ndarray, np.ndarray]:
    """A modulus of the family and two arrays (raw words for power-of-two kernels, reduced otherwise)."""
    _, mods, dtype, _, _ = FAMILIES[family]
    m = draw(mods)
    pow2 = m & (m - 1) == 0
    top = int(np.iinfo(dtype).max) if pow2 else m - 1
    # Bias towards the edges, where carries and borrows happen.
    elem = st.one_of(st.integers(0, top), st.sampled_from([0, 1, top, top - 1, m - 1]).filter(lambda v: v <= top))
    n = draw(st.integers(0, 40))
    a = draw(hnp.arrays(dtype, n, elements=elem))
    b = draw(hnp.arrays(dtype, n, elements=elem))
    return m, a, b


@pytest.mark.parametrize("family", range(len(FAMILIES)), ids=[f[0] for f in FAMILIES])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_kernels_equal_twins(family: int, data: st.DataObject) -> None:
    m, a, b = data.draw(operands(family))
    _, _, _, (add, add_ref), (sub, sub_ref) = FAMILIES[family]
    arg = kernels.select_kernel(m, +1)[1]
    assert int(arg) == (m - 1 if m & (m - 1) == 0 else m)
    for kernel, twin, sign in ((add, add_ref, 1), (sub, sub_ref, -1)):
        got, want = a.copy(), a.copy()
        kernel(got, b, arg)
        twin(want, b, arg)
        assert got.tolist() == want.tolist()
        # And both are the exact modular result.
        assert got.tolist() == [(int(u) + sign * int(v)) % m for u, v in zip(a.tolist(), b.tolist(), strict=True)]


@pytest.mark.parametrize(
    "modulus",
    [
        2,
        1 << 16,
        1 << 32,
        1 << 33,
        1 << 63,
        1 << 64,
        3,
        1000003,
        (1 << 32) - 5,
        (1 << 61) - 1,
        (1 << 63) - 25,
    ],
)
def test_edge_values_every_modulus(modulus: int) -> None:
    ring = Ring(modulus)
    top = modulus - 1
    vals = [0, 1, top, top - 1 if top else 0, top // 2, (top + 1) // 2]
    a = ring.reduce([u for u in vals for _ in vals])
    b = ring.reduce([v for _ in vals for v in vals])
    s = a.copy()
    ring.add_into(s, b)
    assert s.tolist() == [(int(u) + int(v)) % modulus for u, v in zip(a.tolist(), b.tolist(), strict=True)]
    d = a.copy()
    ring.sub_into(d, b)
    assert d.tolist() == [(int(u) - int(v)) % modulus for u, v in zip(a.tolist(), b.tolist(), strict=True)]
    ring.add_into(d, b)
    assert d.tolist() == a.tolist()


@pytest.mark.parametrize(
    ("modulus", "dtype", "bits", "pow2"),
    [
        (1 << 32, np.uint32, 32, True),
        (1 << 64, np.uint64, 64, True),
        (1 << 20, np.uint32, 20, True),
        (1 << 40, np.uint64, 40, True),
        (2, np.uint32, 1, True),
        (1000003, np.uint32, 20, False),
        ((1 << 32) - 1, np.uint32, 32, False),
        ((1 << 32) + 1, np.uint64, 33, False),
        ((1 << 63) - 1, np.uint64, 63, False),
    ],
)
def test_ring_properties(modulus: int, dtype: Any, bits: int, pow2: bool) -> None:
    ring = Ring(modulus)
    assert ring.dtype == np.dtype(dtype)
    assert ring.bits == bits
    assert ring.is_power_of_two is pow2
    assert ring.word_bytes == np.dtype(dtype).itemsize
    assert ring == Ring(modulus) and hash(ring) == hash(Ring(modulus))
    assert repr(ring) == f"Ring(modulus={modulus})"


def test_default_rings() -> None:
    assert Ring() == RING_2_32 and RING_2_32.modulus == 1 << 32
    assert RING_2_64.modulus == 1 << 64 and RING_2_64.dtype == np.uint64


@pytest.mark.parametrize("bad", [0, 1, -4, (1 << 63) + 1, (1 << 64) - 1, 1 << 65, 3 << 62, True, 2.0, "4", None])
def test_bad_modulus_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError):
        Ring(bad)


def test_ring_is_frozen() -> None:
    with pytest.raises(AttributeError):
        RING_2_32.modulus = 5  # type: ignore[misc]


@pytest.mark.parametrize("modulus", [1 << 32, 1 << 64, 1 << 12, 1000003, (1 << 61) - 1])
def test_reduce_and_neg(modulus: int) -> None:
    ring = Ring(modulus)
    ints = [0, 1, -1, modulus, modulus + 7, -modulus - 3, 1 << 70, -(1 << 70) + 5, 123456789]
    got = ring.reduce(ints)
    assert got.dtype == ring.dtype
    assert got.tolist() == [v % modulus for v in ints]
    arr = np.array([0, 1, -1, 2**62, -(2**62), 99], dtype=np.int64)
    assert ring.reduce(arr).tolist() == [int(v) % modulus for v in arr.tolist()]
    uarr = np.array([0, 2**64 - 1, 2**63, 5], dtype=np.uint64)
    assert ring.reduce(uarr).tolist() == [int(v) % modulus for v in uarr.tolist()]
    x = ring.reduce(ints)
    n = ring.neg(x)
    assert n.tolist() == [(-v) % modulus for v in x.tolist()]
    ring.add_into(n, x)
    assert not n.any()


def test_reduce_refuses_non_integers() -> None:
    with pytest.raises(ConfigurationError):
        RING_2_32.reduce([1.5])
    with pytest.raises(ConfigurationError):
        RING_2_32.reduce(np.array([1.0]))
    with pytest.raises(ConfigurationError):
        RING_2_32.reduce(np.array([True]))
    with pytest.raises(ConfigurationError):
        RING_2_32.reduce([True])


def test_add_into_validates() -> None:
    ring = Ring(1 << 32)
    acc = ring.zeros(4)
    with pytest.raises(ConfigurationError):
        ring.add_into(acc, np.zeros(4, dtype=np.uint64))  # wrong dtype
    with pytest.raises(ConfigurationError):
        ring.add_into(acc, ring.zeros(5))  # wrong length
    with pytest.raises(ConfigurationError):
        ring.add_into(np.zeros((2, 2), dtype=np.uint32), np.zeros((2, 2), dtype=np.uint32))
    with pytest.raises(ConfigurationError):
        ring.add_into(np.zeros(8, dtype=np.uint32)[::2], ring.zeros(4))  # not contiguous
    ro = ring.zeros(4)
    ro.flags.writeable = False
    with pytest.raises(ConfigurationError):
        ring.add_into(ro, ring.zeros(4))
    general = Ring(1000003)
    with pytest.raises(ConfigurationError):
        general.add_into(general.zeros(2), np.array([0, 1000003], dtype=np.uint32))  # unreduced input
    with pytest.raises(ConfigurationError):
        general.sub_into(np.array([1000004, 0], dtype=np.uint32), general.zeros(2))
    with pytest.raises(ConfigurationError):
        ring.zeros(-1)


@pytest.mark.parametrize("modulus", [1 << 32, 1 << 64, 1 << 7, 1000003, (1 << 61) - 1])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300))
def test_add_then_sub_is_identity(modulus: int, seed: int, n: int) -> None:
    ring = Ring(modulus)
    gen = np.random.default_rng(seed)
    a = ring.reduce([int(v) for v in gen.integers(0, 2**62, n)])
    b = ring.reduce([int(v) for v in gen.integers(0, 2**62, n)])
    acc = a.copy()
    ring.add_into(acc, b)
    ring.sub_into(acc, b)
    assert acc.tolist() == a.tolist()


def test_large_vector_matches_numpy_wraparound() -> None:
    # For M = 2^32 and 2^64 the kernels must agree with NumPy's wrapping integer arithmetic.
    gen = np.random.default_rng(7)
    for ring in (RING_2_32, RING_2_64):
        info = np.iinfo(ring.dtype)
        a = gen.integers(0, info.max, 10_000, dtype=ring.dtype, endpoint=True)
        b = gen.integers(0, info.max, 10_000, dtype=ring.dtype, endpoint=True)
        acc = a.copy()
        ring.add_into(acc, b)
        assert np.array_equal(acc, a + b)
        ring.sub_into(acc, a)
        assert np.array_equal(acc, b)


@settings(max_examples=40, deadline=None)
@given(
    j=st.integers(0, 2**64 - 1),
    first=st.integers(0, 2**62),
    pending=hnp.arrays(np.int64, st.integers(0, 30), elements=st.integers(0, 2**20)),
)
def test_fill_rejection_blocks_equals_twin(j: int, first: int, pending: np.ndarray) -> None:
    k = pending.size
    got = np.zeros(16 * k + 16, dtype=np.uint8)
    want = got.copy()
    kernels.fill_rejection_blocks(np.uint64(j), np.uint64(first), pending, k, got)
    kernels.fill_rejection_blocks_reference(j, first, pending, k, want)
    assert got.tobytes() == want.tobytes()
    if k:
        assert got[:16].tobytes() == j.to_bytes(8, "big") + (first + int(pending[0])).to_bytes(8, "big")


@settings(max_examples=60, deadline=None)
@given(
    modulus=st.one_of(GENERAL_U32, GENERAL_U64, st.integers(3, 40).filter(lambda m: m & (m - 1) != 0)),
    data=st.data(),
)
def test_select_rejection_equals_twin(modulus: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, 30))
    n = k + data.draw(st.integers(0, 5))
    low = (1 << (modulus - 1).bit_length()) - 1
    # Candidates near the bound so that both accepts and rejects happen.
    near = st.integers(max(0, modulus - 4), min(low, modulus + 4))
    cands = data.draw(hnp.arrays(np.uint64, 2 * k, elements=st.one_of(st.integers(0, 2**64 - 1), near)))
    positions = data.draw(st.permutations(list(range(n))))[:k]
    pending = np.array(positions, dtype=np.int64)
    dtype = np.uint32 if modulus < 1 << 32 else np.uint64
    got_out, want_out = np.zeros(n, dtype=dtype), np.zeros(n, dtype=dtype)
    got_pending, want_pending = pending.copy(), pending.copy()
    got_left = kernels.select_rejection(cands, np.uint64(low), np.uint64(modulus), got_pending, k, got_out)
    want_left = kernels.select_rejection_reference(cands, low, modulus, want_pending, k, want_out)
    assert got_left == want_left
    assert got_pending[:got_left].tolist() == want_pending[:want_left].tolist()
    assert got_out.tolist() == want_out.tolist()
    assert all(int(v) < modulus for v in got_out.tolist())
