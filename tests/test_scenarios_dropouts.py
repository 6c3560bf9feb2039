"""Scenario group C: dropouts, thresholds, deadlines and restarts (scenarios.md C1-C7, C10; protocol part).

Dropouts are injected with the in-process network's `drop_at` (a client dropped at stage S receives the
request of S and never answers). Slow clients and restarts need control over time and over which session
object receives a message, so those tests drive the server and clients by hand (`Clock`, below) with the
same FIFO delivery the in-process network uses. Every CONTINUE outcome is checked as the exact ring sum
over exactly the expected survivors; every ABORT as a typed error with no aggregate and, before the
unmask stage, no share revealed by any client.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest

from secagg.crypto.rng import DeterministicRandom
from secagg.errors import PolicyRefusal, RoundAborted
from secagg.protocol.client import ClientSession
from secagg.protocol.config import ClientPolicy, Mode, StageTimeouts
from secagg.protocol.ledger import MemoryLedger
from secagg.protocol.messages import (
    AdvertiseKeys,
    ClientAbort,
    ClientMessage,
    ConsistencySignature,
    ServerMessage,
    SetupRequest,
    UnmaskRequest,
)
from secagg.protocol.rules import ClientState, ServerState, Stage
from secagg.protocol.server import Audit, Send
from secagg.simulation import SimulationSetup, build, expected_sum, make_config, run
from secagg.transport.inprocess import REPLY_STAGE

N = 8
THRESHOLD = {Mode.SEMI_HONEST: 4, Mode.HARDENED: 5}  # complete graph k = 7: hardened needs 2t > 8
STAGES = {
    Mode.SEMI_HONEST: [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK],
    Mode.HARDENED: [
        Stage.ADVERTISE_KEYS,
        Stage.SHARE_KEYS,
        Stage.MASKED_INPUT,
        Stage.CONSISTENCY_CHECK,
        Stage.UNMASK,
    ],
}
BEFORE_MASKED_INPUT = {Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT}
TIMEOUTS = StageTimeouts(advertise_keys=10.0, share_keys=20.0, masked_input=30.0, consistency_check=40.0, unmask=50.0)
TIMEOUT_OF = {
    Stage.ADVERTISE_KEYS: 10.0,
    Stage.SHARE_KEYS: 20.0,
    Stage.MASKED_INPUT: 30.0,
    Stage.CONSISTENCY_CHECK: 40.0,
    Stage.UNMASK: 50.0,
}


# ---------------------------------------------------------------- helpers


def make_round(
    n: int = N,
    *,
    mode: Mode = Mode.SEMI_HONEST,
    t: int | None = None,
    k: int | None = None,
    seed: int = 5,
    dim: int = 5,
    drop_at: dict[int, Stage] | None = None,
    timeouts: StageTimeouts | None = None,
    policy: ClientPolicy | None = None,
    **config: Any,
) -> SimulationSetup:
    t = THRESHOLD[mode] if t is None else t
    cfg = make_config(n, dim, mode=mode, seed=seed, t=t, k=k, corrupt_fraction=0.0, dropout_fraction=0.0, **config)
    return build(cfg, seed=seed, drop_at=drop_at, timeouts=timeouts, policy=policy)


def assert_exact(setup: SimulationSetup, survivors: Iterable[int], dropped: Iterable[int] = ()) -> None:
    """CONTINUE: exact ring sum over exactly `survivors`; `dropped`: the clients whose masks were removed."""
    res = setup.server.result
    assert res is not None, f"no aggregate: {setup.server.error}"
    surv = tuple(sorted(survivors))
    assert res.survivors == surv
    assert res.dropped == tuple(sorted(dropped))
    want, total = expected_sum(setup, surv)
    assert np.array_equal(res.sum, want)
    assert res.total_weight == total


def assert_clean_abort(setup: SimulationSetup, code: str) -> None:
    """ABORT: typed error, no aggregate and no partial sum kept; live clients told to erase their secrets."""
    srv = setup.server
    assert srv.result is None
    assert isinstance(srv.error, RoundAborted) and srv.error.code == code, srv.error
    assert srv.state is ServerState.ABORTED
    assert srv._acc is None  # the partial accumulator is discarded with the round
    for cid, client in setup.clients.items():
        if cid in setup.drop_at:
            continue  # gone: it never hears from the round again
        assert client.state is ClientState.ABORTED, (cid, client.state)
        assert not client.holds_round_secrets


def assert_nothing_revealed(setup: SimulationSetup) -> None:
    for cid, client in setup.clients.items():
        assert not client.revealed_seed_owners, cid
        assert not client.revealed_key_owners, cid


def reveal_counts(setup: SimulationSetup) -> tuple[Counter[int], Counter[int]]:
    """How many clients revealed a share of each owner's seed, and of each owner's mask key."""
    seeds: Counter[int] = Counter()
    keys: Counter[int] = Counter()
    for client in setup.clients.values():
        seeds.update(client.revealed_seed_owners)
        keys.update(client.revealed_key_owners)
    return seeds, keys


def assert_no_double_reveal(setup: SimulationSetup) -> None:
    for cid, client in setup.clients.items():
        assert not client.revealed_seed_owners & client.revealed_key_owners, cid


def pick(seed: int, ids: Iterable[int], count: int) -> list[int]:
    """A fixed pseudo-random subset (test inputs may use numpy.random with fixed seeds)."""
    pool = sorted(ids)
    rng = np.random.default_rng(seed)
    return sorted(int(c) for c in rng.choice(pool, size=count, replace=False))


# ---------------------------------------------------------------- C1-C4 single dropouts


@pytest.mark.property("P6", "P9")
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_C1_dropout_before_key_advertisement_continues_without_it(mode: Mode) -> None:
    setup = make_round(mode=mode, drop_at={3: Stage.ADVERTISE_KEYS})
    rr = run(setup)
    assert_exact(setup, [c for c in range(1, N + 1) if c != 3])
    # nobody saw keys or shares of client 3
    assert all(3 not in c._peers for cid, c in setup.clients.items() if cid != 3)
    assert rr.server._u1 == tuple(c for c in range(1, N + 1) if c != 3)


@pytest.mark.property("P6", "P9")
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_C1b_dropout_after_advertising_before_sharing_continues(mode: Mode) -> None:
    setup = make_round(mode=mode, drop_at={6: Stage.SHARE_KEYS})
    run(setup)
    assert_exact(setup, [c for c in range(1, N + 1) if c != 6])
    # 6 advertised keys but shared nothing: nobody holds a share of it, so nothing of it is ever revealed
    seeds, keys = reveal_counts(setup)
    assert seeds[6] == 0 and keys[6] == 0


@pytest.mark.property("P6", "P9")
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_C2_dropout_after_sharing_removes_its_pairwise_masks(mode: Mode) -> None:
    setup = make_round(mode=mode, drop_at={2: Stage.MASKED_INPUT, 7: Stage.MASKED_INPUT})
    run(setup)
    assert_exact(setup, [1, 3, 4, 5, 6, 8], dropped=[2, 7])
    seeds, keys = reveal_counts(setup)
    # the dropped clients' mask keys were revealed by their neighbours, never their self-mask seeds
    assert keys[2] == keys[7] == 6 and seeds[2] == seeds[7] == 0
    assert_no_double_reveal(setup)


@pytest.mark.property("P6", "P9")
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_C3_dropout_after_masked_input_keeps_its_input(mode: Mode) -> None:
    late = Stage.CONSISTENCY_CHECK if mode is Mode.HARDENED else Stage.UNMASK
    setup = make_round(mode=mode, drop_at={4: late})
    run(setup)
    assert_exact(setup, range(1, N + 1))
    seeds, keys = reveal_counts(setup)
    assert seeds[4] == N - 1 and not keys  # 4's seed came from the others' shares


@pytest.mark.property("P6", "P9")
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_C4_dropouts_during_unmasking_with_enough_responders_continue(mode: Mode) -> None:
    t = THRESHOLD[mode]
    drops = {1: Stage.MASKED_INPUT} | {c: Stage.UNMASK for c in range(2, 2 + (N - 1 - t))}
    setup = make_round(mode=mode, drop_at=drops)
    rr = run(setup)
    responders = N - len(drops)
    assert responders == t
    assert_exact(setup, range(2, N + 1), dropped=[1])
    assert rr.server._responders == tuple(range(N - t + 1, N + 1))
    assert_no_double_reveal(setup)


# ---------------------------------------------------------------- the dropout matrix


def _matrix_cases() -> list[tuple[Mode, Stage, int]]:
    return [(mode, stage, d) for mode in Mode for stage in STAGES[mode] for d in range(N + 1)]


@pytest.mark.property("P6", "P9", "P11")
@pytest.mark.parametrize(
    ("mode", "stage", "drops"),
    _matrix_cases(),
    ids=[f"{m.value}-{s.value}-{d}" for m, s, d in _matrix_cases()],
)
def test_dropout_matrix(mode: Mode, stage: Stage, drops: int) -> None:
    """Stage x number of dropouts on a complete graph of 8: exact over exactly the survivors while at least
    t remain, a clean typed abort (no aggregate, no share revealed before unmasking) beyond."""
    t = THRESHOLD[mode]
    case_seed = 100 * list(Mode).index(mode) + 10 * STAGES[mode].index(stage) + drops
    gone = pick(case_seed, range(1, N + 1), drops)
    setup = make_round(mode=mode, drop_at=dict.fromkeys(gone, stage), seed=drops)
    sent_unmask: list[int] = []

    def watch(cid: int, msg: ServerMessage) -> ServerMessage:
        if isinstance(msg, UnmaskRequest):
            sent_unmask.append(cid)
        return msg

    run(setup, to_client=watch)
    assert_no_double_reveal(setup)
    everyone = range(1, N + 1)
    if drops <= N - t:
        kept = [c for c in everyone if c not in gone] if stage in BEFORE_MASKED_INPUT else list(everyone)
        assert_exact(setup, kept, dropped=gone if stage is Stage.MASKED_INPUT else ())
        assert all(c.error is None for c in setup.clients.values())
        return
    if stage is Stage.UNMASK:
        # the responders revealed their shares before anyone knew the others would not answer; fewer
        # than t of them exist, so no seed can be rebuilt from what left the clients
        assert_clean_abort(setup, "TOO_FEW_SHARES")
        seeds, keys = reveal_counts(setup)
        assert not keys and max(seeds.values(), default=0) == N - drops < t
    else:
        assert_clean_abort(setup, "TOO_FEW_CLIENTS")
        assert_nothing_revealed(setup)
        assert sent_unmask == []


# ---------------------------------------------------------------- C5 threshold boundary, explicitly


@pytest.mark.property("P6", "P9", "P11")
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
@pytest.mark.parametrize(("n", "t"), [(5, 3), (7, 6), (9, 6)])
def test_C5_exactly_t_survivors_succeed_and_t_minus_1_abort_at_every_stage(mode: Mode, n: int, t: int) -> None:
    if mode is Mode.HARDENED and 2 * t <= n:
        pytest.skip("hardened mode needs 2t > n on a complete graph")
    for stage in STAGES[mode]:
        for survivors, ok in ((t, True), (t - 1, False)):
            gone = list(range(n - (n - survivors) + 1, n + 1))  # the highest ids drop
            assert len(gone) == n - survivors
            setup = make_round(n, mode=mode, t=t, drop_at=dict.fromkeys(gone, stage), seed=n + t)
            run(setup)
            if ok:
                kept = range(1, survivors + 1) if stage in BEFORE_MASKED_INPUT else range(1, n + 1)
                dropped = gone if stage is Stage.MASKED_INPUT else []
                assert_exact(setup, kept, dropped)
            elif stage is Stage.UNMASK:
                assert_clean_abort(setup, "TOO_FEW_SHARES")
                seeds, keys = reveal_counts(setup)
                assert max(seeds.values()) < t and not keys
            else:
                assert_clean_abort(setup, "TOO_FEW_CLIENTS")
                assert_nothing_revealed(setup)


@pytest.mark.property("P3", "P11")
def test_C5_client_never_reveals_when_the_request_leaves_fewer_than_t() -> None:
    """Even if the server asked anyway, a client whose alive neighbours are fewer than t - 1 refuses."""
    setup = make_round(n=6, t=4)
    clock = Clock(setup, intercept=lambda cid, msg: isinstance(msg, UnmaskRequest))
    clock.start()
    client = setup.clients[1]
    sid = setup.server.session_id
    assert sid is not None and client.state is ClientState.MASKED
    # 1 + 2 alive = 3 < t = 4: the rest declared dropped
    out = client.receive(UnmaskRequest(sid, alive=(2, 3), dropped=(4, 5, 6)))
    assert isinstance(out[0], ClientAbort) and out[0].code == "TOO_FEW_SURVIVORS"
    assert not client.revealed_seed_owners and not client.revealed_key_owners
    assert not client.holds_round_secrets


# ---------------------------------------------------------------- C6 minimum aggregate size


@pytest.mark.property("P10", "P11")
@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT])
def test_C6_all_but_one_dropped_aborts(stage: Stage) -> None:
    setup = make_round(n=5, t=2, drop_at=dict.fromkeys([1, 2, 4, 5], stage))
    run(setup)
    assert_clean_abort(setup, "TOO_FEW_CLIENTS")
    assert_nothing_revealed(setup)


@pytest.mark.property("P10", "P11")
def test_C6_min_aggregate_above_threshold_aborts_with_enough_shares() -> None:
    """t = 2 survivors could unmask, but the configured minimum aggregate is 4: abort, nothing revealed."""
    setup = make_round(n=6, t=2, min_aggregate=4, drop_at=dict.fromkeys([1, 2, 3], Stage.MASKED_INPUT))
    run(setup)
    assert_clean_abort(setup, "TOO_FEW_CLIENTS")
    assert_nothing_revealed(setup)
    ok = make_round(n=6, t=2, min_aggregate=4, drop_at=dict.fromkeys([1, 2], Stage.MASKED_INPUT))
    run(ok)
    assert_exact(ok, [3, 4, 5, 6], dropped=[1, 2])


@pytest.mark.property("P10")
def test_C6_client_refuses_when_declared_all_but_alone() -> None:
    """A server that declares every other client dropped gets no share: the client's own floor applies."""
    setup = make_round(n=5, t=2)
    clock = Clock(setup, intercept=lambda cid, msg: isinstance(msg, UnmaskRequest))
    clock.start()
    client = setup.clients[3]
    sid = setup.server.session_id
    assert sid is not None and client.state is ClientState.MASKED
    out = client.receive(UnmaskRequest(sid, alive=(), dropped=(1, 2, 4, 5)))
    assert isinstance(out[0], ClientAbort) and out[0].code in ("TOO_FEW_SURVIVORS", "MIN_AGGREGATE")
    assert not client.revealed_key_owners and not client.revealed_seed_owners


