"""Hardened mode pins one survivor set per session (SPEC §10.4, §10.5; threat_model.md P2, P3).

The attack class: a lying server shows different survivor sets to different clients and assembles a target's
secrets across neighbourhoods: the target's self-mask seed from its neighbours (the target "alive" in their
sets) and each neighbour's mask key from that neighbour's own neighbours (the neighbour "dropped" in theirs).
No client reveals both shares of one peer, yet the server gets every mask of the target. A rule of ">= t
signatures over the set you signed" let each of those sets pass with t signers. Clients now need a quorum
Q = floor((|U1| + c) / 2) + 1 of signatures over one set, and an honest client signs one set per session,
so at most one set per session can be answered: the tests play the attack on several graphs, the variants
a single quorum set allows, and a randomised lying server, and check with an oracle that knows only Shamir
thresholds and share holders (`tests/adversary.py`) that no honest input is ever fully unmasked.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from secagg.errors import ConfigurationError
from secagg.protocol import params, recipes
from secagg.protocol.config import ClientPolicy, Mode, RoundConfig
from secagg.protocol.messages import ClientAbort, UnmaskResponse
from secagg.protocol.rules import ClientState, Stage
from secagg.simulation import SimulationSetup
from tests.adversary import LyingServer, leaked, masked, masked_round, plan_reveals
from tests.protocol_helpers import never_both_shares

HONEST_ONLY = ClientPolicy(corrupt_fraction=0.0, dropout_fraction=0.0, require_derived_degree=False)


def _config(n: int, k: int, t: int, graph_seed: int, min_aggregate: int = 2) -> RoundConfig:
    return RoundConfig(
        run_id="quorum",
        round=graph_seed,
        participants=tuple(range(1, n + 1)),
        mode=Mode.HARDENED,
        k=k,
        t=t,
        graph_seed=hashlib.sha256(b"quorum-graph-%d" % graph_seed).digest(),
        dim=3,
        max_weight=4,
        bits=8,
        min_aggregate=min_aggregate,
    )


def _assembly_plan(
    setup: SimulationSetup, target: int
) -> tuple[dict[int, tuple[int, ...]], dict[int, tuple[int, ...]]] | None:
    """The neighbour-assembly attack on `target`: who must answer which set, and who else signs which set
    so that every set has t signatures (the old rule). None if this graph does not admit it.

    Each neighbour w of the target needs t of its own neighbours to see it "dropped" (they reveal their
    shares of w's mask key), while every set keeps the target "alive" (the target's neighbours reveal their
    shares of its self-mask seed). A client may call only so many of its live neighbours dropped and still
    have t - 1 alive ones (the per-request rule), so revealers are picked greedily by that capacity."""
    cfg = setup.config
    hood = recipes.neighbourhoods(cfg.participants, cfg.k, cfg.graph_seed).of
    everyone = tuple(masked(setup))
    near = sorted(hood(target))
    capacity = {c: len(setup.clients[c]._live_neighbours) + 1 - cfg.t for c in everyone}
    drops: dict[int, set[int]] = {w: set() for w in near}  # the target's neighbours answer in any case
    for w in near:
        candidates = sorted(hood(w) - {target}, key=lambda c: (-capacity[c], c))
        chosen = [c for c in candidates if capacity[c] > 0][: cfg.t]
        if len(chosen) < cfg.t:
            return None
        for c in chosen:
            capacity[c] -= 1
            drops.setdefault(c, set()).add(w)
    needed = {c: tuple(x for x in everyone if x not in d) for c, d in drops.items()}
    signers: dict[tuple[int, ...], list[int]] = {}
    for c, s in needed.items():
        signers.setdefault(s, []).append(c)
    free = [c for c in everyone if c != target and c not in needed]
    recruits: dict[int, tuple[int, ...]] = {}
    for s, members in sorted(signers.items()):
        while len(members) < cfg.t:
            spare = next((f for f in free if f in s), None)
            if spare is None:
                return None
            free.remove(spare)
            members.append(spare)
            recruits[spare] = s
    return needed, recruits


@pytest.mark.property("P2", "P3")
@pytest.mark.parametrize(("n", "k", "t"), [(30, 4, 3), (40, 4, 3), (64, 6, 4), (100, 8, 5)])
def test_neighbour_assembly_across_survivor_sets_reveals_nothing(n: int, k: int, t: int) -> None:
    """The review's attack, on sparse graphs: under a ">= t signatures" rule its plan unmasks the target
    (checked by the oracle on the plan), but no set it uses reaches the quorum, so nobody answers."""
    target = 1
    for graph_seed in range(40):  # the first graph on which the plan unmasks the target under the old rule
        setup = masked_round(_config(n, k, t, graph_seed), seed=graph_seed, policy=HONEST_ONLY)
        plan = _assembly_plan(setup, target)
        if plan is not None:
            seeds, keys = plan_reveals(setup, plan[0])
            if leaked(setup, seed_reveals=seeds, key_reveals=keys) == [target]:
                break
    else:  # pragma: no cover - the parameters are chosen so that some graph admits the plan
        pytest.fail("no graph admitted the attack plan")
    needed, recruits = plan
    liar = LyingServer(setup)
    for c, s in {**needed, **recruits}.items():
        assert liar.show(c, s), f"client {c} refused to sign a set of {len(s)}"  # large sets: each is signed
    quorum = params.consistency_quorum(len(setup.server._ads), 0)
    for c, s in needed.items():
        got = len(liar.signed(s))
        assert t <= got < quorum
        [reply] = liar.ask(c, s)
        assert isinstance(reply, ClientAbort) and reply.code == "TOO_FEW_SIGNATURES", reply
    assert liar.revealed() == []
    assert leaked(setup) == []
    never_both_shares(setup.clients.values())


@pytest.mark.property("P2", "P3")
@pytest.mark.parametrize(("n", "k", "t"), [(30, 4, 3), (36, 6, 4), (9, 8, 5)])
def test_one_quorum_set_that_isolates_the_target_reveals_nothing_of_it(n: int, k: int, t: int) -> None:
    """The server puts its one quorum on a set without the target's neighbours (so their mask keys are
    revealed): the neighbours never sign a set that omits them, so no share of the target's self-mask seed
    is revealed by anyone but the target, and the target itself refuses (too few live neighbours)."""
    setup = masked_round(_config(n, k, t, 1), seed=1, policy=HONEST_ONLY)
    target = 1
    cfg = setup.config
    near = recipes.neighbourhoods(cfg.participants, cfg.k, cfg.graph_seed).of(target)
    s = tuple(c for c in masked(setup) if c not in near)
    liar = LyingServer(setup)
    quorum = max(t, params.consistency_quorum(len(setup.server._ads), 0))
    for c in masked(setup):  # on the complete graph the set is {target} alone: below the quorum, nobody signs
        assert liar.show(c, s) == (c not in near and len(s) >= quorum)
    for c in masked(setup):
        liar.ask(c, s)
    assert setup.clients[target].state is ClientState.ABORTED  # too few live neighbours, or below a minimum
    assert not setup.clients[target].revealed_seed_owners
    assert all(target not in setup.clients[c].revealed_seed_owners for c in near)
    if len(s) >= quorum:  # the one set was answered, with the target's neighbours called dropped in it
        assert liar.revealed()
        assert any(w in setup.clients[c].revealed_key_owners for c in liar.revealed() for w in near)
    assert leaked(setup) == []
    never_both_shares(setup.clients.values())


@pytest.mark.property("P2", "P3")
@pytest.mark.parametrize(("n", "k", "t"), [(12, 11, 7), (30, 4, 3), (64, 6, 4)])
def test_withheld_shares_and_one_isolating_set_reveal_nothing_of_the_target(n: int, k: int, t: int) -> None:
    """Asymmetric live sets: the server withholds from the target the ciphertexts of all but t - 1 of its
    neighbours (so those neighbours mask with the target and hold its shares, while the target masks only with
    the t - 1), then puts its one quorum set on everyone but those t - 1. The t - 1 never answer; the others
    hold at most k - (t - 1) shares of the target's self-mask seed, below t because 2t > k + 1."""
    cfg = _config(n, k, t, 5)
    hood = recipes.neighbourhoods(cfg.participants, cfg.k, cfg.graph_seed).of
    target = 1
    near = sorted(hood(target))
    kept, withheld = near[: t - 1], near[t - 1 :]
    setup = masked_round(cfg, seed=5, policy=HONEST_ONLY, withhold={target: withheld})
    assert setup.clients[target]._live_neighbours == frozenset(kept)
    assert all(target in setup.clients[h]._live_neighbours for h in withheld)
    s = tuple(c for c in masked(setup) if c not in kept)
    liar = LyingServer(setup)
    for c in masked(setup):
        if c != target:
            liar.show(c, s)
    for c in masked(setup):
        if c != target:
            liar.ask(c, s)
    revealers = [c for c in masked(setup) if target in setup.clients[c].revealed_seed_owners]
    assert set(revealers) <= set(withheld) and len(revealers) < t
    assert leaked(setup) == []
    never_both_shares(setup.clients.values())


