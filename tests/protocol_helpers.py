"""Small helpers for protocol scenario tests: build a round, record the wire, assert precise outcomes.

`play(setup, to_client=..., to_server=...)` runs a round through the in-process network and returns the
run plus a `Wire` recording what every client actually received (after the to_client hook) and what it
actually sent (before the to_server hook). The `assert_*` helpers state the outcomes of scenarios.md:
an ABORT/REFUSE that lets no share leave the client, and a CONTINUE with the exact sum over exactly the
stated survivors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from secagg.errors import PolicyRefusal, RoundAborted
from secagg.protocol import recipes
from secagg.protocol.client import ClientSession
from secagg.protocol.config import Mode, RoundConfig
from secagg.protocol.messages import (
    ClientAbort,
    ClientMessage,
    KeyAdvertisement,
    KeysBroadcast,
    MaskedInputChunk,
    ServerMessage,
    ShareKeys,
    UnmaskResponse,
)
from secagg.protocol.rules import ClientState
from secagg.simulation import SimulationSetup, build, expected_sum, make_config, run
from secagg.transport.inprocess import RoundRun

M = TypeVar("M")

ToClient = Callable[[int, ServerMessage], ServerMessage | list[ServerMessage] | None]
ToServer = Callable[[int, ClientMessage], ClientMessage | list[ClientMessage] | None]

# Curve25519 points of small order (u-coordinates, little-endian), including non-canonical encodings
# (u >= p) and the ignored top bit set: X25519 with any of them yields the all-zero shared secret.
_P25519 = 2**255 - 19
_LOW_ORDER_U = (
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    _P25519 - 1,
    _P25519,
    _P25519 + 1,
)
LOW_ORDER_KEYS: tuple[bytes, ...] = (
    *(u.to_bytes(32, "little") for u in _LOW_ORDER_U),
    (1 | 1 << 255).to_bytes(32, "little"),
)
"""All-zero and low-order X25519 public keys (the first is all-zero)."""


def round_config(
    n: int,
    *,
    dim: int = 5,
    mode: Mode = Mode.SEMI_HONEST,
    k: int | None = None,
    t: int | None = None,
    seed: int = 0,
    **changes: Any,
) -> RoundConfig:
    """Clients 1..n, complete graph unless k is given, threshold t (default: the smallest the mode allows)."""
    base = make_config(n, dim, mode=mode, seed=seed)
    k = n - 1 if k is None else k
    if t is None:
        t = (k + 1) // 2 + 1 if mode is Mode.HARDENED else 2
    return dataclasses.replace(base, k=k, t=t, **changes)


def new_round(config: RoundConfig, *, seed: int = 0, **kwargs: Any) -> SimulationSetup:
    """Clients with seeded random inputs and a server for config (see secagg.simulation.build)."""
    return build(config, seed=seed, **kwargs)


@dataclass
class Wire:
    """What each client received (after the to_client hook) and sent (before the to_server hook)."""

    received: list[tuple[int, ServerMessage]] = field(default_factory=list)
    sent: list[tuple[int, ClientMessage]] = field(default_factory=list)

    def sent_by(self, client: int, kind: type[M] | None = None) -> list[Any]:
        """Messages client sent, optionally only those of one type."""
        return [m for c, m in self.sent if c == client and (kind is None or isinstance(m, kind))]

    def received_by(self, client: int, kind: type[M] | None = None) -> list[Any]:
        """Messages client received, optionally only those of one type."""
        return [m for c, m in self.received if c == client and (kind is None or isinstance(m, kind))]


def play(
    setup: SimulationSetup, *, to_client: ToClient | None = None, to_server: ToServer | None = None
) -> tuple[RoundRun, Wire]:
    """Run the round with optional rewriting hooks (the lying server) and record the wire."""
    wire = Wire()

    def _to_client(cid: int, msg: ServerMessage) -> list[ServerMessage]:
        out = _as_list(to_client(cid, msg) if to_client is not None else msg)
        wire.received.extend((cid, m) for m in out)
        return out

    def _to_server(cid: int, msg: ClientMessage) -> list[ClientMessage]:
        wire.sent.append((cid, msg))
        return _as_list(to_server(cid, msg) if to_server is not None else msg)

    return run(setup, to_client=_to_client, to_server=_to_server), wire


def _as_list(res: M | list[M] | None) -> list[M]:
    if res is None:
        return []
    return list(res) if isinstance(res, list) else [res]


def deliver(client: ClientSession, message: ServerMessage, wire: Wire | None = None) -> list[ClientMessage]:
    """Hand one server message straight to a client (recording it and the replies on wire, if given)."""
    replies = client.receive(message)
    if wire is not None:
        wire.received.append((client.client_id, message))
        wire.sent.extend((client.client_id, r) for r in replies)
    return replies


def resigned_broadcast(
    msg: KeysBroadcast, replace: dict[int, KeyAdvertisement], *, keep_session_id: bool = False
) -> KeysBroadcast:
    """A keys broadcast with some advertisements replaced and (unless asked) the session id recomputed,
    as a careful liar would do so that the client's session-id check alone does not catch it."""
    ads = tuple(replace.get(a.client_id, a) for a in msg.advertisements)
    sid = msg.session_id if keep_session_id else recipes.session_id(msg.round_tag, ads)
    return KeysBroadcast(msg.round_tag, sid, ads)