# ---------------------------------------------------------------- a hand-driven network with a clock


class Clock:
    """Server and clients wired by hand: FIFO delivery like the in-process network, but time moves only
    when the test says so, client replies can be held back (slow clients), and a client id can be bound
    to a new session object (restarts)."""

    def __init__(
        self,
        setup: SimulationSetup,
        *,
        hold: Callable[[int, ClientMessage], bool] | None = None,
        restart: dict[int, tuple[Stage, ClientSession]] | None = None,
        intercept: Callable[[int, ServerMessage], bool] | None = None,
    ) -> None:
        self.intercept = intercept
        self.intercepted: list[tuple[int, ServerMessage]] = []
        self.server = setup.server
        self.restart = dict(restart or {})
        self.clients: dict[int, ClientSession] = dict(setup.clients)
        self.hold = hold
        self.now = 0.0
        self.queue: deque[tuple[str, int, Any]] = deque()
        self.held: list[tuple[int, ClientMessage]] = []
        self.audit: list[Audit] = []
        self.offline: set[int] = set()
        self.received: list[tuple[int, ServerMessage]] = []

    def _feed(self, events: list[Audit | Send]) -> None:
        for ev in events:
            if isinstance(ev, Audit):
                self.audit.append(ev)
            else:
                self.queue.append(("to-client", ev.to, ev.message))

    def start(self) -> None:
        self._feed(self.server.start(self.now))
        self.pump()

    def pump(self) -> None:
        while self.queue:
            kind, cid, msg = self.queue.popleft()
            if kind == "to-client":
                if cid in self.offline:
                    continue
                if self.intercept is not None and self.intercept(cid, msg):
                    self.intercepted.append((cid, msg))
                    continue
                if cid in self.restart and REPLY_STAGE.get(type(msg)) is self.restart[cid][0]:
                    self.clients[cid] = self.restart.pop(cid)[1]  # restarted just before this request
                self.received.append((cid, msg))
                for reply in self.clients[cid].receive(msg):
                    if self.hold is not None and self.hold(cid, reply):
                        self.held.append((cid, reply))
                    else:
                        self.queue.append(("to-server", cid, reply))
            else:
                self._feed(self.server.receive(cid, msg, self.now))

    def advance(self, to: float, *, poll: bool = True) -> None:
        assert to >= self.now
        self.now = to
        if poll:
            self._feed(self.server.poll(self.now))
        self.pump()

    def send(self, cid: int, msg: ClientMessage) -> list[Audit]:
        """Deliver one client message now; returns the audit records it caused."""
        before = len(self.audit)
        self._feed(self.server.receive(cid, msg, self.now))
        self.pump()
        return self.audit[before:]

    def release(self, stage: Stage | None = None) -> list[Audit]:
        """Deliver the held client messages now (only those replying to `stage`, if given)."""
        out: list[Audit] = []
        go = [(c, m) for c, m in self.held if stage is None or _reply_stage(m) is stage]
        self.held = [(c, m) for c, m in self.held if not (stage is None or _reply_stage(m) is stage)]
        for cid, msg in go:
            out += self.send(cid, msg)
        return out


