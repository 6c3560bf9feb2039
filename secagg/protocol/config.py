"""Round configuration (public, hashed into the session id) and a silo's own policy.

`RoundConfig` is what the server proposes for one round; every field is covered by `config_hash`, and the
client re-derives the session id from it, so a server that shows different configurations or models to
different clients splits them into sessions that cannot complete (scenario A9). `ClientPolicy` is the silo's
own floor for those parameters: a proposal below it is refused at setup (scenario A7).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from secagg.encoding import Reader, Writer, digest, domain
from secagg.errors import ConfigurationError, EncodingError
from secagg.protocol import params

ENCODINGS = ("quantised", "integers")
MAX_CLIENT_ID = (1 << 31) - 2  # Shamir x-coordinates are client ids in GF(2^31 - 1), x != 0


class Mode(StrEnum):
    """Threat model of a round: honest-but-curious server, or a server that may lie (hardened)."""

    SEMI_HONEST = "semi-honest"
    HARDENED = "hardened"


@dataclass(frozen=True)
class RoundConfig:
    """Everything about a round that both sides must agree on. Immutable; hashed into the session id."""

    run_id: str
    round: int
    participants: tuple[int, ...]
    mode: Mode
    k: int
    t: int
    graph_seed: bytes
    dim: int
    modulus: int = 1 << 32
    clip: float = 1.0
    bits: int = 16
    max_weight: int = 1
    min_aggregate: int = 2
    model_hash: bytes = bytes(32)
    dp_noise_multiplier: float = 0.0
    encoding: str = "quantised"
    """How clients turn their input into ring elements: "quantised" (clip, stochastic rounding to `bits`, weight
    folded in; the server decodes the weighted mean) or "integers" (the client hands over ring elements it
    encoded itself, e.g. with distributed discrete noise; the server returns the ring sum undecoded)."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n(self) -> int:
        """Number of clients invited to the round."""
        return len(self.participants)

    @property
    def vector_length(self) -> int:
        """Ring elements each client sends: the dim model coordinates plus one for its weight."""
        return self.dim + 1

    @property
    def is_complete_graph(self) -> bool:
        """True when every client neighbours every other (k = n - 1)."""
        return self.k >= self.n - 1

    def validate(self) -> None:
        """Refuse inconsistent or unsafe parameters with a ConfigurationError naming the field."""
        if not self.run_id or len(self.run_id) > 128:
            raise ConfigurationError("run_id must be 1..128 characters")
        if not 0 <= self.round < 2**32:
            raise ConfigurationError("round must be a u32")
        parts = self.participants
        if len(parts) < 2:
            raise ConfigurationError("a round needs at least two participants")
        if any(a >= b for a, b in itertools.pairwise(parts)):  # no set or sorted copy: one pass
            raise ConfigurationError("participants must be sorted and distinct")
        if parts[0] < 1 or parts[-1] > MAX_CLIENT_ID:
            raise ConfigurationError(f"client ids must be in 1..{MAX_CLIENT_ID}")
        if not isinstance(self.mode, Mode):
            raise ConfigurationError("mode must be a Mode")
        n = len(parts)
        if not 1 <= self.k <= n - 1:
            raise ConfigurationError(f"k (neighbours) must be in 1..{n - 1}")
        hood = self.k + 1  # a neighbourhood counts the client itself: it keeps a share of its own seed
        if not 2 <= self.t <= hood:
            raise ConfigurationError(f"t must be in 2..{hood} (neighbourhood size k + 1)")
        if self.mode is Mode.HARDENED and 2 * self.t <= hood:
            raise ConfigurationError("hardened mode needs 2t > k + 1 so two disjoint survivor sets cannot both pass")
        if len(self.graph_seed) != 32:
            raise ConfigurationError("graph_seed must be 32 bytes")
        if len(self.model_hash) != 32:
            raise ConfigurationError("model_hash must be 32 bytes")
        if not 1 <= self.dim <= 2**40:
            raise ConfigurationError("dim must be positive")
        if not 2 <= self.modulus <= 2**64:
            raise ConfigurationError("modulus must be in 2..2^64")
        if self.modulus & (self.modulus - 1) and self.modulus >= 2**63:
            raise ConfigurationError("a modulus that is not a power of two must be below 2^63")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError("clip must be a positive finite number")
        if not 1 <= self.bits <= 62:
            raise ConfigurationError("bits must be in 1..62")
        if self.max_weight < 1:
            raise ConfigurationError("max_weight must be >= 1")
        if not 2 <= self.min_aggregate <= n:
            raise ConfigurationError("min_aggregate must be in 2..n")
        if not (math.isfinite(self.dp_noise_multiplier) and self.dp_noise_multiplier >= 0):
            raise ConfigurationError("dp_noise_multiplier must be >= 0")
        if self.encoding not in ENCODINGS:
            raise ConfigurationError(f"encoding must be one of {ENCODINGS}")
        if self.encoding == "integers":
            if n * self.max_weight >= self.modulus:  # only the weight coordinate must not wrap
                raise ConfigurationError("ring capacity exceeded: n * max_weight >= modulus")
            return
        # Ring capacity (scenario B9): the sum of n quantised, weighted inputs, and the sum of the weights,
        # must never wrap the ring.
        if n * self.max_weight * (1 << self.bits) >= self.modulus:
            raise ConfigurationError(
                f"ring capacity exceeded: n * max_weight * 2^bits = {n}*{self.max_weight}*2^{self.bits} "
                f">= modulus {self.modulus}; use fewer bits, a smaller max_weight or modulus 2^64"
            )

    def encode(self) -> bytes:
        """Canonical encoding (SPEC.md, 'RoundConfig')."""
        # Version 1 is the quantised encoding; version 2 adds the encoding field for any other one, so every
        # configuration still has exactly one encoding.
        version = 1 if self.encoding == "quantised" else 2
        w = Writer().u16(version).text(self.run_id).u32(self.round).u32_list(self.participants)
        w.text(self.mode.value).u32(self.k).u32(self.t).raw(self.graph_seed).u64(self.dim)
        w.bytes_(self.modulus.to_bytes(9, "big")).text(repr(float(self.clip))).u8(self.bits)
        w.u64(self.max_weight).u32(self.min_aggregate).raw(self.model_hash)
        w.text(repr(float(self.dp_noise_multiplier)))
        if version == 2:
            w.text(self.encoding)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> RoundConfig:
        """Inverse of encode; EncodingError or ConfigurationError on bad input."""
        r = Reader(data)
        version = r.u16()
        if version not in (1, 2):
            raise ConfigurationError("unknown RoundConfig version")
        run_id, rnd, parts = r.text(), r.u32(), tuple(r.u32_list(max_items=1 << 20))
        mode_s, k, t, seed, dim = r.text(), r.u32(), r.u32(), r.raw(32), r.u64()
        modulus_bytes = r.bytes_(max_len=9)
        if len(modulus_bytes) != 9:  # one config, one encoding: encode() always writes 9 bytes
            raise EncodingError("modulus field must be 9 bytes")
        modulus = int.from_bytes(modulus_bytes, "big")
        clip, bits, max_w, min_agg, mh = _float(r.text()), r.u8(), r.u64(), r.u32(), r.raw(32)
        dp = _float(r.text())
        encoding = "quantised"
        if version == 2:
            encoding = r.text(32)
            if encoding == "quantised":
                raise EncodingError("a quantised configuration is encoded as version 1")
        r.finish()
        try:
            mode = Mode(mode_s)
        except ValueError:
            raise ConfigurationError("unknown mode") from None
        return cls(run_id, rnd, parts, mode, k, t, seed, dim, modulus, clip, bits, max_w, min_agg, mh, dp, encoding)

    def config_hash(self) -> bytes:
        """SHA-256 of the canonical encoding, domain separated."""
        return self._hashes[0]

    def round_tag(self) -> bytes:
        """Identifies (run, round, config) before any key exists; carried by the first two messages."""
        return self._hashes[1]

    @functools.cached_property
    def _hashes(self) -> tuple[bytes, bytes]:
        config_hash = digest(domain("config"), self.encode())
        return config_hash, digest(domain("round-tag"), config_hash)


