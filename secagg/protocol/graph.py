"""SecAgg+ neighbourhood graphs: the Harary graph H(n, k) with node labels permuted by a public seed.

In SecAgg+ (Bell et al., CCS 2020) each client shares keys and masks only with its neighbours in a sparse
graph instead of with all n - 1 other clients. The graph is the Harary graph H(n, k) (Harary 1962): the
k-connected graph on n nodes with the fewest edges, ceil(k * n / 2). Clients are placed on a ring in an
order given by a public, per-round uniform permutation, so that which clients end up next to each other is
independent of who is corrupt or drops out.

Construction, on ring positions 0..n-1 (`r = k // 2`):

* every position p is joined to p +- 1, ..., p +- r (mod n): for even k this is the whole graph;
* odd k, even n: p is also joined to the opposite position p + n/2 (mod n);
* odd k, odd n: position i is also joined to i + (n + 1)/2 (mod n) for i = 0..(n - 1)/2. Position 0 gets
  two such chords, so it has degree k + 1 and every other position degree k (no k-regular graph exists
  when k and n are both odd, because k * n would be odd).

So the graph is k-regular except in that last case, and k-connected for every 2 <= k <= n - 1; k = 1 is
accepted too but gives a (near-)matching, which is not connected for n > 3. `k >= n - 1` gives the
complete graph. A client is never
its own neighbour here: whether the protocol also keeps a share for itself is the protocol's business.

The permutation is a Fisher-Yates (Durstenfeld) shuffle of [0, 1, ..., n-1]: for i = n-1 down to 1, draw j
uniformly in [0, i] and swap entries i and j. The draws read a keystream of AES-256-CTR (all-zero initial
counter block) keyed with HKDF-SHA256(ikm = seed, salt = none, info = b"secagg/v1/graph/permutation",
length 32): each draw takes the next 4 bytes as a big-endian integer x, rejects it when
x >= 2**32 - (2**32 mod (i + 1)) and otherwise returns x mod (i + 1), so every j is exactly uniform.
Entry p of the result is the client sitting at ring position p. No global RNG is involved: a seed always
gives the same graph (see protocols/vectors/graph.json).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.encoding import domain
from secagg.errors import ConfigurationError

__all__ = [
    "MAX_NODES",
    "PERMUTATION_INFO",
    "SEED_MIN_BYTES",
    "Graph",
    "harary_graph",
    "neighbours",
    "permutation",
]

PERMUTATION_INFO = domain("graph", "permutation")
"""HKDF info string that separates the permutation key from every other use of a seed."""

SEED_MIN_BYTES = 16
"""Shortest permutation seed accepted: a shorter one is almost certainly a bug, not a design."""

MAX_NODES = (1 << 32) - 1
"""Client indices travel as u32 and the shuffle draws 32-bit words."""

_WORD = 4
_RANGE = 1 << 32


class _KeyStream:
    """AES-256-CTR keystream read as big-endian u32 words, fetched in blocks."""

    __slots__ = ("_buf", "_enc", "_pos")

    def __init__(self, seed: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PERMUTATION_INFO).derive(seed)
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._buf = b""
        self._pos = 0

    def word(self) -> int:
        """The next 32-bit word of the stream."""
        if self._pos + _WORD > len(self._buf):
            self._buf = self._enc.update(bytes(4096))
            self._pos = 0
        (x,) = struct.unpack_from(">I", self._buf, self._pos)
        self._pos += _WORD
        return int(x)


def _uniform_below(word: Iterator[int], bound: int) -> int:
    """A uniform integer in [0, bound) from 32-bit words, by rejection (no modulo bias)."""
    limit = _RANGE - (_RANGE % bound)
    for x in word:
        if x < limit:
            return x % bound
    raise AssertionError("keystream ended")  # pragma: no cover - the keystream is endless


def _words(stream: _KeyStream) -> Iterator[int]:
    while True:
        yield stream.word()


def _check_seed(seed: bytes) -> bytes:
    if not isinstance(seed, (bytes, bytearray, memoryview)):
        raise ConfigurationError("the permutation seed must be bytes")
    seed = bytes(seed)
    if len(seed) < SEED_MIN_BYTES:
        raise ConfigurationError(f"the permutation seed must be at least {SEED_MIN_BYTES} bytes")
    return seed


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise ConfigurationError("the number of clients must be an int")
    if n < 2 or n > MAX_NODES:
        raise ConfigurationError(f"the number of clients must be in 2..{MAX_NODES}, got {n}")
    return n


def permutation(n: int, seed: bytes) -> tuple[int, ...]:
    """The uniform permutation of range(n) that seed selects (entry p: the client at ring position p)."""
    _check_n(n)
    words = _words(_KeyStream(_check_seed(seed)))
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = _uniform_below(words, i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return tuple(perm)


class Graph:
    """A Harary graph H(n, k) on clients 0..n-1, laid on a ring in a (possibly permuted) order."""

    __slots__ = ("_k", "_n", "_perm", "_pos")

    def __init__(self, n: int, k: int, permutation_seed: bytes | None = None) -> None:
        _check_n(n)
        if isinstance(k, bool) or not isinstance(k, int):
            raise ConfigurationError("the neighbour count k must be an int")
        if k < 1:
            raise ConfigurationError(f"the neighbour count k must be at least 1, got {k}")
        self._n = n
        self._k = min(k, n - 1)
        self._perm = tuple(range(n)) if permutation_seed is None else permutation(n, permutation_seed)
        pos = [0] * n
        for p, client in enumerate(self._perm):
            pos[client] = p
        self._pos = tuple(pos)

    @property
    def n(self) -> int:
        """Number of clients."""
        return self._n

    @property
    def k(self) -> int:
        """Nominal degree (neighbours per client), capped at n - 1."""
        return self._k

    @property
    def is_complete(self) -> bool:
        """True when every client neighbours every other client (k = n - 1)."""
        return self._k == self._n - 1

    @property
    def ring(self) -> tuple[int, ...]:
        """The client at each ring position (the permutation; the identity when there was no seed)."""
        return self._perm

    def _check_client(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self._n:
            raise ConfigurationError(f"client index must be in 0..{self._n - 1}")
        return i

    def _positions_near(self, p: int) -> set[int]:
        """Ring positions adjacent to position p (never p itself)."""
        n, k = self._n, self._k
        if k == n - 1:
            return {q for q in range(n) if q != p}
        r = k // 2
        out = {(p + d) % n for d in range(1, r + 1)} | {(p - d) % n for d in range(1, r + 1)}
        if k % 2 == 1:
            if n % 2 == 0:
                out.add((p + n // 2) % n)
            else:
                h = (n + 1) // 2
                if p <= (n - 1) // 2:  # p is the first end of its own chord
                    out.add((p + h) % n)
                if (p - h) % n <= (n - 1) // 2:  # p is the second end of the chord from p - h
                    out.add((p - h) % n)
        return out

    def neighbours(self, i: int) -> frozenset[int]:
        """The clients adjacent to client i (i itself excluded)."""
        p = self._pos[self._check_client(i)]
        return frozenset(self._perm[q] for q in self._positions_near(p))

    def degree(self, i: int) -> int:
        """Number of neighbours of client i: k, or k + 1 for one client when k and n are both odd."""
        return len(self.neighbours(i))

    def are_neighbours(self, i: int, j: int) -> bool:
        """Whether clients i and j are adjacent (symmetric; False for i == j)."""
        p = self._pos[self._check_client(i)]
        q = self._pos[self._check_client(j)]
        return q in self._positions_near(p)

    def all_neighbours(self) -> list[frozenset[int]]:
        """Neighbour sets of clients 0..n-1, in client order."""
        return [self.neighbours(i) for i in range(self._n)]

    def edge_count(self) -> int:
        """Number of edges: ceil(k * n / 2)."""
        return (self._k * self._n + 1) // 2

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self._n, self._k, self._perm) == (other._n, other._k, other._perm)

    def __hash__(self) -> int:
        return hash((self._n, self._k, self._perm))

    def __repr__(self) -> str:
        return f"Graph(n={self._n}, k={self._k}, complete={self.is_complete})"


def harary_graph(n: int, k: int, permutation_seed: bytes | None = None) -> Graph:
    """H(n, k) with labels permuted by permutation_seed (identity order when None, for tests only)."""
    return Graph(n, k, permutation_seed)


def neighbours(n: int, k: int, permutation_seed: bytes | None) -> list[frozenset[int]]:
    """Neighbour set of every client 0..n-1 in H(n, k) permuted by permutation_seed."""
    return Graph(n, k, permutation_seed).all_neighbours()