def _reply_stage(msg: ClientMessage) -> Stage:
    return {
        "AdvertiseKeys": Stage.ADVERTISE_KEYS,
        "ShareKeys": Stage.SHARE_KEYS,
        "MaskedInputChunk": Stage.MASKED_INPUT,
        "ConsistencySignature": Stage.CONSISTENCY_CHECK,
        "UnmaskResponse": Stage.UNMASK,
    }[type(msg).__name__]


def test_clock_matches_the_in_process_network() -> None:
    """The hand-driven wiring gives the same aggregate as InProcessNetwork on the same seeds."""
    a, b = make_round(seed=21), make_round(seed=21)
    run(a)
    clock = Clock(b)
    clock.start()
    assert b.server.state is ServerState.DONE
    assert a.server.result is not None and b.server.result is not None
    assert np.array_equal(a.server.result.sum, b.server.result.sum)
    assert set(REPLY_STAGE.values()) == set(TIMEOUT_OF)


# ---------------------------------------------------------------- C7 a client slower than the deadline


@pytest.mark.property("P6", "P9")
@pytest.mark.parametrize(
    ("mode", "stage"), [(m, s) for m in Mode for s in STAGES[m]], ids=lambda x: getattr(x, "value", x)
)
def test_C7_slow_client_is_dropped_at_the_deadline_and_its_late_message_rejected(mode: Mode, stage: Stage) -> None:
    slow = 3
    setup = make_round(mode=mode, timeouts=TIMEOUTS)
    clock = Clock(setup, hold=lambda cid, msg: cid == slow and _reply_stage(msg) is stage)
    clock.start()
    # everyone else answered at once: the round waits in the slow stage, whose deadline is its timeout
    srv = setup.server
    assert srv.state.value == f"collect-{_collect_name(stage)}"
    assert srv.deadline == TIMEOUT_OF[stage]
    assert clock.held and all(cid == slow for cid, _ in clock.held)
    # just before the deadline nothing happens
    clock.advance(TIMEOUT_OF[stage] - 1e-6)
    assert srv.state.value == f"collect-{_collect_name(stage)}" and srv.result is None
    # at the deadline the stage closes without the slow client, and the rest of the round runs at once
    clock.advance(TIMEOUT_OF[stage])
    assert srv.state is ServerState.DONE, srv.error
    closed = [a for a in clock.audit if a.event == "stage-closed" and a.stage == stage.value]
    assert len(closed) == 1 and f"dropped=[{slow}]" in closed[0].detail
    result = srv.result
    assert result is not None
    frozen = result.sum.copy()
    # the late message arrives after the deadline (slack 0.5): rejected, nothing changes
    clock.advance(TIMEOUT_OF[stage] + 0.5, poll=False)
    late = clock.release()
    assert [(a.event, a.client) for a in late] == [("message-rejected", slow)] * len(late) and late
    assert srv.result is result and np.array_equal(result.sum, frozen)
    everyone = range(1, N + 1)
    if stage in BEFORE_MASKED_INPUT:
        dropped = [slow] if stage is Stage.MASKED_INPUT else []
        assert_exact(setup, [c for c in everyone if c != slow], dropped)
    else:
        assert_exact(setup, everyone)


