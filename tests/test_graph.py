"""Harary neighbourhood graphs: structure for every (n, k), k-connectivity, the seeded shuffle, vectors."""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from collections.abc import Iterable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import ConfigurationError
from secagg.protocol import graph as graph_mod
from secagg.protocol.graph import PERMUTATION_INFO, Graph, harary_graph, neighbours, permutation
from tests.vectors import VECTORS, load_vectors, regenerate


def _seed(i: int) -> bytes:
    return i.to_bytes(16, "big")


def _connected(nbrs: list[frozenset[int]], removed: Iterable[int] = ()) -> bool:
    gone = set(removed)
    alive = [v for v in range(len(nbrs)) if v not in gone]
    if not alive:
        return True
    seen = {alive[0]}
    todo = [alive[0]]
    while todo:
        v = todo.pop()
        for w in nbrs[v]:
            if w not in gone and w not in seen:
                seen.add(w)
                todo.append(w)
    return len(seen) == len(alive)


def _expected_degrees(n: int, k: int) -> list[int]:
    if k % 2 == 1 and n % 2 == 1 and k < n - 1:
        return sorted([k] * (n - 1) + [k + 1])
    return [k] * n


def _check_structure(g: Graph) -> list[frozenset[int]]:
    n, k = g.n, g.k
    nbrs = g.all_neighbours()
    assert len(nbrs) == n
    for i in range(n):
        assert i not in nbrs[i], "a client is never its own neighbour"
        assert nbrs[i] <= set(range(n))
        for j in nbrs[i]:
            assert i in nbrs[j], "adjacency is symmetric"
    degrees = [len(s) for s in nbrs]
    assert sorted(degrees) == _expected_degrees(n, k)
    assert [g.degree(i) for i in range(n)] == degrees
    assert sum(degrees) == 2 * g.edge_count() == 2 * ((k * n + 1) // 2)
    return nbrs


def test_every_n_and_k_up_to_40_even_and_odd() -> None:
    for n in range(2, 41):
        for k in range(1, n):
            g = Graph(n, k, _seed(1000 * n + k))
            nbrs = _check_structure(g)
            assert g.is_complete == (k == n - 1)
            if k >= 2:
                assert _connected(nbrs), (n, k)
            if g.is_complete:
                assert all(nbrs[i] == set(range(n)) - {i} for i in range(n))


@pytest.mark.property("P1")
def test_k_connectivity_by_brute_force() -> None:
    # Removing any k - 1 clients leaves H(n, k) connected (Harary's theorem), for every k and small n.
    for n in range(3, 12):
        for k in range(2, n):
            nbrs = Graph(n, k, _seed(n * 31 + k)).all_neighbours()
            for removed in itertools.combinations(range(n), k - 1):
                assert _connected(nbrs, removed), (n, k, removed)


def test_k_minus_one_does_not_give_k_connectivity() -> None:
    # The degree is tight: removing the k neighbours of a client isolates it.
    for n, k in [(10, 4), (11, 3), (12, 5), (9, 2)]:
        nbrs = Graph(n, k, _seed(5)).all_neighbours()
        v = min(range(n), key=lambda i: len(nbrs[i]))
        assert len(nbrs[v]) == k
        assert not _connected(nbrs, nbrs[v])


def test_k_one_is_a_matching_and_not_connected() -> None:
    nbrs = Graph(6, 1, _seed(3)).all_neighbours()
    assert all(len(s) == 1 for s in nbrs)
    assert not _connected(nbrs)


def test_k_at_least_n_minus_one_is_complete() -> None:
    for n in (2, 3, 7, 8):
        for k in (n - 1, n, n + 5, 1000):
            g = Graph(n, k, _seed(9))
            assert g.is_complete and g.k == n - 1
            assert g.all_neighbours() == [frozenset(set(range(n)) - {i}) for i in range(n)]
    assert not Graph(8, 6, _seed(9)).is_complete


def test_unpermuted_layout_is_the_circulant() -> None:
    g = Graph(10, 4, None)
    assert g.ring == tuple(range(10))
    assert g.neighbours(0) == {8, 9, 1, 2}
    assert g.neighbours(5) == {3, 4, 6, 7}
    odd = Graph(10, 5, None)  # even n, odd k: add the diameters
    assert odd.neighbours(0) == {8, 9, 1, 2, 5}
    odd_odd = Graph(9, 3, None)  # odd n, odd k: chords i -- i + 5 for i = 0..4, so client 0 has two
    assert odd_odd.neighbours(0) == {8, 1, 5, 4}
    assert odd_odd.neighbours(4) == {3, 5, 0}
    assert odd_odd.neighbours(6) == {5, 7, 1}


def test_permutation_relabels_the_unpermuted_graph() -> None:
    for n, k in [(13, 4), (13, 5), (14, 5), (20, 7)]:
        base = Graph(n, k, None)
        g = Graph(n, k, _seed(77))
        ring = g.ring
        assert sorted(ring) == list(range(n)) and ring != tuple(range(n))
        for p in range(n):
            expected = frozenset(ring[q] for q in base.neighbours(p))
            assert g.neighbours(ring[p]) == expected


def test_permutation_is_deterministic_and_seed_dependent() -> None:
    a = permutation(50, _seed(1))
    assert a == permutation(50, _seed(1))
    assert sorted(a) == list(range(50))
    others = {permutation(50, _seed(i)) for i in range(2, 12)}
    assert a not in others and len(others) == 10
    assert neighbours(30, 6, _seed(1)) == neighbours(30, 6, _seed(1))
    assert neighbours(30, 6, _seed(1)) != neighbours(30, 6, _seed(2))
    assert harary_graph(30, 6, _seed(1)) == Graph(30, 6, _seed(1))
    assert harary_graph(30, 6, _seed(1)) != Graph(30, 6, _seed(2))


def _reference_permutation(n: int, seed: bytes) -> list[int]:
    """The shuffle exactly as the module docstring specifies it, written independently."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"secagg/v1/graph/permutation").derive(seed)
    stream = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor().update(b"\x00" * (8 * n + 64))
    words = iter(struct.unpack(f">{len(stream) // 4}I", stream))
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        while True:
            x = next(words)
            if x < 2**32 - 2**32 % bound:
                break
        j = x % bound
        perm[i], perm[j] = perm[j], perm[i]
    return perm


@pytest.mark.property("P12")
def test_permutation_matches_the_documented_recipe() -> None:
    assert PERMUTATION_INFO == b"secagg/v1/graph/permutation"
    for n in (2, 3, 17, 1500):
        for i in range(3):
            seed = _seed(i) + b"extra-seed-bytes"
            assert list(permutation(n, seed)) == _reference_permutation(n, seed)


def test_uniform_below_rejects_the_biased_tail() -> None:
    top = 2**32 - 1
    # bound 3: 2^32 mod 3 = 1, so only 2^32 - 1 is rejected.
    assert graph_mod._uniform_below(iter([top, 5]), 3) == 2
    assert graph_mod._uniform_below(iter([top - 1]), 3) == (top - 1) % 3
    # bound 2^31 + 1: more than half of all words are rejected.
    bound = 2**31 + 1
    assert graph_mod._uniform_below(iter([2**31 + 1, top, 7]), bound) == 7
    assert graph_mod._uniform_below(iter([2**31]), bound) == 2**31


@pytest.mark.property("P1")
def test_shuffle_is_roughly_uniform_for_n4() -> None:
    seeds = 2400
    perms = Counter(permutation(4, _seed(i)) for i in range(seeds))
    assert len(perms) == 24
    assert all(60 <= c <= 140 for c in perms.values()), perms  # expected 100 each, sd about 10
    position = Counter((p, v) for perm in perms.elements() for p, v in enumerate(perm))
    assert all(500 <= c <= 700 for c in position.values()), position  # expected 600, sd about 21


def test_invalid_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        Graph(1, 1, None)
    with pytest.raises(ConfigurationError):
        Graph(5, 0, None)
    with pytest.raises(ConfigurationError):
        Graph(5, -2, None)
    with pytest.raises(ConfigurationError):
        Graph(5, True, None)
    with pytest.raises(ConfigurationError):
        Graph(5.0, 2, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Graph(5, 2, b"short seed")
    with pytest.raises(ConfigurationError):
        Graph(5, 2, "a string seed of 16+ chars")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        permutation(2**32, _seed(1))
    g = Graph(5, 2, _seed(1))
    for bad in (-1, 5, True):
        with pytest.raises(ConfigurationError):
            g.neighbours(bad)
    with pytest.raises(ConfigurationError):
        g.are_neighbours(0, 7)


def test_seed_may_be_bytearray_or_memoryview() -> None:
    s = _seed(4)
    assert permutation(9, bytearray(s)) == permutation(9, memoryview(s)) == permutation(9, s)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=160),
    k_frac=st.floats(min_value=0.0, max_value=1.0),
    seed=st.binary(min_size=16, max_size=48),
)
def test_random_graphs_are_well_formed(n: int, k_frac: float, seed: bytes) -> None:
    k = 1 + int(k_frac * (n - 2))
    g = Graph(n, k, seed)
    nbrs = _check_structure(g)
    for i in (0, n // 2, n - 1):
        for j in (0, 1, n - 1):
            assert g.are_neighbours(i, j) == (j in nbrs[i]) == g.are_neighbours(j, i)
    if k >= 2:
        assert _connected(nbrs)


def test_vector_file_is_reproducible() -> None:
    assert (VECTORS / "graph.json").read_text() == regenerate("graph")


@pytest.mark.property("P12")
def test_graph_vectors() -> None:
    v = load_vectors("graph")
    assert bytes.fromhex(v["permutation_info"]) == PERMUTATION_INFO
    ks = v["keystream"]
    seed = bytes.fromhex(ks["seed"])
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PERMUTATION_INFO).derive(seed)
    assert key.hex() == ks["key"]
    assert len(v["graphs"]) >= 9
    for case in v["graphs"]:
        seed_hex = case["seed"]
        g = Graph(case["n"], case["k"], None if seed_hex is None else bytes.fromhex(seed_hex))
        assert list(g.ring) == case["ring"]
        assert [sorted(s) for s in g.all_neighbours()] == case["neighbours"]