@pytest.mark.property("P2")
def test_a_second_set_cannot_reach_the_quorum_once_one_has() -> None:
    """Two sets, each shown to half of the clients: neither reaches the quorum, so neither is answered; the
    one shown to a majority is answered and the other is refused, whatever signatures it carries."""
    setup = masked_round(_config(12, 11, 7, 2), seed=2, policy=HONEST_ONLY)
    everyone = tuple(masked(setup))
    a, b = everyone, tuple(c for c in everyone if c != 12)
    liar = LyingServer(setup)
    for c in everyone:
        assert liar.show(c, a if c <= 6 else b) == (c != 12)  # b omits client 12: it refuses to sign b
    assert len(liar.signed(a)) == 6 and len(liar.signed(b)) == 5
    quorum = params.consistency_quorum(12, 0)
    assert quorum == 7
    for c in everyone[:-1]:
        [reply] = liar.ask(c, a if c <= 6 else b)
        assert isinstance(reply, ClientAbort) and reply.code == "TOO_FEW_SIGNATURES"
        assert setup.clients[c].state is ClientState.ABORTED
    assert liar.revealed() == [] and leaked(setup) == []


@pytest.mark.property("P2", "P10")
def test_a_client_outside_the_set_or_below_the_quorum_signs_nothing() -> None:
    """Consistency requests: a set that omits the client is refused (BAD_SURVIVORS), a set that names a
    client that never advertised keys is refused, and a set smaller than the quorum is refused
    (TOO_FEW_SURVIVORS) before anything is signed."""
    setup = masked_round(_config(10, 9, 6, 3), seed=3, policy=HONEST_ONLY, drop_at={10: Stage.ADVERTISE_KEYS})
    liar = LyingServer(setup)
    everyone = tuple(masked(setup))
    assert 10 not in everyone and len(setup.server._ads) == 9
    cases = {
        1: (tuple(c for c in everyone if c != 1), "BAD_SURVIVORS"),
        2: ((*everyone, 10), "BAD_SURVIVORS"),
        3: (everyone[:5], "TOO_FEW_SURVIVORS"),  # 5 < max(t, floor(9 / 2) + 1) = 6
    }
    for c, (s, code) in cases.items():
        assert not liar.show(c, s)
        err = setup.clients[c].error
        assert err is not None and err.code == code, (c, err)
        assert setup.clients[c].state is ClientState.ABORTED
    assert liar.show(4, everyone[:6])  # 6 >= t = 6 and >= the quorum: signed