def _collect_name(stage: Stage) -> str:
    return {
        Stage.ADVERTISE_KEYS: "keys",
        Stage.SHARE_KEYS: "shares",
        Stage.MASKED_INPUT: "masked",
        Stage.CONSISTENCY_CHECK: "signatures",
        Stage.UNMASK: "unmask",
    }[stage]


@pytest.mark.property("P6", "P9")
@pytest.mark.parametrize("stage", [Stage.SHARE_KEYS, Stage.MASKED_INPUT])
def test_C7_late_message_itself_closes_the_overdue_stage(stage: Stage) -> None:
    """No poll happened yet: the late message's arrival time is past the deadline, so the server first
    closes the stage (as the deadline requires) and then rejects the message as belonging to it."""
    slow = 5
    setup = make_round(timeouts=TIMEOUTS)
    clock = Clock(setup, hold=lambda cid, msg: cid == slow and _reply_stage(msg) is stage)
    clock.start()
    clock.advance(TIMEOUT_OF[stage] + 2.0, poll=False)
    late = clock.release()
    events = [(a.event, a.client, a.stage) for a in late]
    assert events[0] == ("stage-closed", None, stage.value)
    assert ("message-rejected", slow, _next_stage(stage).value) in events
    assert setup.server.state is ServerState.DONE
    dropped = [slow] if stage is Stage.MASKED_INPUT else []
    assert_exact(setup, [c for c in range(1, N + 1) if c != slow], dropped)


