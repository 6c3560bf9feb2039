"""A lying server against honest ClientSessions, and an oracle of what it learns (threat_model.md P2, P3).

`masked_round` runs a hardened round honestly up to the masked inputs and then holds every client in
MASKED with its round secrets, so a test can play any consistency and unmask requests at them. `LyingServer`
sends those requests and collects what comes back; it can sign anything in the name of the corrupt clients
(whose identity keys it holds). `leaked` is the oracle: from what the honest clients actually revealed, plus
everything the corrupt clients hold, which honest clients' masked inputs can the server strip of every mask
(the self-mask seed and every pairwise seed)? It knows nothing of the client's rules, only of Shamir
thresholds and of who holds which share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from secagg.crypto.keys import IdentityKey
from secagg.protocol import recipes
from secagg.protocol.client import ClientSession
from secagg.protocol.config import ClientPolicy, Mode, RoundConfig
from secagg.protocol.messages import (
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    RoundComplete,
    ServerAbort,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.protocol.rules import ClientState, Stage
from secagg.simulation import SimulationSetup, build, run


def masked_round(
    cfg: RoundConfig,
    *,
    seed: int,
    policy: ClientPolicy,
    drop_at: Mapping[int, Stage] | None = None,
    withhold: Mapping[int, Iterable[int]] | None = None,
) -> SimulationSetup:
    """A hardened round run until every live client sent its masked input, then frozen: no consistency
    request, no abort and no completion reaches any client, so each keeps its secrets. `withhold` makes the
    server lie in the shares stage: recipient -> senders whose share ciphertexts it does not deliver to that
    recipient, so live sets become asymmetric (v in L_h while h is not in L_v)."""
    assert cfg.mode is Mode.HARDENED
    setup = build(cfg, seed=seed, policy=policy, drop_at=dict(drop_at or {}))
    kept = {c: set(w) for c, w in (withhold or {}).items()}

    def hold(cid: int, msg: object) -> object:
        if isinstance(msg, SharesDelivery) and cid in kept:
            return SharesDelivery(msg.session_id, tuple(p for p in msg.ciphertexts if p[0] not in kept[cid]))
        return None if isinstance(msg, (ConsistencyRequest, UnmaskRequest, ServerAbort, RoundComplete)) else msg

    run(setup, to_client=hold)  # type: ignore[arg-type]
    return setup


def masked(setup: SimulationSetup) -> list[int]:
    """Clients whose masked input reached the server (they are in the server's U3 candidates)."""
    return sorted(setup.server._complete)


@dataclass
class LyingServer:
    """Plays arbitrary consistency and unmask requests at the clients of a frozen round."""

    setup: SimulationSetup
    corrupt: frozenset[int] = frozenset()
    signatures: dict[tuple[int, ...], dict[int, bytes]] = field(default_factory=dict)
    """Every valid consistency signature it holds: survivor set -> signer -> signature."""
    answers: list[tuple[int, UnmaskRequest, list[ClientMessage]]] = field(default_factory=list)

    @property
    def sid(self) -> bytes:
        sid = self.setup.server.session_id
        assert sid is not None
        return sid

    def client(self, c: int) -> ClientSession:
        return self.setup.clients[c]

    def identity(self, c: int) -> IdentityKey:
        key = self.client(c)._identity
        assert key is not None
        return key

    def show(self, c: int, survivors: Iterable[int]) -> bool:
        """Ask client c to sign a survivor set; keep its signature if it signs. A corrupt client signs
        anything, so its signature is simply made."""
        shown = tuple(sorted(set(survivors)))
        if c in self.corrupt:
            self.forge(c, shown)
            return True
        replies = self.client(c).receive(ConsistencyRequest(self.sid, shown))
        if len(replies) == 1 and isinstance(replies[0], ConsistencySignature):
            self.signatures.setdefault(shown, {})[c] = replies[0].signature
            return True
        return False

    def forge(self, c: int, survivors: tuple[int, ...]) -> None:
        """A corrupt client's signature over any set."""
        sig = self.identity(c).sign(recipes.consistency_payload(self.sid, survivors), context=recipes.SIG_CONSISTENCY)
        self.signatures.setdefault(survivors, {})[c] = sig

    def signed(self, survivors: tuple[int, ...]) -> tuple[tuple[int, bytes], ...]:
        """Every signature it has over this set (the corrupt clients' included), ascending by signer."""
        for c in self.corrupt:
            if c in survivors:
                self.forge(c, survivors)
        return tuple(sorted(self.signatures.get(survivors, {}).items()))

    def ask(
        self,
        c: int,
        survivors: Iterable[int],
        *,
        alive: Iterable[int] | None = None,
        dropped: Iterable[int] | None = None,
    ) -> list[ClientMessage]:
        """Send client c an unmask request over this survivor set with every signature held over it. The
        partition defaults to the one the set implies for c (alive = live neighbours in the set)."""
        s = tuple(sorted(set(survivors)))
        live = self.client(c)._live_neighbours
        a = tuple(sorted(live & set(s))) if alive is None else tuple(sorted(set(alive)))
        d = tuple(sorted(live - set(s))) if dropped is None else tuple(sorted(set(dropped)))
        req = UnmaskRequest(self.sid, a, d, s, self.signed(s))
        replies = self.client(c).receive(req)
        self.answers.append((c, req, replies))
        return replies

    def revealed(self) -> list[int]:
        """Clients that sent an UnmaskResponse."""
        return sorted({c for c, _, replies in self.answers if any(isinstance(r, UnmaskResponse) for r in replies)})


def leaked(
    setup: SimulationSetup,
    corrupt: Iterable[int] = (),
    *,
    seed_reveals: Mapping[int, set[int]] | None = None,
    key_reveals: Mapping[int, set[int]] | None = None,
) -> list[int]:
    """Honest clients whose masked input the adversary (server plus corrupt clients) can fully unmask.

    A secret of owner o is known once t shares of it are: the shares honest clients revealed, plus every
    share a corrupt client holds (o's neighbours it shared to). A pairwise seed s_vw is known if either mask
    key is, or w is corrupt. Client v leaks if its masked input arrived, its self-mask seed is known and so
    is every pairwise seed with the live neighbours it masked with. The reveals are what each honest client
    really revealed (its `revealed_*_owners`) unless given (to evaluate a plan).
    """
    cfg = setup.config
    bad = set(corrupt)
    clients = setup.clients
    honest = [c for c in cfg.participants if c not in bad]
    seeds = seed_reveals if seed_reveals is not None else {c: clients[c].revealed_seed_owners for c in honest}
    keys = key_reveals if key_reveals is not None else {c: clients[c].revealed_key_owners for c in honest}

    def known(owner: int, reveals: Mapping[int, set[int]]) -> bool:
        holders = clients[owner]._neighbours
        count = sum(1 for h in honest if owner in reveals.get(h, set())) + len(bad & holders)
        return count >= cfg.t

    def key_known(o: int) -> bool:
        return o in bad or known(o, keys)

    out = []
    for v in honest:
        if v not in setup.server._complete:
            continue
        if known(v, seeds) and all(w in bad or key_known(v) or key_known(w) for w in clients[v]._live_neighbours):
            out.append(v)
    return out


def plan_reveals(
    setup: SimulationSetup, requests: Mapping[int, tuple[int, ...]]
) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """What each client would reveal if it answered an unmask request over the set assigned to it (alive =
    its live neighbours in the set), as an old rule of ">= t signatures over the set you signed" allowed."""
    seeds: dict[int, set[int]] = {}
    keys: dict[int, set[int]] = {}
    for c, s in requests.items():
        live = setup.clients[c]._live_neighbours
        seeds[c] = (live & set(s)) | {c}
        keys[c] = set(live - set(s))
    return seeds, keys


def frozen_states(setup: SimulationSetup) -> dict[int, ClientState]:
    """The state of every client (tests check that the frozen round held them in MASKED)."""
    return {c: s.state for c, s in setup.clients.items()}


def with_policy(policy: ClientPolicy, **changes: object) -> ClientPolicy:
    """A copy of a policy with some fields changed."""
    return dataclasses.replace(policy, **changes)  # type: ignore[arg-type]
