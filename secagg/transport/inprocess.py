"""In-process transport: N client sessions and a server session wired through a fake network.

Used by simulations, tests and benchmarks. It drives the same sans-IO sessions the gRPC transport drives;
the clock is simulated (a stage closes at its deadline when some clients never answer), so runs are
deterministic. Hooks inject dropouts at any stage and let adversarial tests rewrite, drop or duplicate
any message in flight.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from secagg.protocol.client import ClientSession
from secagg.protocol.messages import (
    ClientMessage,
    ConsistencyRequest,
    KeysBroadcast,
    ServerMessage,
    SetupRequest,
    SharesDelivery,
    UnmaskRequest,
    encode_message,
)
from secagg.protocol.rules import TERMINAL_SERVER, Stage
from secagg.protocol.server import Audit, Send, ServerSession

REPLY_STAGE: dict[type, Stage] = {
    SetupRequest: Stage.ADVERTISE_KEYS,
    KeysBroadcast: Stage.SHARE_KEYS,
    SharesDelivery: Stage.MASKED_INPUT,
    ConsistencyRequest: Stage.CONSISTENCY_CHECK,
    UnmaskRequest: Stage.UNMASK,
}
"""The stage whose reply a server message asks for: a client 'dropped at stage S' never sends that reply."""

ToClientHook = Callable[[int, ServerMessage], ServerMessage | list[ServerMessage] | None]
ToServerHook = Callable[[int, ClientMessage], ClientMessage | list[ClientMessage] | None]


@dataclass
class RoundRun:
    """What happened in one in-process round: transcript, audit trail, timings, and the endpoints."""

    server: ServerSession
    clients: dict[int, ClientSession]
    audit: list[Audit] = field(default_factory=list)
    transcript: list[tuple[str, int, bytes]] = field(default_factory=list)
    client_seconds: dict[str, float] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)
    messages: int = 0

    @property
    def ok(self) -> bool:
        """True if the server produced an aggregate."""
        return self.server.result is not None


class InProcessNetwork:
    """Delivers messages between one ServerSession and its ClientSessions, in FIFO order.

    drop_at: client id -> the stage at which it stops answering (it receives the request, sends nothing,
    and never hears from the round again). to_client / to_server: optional hooks that see every message in
    flight and return it, a replacement, a list (duplicates), or None (lost).
    """

    def __init__(
        self,
        server: ServerSession,
        clients: Mapping[int, ClientSession],
        *,
        drop_at: Mapping[int, Stage] | None = None,
        to_client: ToClientHook | None = None,
        to_server: ToServerHook | None = None,
        record_transcript: bool = False,
        max_steps: int = 10_000_000,
    ) -> None:
        self.server = server
        self.clients = dict(clients)
        self.drop_at = dict(drop_at or {})
        self.to_client = to_client
        self.to_server = to_server
        self.record = record_transcript
        self.max_steps = max_steps
        self.gone: set[int] = set()
        self.now = 0.0

    def run(self) -> RoundRun:
        """Run the round to its end (aggregate or abort)."""
        run = RoundRun(self.server, self.clients)
        stage_of_server = "setup"
        t0 = time.perf_counter()
        pending: deque[Audit | Send] = deque(self.server.start(self.now))
        run.server_seconds[stage_of_server] = time.perf_counter() - t0
        steps = 0
        while True:
            while pending:
                steps += 1
                if steps > self.max_steps:
                    raise RuntimeError("in-process round did not terminate")
                ev = pending.popleft()
                if isinstance(ev, Audit):
                    run.audit.append(ev)
                    continue
                pending.extend(self._deliver(run, ev))
            if self.server.state in TERMINAL_SERVER:
                break
            # nobody has anything left to say: time passes until the current stage's deadline
            self.now = max(self.now, self.server.deadline)
            t0 = time.perf_counter()
            closing = self.server.state.value
            pending.extend(self.server.poll(self.now))
            _add(run.server_seconds, closing, time.perf_counter() - t0)
        return run

    def _deliver(self, run: RoundRun, ev: Send) -> list[Audit | Send]:
        cid, message = ev.to, ev.message
        client = self.clients.get(cid)
        if client is None or cid in self.gone:
            return []
        stage = REPLY_STAGE.get(type(message))
        if stage is not None and self.drop_at.get(cid) == stage:
            self.gone.add(cid)
            return []
        delivered = self._hook(self.to_client, cid, message)
        out: list[Audit | Send] = []
        for msg in delivered:
            run.messages += 1
            if self.record:
                run.transcript.append(("to-client", cid, encode_message(msg)))
            key = stage.value if stage else type(msg).__name__
            t0 = time.perf_counter()
            # a ClientSession streams its masked input lazily; stand-ins (tests' wrappers) get its plain form
            lazy = isinstance(client, ClientSession)
            replies = iter(client.receive(msg, lazy=True) if lazy else client.receive(msg))
            _add(run.client_seconds, key, time.perf_counter() - t0)
            while True:
                t0 = time.perf_counter()
                reply = next(replies, None)  # a masked-input chunk is masked now, as it is taken: client time
                _add(run.client_seconds, key, time.perf_counter() - t0)
                if reply is None:
                    break
                for r in self._hook(self.to_server, cid, reply):
                    run.messages += 1
                    if self.record:
                        run.transcript.append(("to-server", cid, encode_message(r)))
                    t0 = time.perf_counter()
                    closing = self.server.state.value
                    out.extend(self.server.receive(cid, r, self.now))
                    _add(run.server_seconds, closing, time.perf_counter() - t0)
        return out

    @staticmethod
    def _hook(hook: Any, cid: int, message: Any) -> list[Any]:
        if hook is None:
            return [message]
        res = hook(cid, message)
        if res is None:
            return []
        return list(res) if isinstance(res, list) else [res]


def _add(d: dict[str, float], key: str, seconds: float) -> None:
    d[key] = d.get(key, 0.0) + seconds