def _next_stage(stage: Stage) -> Stage:
    order = STAGES[Mode.SEMI_HONEST]
    return order[order.index(stage) + 1]


@pytest.mark.property("P6", "P9")
def test_C7_every_stage_slow_round_ends_at_the_sum_of_deadlines() -> None:
    """One slow client per stage: each stage closes at its own deadline; the round ends by the sum of the
    stage timeouts (in injected time), with exactly the clients that met every deadline."""
    slow = {1: Stage.ADVERTISE_KEYS, 2: Stage.SHARE_KEYS, 3: Stage.MASKED_INPUT, 4: Stage.UNMASK}
    setup = make_round(t=4, timeouts=TIMEOUTS)
    clock = Clock(setup, hold=lambda cid, msg: slow.get(cid) is _reply_stage(msg))
    clock.start()
    end = 0.0
    for stage in STAGES[Mode.SEMI_HONEST]:
        end += TIMEOUT_OF[stage]
        assert setup.server.deadline == end
        clock.advance(end)
        clock.advance(end + 0.25, poll=False)
        late = clock.release(stage)
        assert late and all(a.event == "message-rejected" for a in late)
    assert setup.server.state is ServerState.DONE
    assert end == sum(TIMEOUT_OF[s] for s in STAGES[Mode.SEMI_HONEST])
    assert_exact(setup, [4, 5, 6, 7, 8], dropped=[3])