def assert_no_share_left(client: ClientSession, wire: Wire | None = None) -> None:
    """The client revealed no Shamir share in the unmask stage (none recorded, no UnmaskResponse sent)."""
    assert client.revealed_seed_owners == set()
    assert client.revealed_key_owners == set()
    if wire is not None:
        assert wire.sent_by(client.client_id, UnmaskResponse) == []


def assert_aborted(
    client: ClientSession,
    code: str,
    wire: Wire | None = None,
    *,
    refusal: bool = False,
    shares_may_have_left: bool = False,
) -> None:
    """ABORT (or REFUSE with refusal=True): the precise code, a ClientAbort naming it as the client's last
    message, round secrets erased, and (unless stated otherwise) no unmask share revealed."""
    assert client.state is ClientState.ABORTED
    assert type(client.error) is (PolicyRefusal if refusal else RoundAborted), repr(client.error)
    assert client.error.code == code, str(client.error)
    assert not client.holds_round_secrets
    if wire is not None:
        sent = wire.sent_by(client.client_id)
        assert sent and isinstance(sent[-1], ClientAbort), sent[-1:]
        assert sent[-1].code == code
        assert len(wire.sent_by(client.client_id, ClientAbort)) == 1
    if not shares_may_have_left:
        assert_no_share_left(client, wire)


def assert_nothing_sent_after_setup(client: int, wire: Wire) -> None:
    """The client sent no key shares and no masked input (it stopped before the ShareKeys stage)."""
    assert wire.sent_by(client, ShareKeys) == []
    assert wire.sent_by(client, MaskedInputChunk) == []


def assert_exact_sum(setup: SimulationSetup, survivors: Iterable[int]) -> None:
    """CONTINUE: the server's aggregate is the exact ring sum over exactly these survivors."""
    server = setup.server
    assert server.error is None, str(server.error)
    assert server.result is not None
    want_ids = tuple(sorted(survivors))
    assert server.result.survivors == want_ids
    want, total = expected_sum(setup, want_ids)
    assert np.array_equal(server.result.sum, want)
    assert server.result.total_weight == total


def assert_server_aborted(setup: SimulationSetup, code: str) -> None:
    """The server produced no aggregate and stopped with this code."""
    assert setup.server.result is None
    assert setup.server.error is not None
    assert setup.server.error.code == code, str(setup.server.error)


def never_both_shares(clients: Iterable[ClientSession]) -> None:
    """No client revealed both the self-mask seed share and the mask-key share of any one peer."""
    for c in clients:
        both = c.revealed_seed_owners & c.revealed_key_owners
        assert not both, f"client {c.client_id} revealed both shares of {sorted(both)}"