def propose_round(
    *,
    run_id: str,
    round_: int,
    participants: Iterable[int],
    mode: Mode,
    graph_seed: bytes,
    dim: int,
    corrupt_fraction: float = 0.1,
    dropout_fraction: float = 0.1,
    k: int | None = None,
    t: int | None = None,
    complete_below: int | None = None,
    **fields: Any,
) -> RoundConfig:
    """The configuration a server proposes: k and t by the SecAgg+ rule for the participants (unless given),
    min_aggregate raised to at least C + 2 for the corrupt fraction (so an aggregate always holds two honest
    inputs, `params.min_aggregate_floor`), every other field as passed (modulus, clip, bits, max_weight,
    model_hash, ...)."""
    parts = tuple(sorted(participants))
    extra = {} if complete_below is None else {"complete_below": complete_below}
    p = params.derive_params(len(parts), corrupt_fraction, dropout_fraction, mode.value, k=k, t=t, **extra)
    # derive_params guarantees that C + 2 clients are left after D dropouts (tests/test_malicious_clients.py)
    floor = params.min_aggregate_floor(len(parts), corrupt_fraction)
    fields["min_aggregate"] = max(int(fields.get("min_aggregate", 2)), floor)
    return RoundConfig(
        run_id=run_id,
        round=round_,
        participants=parts,
        mode=mode,
        k=p.k,
        t=p.t,
        graph_seed=graph_seed,
        dim=dim,
        **fields,
    )