@pytest.mark.property("P6", "P9", "P11")
def test_C7_deadline_with_too_few_answers_aborts_at_the_deadline() -> None:
    setup = make_round(n=5, t=4, timeouts=TIMEOUTS)
    clock = Clock(setup, hold=lambda cid, msg: cid in (4, 5) and _reply_stage(msg) is Stage.MASKED_INPUT)
    clock.start()
    assert setup.server.state is ServerState.COLLECT_MASKED
    clock.advance(TIMEOUT_OF[Stage.MASKED_INPUT])
    assert setup.server.state is ServerState.ABORTED
    assert isinstance(setup.server.error, RoundAborted) and setup.server.error.code == "TOO_FEW_CLIENTS"
    late = clock.release()
    assert [a.event for a in late] == ["message-rejected", "message-rejected"]
    assert setup.server.result is None
    # the clients that were waiting were told to erase their secrets (the slow ones too: they are online)
    for client in setup.clients.values():
        assert client.state is ClientState.ABORTED and not client.holds_round_secrets
        assert not client.revealed_seed_owners and not client.revealed_key_owners


# ---------------------------------------------------------------- C10 a restarted client cannot rejoin


def _fresh_session(setup: SimulationSetup, cid: int, ledger: MemoryLedger | None = None) -> ClientSession:
    """Client cid's silo after a restart: same id, policy and input, new memory (no round secrets)."""
    old = setup.clients[cid]
    return ClientSession(
        cid,
        rng=DeterministicRandom(1000 + cid),
        policy=old.policy,
        ledger=ledger if ledger is not None else MemoryLedger(),
        input=setup.inputs[cid],
        rounding_rng=DeterministicRandom(setup.rounding_seeds[cid], label=b"secagg/v1/simulation/rounding"),
    )