@pytest.mark.property("P2")
def test_the_quorum_counts_the_corrupt_clients_the_policy_assumes() -> None:
    """With c corrupt clients assumed, Q = floor((|U1| + c) / 2) + 1: a set signed by a bare majority plus
    forged corrupt signatures is refused when it is below that quorum."""
    n = 10
    policy = ClientPolicy(corrupt_fraction=0.2, dropout_fraction=0.0, require_derived_degree=False)
    setup = masked_round(_config(n, 9, 6, 4, min_aggregate=4), seed=4, policy=policy)  # max(t, Q) = Q = 7
    corrupt = frozenset({9, 10})
    liar = LyingServer(setup, corrupt=corrupt)
    everyone = tuple(masked(setup))
    quorum = params.consistency_quorum(n, params.max_corrupt(n, 0.2))
    assert quorum == 7
    # 4 honest signers + 2 corrupt forgeries = 6 < 7
    for c in (1, 2, 3, 4):
        assert liar.show(c, everyone)
    [reply] = liar.ask(1, everyone)
    assert isinstance(reply, ClientAbort) and reply.code == "TOO_FEW_SIGNATURES"
    # one more honest signer reaches it
    assert liar.show(5, everyone)
    [reply] = liar.ask(2, everyone)
    assert isinstance(reply, UnmaskResponse)


@pytest.mark.property("P9")
def test_parameters_whose_quorum_dropouts_can_break_are_refused() -> None:
    """Liveness: the quorum must survive the assumed dropouts, n - D >= floor((n + C) / 2) + 1."""
    params.check_params(100, 32, 22, "hardened", 0.1, 0.1)  # Q = 56 <= 90 left
    with pytest.raises(ConfigurationError, match="signature quorum"):
        params.check_params(100, 60, 42, "hardened", 0.1, 0.45)  # Q = 56 > 55 left after 45 dropouts
    assert params.consistency_quorum(100, 10) == 56
    assert params.consistency_quorum(5, 9) == 6  # c counts at most |U1|


