"""Property tests (scenario E3) and a stateful test of the two state machines under arbitrary schedules.

E3: for random n, k, t, mode, dimension, modulus, chunking and dropout pattern, a round either yields the
exact ring sum over exactly the survivors, or aborts with a typed error, and it aborts exactly when a
threshold or the minimum aggregate size cannot be met. The expected outcome comes from `predict`, an
independent reading of the protocol's survivor rules (which client drops out or refuses at which stage,
and whether every needed secret still has t shares), not from the engine's own bookkeeping.

The stateful test feeds a server and its clients messages in an order hypothesis chooses: out of order,
lost, replayed (to the wrong client too), from the wrong stage, and forged unmask requests with arbitrary
partitions. Invariants: nothing but the typed errors, no client ever reveals both shares of one peer,
a terminal client holds no secrets, and a result, if any, is exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from secagg.errors import PolicyRefusal, RoundAborted
from secagg.protocol import recipes
from secagg.protocol.config import ClientPolicy, Mode, RoundConfig, StageTimeouts
from secagg.protocol.messages import (
    ClientMessage,
    ServerMessage,
    UnmaskRequest,
    decode_message,
    encode_message,
)
from secagg.protocol.rules import TERMINAL_CLIENT, TERMINAL_SERVER, ClientState, Stage
from secagg.protocol.server import Audit, Send, ServerSession
from secagg.simulation import SimulationSetup, build, expected_sum, run

POLICY = ClientPolicy(corrupt_fraction=0.0, dropout_fraction=0.0, require_derived_degree=False, min_modulus_bits=16)
STAGES = {
    Mode.SEMI_HONEST: (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK),
    Mode.HARDENED: (
        Stage.ADVERTISE_KEYS,
        Stage.SHARE_KEYS,
        Stage.MASKED_INPUT,
        Stage.CONSISTENCY_CHECK,
        Stage.UNMASK,
    ),
}
MODULI = (1 << 32, 1 << 64, 1 << 24, 1_000_003)


def make(
    n: int,
    *,
    mode: Mode,
    k: int,
    t: int,
    dim: int,
    modulus: int = 1 << 32,
    min_aggregate: int = 2,
    graph_seed: int = 0,
) -> RoundConfig:
    return RoundConfig(
        run_id="properties",
        round=graph_seed,
        participants=tuple(range(1, n + 1)),
        mode=mode,
        k=k,
        t=t,
        graph_seed=hashlib.sha256(b"graph-%d" % graph_seed).digest(),
        dim=dim,
        modulus=modulus,
        bits=8,
        max_weight=4,
        min_aggregate=min_aggregate,
    )


# ---------------------------------------------------------------- the oracle


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the protocol rules say must happen: survivors and dropped, or an abort code."""

    survivors: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    abort: str | None = None
    revealing_stage_reached: bool = False


def predict(cfg: RoundConfig, drop_at: dict[int, Stage], policy_min_aggregate: int = 2) -> Outcome:
    """The outcome of a round with honest clients and these dropouts, from the protocol's rules alone."""
    hood = recipes.neighbourhoods(cfg.participants, cfg.k, cfg.graph_seed).of
    t = cfg.t
    floor = max(t, cfg.min_aggregate)

    def gone(stage: Stage) -> set[int]:
        return {c for c, s in drop_at.items() if s is stage}

    u1 = set(cfg.participants) - gone(Stage.ADVERTISE_KEYS)
    if len(u1) < floor:
        return Outcome(abort="TOO_FEW_CLIENTS")
    # a client that sees fewer than t - 1 neighbours with keys refuses to share
    u2 = {c for c in u1 - gone(Stage.SHARE_KEYS) if len(hood(c) & u1) + 1 >= t}
    if len(u2) < floor:
        return Outcome(abort="TOO_FEW_CLIENTS")
    # a client that receives shares from fewer than t - 1 neighbours refuses to mask
    u3 = {c for c in u2 - gone(Stage.MASKED_INPUT) if len(hood(c) & u2) + 1 >= t}
    if len(u3) < floor:
        return Outcome(abort="TOO_FEW_CLIENTS")
    asked = u3
    if cfg.mode is Mode.HARDENED:
        # one survivor set per session: members sign it only if it can reach the quorum over U1 (POLICY assumes
        # no corrupt client), and the server forwards the signatures only if they reach it
        quorum = len(u1) // 2 + 1
        asked = u3 - gone(Stage.CONSISTENCY_CHECK) if len(u3) >= max(t, quorum) else set()
        if len(asked) < max(floor, quorum):
            return Outcome(abort="TOO_FEW_CLIENTS")
    min_agg = max(cfg.min_aggregate, policy_min_aggregate)

    def answers(c: int) -> bool:
        alive = hood(c) & u2 & u3
        if len(alive) + 1 < t:
            return False
        return not (cfg.is_complete_graph and len(alive) + 1 < min_agg)

    responders = {c for c in asked - gone(Stage.UNMASK) if answers(c)}
    for owner in u3:  # self-mask seeds: from the owner itself and its neighbours
        if len({r for r in responders if r == owner or owner in hood(r)}) < t:
            return Outcome(abort="TOO_FEW_SHARES", revealing_stage_reached=True)
    for owner in u2 - u3:  # mask keys of those who dropped after sharing: from their neighbours
        if len({r for r in responders if owner in hood(r)}) < t:
            return Outcome(abort="TOO_FEW_SHARES", revealing_stage_reached=True)
    return Outcome(tuple(sorted(u3)), tuple(sorted(u2 - u3)), None, True)