@pytest.mark.property("P6", "P9")
@pytest.mark.parametrize(
    ("restart_before", "in_sum"),
    [(Stage.SHARE_KEYS, False), (Stage.MASKED_INPUT, False), (Stage.UNMASK, True)],
    ids=["after-advertising", "after-sharing", "after-masked-input"],
)
def test_C10_restarted_client_counts_as_dropout(restart_before: Stage, in_sum: bool) -> None:
    """Client 4 restarts just before the request of a stage reaches it: the new session gets that request,
    refuses it (it has no round state), and the round goes on without it."""
    setup = make_round()
    fresh = _fresh_session(setup, 4)
    clock = Clock(setup, restart={4: (restart_before, fresh)})
    clock.start()
    assert clock.clients[4] is fresh
    assert fresh.state is ClientState.ABORTED
    assert fresh.error is not None and fresh.error.code == "UNEXPECTED_MESSAGE"
    aborted = [a for a in clock.audit if a.event == "client-aborted"]
    assert [a.client for a in aborted] == [4]
    everyone = range(1, N + 1)
    if in_sum:
        assert_exact(setup, everyone)  # its masked input arrived before the restart
    elif restart_before is Stage.MASKED_INPUT:
        assert_exact(setup, [c for c in everyone if c != 4], dropped=[4])  # it had shared its keys
    else:
        assert_exact(setup, [c for c in everyone if c != 4])
    assert not fresh.revealed_seed_owners and not fresh.revealed_key_owners
    assert_no_double_reveal(setup)


