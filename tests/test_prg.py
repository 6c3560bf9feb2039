"""Mask PRG: specification conformance, random access, cancellation, uniformity, known answers."""

from __future__ import annotations

import copy
import itertools
import pickle

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.crypto.prg import MaskExpander, derive_prg_key, expand_mask
from secagg.crypto.rng import DeterministicRandom
from secagg.crypto.secret import SecretBytes
from secagg.errors import ConfigurationError
from secagg.ring import Ring
from tests.vectors import VECTORS, load_vectors, regenerate

MODULI = [
    1 << 32,
    1 << 64,
    1 << 16,
    1 << 40,
    1 << 63,
    2,
    3,
    1000003,
    (1 << 32) - 5,
    (1 << 32) + 15,
    (1 << 61) - 1,
]
SEED = SecretBytes(bytes(range(32)))


def spec_elements(seed: bytes, modulus: int, start: int, count: int) -> list[int]:
    """mask[start:start+count] computed straight from the module docstring, one element at a time."""
    pow2 = modulus & (modulus - 1) == 0
    info = b"secagg/v1/prg/aes256ctr" if pow2 else b"secagg/v1/prg/aes256-rejection"
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(seed)
    out = []
    for i in range(start, start + count):
        if pow2:
            w = 4 if modulus <= 1 << 32 else 8
            block, offset = divmod(w * i, 16)
            enc = Cipher(algorithms.AES(key), modes.CTR(block.to_bytes(16, "big"))).encryptor()
            ks = enc.update(bytes(32))
            out.append(int.from_bytes(ks[offset : offset + w], "little") % modulus)
            continue
        low = (1 << (modulus - 1).bit_length()) - 1
        ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # a PRF on counter blocks, as in the spec
        value = None
        for j in itertools.count():
            block = ecb.update(j.to_bytes(8, "big") + i.to_bytes(8, "big"))
            for cand in (block[:8], block[8:]):
                c = int.from_bytes(cand, "little") & low
                if c < modulus:
                    value = c
                    break
            if value is not None:
                break
        out.append(value)
    return out


@pytest.mark.property("P12")
@pytest.mark.parametrize("modulus", MODULI)
def test_matches_specification(modulus: int) -> None:
    ring = Ring(modulus)
    expander = MaskExpander(ring, chunk_elems=5)
    for start in (0, 1, 2, 3, 7, 1234567, (1 << 40) + 3):
        got = expander.expand(SEED, start, 13)
        assert got.dtype == ring.dtype
        assert got.tolist() == spec_elements(SEED.expose_secret(), modulus, start, 13)


@pytest.mark.parametrize("modulus", MODULI)
@settings(max_examples=15, deadline=None)
@given(
    start=st.integers(0, 5000),
    count=st.integers(0, 700),
    chunk=st.integers(1, 300),
)
def test_chunk_equals_slice_of_whole(modulus: int, start: int, count: int, chunk: int) -> None:
    ring = Ring(modulus)
    whole = MaskExpander(ring).expand(SEED, 0, start + count)
    part = MaskExpander(ring, chunk_elems=chunk).expand(SEED, start, count)
    assert np.array_equal(part, whole[start:])
    # Accumulating piecewise at offsets equals accumulating the whole vector at once.
    acc = ring.zeros(start + count)
    pieces = MaskExpander(ring, chunk_elems=chunk)
    cut = start // 2
    pieces.accumulate(acc[:cut], SEED, +1, 0)
    pieces.accumulate(acc[cut:], SEED, +1, cut)
    assert np.array_equal(acc, whole)


@pytest.mark.property("P1")
@pytest.mark.parametrize("modulus", MODULI)
def test_masks_cancel(modulus: int) -> None:
    ring = Ring(modulus)
    gen = np.random.default_rng(1)
    original = ring.reduce([int(v) for v in gen.integers(0, 2**62, 3000)])
    acc = original.copy()
    expander = MaskExpander(ring, chunk_elems=256)
    seeds = [SecretBytes(bytes([k]) * 32) for k in range(4)]
    for s in seeds:
        expander.accumulate(acc, s, +1, 10)
    assert not np.array_equal(acc, original) or modulus == 2  # masked (M = 2 could collide by chance)
    for s in reversed(seeds):
        expander.accumulate(acc, s, -1, 10)
    assert np.array_equal(acc, original)


@pytest.mark.parametrize("modulus", MODULI)
def test_accumulate_adds_and_subtracts_the_expanded_mask(modulus: int) -> None:
    ring = Ring(modulus)
    expander = MaskExpander(ring, chunk_elems=64)
    mask = expander.expand(SEED, 5, 500)
    base = ring.reduce(list(range(1000, 1500)))
    plus = base.copy()
    expander.accumulate(plus, SEED, +1, 5)
    assert plus.tolist() == [(int(a) + int(b)) % modulus for a, b in zip(base.tolist(), mask.tolist(), strict=True)]
    minus = base.copy()
    expander.accumulate(minus, SEED, -1, 5)
    assert minus.tolist() == [(int(a) - int(b)) % modulus for a, b in zip(base.tolist(), mask.tolist(), strict=True)]