def check_exact(setup: SimulationSetup, survivors: Iterable[int]) -> None:
    res = setup.server.result
    assert res is not None
    want, total = expected_sum(setup, tuple(survivors))
    assert np.array_equal(res.sum, want), "wrong sum"
    assert res.total_weight == total


# ---------------------------------------------------------------- E3


def through_codec(_: int, msg: Any) -> Any:
    """Every message crosses the wire as canonical bytes, as over a real transport."""
    return decode_message(encode_message(msg))


def with_budget(setup: SimulationSetup, budget: int | None) -> SimulationSetup:
    """The same round with a server of the given staging budget (0: every chunk straight into the sum)."""
    old = setup.server
    setup.server = ServerSession(setup.config, roster=old.roster, timeouts=old.timeouts, staging_budget_bytes=budget)
    return setup


@st.composite
def rounds(draw: st.DrawFn) -> tuple[RoundConfig, dict[int, Stage], int | None]:
    mode = draw(st.sampled_from(Mode))
    n = draw(st.integers(min_value=2, max_value=12))
    k = draw(st.one_of(st.just(n - 1), st.integers(min_value=1, max_value=n - 1)))
    hood = k + 1
    t_min = hood // 2 + 1 if mode is Mode.HARDENED else 2
    t = draw(st.integers(min_value=max(2, t_min), max_value=hood))
    cfg = make(
        n,
        mode=mode,
        k=k,
        t=t,
        dim=draw(st.integers(min_value=1, max_value=6)),
        modulus=draw(st.sampled_from(MODULI)),
        min_aggregate=draw(st.one_of(st.just(2), st.integers(min_value=2, max_value=n))),
        graph_seed=draw(st.integers(min_value=0, max_value=2**16)),
    )
    rate = draw(st.sampled_from((0, 1, 2, 4)))  # out of 10: how likely each client is to drop out
    choice = st.one_of(st.sampled_from(STAGES[mode]), *([st.none()] * (10 - rate)))
    drops = draw(st.lists(choice if rate else st.none(), min_size=n, max_size=n))
    drop_at = {c: s for c, s in zip(cfg.participants, drops, strict=True) if s is not None}
    chunk = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=4)))
    return cfg, drop_at, chunk


@pytest.mark.property("P1", "P6", "P12")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rounds(),
    st.integers(min_value=0, max_value=2**16),
    st.booleans(),
    st.sampled_from([None, 0, 64]),
)
def test_E3_sum_is_exact_or_the_round_aborts_only_below_threshold(
    case: tuple[RoundConfig, dict[int, Stage], int | None], seed: int, codec: bool, budget: int | None
) -> None:
    cfg, drop_at, chunk = case
    setup = with_budget(build(cfg, seed=seed, drop_at=drop_at, chunk_elems=chunk, policy=POLICY), budget)
    if codec:
        run(setup, to_client=through_codec, to_server=through_codec)
    else:
        run(setup)
    want = predict(cfg, drop_at)
    srv = setup.server
    event(f"outcome: {want.abort or 'aggregate'}")
    event(f"graph: {'complete' if cfg.is_complete_graph else 'sparse'}")
    for client in setup.clients.values():
        assert not client.revealed_seed_owners & client.revealed_key_owners
    if want.abort is None:
        res = srv.result
        assert res is not None, f"unexpected abort {srv.error} (predicted survivors {want.survivors})"
        assert res.survivors == want.survivors and res.dropped == want.dropped
        check_exact(setup, res.survivors)
    else:
        assert srv.result is None, "aggregate produced where the rules require an abort"
        assert isinstance(srv.error, RoundAborted) and srv.error.code == want.abort, srv.error
        if not want.revealing_stage_reached:
            for client in setup.clients.values():
                assert not client.revealed_seed_owners and not client.revealed_key_owners