@pytest.mark.property("P6", "P9")
def test_C10_restarted_client_cannot_rejoin_with_new_keys() -> None:
    """After a restart the silo sees the setup again and advertises fresh keys: the server, past the key
    stage, rejects them; the round's session (and its sum) is unaffected."""
    setup = make_round(timeouts=TIMEOUTS)
    clock = Clock(setup, hold=lambda cid, msg: cid == 6 and _reply_stage(msg) is Stage.MASKED_INPUT)
    clock.start()
    assert setup.server.state is ServerState.COLLECT_MASKED
    clock.held.clear()  # the old session's masked input died with the process
    fresh = _fresh_session(setup, 6)
    clock.clients[6] = fresh
    out = fresh.receive(SetupRequest(setup.config))
    assert len(out) == 1 and isinstance(out[0], AdvertiseKeys)
    sid = setup.server.session_id
    audits = clock.send(6, out[0])
    assert [(a.event, a.client) for a in audits] == [("message-rejected", 6)]
    assert setup.server.session_id == sid and setup.server.state is ServerState.COLLECT_MASKED
    clock.advance(TIMEOUT_OF[Stage.MASKED_INPUT])
    assert_exact(setup, [c for c in range(1, N + 1) if c != 6], dropped=[6])
    # the new session was never part of the round; the unmask request went to the survivors only
    assert fresh.state is ClientState.ADVERTISED and not fresh.revealed_seed_owners
    assert 6 not in {cid for cid, m in clock.received if isinstance(m, UnmaskRequest)}


@pytest.mark.property("P5")
def test_C10_restarted_client_with_persistent_ledger_refuses_to_contribute_twice() -> None:
    """The ledger survives the restart: a silo whose masked input already left will not set up again."""
    ledger = MemoryLedger()
    setup = make_round()
    setup.clients[2] = _fresh_session(setup, 2, ledger=ledger)  # client 2 runs with a ledger we keep
    run(setup)
    assert_exact(setup, range(1, N + 1))
    assert ledger.has_contributed(setup.config.run_id, setup.config.round)
    fresh = _fresh_session(setup, 2, ledger=ledger)
    out = fresh.receive(SetupRequest(setup.config))
    assert isinstance(out[0], ClientAbort) and out[0].code == "ALREADY_CONTRIBUTED"
    assert isinstance(fresh.error, PolicyRefusal) and not fresh.holds_round_secrets


# ---------------------------------------------------------------- a survivor that missed the last exchange


@pytest.mark.property("P9", "P11")
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_survivor_whose_last_exchange_was_lost_learns_that_the_round_completed(mode: Mode) -> None:
    """Client 3's masked input is in the sum, but its consistency signature (hardened) or its unmask request
    (semi-honest) was lost. The round completes; 3 must then end DONE with its secrets erased, not report
    an aborted round (its contribution was aggregated) nor send an abort to a finished server."""
    setup = make_round(mode=mode)
    lost_up = ConsistencySignature if mode is Mode.HARDENED else None

    def up(cid: int, msg: ClientMessage) -> ClientMessage | None:
        return None if cid == 3 and lost_up is not None and isinstance(msg, lost_up) else msg

    def down(cid: int, msg: ServerMessage) -> ServerMessage | None:
        return None if cid == 3 and lost_up is None and isinstance(msg, UnmaskRequest) else msg

    rr = run(setup, to_server=up, to_client=down)
    assert_exact(setup, range(1, N + 1))
    client = setup.clients[3]
    assert client.state is ClientState.DONE and client.error is None
    assert not client.holds_round_secrets
    assert not client.revealed_seed_owners and not client.revealed_key_owners
    assert not [a for a in rr.audit if a.client == 3]