@pytest.mark.parametrize("modulus", [3, 1000003, (1 << 31) + 1, (1 << 61) - 1, (3 << 40) + 1])
def test_general_modulus_masks_are_uniform(modulus: int) -> None:
    # Chi-square over 16 equal-width bins (or the residues themselves for tiny M); deterministic seed.
    values = MaskExpander(Ring(modulus)).expand(SecretBytes(b"\x42" * 32), 0, 64_000)
    assert int(values.max()) < modulus
    bins = min(modulus, 16)
    idx = [(int(v) * bins) // modulus for v in values.tolist()]
    counts = np.bincount(np.array(idx), minlength=bins).astype(np.float64)
    edges = [(k * modulus + bins - 1) // bins for k in range(bins + 1)]  # first value of each bin
    expected = np.array([edges[k + 1] - edges[k] for k in range(bins)], dtype=np.float64) / modulus * len(idx)
    chi2 = float((((counts - expected) ** 2) / expected).sum())
    # dof = bins - 1 <= 15; mean 15, sd ~5.5. Modulo bias (no rejection) would give chi2 in the thousands.
    assert chi2 < 60.0, chi2


@pytest.mark.parametrize("modulus", [1 << 16, 1 << 40, 2, 1 << 63])
def test_power_of_two_masks_are_reduced_and_spread(modulus: int) -> None:
    values = MaskExpander(Ring(modulus)).expand(SEED, 0, 20_000)
    assert int(values.max()) < modulus
    if modulus > 2:
        # The top bit of the ring is set about half the time.
        top = np.count_nonzero(values >= np.array(modulus // 2, dtype=values.dtype))
        assert 9_000 < top < 11_000
    else:
        assert 9_000 < int(values.sum()) < 11_000


def test_seeds_and_ring_kinds_are_separated() -> None:
    ring = Ring(1 << 32)
    a = expand_mask(ring, SecretBytes(b"\x01" * 32), 0, 64)
    b = expand_mask(ring, SecretBytes(b"\x02" * 32), 0, 64)
    assert not np.array_equal(a, b)
    k_ctr = derive_prg_key(SEED, Ring(1 << 32))
    k_rej = derive_prg_key(SEED, Ring(1000003))
    assert k_ctr.expose_secret() != k_rej.expose_secret()
    assert derive_prg_key(SEED, Ring(1 << 64)) == k_ctr  # one CTR key for every power of two


@pytest.mark.property("P11")
def test_keystream_buffer_is_wiped() -> None:
    for modulus in (1 << 32, 1000003):
        expander = MaskExpander(Ring(modulus), chunk_elems=32)
        expander.accumulate(Ring(modulus).zeros(100), SEED, +1, 3)
        assert not expander._ks_bytes.any()
        assert not expander._words.any()


def test_refuses_bad_arguments() -> None:
    ring = Ring(1 << 32)
    expander = MaskExpander(ring)
    acc = ring.zeros(8)
    with pytest.raises(ConfigurationError):
        expander.accumulate(acc, SecretBytes(bytes(16)))  # short seed
    with pytest.raises(ConfigurationError):
        expander.accumulate(acc, bytes(32))  # type: ignore[arg-type]  # raw bytes, not a SecretBytes
    with pytest.raises(ConfigurationError):
        expander.accumulate(acc, SEED, sign=2)
    with pytest.raises(ConfigurationError):
        expander.accumulate(acc, SEED, sign=True)
    with pytest.raises(ConfigurationError):
        expander.accumulate(acc, SEED, start=-1)
    with pytest.raises(ConfigurationError):
        expander.accumulate(np.zeros(8, dtype=np.uint64), SEED)
    with pytest.raises(ConfigurationError):
        expander.accumulate(np.zeros(16, dtype=np.uint32)[::2], SEED)
    with pytest.raises(ConfigurationError):
        MaskExpander(ring, chunk_elems=0)
    with pytest.raises(ConfigurationError):
        MaskExpander(1 << 32)  # type: ignore[arg-type]
    general = Ring(1000003)
    with pytest.raises(ConfigurationError):
        MaskExpander(general).accumulate(np.array([1000003], dtype=np.uint32), SEED)
    with pytest.raises(ConfigurationError):
        expander.expand(SEED, 0, -1)


@pytest.mark.property("P11")
def test_expander_holds_no_printable_or_picklable_secrets() -> None:
    expander = MaskExpander(Ring(1 << 32))
    with pytest.raises(TypeError):
        pickle.dumps(expander)
    with pytest.raises(TypeError):
        copy.copy(expander)
    assert SEED.expose_secret().hex() not in repr(derive_prg_key(SEED, Ring(1 << 32)))


def test_empty_vector_is_fine() -> None:
    for modulus in (1 << 32, 1000003):
        assert expand_mask(Ring(modulus), SEED, 10, 0).size == 0


def test_deterministic_random_seeds_reproduce() -> None:
    seed_bytes = DeterministicRandom(5).random_bytes(32)
    a = expand_mask(Ring(1 << 32), SecretBytes(seed_bytes), 100, 50)
    b = expand_mask(Ring(1 << 32), SecretBytes(seed_bytes), 100, 50)
    assert np.array_equal(a, b)


def test_vectors_file_is_regenerated_byte_for_byte() -> None:
    assert (VECTORS / "prg.json").read_text() == regenerate("prg")


@pytest.mark.property("P12")
def test_known_answers() -> None:
    data = load_vectors("prg")
    assert data["format"] == 1
    assert len(data["vectors"]) >= 50
    for v in data["vectors"]:
        modulus = int(v["modulus"])
        ring = Ring(modulus)
        seed = SecretBytes(bytes.fromhex(v["seed"]))
        assert derive_prg_key(seed, ring).expose_secret().hex() == v["key"]
        want = [int(e) for e in v["elements"]]
        assert MaskExpander(ring, chunk_elems=3).expand(seed, v["start"], len(want)).tolist() == want
        assert spec_elements(bytes.fromhex(v["seed"]), modulus, v["start"], len(want)) == want