def _float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise ConfigurationError("bad float field") from None
    if repr(v) != s:
        raise ConfigurationError("non-canonical float field")
    return v


@dataclass(frozen=True)
class ClientPolicy:
    """A silo's own floor for what it will take part in; proposals below it are refused (scenario A7)."""

    modes: frozenset[Mode] = frozenset({Mode.SEMI_HONEST, Mode.HARDENED})
    min_clients: int = 2
    min_threshold: int = 2
    min_aggregate: int = 2
    """A floor on the round's min_aggregate; the silo also requires C + 2 for the corrupt fraction it assumes
    (`min_aggregate_for`), so that every aggregate holding its input holds another honest one."""
    min_modulus_bits: int = 32
    max_clip: float = math.inf
    min_dp_noise_multiplier: float = 0.0
    corrupt_fraction: float = 0.1
    dropout_fraction: float = 0.1
    require_derived_degree: bool = True
    expected_dim: int | None = None
    min_ddp_local_noise_multiplier: float = 0.0
    """Distributed DP: the least noise this silo adds itself, as its noise's standard deviation over the L2
    bound of its scaled, rounded update (`DDPParams.local_noise_multiplier`). It holds whatever the server says
    about the other silos."""
    roster: dict[int, bytes] | None = field(default=None, compare=False)
    """Pinned Ed25519 identity keys by client id (required in hardened mode)."""

    def min_aggregate_for(self, n: int) -> int:
        """The smallest aggregate this silo joins in a round of n clients: its own floor, and at least C + 2
        with C = floor(corrupt_fraction n) (threat_model.md P10, R2)."""
        return max(self.min_aggregate, params.min_aggregate_floor(n, self.corrupt_fraction))


@dataclass(frozen=True)
class StageTimeouts:
    """Server-side deadline of each stage, in seconds of the injected clock."""

    advertise_keys: float = 30.0
    share_keys: float = 30.0
    masked_input: float = 120.0
    consistency_check: float = 30.0
    unmask: float = 30.0