@pytest.mark.property("P6", "P12")
def test_E3_predict_agrees_with_hand_worked_cases() -> None:
    """The oracle itself, on cases worked out by hand (complete graph, n = 5, t = 3)."""
    cfg = make(5, mode=Mode.SEMI_HONEST, k=4, t=3, dim=2)
    assert predict(cfg, {}) == Outcome((1, 2, 3, 4, 5), (), None, True)
    assert predict(cfg, {1: Stage.ADVERTISE_KEYS, 2: Stage.MASKED_INPUT}) == Outcome((3, 4, 5), (2,), None, True)
    assert predict(cfg, {1: Stage.SHARE_KEYS, 2: Stage.SHARE_KEYS, 3: Stage.MASKED_INPUT}).abort == ("TOO_FEW_CLIENTS")
    assert predict(cfg, {4: Stage.UNMASK, 5: Stage.UNMASK}) == Outcome((1, 2, 3, 4, 5), (), None, True)
    unmask3 = predict(cfg, {3: Stage.UNMASK, 4: Stage.UNMASK, 5: Stage.UNMASK})
    assert unmask3.abort == "TOO_FEW_SHARES" and unmask3.revealing_stage_reached
    hardened = make(5, mode=Mode.HARDENED, k=4, t=3, dim=2)
    assert predict(hardened, dict.fromkeys((1, 2, 3), Stage.CONSISTENCY_CHECK)).abort == "TOO_FEW_CLIENTS"
    assert predict(hardened, dict.fromkeys((1, 2), Stage.CONSISTENCY_CHECK)).survivors == (1, 2, 3, 4, 5)


@pytest.mark.property("P6", "P12")
def test_E3_sparse_graph_neighbourhood_threshold_matters() -> None:
    """On a Harary graph, enough clients overall is not enough. n = 8, k = 2 (a ring), t = 3: one client
    dropping after sharing leaves each of its two ring neighbours with a single live neighbour, so they
    refuse to unmask, and their seeds lack shares: abort, although 7 >= t clients sent masked inputs.
    The same dropout on the complete graph is harmless."""
    ring = make(8, mode=Mode.SEMI_HONEST, k=2, t=3, dim=2, graph_seed=4)
    drop_at = {1: Stage.MASKED_INPUT}
    assert predict(ring, drop_at) == Outcome(abort="TOO_FEW_SHARES", revealing_stage_reached=True)
    setup = build(ring, seed=1, drop_at=drop_at, policy=POLICY)
    run(setup)
    assert setup.server.result is None
    assert isinstance(setup.server.error, RoundAborted) and setup.server.error.code == "TOO_FEW_SHARES"
    hood = recipes.neighbourhoods(ring.participants, ring.k, ring.graph_seed).of(1)
    for c in hood:  # the neighbours of the dropout refused the unmask request: nothing revealed
        assert setup.clients[c].error is not None and setup.clients[c].error.code == "TOO_FEW_SURVIVORS"
        assert not setup.clients[c].revealed_seed_owners
    complete = make(8, mode=Mode.SEMI_HONEST, k=7, t=3, dim=2, graph_seed=4)
    assert predict(complete, drop_at) == Outcome((2, 3, 4, 5, 6, 7, 8), (1,), None, True)
    setup = build(complete, seed=1, drop_at=drop_at, policy=POLICY)
    run(setup)
    check_exact(setup, range(2, 9))


# ---------------------------------------------------------------- the stateful test


