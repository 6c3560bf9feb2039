"""One SecAgg+ round on random inputs, in process, checked against the plaintext sum.

`simulate(...)` builds a round configuration with k and t derived by the SecAgg+ rule, runs N client
sessions and a server session through the in-process network with dropouts injected at a chosen stage,
and checks that the server's ring sum equals the sum of the survivors' quantised inputs exactly.
Randomness is a seeded DeterministicRandom, so a seed gives the same transcript and the same aggregate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from secagg.crypto.keys import IdentityKey
from secagg.crypto.prg import MaskExpander
from secagg.crypto.rng import DeterministicRandom, random_uint32
from secagg.errors import ConfigurationError
from secagg.native.quantise import quantise  # type: ignore[import-not-found, unused-ignore]
from secagg.protocol import params as _params
from secagg.protocol.client import ClientInput, ClientSession
from secagg.protocol.config import ClientPolicy, Mode, RoundConfig, StageTimeouts, propose_round
from secagg.protocol.ledger import MemoryLedger
from secagg.protocol.rules import Stage
from secagg.protocol.server import ServerSession
from secagg.ring import Ring
from secagg.transport.inprocess import InProcessNetwork, RoundRun, ToClientHook, ToServerHook


@dataclass
class SimulationSetup:
    """Everything needed to run (and re-run) one simulated round."""

    config: RoundConfig
    clients: dict[int, ClientSession]
    server: ServerSession
    inputs: dict[int, ClientInput]
    rounding_seeds: dict[int, bytes]
    drop_at: dict[int, Stage] = field(default_factory=dict)


def make_config(
    n: int,
    dim: int,
    *,
    mode: Mode = Mode.SEMI_HONEST,
    seed: int = 0,
    corrupt_fraction: float = 0.1,
    dropout_fraction: float = 0.1,
    k: int | None = None,
    t: int | None = None,
    modulus: int = 1 << 32,
    bits: int = 16,
    clip: float = 1.0,
    max_weight: int = 4,
    min_aggregate: int = 2,
    complete_below: int = _params.COMPLETE_BELOW,
    run_id: str = "simulation",
    round_: int = 0,
) -> RoundConfig:
    """A round configuration for clients 1..n, with k and t from the SecAgg+ rule unless given."""
    graph_seed = hashlib.sha256(b"secagg/v1/simulation/graph-seed" + seed.to_bytes(8, "big")).digest()
    return propose_round(
        run_id=run_id,
        round_=round_,
        participants=range(1, n + 1),
        mode=mode,
        graph_seed=graph_seed,
        dim=dim,
        corrupt_fraction=corrupt_fraction,
        dropout_fraction=dropout_fraction,
        k=k,
        t=t,
        complete_below=complete_below,
        modulus=modulus,
        clip=clip,
        bits=bits,
        max_weight=max_weight,
        min_aggregate=min_aggregate,
    )


def random_input(rng: DeterministicRandom, dim: int, clip: float, max_weight: int) -> ClientInput:
    """A float32 update uniform in [-1.2 clip, 1.2 clip] (so some coordinates get clipped), and a weight."""
    words = random_uint32(rng, dim).astype(np.float64)
    vec = ((words / 2.0**32) * 2.4 - 1.2) * clip
    weight = 1 + int.from_bytes(rng.random_bytes(4), "big") % max_weight
    return ClientInput(vec.astype(np.float32), weight)


def build(
    config: RoundConfig,
    *,
    seed: int = 0,
    dropout: float = 0.0,
    stage: Stage | None = None,
    drop_at: dict[int, Stage] | None = None,
    chunk_elems: int | None = None,
    policy: ClientPolicy | None = None,
    timeouts: StageTimeouts | None = None,
) -> SimulationSetup:
    """Clients with random inputs (and identities in hardened mode), a server, and a dropout plan."""
    root = DeterministicRandom(seed, label=b"secagg/v1/simulation")
    ids = config.participants
    identities = {c: IdentityKey.generate(root.fork(b"identity-%d" % c)) for c in ids}
    roster = {c: key.public_bytes for c, key in identities.items()}
    hardened = config.mode is Mode.HARDENED
    base = policy or ClientPolicy(
        corrupt_fraction=0.0, dropout_fraction=0.0, require_derived_degree=False, min_aggregate=2
    )
    pol = dataclasses.replace(base, roster=roster if hardened else base.roster)
    expander = MaskExpander(Ring(config.modulus))
    inputs: dict[int, ClientInput] = {}
    rounding: dict[int, bytes] = {}
    clients: dict[int, ClientSession] = {}
    for c in ids:
        inputs[c] = random_input(root.fork(b"input-%d" % c), config.dim, config.clip, config.max_weight)
        rounding[c] = root.random_bytes(32)
        clients[c] = ClientSession(
            c,
            rng=root.fork(b"client-%d" % c),
            policy=pol,
            identity=identities[c] if hardened else None,
            ledger=MemoryLedger(),
            input=inputs[c],
            chunk_elems=chunk_elems,
            expander=expander,
            rounding_rng=DeterministicRandom(rounding[c], label=b"secagg/v1/simulation/rounding"),
        )
    plan = dict(drop_at or {})
    if dropout and stage is not None:
        count = round(dropout * len(ids))
        order = sorted(ids, key=lambda c: root.fork(b"dropout-order-%d" % c).random_bytes(8))
        for c in order[:count]:
            plan.setdefault(c, stage)
    server = ServerSession(config, roster=roster if hardened else None, timeouts=timeouts, expander=expander)
    return SimulationSetup(config, clients, server, inputs, rounding, plan)


def expected_sum(setup: SimulationSetup, survivors: tuple[int, ...]) -> tuple[NDArray[Any], int]:
    """The plaintext ring sum of the survivors' quantised, weighted inputs (recomputed independently)."""
    cfg = setup.config
    ring = Ring(cfg.modulus)
    acc = ring.zeros(cfg.dim)
    total = 0
    for c in survivors:
        inp = setup.inputs[c]
        rr = DeterministicRandom(setup.rounding_seeds[c], label=b"secagg/v1/simulation/rounding")
        q = quantise(inp.vector, cfg.clip, cfg.bits, inp.weight, random_uint32(rr, cfg.dim), cfg.modulus)
        ring.add_into(acc, q)
        total += inp.weight
    return acc, total