# ---------------------------------------------------------------- a randomised lying server


@st.composite
def _hardened_rounds(draw: st.DrawFn) -> tuple[RoundConfig, float, frozenset[int], dict[int, Stage]]:
    n = draw(st.integers(min_value=5, max_value=20))
    gamma = draw(st.sampled_from((0.0, 0.1, 0.2, 0.2)))
    delta = draw(st.sampled_from((0.0, 0.1)))
    k = draw(st.integers(min_value=2, max_value=n - 1))
    t = draw(st.integers(min_value=2, max_value=k))
    try:
        params.check_params(n, k, t, "hardened", gamma, delta)
    except ConfigurationError:
        assume(False)
    cfg = _config(n, k, t, draw(st.integers(min_value=0, max_value=2**16)), params.min_aggregate_floor(n, gamma))
    corrupt = frozenset(draw(st.sets(st.sampled_from(cfg.participants), max_size=params.max_corrupt(n, gamma))))
    drops = draw(
        st.dictionaries(
            st.sampled_from(cfg.participants),
            st.sampled_from((Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT)),
            max_size=params.max_dropouts(n, delta),
        )
    )
    return cfg, gamma, corrupt, {c: s for c, s in drops.items() if c not in corrupt}


@pytest.mark.property("P2", "P3")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(_hardened_rounds(), st.data())
def test_a_lying_server_with_a_random_strategy_never_unmasks_an_honest_input(
    case: tuple[RoundConfig, float, frozenset[int], dict[int, Stage]], data: st.DataObject
) -> None:
    """Share ciphertexts withheld from random recipients (so v may be live for h while h is not for v),
    random survivor sets per client (drawn from a few candidates, each a random subset of the clients
    with keys), any signatures it can get (every honest one it collected, every corrupt one forged), partitions
    that follow the set or are random, several requests per client: for no honest client does the server,
    with the corrupt clients' shares, obtain the self-mask seed together with every pairwise seed."""
    cfg, gamma, corrupt, drops = case
    policy = ClientPolicy(corrupt_fraction=gamma, dropout_fraction=0.0, require_derived_degree=False)
    # the liar may also withhold share ciphertexts from chosen recipients (asymmetric live sets)
    withhold = data.draw(
        st.dictionaries(st.sampled_from(cfg.participants), st.sets(st.sampled_from(cfg.participants)), max_size=4),
        label="withheld ciphertexts",
    )
    seed = data.draw(st.integers(0, 2**16), label="seed")
    setup = masked_round(cfg, seed=seed, policy=policy, drop_at=drops, withhold=withhold)
    everyone = masked(setup)
    assume(len(everyone) >= 2)
    advertised = sorted(setup.server._ads)
    liar = LyingServer(setup, corrupt=corrupt)
    subsets = st.lists(st.sampled_from(advertised), min_size=1, unique=True).map(lambda s: tuple(sorted(s)))
    # sets near the true one (a few clients called dropped) are the ones that can gather signatures
    near_true = st.sets(st.sampled_from(everyone), max_size=3).map(
        lambda out: tuple(c for c in everyone if c not in out)
    )
    candidates = data.draw(
        st.lists(st.one_of(st.just(tuple(everyone)), near_true, near_true, subsets), min_size=1, max_size=4)
    )
    honest = [c for c in everyone if c not in corrupt]
    for c in data.draw(st.permutations(everyone), label="signing order"):
        liar.show(c, data.draw(st.sampled_from(candidates), label=f"set shown to {c}"))
    for c in data.draw(st.lists(st.sampled_from(honest), max_size=2 * len(honest)), label="asked") if honest else []:
        s = data.draw(st.sampled_from(candidates), label=f"set asked of {c}")
        if data.draw(st.booleans(), label="random partition"):
            live = sorted(setup.clients[c]._live_neighbours)
            alive = data.draw(st.sets(st.sampled_from(live)) if live else st.just(set()), label="alive")
            liar.ask(c, s, alive=alive, dropped=set(live) - alive)
        else:
            liar.ask(c, s)
    event(f"clients that revealed: {'none' if not liar.revealed() else 'some'}")
    event(f"graph: {'complete' if cfg.is_complete_graph else 'sparse'}; corrupt: {len(corrupt)}")
    assert leaked(setup, corrupt) == []
    never_both_shares(setup.clients[c] for c in honest)
    # whoever answered answered for one set only, the same for all of them
    answered_sets = {req.survivors for _, req, rs in liar.answers if any(isinstance(r, UnmaskResponse) for r in rs)}
    assert len(answered_sets) <= 1