class RoundMachine(RuleBasedStateMachine):
    """One server and four clients; hypothesis is the network and, sometimes, a lying server."""

    MODE = Mode.SEMI_HONEST
    N = 4
    T = 3

    def __init__(self) -> None:
        super().__init__()
        self.setup: SimulationSetup | None = None

    @initialize(
        seed=st.integers(min_value=0, max_value=2**16),
        chunked=st.booleans(),
        codec=st.booleans(),
        budget=st.sampled_from([None, 0]),
    )
    def start(self, seed: int, chunked: bool, codec: bool = True, budget: int | None = None) -> None:
        cfg = make(self.N, mode=self.MODE, k=self.N - 1, t=self.T, dim=3, graph_seed=seed)
        self.setup = build(
            cfg,
            seed=seed,
            chunk_elems=2 if chunked else None,
            policy=POLICY,
            timeouts=StageTimeouts(10.0, 10.0, 10.0, 10.0, 10.0),
        )
        with_budget(self.setup, budget)
        self.codec = codec  # messages cross a byte-level wire (decoded objects), or stay Python objects
        self.now = 0.0
        self.down: list[tuple[int, ServerMessage]] = []  # in flight, server -> client
        self.up: list[tuple[int, ClientMessage]] = []  # in flight, client -> server
        self.seen_down: list[tuple[int, ServerMessage]] = []
        self.seen_up: list[tuple[int, ClientMessage]] = []
        self._feed(self.setup.server.start(self.now))

    # ---------------------------------------------------------------- plumbing

    @property
    def s(self) -> SimulationSetup:
        assert self.setup is not None
        return self.setup

    def _feed(self, events: list[Audit | Send]) -> None:
        for ev in events:
            if isinstance(ev, Send):
                self.down.append((ev.to, ev.message))

    def _to_client(self, cid: int, msg: ServerMessage) -> None:
        msg = through_codec(cid, msg) if self.codec else msg
        self.seen_down.append((cid, msg))
        for reply in self.s.clients[cid].receive(msg):
            self.up.append((cid, reply))

    def _to_server(self, cid: int, msg: ClientMessage) -> None:
        msg = through_codec(cid, msg) if self.codec else msg
        self.seen_up.append((cid, msg))
        self._feed(self.s.server.receive(cid, msg, self.now))

    # ---------------------------------------------------------------- the network's choices

    @rule(pick=st.integers(min_value=0, max_value=2**16), first=st.booleans())
    def deliver_to_client(self, pick: int, first: bool) -> None:
        if not self.down:
            return
        cid, msg = self.down.pop(0 if first else pick % len(self.down))
        self._to_client(cid, msg)

    @rule(pick=st.integers(min_value=0, max_value=2**16), first=st.booleans())
    def deliver_to_server(self, pick: int, first: bool) -> None:
        if not self.up:
            return
        cid, msg = self.up.pop(0 if first else pick % len(self.up))
        self._to_server(cid, msg)

    @rule(count=st.integers(min_value=1, max_value=12))
    def deliver_in_order(self, count: int) -> None:
        """A stretch of ordinary FIFO delivery, replies first (keeps rounds moving)."""
        for _ in range(count):
            if self.up:
                self._to_server(*self.up.pop(0))
            elif self.down:
                self._to_client(*self.down.pop(0))

    @rule(pick=st.integers(min_value=0, max_value=2**16), upward=st.booleans())
    def lose(self, pick: int, upward: bool) -> None:
        if not (self.down or self.up):
            return
        queue: list[Any] = self.up if (upward and self.up) or not self.down else self.down
        queue.pop(pick % len(queue))

    @rule(pick=st.integers(min_value=0, max_value=2**16), to=st.integers(min_value=1, max_value=4))
    def replay_to_a_client(self, pick: int, to: int) -> None:
        """An old server message, to its recipient or to another client."""
        if not self.seen_down:
            return
        _, msg = self.seen_down[pick % len(self.seen_down)]
        self._to_client(to, msg)

    @rule(pick=st.integers(min_value=0, max_value=2**16))
    def replay_to_the_server(self, pick: int) -> None:
        """An old client message again, from the same authenticated sender."""
        if not self.seen_up:
            return
        cid, msg = self.seen_up[pick % len(self.seen_up)]
        self._to_server(cid, msg)

    @rule(pick=st.integers(min_value=0, max_value=2**16), who=st.integers(min_value=0, max_value=6))
    def cross_wired(self, pick: int, who: int) -> None:
        """A server message arrives at the server (from anyone, even a stranger), and a client message at
        a client: both are refused without an exception."""
        if self.seen_down:
            _, down = self.seen_down[pick % len(self.seen_down)]
            self._feed(self.s.server.receive(who, down, self.now))  # type: ignore[arg-type]
        if self.seen_up and 1 <= who <= self.N:
            _, up = self.seen_up[pick % len(self.seen_up)]
            self.up.extend((who, r) for r in self.s.clients[who].receive(up))  # type: ignore[arg-type]

    @rule(dt=st.sampled_from([0.5, 10.0, 25.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self._feed(self.s.server.poll(self.now))

    @rule(
        cid=st.integers(min_value=1, max_value=4),
        alive=st.lists(st.integers(min_value=0, max_value=5), max_size=5),
        dropped=st.lists(st.integers(min_value=0, max_value=5), max_size=5),
        tidy=st.booleans(),
    )
    def forged_unmask_request(self, cid: int, alive: list[int], dropped: list[int], tidy: bool) -> None:
        """A lying server asks a client to unmask with a partition of its own choosing."""
        client = self.s.clients[cid]
        sid = client.session_id or bytes(32)
        if tidy:  # a well-formed partition of the client's other clients, the kind that is hardest to spot
            others = [c for c in range(1, self.N + 1) if c != cid]
            alive = sorted(set(alive) & set(others))
            dropped = sorted(set(others) - set(alive))
        self._to_client(cid, UnmaskRequest(sid, tuple(alive), tuple(dropped)))

    @rule()
    def run_to_the_end(self) -> None:
        """FIFO delivery and deadlines until the server is done: the round always terminates."""
        for _ in range(200):
            if self.s.server.state in TERMINAL_SERVER:
                break
            while self.down or self.up:
                if self.up:
                    self._to_server(*self.up.pop(0))
                else:
                    self._to_client(*self.down.pop(0))
            if self.s.server.state not in TERMINAL_SERVER:
                self.now = max(self.now, self.s.server.deadline)
                self._feed(self.s.server.poll(self.now))
        assert self.s.server.state in TERMINAL_SERVER

    # ---------------------------------------------------------------- invariants

    @invariant()
    def never_both_shares_of_one_peer(self) -> None:
        if self.setup is None:
            return
        for cid, client in self.s.clients.items():
            assert not client.revealed_seed_owners & client.revealed_key_owners, cid

    @invariant()
    def errors_are_typed(self) -> None:
        if self.setup is None:
            return
        err = self.s.server.error
        assert err is None or isinstance(err, RoundAborted)
        for client in self.s.clients.values():
            assert client.error is None or isinstance(client.error, (RoundAborted, PolicyRefusal))
            if client.state in TERMINAL_CLIENT:
                assert not client.holds_round_secrets
            if client.state is ClientState.ABORTED:
                assert client.error is not None

    def teardown(self) -> None:
        """Whatever happened so far, the round must still run to an end that keeps every invariant."""
        if self.setup is None:
            return
        self.run_to_the_end()
        self.never_both_shares_of_one_peer()
        self.errors_are_typed()
        self.result_if_any_is_exact()
        srv = self.s.server
        event(f"server: {srv.state.value}" + (f" {srv.error.code}" if srv.error else ""))
        event(f"clients done: {sum(c.state is ClientState.DONE for c in self.s.clients.values())}")

    @invariant()
    def result_if_any_is_exact(self) -> None:
        if self.setup is None or self.s.server.result is None:
            return
        assert self.s.server.error is None
        check_exact(self.s, self.s.server.result.survivors)


class HardenedRoundMachine(RoundMachine):
    MODE = Mode.HARDENED
    N = 4
    T = 3


_STATEFUL = settings(
    max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestRoundMachine = pytest.mark.property("P1", "P3", "P6", "P12")(RoundMachine.TestCase)
TestRoundMachine.settings = _STATEFUL
TestHardenedRoundMachine = pytest.mark.property("P1", "P3", "P6", "P12")(HardenedRoundMachine.TestCase)
TestHardenedRoundMachine.settings = _STATEFUL


@pytest.mark.property("P6", "P12")
def test_stateful_harness_reaches_results() -> None:
    """The machine's plumbing can complete a round (so the invariants above are not vacuous)."""
    machine = RoundMachine()
    machine.start(seed=3, chunked=True)
    machine.run_to_the_end()
    assert machine.s.server.result is not None
    machine.result_if_any_is_exact()
    hardened = HardenedRoundMachine()
    hardened.start(seed=4, chunked=False)
    hardened.run_to_the_end()
    assert hardened.s.server.result is not None