def run(
    setup: SimulationSetup,
    *,
    to_client: ToClientHook | None = None,
    to_server: ToServerHook | None = None,
    record_transcript: bool = False,
) -> RoundRun:
    """Drive the round through the in-process network."""
    net = InProcessNetwork(
        setup.server,
        setup.clients,
        drop_at=setup.drop_at,
        to_client=to_client,
        to_server=to_server,
        record_transcript=record_transcript,
    )
    return net.run()


def simulate(
    n: int,
    dim: int,
    *,
    dropout: float = 0.0,
    stage: Stage | None = Stage.MASKED_INPUT,
    mode: Mode = Mode.SEMI_HONEST,
    seed: int = 0,
    k: int | None = None,
    t: int | None = None,
    chunk_elems: int | None = None,
    **config_kwargs: Any,
) -> dict[str, Any]:
    """Run one round and return a JSON-able report; `exact` says whether the sum matched the plaintext."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigurationError("dropout must be in [0, 1)")
    t_build = time.perf_counter()
    cfg = make_config(n, dim, mode=mode, seed=seed, k=k, t=t, **config_kwargs)
    setup = build(cfg, seed=seed, dropout=dropout, stage=stage, chunk_elems=chunk_elems)
    build_s = time.perf_counter() - t_build
    t0 = time.perf_counter()
    result = run(setup)
    wall = time.perf_counter() - t0
    server = setup.server
    report: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "mode": mode.value,
        "k": cfg.k,
        "t": cfg.t,
        "complete_graph": cfg.is_complete_graph,
        "dropout": dropout,
        "dropout_stage": stage.value if stage else None,
        "dropped_clients": sorted(setup.drop_at),
        "seed": seed,
        "ok": result.ok,
        "messages": result.messages,
        "setup_seconds": round(build_s, 6),
        "round_seconds": round(wall, 6),
        "client_seconds": {k_: round(v, 6) for k_, v in result.client_seconds.items()},
        "server_seconds": {k_: round(v, 6) for k_, v in result.server_seconds.items()},
    }
    if server.result is None:
        err = server.error
        report.update(exact=False, error=str(err) if err else "no result", error_code=getattr(err, "code", None))
        return report
    res = server.result
    want, total = expected_sum(setup, res.survivors)
    exact = bool(np.array_equal(want, res.sum)) and total == res.total_weight
    true_mean = np.zeros(cfg.dim)
    for c in res.survivors:
        inp = setup.inputs[c]
        true_mean += inp.weight * np.clip(inp.vector.astype(np.float64), -cfg.clip, cfg.clip)
    true_mean /= res.total_weight
    report.update(
        exact=exact,
        survivors=len(res.survivors),
        total_weight=res.total_weight,
        max_abs_error=float(np.max(np.abs(res.mean - true_mean))) if res.mean is not None else None,
        quantisation_step=2 * cfg.clip / ((1 << cfg.bits) - 1),
    )
    return report
