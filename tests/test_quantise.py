"""Quantisation: kernels against twins, round trip, unbiased rounding, weighted sums, capacity, vectors."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from secagg.native import quantise as qz

from secagg.crypto.rng import DeterministicRandom, random_uint32
from secagg.errors import ConfigurationError
from secagg.ring import Ring
from tests.vectors import VECTORS, load_vectors, regenerate

FLOATS = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=80, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(0, 60), elements=FLOATS),
    clip=st.floats(1e-6, 1e6),
    bits=st.integers(1, 62),
    wide=st.booleans(),
    data=st.data(),
)
def test_quantise_kernel_equals_twin(x: np.ndarray, clip: float, bits: int, wide: bool, data: st.DataObject) -> None:
    qmax = (1 << bits) - 1
    limit = (1 << 64) - 1 if wide else (1 << 32) - 1
    if qmax > limit:
        bits = 32
        qmax = (1 << bits) - 1
    weight = data.draw(st.integers(1, max(1, min(1000, limit // qmax))))
    rand = data.draw(hnp.arrays(np.uint32, x.shape, elements=st.integers(0, 2**32 - 1)))
    dtype = np.uint64 if wide else np.uint32
    got = np.empty(x.shape, dtype=dtype)
    want = np.empty(x.shape, dtype=dtype)
    qz.quantise_kernel(x, clip, np.uint64(qmax), np.uint64(weight), rand, got)
    qz.quantise_kernel_reference(x, clip, qmax, weight, rand, want)
    assert got.tolist() == want.tolist()
    assert all(v % weight == 0 and v // weight <= qmax for v in got.tolist())
    assert all(v == 0 for v, xi in zip(got.tolist(), x.tolist(), strict=True) if xi != xi)  # NaN -> 0


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(1, 62),
    wide=st.booleans(),
    clip=st.floats(1e-3, 1e3),
    total=st.integers(1, 10_000),
    data=st.data(),
)
def test_dequantise_kernel_equals_twin(bits: int, wide: bool, clip: float, total: int, data: st.DataObject) -> None:
    dtype = np.uint64 if wide else np.uint32
    sums = data.draw(hnp.arrays(dtype, st.integers(0, 50)))
    qmax = (1 << bits) - 1
    got = np.empty(sums.shape, dtype=np.float64)
    want = np.empty(sums.shape, dtype=np.float64)
    qz.dequantise_kernel(sums, float(total), clip, np.uint64(qmax), got)
    qz.dequantise_kernel_reference(sums, float(total), clip, qmax, want)
    assert got.tobytes() == want.tobytes()


def _rand(n: int, seed: int) -> np.ndarray:
    return random_uint32(DeterministicRandom(seed), n).copy()


@pytest.mark.parametrize(("bits", "modulus"), [(1, 1 << 32), (4, 1 << 32), (16, 1 << 32), (30, 1 << 64), (52, 1 << 64)])
def test_round_trip_within_one_step(bits: int, modulus: int) -> None:
    clip = 2.0
    x = np.linspace(-3.0, 3.0, 5001, dtype=np.float32)
    q = qz.quantise(x, clip, bits, 1, _rand(x.size, bits), modulus)
    back = qz.dequantise(q, 1, clip, bits)
    step = qz.quantisation_step(clip, bits)
    clipped = np.clip(x.astype(np.float64), -clip, clip)
    err = np.abs(back - clipped)
    assert float(err.max()) <= step * (1 + 1e-9) + 1e-12
    if bits >= 16:
        assert float(err.max()) < 1e-3  # and it really is close, not just "within the range"


def test_clip_boundaries_are_exact() -> None:
    x = np.array([-5.0, -1.0, 1.0, 5.0, np.inf, -np.inf], dtype=np.float32)
    q = qz.quantise(x, 1.0, 8, 1, _rand(x.size, 0), 1 << 32)
    assert q.tolist() == [0, 0, 255, 255, 255, 0]
    assert qz.dequantise(q, 1, 1.0, 8).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, -1.0]


@pytest.mark.parametrize("value", [0.3, -0.77, 0.01])
def test_stochastic_rounding_is_unbiased(value: float) -> None:
    # 4 bits on [-1, 1]: step 2/15, so plain floor would be off by a sizable fraction of a step.
    bits, clip, n = 4, 1.0, 200_000
    x = np.full(n, value, dtype=np.float32)
    q = qz.quantise(x, clip, bits, 1, _rand(n, 99), 1 << 32)
    back = qz.dequantise(q, 1, clip, bits)
    step = qz.quantisation_step(clip, bits)
    target = float(np.float32(value))
    # sd of one rounding <= step / 2, so of the mean <= step / (2 sqrt(n)); allow 6 sd.
    assert abs(float(back.mean()) - target) < 6 * step / (2 * np.sqrt(n))
    lo = np.floor((target + clip) / step) * step - clip
    assert set(np.round(back, 9).tolist()) <= {round(lo, 9), round(lo + step, 9)}  # only the two neighbours


@pytest.mark.property("P6")
@pytest.mark.parametrize("modulus", [1 << 32, 1 << 64, 1000003 * 1000033])
def test_sum_of_clients_dequantises_to_weighted_mean(modulus: int) -> None:
    ring = Ring(modulus)
    bits, clip, d = 10, 0.5, 2000
    weights = [1, 3, 7, 2, 5]
    qz.check_capacity(len(weights), max(weights), bits, modulus)
    gen = np.random.default_rng(3)
    updates = [gen.normal(0, 0.3, d).astype(np.float32) for _ in weights]
    acc = ring.zeros(d)
    for k, (u, w) in enumerate(zip(updates, weights, strict=True)):
        ring.add_into(acc, qz.quantise(u, clip, bits, w, _rand(d, 1000 + k), modulus))
    mean = qz.dequantise(acc, sum(weights), clip, bits)
    clipped = [np.clip(u.astype(np.float64), -clip, clip) for u in updates]
    expected = sum(w * c for w, c in zip(weights, clipped, strict=True)) / sum(weights)
    assert float(np.abs(mean - expected).max()) <= qz.quantisation_step(clip, bits)
    assert float(np.abs(mean - expected).mean()) < qz.quantisation_step(clip, bits) / 4


@pytest.mark.property("P6")
def test_capacity() -> None:
    qz.check_capacity(100, 10, 20, 1 << 32)  # 1000 * 2^20 < 2^32
    with pytest.raises(ConfigurationError):
        qz.check_capacity(4, 1, 30 + 1, 1 << 32)
    with pytest.raises(ConfigurationError):
        qz.check_capacity(4, 1, 30, (1 << 32) - 1)
    with pytest.raises(ConfigurationError):
        qz.check_capacity(1 << 12, 1 << 10, 10, 1 << 32)  # 2^32 is not < 2^32
    qz.check_capacity((1 << 12) - 1, 1 << 10, 10, 1 << 32)
    qz.check_capacity(1000, 1000, 40, 1 << 64)
    for bad in [
        (0, 1, 8, 1 << 32),
        (1, 0, 8, 1 << 32),
        (1, 1, 0, 1 << 32),
        (1, 1, 63, 1 << 64),
        (1, 1, 8, 1),
    ]:
        with pytest.raises(ConfigurationError):
            qz.check_capacity(*bad)


@pytest.mark.property("P6")
def test_check_capacity_boundary_is_exact() -> None:
    with pytest.raises(ConfigurationError):
        qz.check_capacity(4, 1, 30, 1 << 32)  # 4 * 2^30 == 2^32
    qz.check_capacity(3, 1, 30, 1 << 32)


def test_quantise_refuses_bad_input() -> None:
    x = np.zeros(4, dtype=np.float32)
    r = np.zeros(4, dtype=np.uint32)
    m = 1 << 32
    with pytest.raises(ConfigurationError, match="NaN"):
        qz.quantise(np.array([0.0, np.nan], dtype=np.float32), 1.0, 8, 1, r[:2], m)
    with pytest.raises(ConfigurationError):
        qz.quantise(x.astype(np.float64), 1.0, 8, 1, r, m)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        qz.quantise(x, 1.0, 8, 1, r[:3], m)
    with pytest.raises(ConfigurationError):
        qz.quantise(x, 1.0, 8, 1, r.astype(np.uint64), m)  # type: ignore[arg-type]
    for clip in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigurationError):
            qz.quantise(x, clip, 8, 1, r, m)
    for bits in (0, 63, True):
        with pytest.raises(ConfigurationError):
            qz.quantise(x, 1.0, bits, 1, r, m)
    for weight in (0, -1, 1.5):
        with pytest.raises(ConfigurationError):
            qz.quantise(x, 1.0, 8, weight, r, m)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        qz.quantise(x, 1.0, 32, 2, r, m)  # one weighted contribution would already wrap
    with pytest.raises(ConfigurationError):
        qz.quantise(x, 1.0, 8, 1, r, m, out=np.empty(4, dtype=np.uint64))
    with pytest.raises(ConfigurationError):
        qz.quantise(x, 1.0, 8, 1, r, 12345678901234567890)  # not a valid modulus


def test_quantise_writes_into_out() -> None:
    x = np.array([-1.0, 1.0], dtype=np.float32)
    out = np.full(2, 7, dtype=np.uint64)
    res = qz.quantise(x, 1.0, 8, 2, np.zeros(2, dtype=np.uint32), 1 << 64, out=out)
    assert res is out and out.tolist() == [0, 510]


@pytest.mark.property("P6")
def test_dequantise_refuses_impossible_sums() -> None:
    sums = np.array([0, 255 * 3 + 1], dtype=np.uint32)
    with pytest.raises(ConfigurationError):
        qz.dequantise(sums, 3, 1.0, 8)
    assert qz.dequantise(sums, 3, 1.0, 8, strict=False)[0] == -1.0
    with pytest.raises(ConfigurationError):
        qz.dequantise(sums, 0, 1.0, 8)
    with pytest.raises(ConfigurationError):
        qz.dequantise(sums.astype(np.int64), 4, 1.0, 8)


def test_vectors_file_is_regenerated_byte_for_byte() -> None:
    assert (VECTORS / "quantise.json").read_text() == regenerate("quantise")


@pytest.mark.property("P12")
def test_known_answers() -> None:
    data = load_vectors("quantise")
    assert data["format"] == 1
    for case in data["quantise"]:
        x = np.frombuffer(bytes.fromhex("".join(case["x_f32le"])), dtype="<f4").astype(np.float32)
        rand = np.array(case["rand"], dtype=np.uint32)
        m = int(case["modulus"])
        want = [int(v) for v in case["out"]]
        got = qz.quantise(x, case["clip"], case["bits"], case["weight"], rand, m)
        assert got.tolist() == want
        twin = np.empty(x.shape, dtype=got.dtype)
        qz.quantise_kernel_reference(x, case["clip"], (1 << case["bits"]) - 1, case["weight"], rand, twin)
        assert twin.tolist() == want
    for case in data["dequantise"]:
        m = int(case["modulus"])
        sums = np.array([int(v) for v in case["sums"]], dtype=Ring(m).dtype)
        got = qz.dequantise(sums, case["total_weight"], case["clip"], case["bits"])
        assert [v.tobytes().hex() for v in got] == case["out_f64le"]


def _spec_quantise(x: float, clip: float, bits: int, weight: int, r: int) -> int:
    """SPEC 6.7 in plain Python floats (binary64, each operation rounded to nearest, in the order written)."""
    qmax = (1 << bits) - 1
    qmax_f = float(qmax)  # fl(qmax): exact for b <= 53, 2^b for b >= 54
    v = min(max(x, -clip), clip)
    t = math.floor((v + clip) * (qmax_f / (2.0 * clip)) + r * 2.0**-32)
    t = min(max(t, 0), qmax_f)
    return min(int(t), qmax) * weight  # the integer clamp: 2^b (b >= 54) becomes 2^b - 1


@pytest.mark.property("P12")
def test_known_answers_recomputed_from_the_spec_text() -> None:
    data = load_vectors("quantise")
    for case in data["quantise"]:
        xs = [struct.unpack("<f", bytes.fromhex(h))[0] for h in case["x_f32le"]]
        got = [
            _spec_quantise(x, case["clip"], case["bits"], case["weight"], r)
            for x, r in zip(xs, case["rand"], strict=True)
        ]
        assert [str(v) for v in got] == case["out"], case["bits"]
    for case in data["dequantise"]:
        qmax = (1 << case["bits"]) - 1
        step = (2.0 * case["clip"]) / float(qmax)
        got = [(float(int(s)) / float(case["total_weight"])) * step - case["clip"] for s in case["sums"]]
        assert [struct.pack("<d", v).hex() for v in got] == case["out_f64le"]


@pytest.mark.property("P12")
def test_bits_above_53_clamp_to_the_integer_qmax() -> None:
    # fl(2^b - 1) = 2^b for b >= 54: the float clamp lets 2^b through, the integer clamp makes it 2^b - 1.
    cases = [c for c in load_vectors("quantise")["quantise"] if c["bits"] >= 54]
    assert {c["bits"] for c in cases} >= {54, 55, 62}
    for b in range(1, 63):
        assert (float((1 << b) - 1) == 2.0**b) == (b >= 54)
    for case in cases:
        qmax = (1 << case["bits"]) - 1
        outs = [int(v) for v in case["out"]]
        assert max(outs) == case["weight"] * qmax  # x >= c reaches exactly w * (2^b - 1), never w * 2^b
        for x, r, out in zip(case["x"], case["rand"], outs, strict=True):
            if x == "inf" or (isinstance(x, float) and x >= case["clip"]):
                assert out == case["weight"] * qmax, (case["bits"], x, r)
    # and the server-side range check uses the integer W * (2^b - 1): 2^54 - 1 decodes, 2^54 is refused
    top = np.array([(1 << 54) - 1], dtype=np.uint64)
    assert qz.dequantise(top, 1, 1.0, 54).tolist() == [1.0]
    with pytest.raises(ConfigurationError):
        qz.dequantise(top + np.uint64(1), 1, 1.0, 54)
