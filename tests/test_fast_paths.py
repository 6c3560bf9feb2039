"""Fast paths of the masking round (issue 6): several masks added block by block, read-only inputs.

`MaskExpander.accumulate_many` and `MaskStreams` must give exactly what one `accumulate` per mask gives, for
every ring kind, any start, any block split; the quantisation kernel takes read-only inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from secagg.native import quantise as qz

from secagg.crypto.prg import MaskExpander
from secagg.crypto.rng import DeterministicRandom, random_uint32
from secagg.crypto.secret import SecretBytes
from secagg.errors import ConfigurationError
from secagg.ring import Ring

MODULI = [1 << 32, 1 << 64, 1 << 16, 1000003, (1 << 61) - 1]


def _seeds(n: int, tag: int) -> list[SecretBytes]:
    rng = DeterministicRandom(tag, label=b"test-fast-paths")
    return [SecretBytes(rng.random_bytes(32)) for _ in range(n)]


def _one_by_one(ring: Ring, acc: np.ndarray, masks: list[tuple[SecretBytes, int]], start: int) -> np.ndarray:
    out = acc.copy()
    expander = MaskExpander(ring, chunk_elems=7)
    for seed, sign in masks:
        expander.accumulate(out, seed, sign, start)
    return out


@settings(max_examples=40, deadline=None)
@given(
    modulus=st.sampled_from(MODULI),
    n=st.integers(0, 90),
    start=st.integers(0, 40),
    chunk=st.integers(1, 33),
    signs=st.lists(st.sampled_from([1, -1]), min_size=0, max_size=5),
    tag=st.integers(0, 1000),
)
def test_accumulate_many_equals_one_accumulate_per_mask(
    modulus: int, n: int, start: int, chunk: int, signs: list[int], tag: int
) -> None:
    ring = Ring(modulus)
    masks = list(zip(_seeds(len(signs), tag), signs, strict=True))
    base = ring.reduce(np.arange(n, dtype=np.uint64) * np.uint64(2654435761))
    want = _one_by_one(ring, base, masks, start)
    got = base.copy()
    MaskExpander(ring, chunk_elems=chunk).accumulate_many(got, masks, start)
    assert got.tobytes() == want.tobytes()
    again = base.copy()
    MaskExpander(ring, chunk_elems=chunk).accumulate_many(again, (m for m in masks), start)  # any iterable
    assert again.tobytes() == want.tobytes()


@settings(max_examples=30, deadline=None)
@given(
    modulus=st.sampled_from(MODULI),
    cuts=st.lists(st.integers(0, 25), min_size=1, max_size=6),
    start=st.integers(0, 20),
    chunk=st.integers(1, 16),
    tag=st.integers(0, 1000),
)
def test_streams_block_by_block_equal_one_pass(modulus: int, cuts: list[int], start: int, chunk: int, tag: int) -> None:
    ring = Ring(modulus)
    masks = list(zip(_seeds(3, tag), [1, -1, 1], strict=True))
    total = sum(cuts)
    want = _one_by_one(ring, ring.zeros(total), masks, start)
    got = ring.zeros(total)
    expander = MaskExpander(ring, chunk_elems=chunk)
    with expander.streams(masks, start) as streams:
        pos = 0
        for c in cuts:
            streams.add_next(got[pos : pos + c])
            pos += c
        assert streams.position == start + total
    assert got.tobytes() == want.tobytes()


def test_masks_cancel_in_one_call() -> None:
    ring = Ring(1 << 32)
    seeds = _seeds(4, 1)
    acc = ring.reduce(np.arange(1000, dtype=np.uint64))
    before = acc.copy()
    MaskExpander(ring, chunk_elems=64).accumulate_many(acc, [(s, +1) for s in seeds] + [(s, -1) for s in seeds], 9)
    assert np.array_equal(acc, before)
    MaskExpander(ring, chunk_elems=64).accumulate_many(acc, [(seeds[0], +1)], 9)
    assert not np.array_equal(acc, before)


@pytest.mark.parametrize("modulus", [1 << 32, 1000003])
def test_streams_wipe_buffers_and_refuse_after_close(modulus: int) -> None:
    ring = Ring(modulus)
    expander = MaskExpander(ring, chunk_elems=16)
    streams = expander.streams([(s, 1) for s in _seeds(2, 2)], 3)
    streams.add_next(ring.zeros(40))
    streams.close()
    assert not expander._ks_bytes.any()
    assert not expander._words.any()
    with pytest.raises(ConfigurationError):
        streams.add_next(ring.zeros(4))
    streams.close()  # idempotent


def test_streams_refuse_bad_arguments() -> None:
    ring = Ring(1 << 32)
    expander = MaskExpander(ring)
    seed = _seeds(1, 3)[0]
    with pytest.raises(ConfigurationError):
        expander.accumulate_many(ring.zeros(4), [(seed, 0)])
    with pytest.raises(ConfigurationError):
        expander.accumulate_many(ring.zeros(4), [(SecretBytes(bytes(8)), 1)])
    with pytest.raises(ConfigurationError):
        expander.streams([(seed, 1)], -1)
    with expander.streams([(seed, 1)]) as streams, pytest.raises(ConfigurationError):
        streams.add_next(np.zeros(4, dtype=np.uint64))
    general = Ring(1000003)
    with MaskExpander(general).streams([(seed, 1)]) as streams, pytest.raises(ConfigurationError):
        streams.add_next(np.array([1000003], dtype=np.uint32))  # not a ring element


class _Counting(MaskExpander):
    __slots__ = ("calls",)

    def accumulate(self, acc: np.ndarray, seed: SecretBytes, sign: int = +1, start: int = 0) -> None:
        self.calls.append((start, acc.shape[0], sign))
        super().accumulate(acc, seed, sign, start)


def test_an_expander_that_overrides_accumulate_is_called_per_mask_and_block() -> None:
    ring = Ring(1 << 32)
    masks = list(zip(_seeds(2, 5), [1, -1], strict=True))
    counting = _Counting(ring, chunk_elems=4)
    counting.calls = []
    got = ring.zeros(10)
    with counting.streams(iter(masks), 3) as streams:
        streams.add_next(got[:6])
        streams.add_next(got[6:])
    assert counting.calls == [(3, 6, 1), (3, 6, -1), (9, 4, 1), (9, 4, -1)]
    assert got.tobytes() == _one_by_one(ring, ring.zeros(10), masks, 3).tobytes()


@pytest.mark.parametrize("wide", [False, True])
def test_quantise_takes_a_read_only_input(wide: bool) -> None:
    x = np.linspace(-2, 2, 101, dtype=np.float32)
    rand = random_uint32(DeterministicRandom(4), x.size).copy()
    modulus = 1 << 64 if wide else 1 << 32
    want = qz.quantise(x, 1.0, 12, 3, rand, modulus)
    frozen = x.copy()
    frozen.flags.writeable = False
    got = qz.quantise(frozen, 1.0, 12, 3, rand, modulus)
    assert got.tobytes() == want.tobytes()
    twin = np.empty_like(want)
    qz.quantise_kernel_reference(frozen, 1.0, (1 << 12) - 1, 3, rand, twin)
    assert twin.tobytes() == want.tobytes()
