"""The aggregation server over gRPC: silos dial in on a bidirectional stream, mutual TLS names them.

The server never connects to a silo. Each silo opens `Aggregator.Participate`; the silo id is the roster
entry whose certificate identity equals the common name of the silo's verified client certificate, never a
field the silo sends. One coordinator thread runs the rounds: it drives a `ServerSession` (the same sans-IO
session the in-process simulator drives) with the messages the stream readers queue, and puts the
session's replies on each silo's outgoing queue. Stage deadlines use a monotonic clock. A silo whose
stream breaks is a dropout of the round in progress; a message that does not decode ends that silo's
stream with INVALID_ARGUMENT and changes nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from secagg.crypto.rng import RandomSource
from secagg.deploy._files import atomic_write
from secagg.deploy.config import ServerConfig
from secagg.errors import ConfigurationError, EncodingError, RoundAborted
from secagg.exclusion import ExclusionList
from secagg.protocol import recipes
from secagg.protocol.codes import AbortCode, AuditEvent
from secagg.protocol.config import Mode, RoundConfig
from secagg.protocol.messages import ClientAbort, ClientMessage
from secagg.protocol.rules import SERVER_STAGE, Stage
from secagg.protocol.server import AggregateResult, Audit, Send, ServerSession
from secagg.transport import wire
from secagg.transport._generated import secagg_pb2 as pb
from secagg.transport._generated import secagg_pb2_grpc as pb_grpc

log = logging.getLogger("secagg.server")

INSECURE_ID_HEADER = "x-secagg-silo-id"
"""With an explicit insecure server only (local experiments), the silo names itself in this header."""


@dataclass
class RoundOutcome:
    """What one round produced: the aggregate, or the typed reason it aborted."""

    round: int
    result: AggregateResult | None
    error: RoundAborted | None
    seconds: float
    participants: tuple[int, ...] = ()
    blamed: dict[int, str] = dataclasses.field(default_factory=dict)
    """Silos the round named as the cause of a failure (ServerSession.blamed)."""
    benched: tuple[int, ...] = ()
    """Silos benched after this round (not invited again until reinstated)."""


class _Conn:
    """One silo's live stream: an outgoing queue and a generation number (a reconnect is a new one)."""

    def __init__(self, silo: int, generation: int) -> None:
        self.silo = silo
        self.generation = generation
        self.outbox: queue.Queue[pb.ServerEnvelope | None] = queue.Queue()
        self.closed = threading.Event()


_CLOSED = "closed"

INBOX_SLACK_BYTES = 1 << 20
"""The inbox holds at most 4 x max_message_bytes + this of encoded messages by default (AggregationServer)."""

_Event = tuple[int, int, ClientMessage | str]  # (silo, stream generation, message or _CLOSED)


class _Inbox:
    """The stream events waiting for the coordinator, bounded by the encoded size of the messages in it.

    A stream's reader reserves a message's encoded size before decoding it and waits while the reservations
    (messages being decoded or queued) would pass the budget, so a flood blocks that silo's stream (gRPC's flow
    control then stops its sender) instead of filling memory; the coordinator gives the bytes back as it takes
    each message. Reservations are granted in the order they were asked for (no large message waits forever
    behind small ones), and one message larger than the budget is let in alone. Events are taken in the order
    they were queued; each silo's messages are queued by its one reader thread, so they stay in order."""

    def __init__(self, budget: int, stopping: threading.Event) -> None:
        self.budget = budget
        self._stopping = stopping
        self._cond = threading.Condition()
        self._events: deque[tuple[_Event, int]] = deque()
        self._turns: deque[object] = deque()  # reservations waiting, first come first served
        self.used = 0  # bytes reserved: messages being decoded and queued
        self.peak = 0  # the most bytes ever reserved at once

    def reserve(self, size: int) -> bool:
        """Wait until `size` more bytes fit in the budget and take them; False once the server stops."""
        turn = object()
        with self._cond:
            self._turns.append(turn)
            try:
                while self._turns[0] is not turn or (self.used and self.used + size > self.budget):
                    if self._stopping.is_set():
                        return False
                    self._cond.wait(0.1)
                self.used += size
                self.peak = max(self.peak, self.used)
                return True
            finally:
                self._turns.remove(turn)
                self._cond.notify_all()

    def release(self, size: int) -> None:
        """Give back a reservation whose message will not be queued (it did not decode)."""
        with self._cond:
            self.used -= size
            self._cond.notify_all()

    def put(self, event: _Event, size: int) -> None:
        """Queue an event whose `size` bytes were reserved."""
        with self._cond:
            self._events.append((event, size))
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> _Event:
        """The oldest event (waiting up to timeout; queue.Empty if none came), its bytes given back."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._events, timeout):
                raise queue.Empty
            event, size = self._events.popleft()
            self.used -= size
            self._cond.notify_all()
            return event

    def get_nowait(self) -> _Event:
        return self.get(0)

    def __len__(self) -> int:
        with self._cond:
            return len(self._events)


class AggregationServer:
    """A gRPC aggregation server running `config.rounds` SecAgg+ rounds among the silos that dial in."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        rng: RandomSource,
        audit: Callable[[Audit, int], None] | None = None,
        model_hash: Callable[[int], bytes] | None = None,
        clock: Callable[[], float] = time.monotonic,
        first_round: int = 0,
        on_round_start: Callable[[int], None] | None = None,
        fault_exit_at: Stage | None = None,
        inbox_bytes: int | None = None,
    ) -> None:
        tls = config.tls
        if not tls.insecure and (tls.cert is None or tls.key is None):
            raise ConfigurationError("TLS certificate and key are required (or an explicit insecure = true)")
        if not tls.insecure and tls.client_ca is None:
            raise ConfigurationError("mutual TLS needs a client CA (scenario D3): refusing to start")
        self.config = config
        self._identity_keys = config.roster.identity_keys()
        self._rng = rng
        self._audit = audit
        self._model_hash = model_hash
        self._clock = clock
        self._first_round = first_round
        self._on_round_start = on_round_start
        self._fault_exit_at = fault_exit_at  # test hook: SIGKILL this process when this stage opens
        self._lock = threading.Lock()
        self._conns: dict[int, _Conn] = {}
        self._generation = 0
        self._serving = False
        self._stopping = threading.Event()
        # the encoded bytes of the messages being decoded or waiting for the coordinator (SPEC 13.4)
        budget = 4 * config.max_message_bytes + INBOX_SLACK_BYTES if inbox_bytes is None else inbox_bytes
        self._inbox = _Inbox(budget, self._stopping)
        self._server: grpc.Server | None = None
        self._session: ServerSession | None = None
        self.port: int | None = None
        self.outcomes: list[RoundOutcome] = []
        self._tasks: dict[bytes, bytes] = {}  # digest -> encoded task, the few most recent

    # ------------------------------------------------------------------ tasks

    def publish_task(self, encoded: bytes) -> bytes:
        """Make a round's task available to FetchTask; returns its digest (the round's model_hash)."""
        digest = recipes.task_digest(encoded)
        with self._lock:
            self._tasks[digest] = encoded
            while len(self._tasks) > 4:
                self._tasks.pop(next(iter(self._tasks)))
        return digest

    def _task(self, digest: bytes) -> bytes | None:
        with self._lock:
            return self._tasks.get(digest)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        cfg = self.config
        n_silos = len(cfg.roster)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2 * n_silos + 8, thread_name_prefix="secagg-grpc"),
            options=[
                ("grpc.max_receive_message_length", cfg.max_message_bytes),
                ("grpc.max_send_message_length", cfg.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        add_servicer(_Servicer(self), server)
        tls = cfg.tls
        try:  # grpcio raises RuntimeError when it cannot bind (older versions returned 0)
            if tls.insecure:
                log.warning("INSECURE: serving without TLS; silos name themselves. For local experiments only.")
                port = server.add_insecure_port(cfg.listen)
            else:
                assert tls.key is not None and tls.cert is not None and tls.client_ca is not None
                creds = grpc.ssl_server_credentials(
                    [(tls.key.read_bytes(), tls.cert.read_bytes())],
                    root_certificates=tls.client_ca.read_bytes(),
                    require_client_auth=True,
                )
                port = server.add_secure_port(cfg.listen, creds)
        except RuntimeError:
            port = 0
        if port == 0:
            raise ConfigurationError(f"cannot listen on {cfg.listen}")
        server.start()
        self._server = server
        self._serving = True
        self.port = port
        log.info("listening on %s (port %d), %s", cfg.listen, port, "insecure" if tls.insecure else "mutual TLS")
        return int(port)

    def stop(self, grace: float = 2.0) -> None:
        """Drain: report NOT_SERVING, abort a round in progress (silos erase their secrets), stop."""
        self._serving = False
        self._stopping.set()
        session = self._session
        if session is not None:
            with self._lock:
                self._dispatch(session.abort(AbortCode.SERVER_SHUTDOWN, "the server is shutting down"), -1)
        with self._lock:
            for conn in self._conns.values():
                conn.outbox.put(None)
        if self._server is not None:
            self._server.stop(grace).wait()

    @property
    def serving(self) -> bool:
        """Health: True while accepting silos and running rounds."""
        return self._serving

    # ------------------------------------------------------------------ streams (called by the servicer)

    def _attach(self, silo: int) -> _Conn:
        with self._lock:
            old = self._conns.get(silo)
            self._generation += 1
            conn = _Conn(silo, self._generation)
            self._conns[silo] = conn
        if old is not None:  # a reconnect replaces the old stream (C10: it cannot rejoin the round)
            old.outbox.put(None)
            self._post((silo, old.generation, _CLOSED))
        log.info("silo %d connected", silo)
        return conn

    def _detach(self, conn: _Conn) -> None:
        with self._lock:
            if self._conns.get(conn.silo) is conn:
                del self._conns[conn.silo]
        conn.closed.set()
        self._post((conn.silo, conn.generation, _CLOSED))
        log.info("silo %d disconnected", conn.silo)

    def _post(self, item: _Event) -> None:
        """Queue a stream event without a message (a departure) for the coordinator, in turn after the
        reservations asked for before it; gives up once the server stops, when nobody reads the inbox any more."""
        if self._inbox.reserve(0):
            self._inbox.put(item, 0)

    def _receive(self, conn: _Conn, raw: bytes) -> bool:
        """Decode a silo's message and queue it for the coordinator, its encoded size reserved in the inbox
        first (blocking while the inbox is full: backpressure on this silo's stream). EncodingError if it does
        not decode; False once the server stops."""
        size = len(raw)
        if not self._inbox.reserve(size):
            return False
        try:
            msg = wire.decode_client(raw)  # a masked chunk is read in place
        except BaseException:
            self._inbox.release(size)
            raise
        self._inbox.put((conn.silo, conn.generation, msg), size)
        return True

    def _connected(self) -> list[int]:
        with self._lock:
            return sorted(self._conns)

    # ------------------------------------------------------------------ rounds

    def run(self) -> list[RoundOutcome]:
        """Run the configured number of rounds (blocking). Returns their outcomes."""
        for r in range(self._first_round, self._first_round + self.config.rounds):
            if self._stopping.is_set():
                break
            self.outcomes.append(self.run_round(r))
        return self.outcomes

    def _wait_for_silos(self, exclusions: ExclusionList) -> list[int]:
        """The connected silos that are not benched, once min_silos of them are (or the connect deadline
        passed); benched silos lower what can be waited for, so a round does not wait for them."""
        cfg = self.config
        need = min(cfg.min_silos, len(cfg.roster) - len(exclusions.benched))
        deadline = self._clock() + cfg.deadlines.connect
        while self._clock() < deadline and not self._stopping.is_set():
            # no round runs: what streams queued (departures, stray messages) concerns no session; drop it,
            # or once the bounded queue is full every stream thread blocks and no silo can attach again
            self._drain_inbox()
            if len(exclusions.eligible(self._connected())) >= need:
                break
            time.sleep(0.02)
        return exclusions.eligible(self._connected())

    def _drain_inbox(self) -> None:
        while True:
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                return

    def _round_config(self, r: int, participants: list[int], overrides: dict[str, Any], benched: int) -> RoundConfig:
        model_hash = self._model_hash(r) if self._model_hash else bytes(32)
        config = self.config.round_config(r, participants, self._rng.random_bytes(32), model_hash, benched)
        return dataclasses.replace(config, **overrides) if overrides else config

    def run_round(self, r: int, **overrides: Any) -> RoundOutcome:
        """One round among the silos connected now (at least min_silos, within the connect timeout).

        overrides replace fields of the round's configuration (e.g. dim, clip, model_hash for a published
        task); the result is validated like any RoundConfig.
        """
        t0 = time.perf_counter()
        if self._on_round_start is not None:
            self._on_round_start(r)
        exclusions = self._exclusions()
        participants = self._wait_for_silos(exclusions)
        for silo in sorted(set(self._connected()) - set(participants)):
            b = exclusions.benched[silo]
            log.warning(
                "round %d: silo %d stays benched (since round %d: %s); to let it back: secagg exclusions "
                "--config <server.toml> --reinstate %d",
                r,
                silo,
                b.round,
                b.reason,
                silo,
            )
        try:
            config = self._round_config(r, participants, overrides, len(exclusions.benched))
        except ConfigurationError as exc:
            err = RoundAborted(
                AbortCode.TOO_FEW_CLIENTS, f"cannot start round {r} with {len(participants)} silos: {exc}"
            )
            self._record(Audit(AuditEvent.ROUND_NOT_STARTED, None, str(err)), r)
            log.error("%s", err)
            return RoundOutcome(r, None, err, time.perf_counter() - t0, tuple(participants))
        session = ServerSession(
            config,
            roster=self._identity_keys if config.mode is Mode.HARDENED else None,
            timeouts=self.config.deadlines.stage_timeouts(),
            staging_budget_bytes=self.config.staging_budget_bytes,
            corrupt_fraction=self.config.protocol.corrupt_fraction,
        )
        # generations of the streams taking part: a message from an older stream of a silo is stale
        with self._lock:
            generations = {c: self._conns[c].generation for c in participants if c in self._conns}
        self._session = session
        log.info("round %d: %d silos, mode %s, k=%d, t=%d", r, config.n, config.mode.value, config.k, config.t)
        with self._lock:
            self._dispatch(session.start(self._clock()), r)
        while not self._stopping.is_set() and session.result is None and session.error is None:
            timeout = max(0.0, min(session.deadline - self._clock(), 0.5))
            try:
                silo, gen, item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                with self._lock:
                    self._dispatch(session.poll(self._clock()), r)
                continue
            if generations.get(silo) != gen:
                continue  # from a stream that is not part of this round
            now = self._clock()
            message = ClientAbort(AbortCode.DISCONNECTED, "stream closed") if item == _CLOSED else item
            assert not isinstance(message, str)
            with self._lock:
                self._dispatch(session.receive(silo, message, now), r)
                self._dispatch(session.poll(self._clock()), r)
        if session.result is None and session.error is None:  # stopping: stop() may not have aborted it yet
            with self._lock:
                self._dispatch(session.abort(AbortCode.SERVER_SHUTDOWN, "the server is shutting down"), r)
        self._session = None
        benched = tuple(exclusions.record(r, session.blamed))
        if session.blamed:
            self._save_exclusions(exclusions)
        for silo in benched:
            reason = session.blamed[silo]
            self._record(Audit(AuditEvent.SILO_BENCHED, silo, f"strikes={exclusions.counts[silo]}: {reason}"[:200]), r)
            log.error(
                "round %d: silo %d benched after %d strike(s) (%s); it is not invited again until "
                "`secagg exclusions --config <server.toml> --reinstate %d`",
                r,
                silo,
                exclusions.counts[silo],
                reason,
                silo,
            )
        outcome = RoundOutcome(
            r,
            session.result,
            session.error,
            time.perf_counter() - t0,
            config.participants,
            dict(session.blamed),
            benched,
        )
        self._write_outcome(config, outcome)
        return outcome

    def _exclusions(self) -> ExclusionList:
        """The exclusion list as on disk now (an operator may have reinstated a silo since the last round)."""
        path = self.config.exclusion_path
        try:
            text = path.read_text()
        except FileNotFoundError:
            return ExclusionList(strikes=self.config.exclusion_strikes)
        return ExclusionList.from_json(text, strikes=self.config.exclusion_strikes)

    def _save_exclusions(self, exclusions: ExclusionList) -> None:
        atomic_write(self.config.exclusion_path, exclusions.to_json().encode(), mode=0o644)

    def _dispatch(self, events: list[Audit | Send], r: int) -> None:
        """Send messages to their silos' queues, write audit records. Called with the lock held."""
        session = self._session
        fault = self._fault_exit_at
        if fault is not None and session is not None and SERVER_STAGE.get(session.state) == fault:
            log.warning("fault injection: the server dies as stage %s opens", fault.value)
            os.kill(os.getpid(), signal.SIGKILL)
        for ev in events:
            if isinstance(ev, Audit):
                self._record(ev, r)
                continue
            conn = self._conns.get(ev.to)
            if conn is not None:
                conn.outbox.put(wire.server_to_proto(ev.message))

    def _record(self, ev: Audit, r: int) -> None:
        if self._audit is not None:
            self._audit(ev, r)
        log.debug("audit round=%d %s client=%s stage=%s %s", r, ev.event, ev.client, ev.stage, ev.detail)

    def _write_outcome(self, config: RoundConfig, outcome: RoundOutcome) -> None:
        out_dir = self.config.output_dir
        res = outcome.result
        summary: dict[str, Any] = {
            "run_id": config.run_id,
            "round": config.round,
            "participants": list(config.participants),
            "k": config.k,
            "t": config.t,
            "mode": config.mode.value,
            "dim": config.dim,
            "seconds": round(outcome.seconds, 6),
            "ok": res is not None,
            "blamed": {str(c): why for c, why in sorted(outcome.blamed.items())},
            "benched": list(outcome.benched),
        }
        if res is not None:
            summary.update(
                session_id=res.session_id.hex(),
                survivors=list(res.survivors),
                dropped=list(res.dropped),
                total_weight=res.total_weight,
            )
            log.info("round %d: aggregate of %d silos in %.3f s", config.round, len(res.survivors), outcome.seconds)
        else:
            err = outcome.error
            summary.update(error_code=getattr(err, "code", None), error=str(err))
            log.warning("round %d aborted: %s", config.round, err)
        if out_dir is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if res is not None:
            np.save(out_dir / f"round-{config.round}.sum.npy", res.sum)
            if config.encoding == "quantised":  # decoded block by block into the file: no second model in memory
                _write_mean(out_dir / f"round-{config.round}.mean.npy", res)
        (out_dir / f"round-{config.round}.json").write_text(json.dumps(summary, indent=2) + "\n")


def _write_mean(path: Path, res: AggregateResult, block: int = 1 << 20) -> None:
    """Write the aggregate's mean as a float32 .npy file, decoding one block at a time."""
    n = res.sum.shape[0]
    buf = np.empty(min(block, max(n, 1)), dtype=np.float32)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            res.mean_into(buf[: hi - lo], lo)
            f.write(buf[: hi - lo].astype("<f4", copy=False).data)  # the block itself, not a bytes copy of it


PARTICIPATE = "/secagg.v1.Aggregator/Participate"
MAX_MESSAGE_HEADER = "secagg-max-message-bytes"
"""Initial metadata of a Participate stream: the server's max_message_bytes, so silos size chunks to fit."""


def _raw(data: bytes) -> bytes:
    return data


def add_servicer(servicer: Any, server: grpc.Server) -> None:
    """Register an Aggregator servicer like the generated add_AggregatorServicer_to_server, except that
    Participate receives each ClientEnvelope serialized (bytes), for wire.decode_client to read in place."""
    generated: dict[str, tuple[Any, Any, Any]] = {
        "Health": (pb.HealthRequest, pb.HealthResponse, grpc.unary_unary_rpc_method_handler),
        "FetchTask": (pb.TaskRequest, pb.TaskChunk, grpc.unary_stream_rpc_method_handler),
    }
    handlers = {
        name: make(
            getattr(servicer, name), request_deserializer=req.FromString, response_serializer=resp.SerializeToString
        )
        for name, (req, resp, make) in generated.items()
    }
    handlers["Participate"] = grpc.stream_stream_rpc_method_handler(
        servicer.Participate, request_deserializer=_raw, response_serializer=pb.ServerEnvelope.SerializeToString
    )
    service = PARTICIPATE.split("/")[1]
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


class _Servicer(pb_grpc.AggregatorServicer):  # type: ignore[misc]
    """The gRPC face of AggregationServer."""

    def __init__(self, server: AggregationServer) -> None:
        self._server = server

    def _identify(self, context: grpc.ServicerContext) -> int:
        cfg = self._server.config
        if cfg.tls.insecure:
            meta = dict(context.invocation_metadata())
            try:
                silo = int(meta.get(INSECURE_ID_HEADER, ""))
            except ValueError:
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "insecure mode: silo id header missing")
            if cfg.roster.by_id(silo) is None:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "unknown silo")
            return silo
        names = context.auth_context().get("x509_common_name") or []
        for raw in names:
            entry = cfg.roster.by_certificate_identity(raw.decode("utf-8", "replace"))
            if entry is not None:
                return entry.id
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "client certificate not in the roster")
        raise AssertionError("unreachable")  # pragma: no cover

    def Participate(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[pb.ServerEnvelope]:
        server = self._server
        if not server.serving:
            context.abort(grpc.StatusCode.UNAVAILABLE, "server is draining")
        silo = self._identify(context)
        # the silo sizes its chunks to the smaller of its own cap and ours (a chunk over ours would be refused)
        context.send_initial_metadata(((MAX_MESSAGE_HEADER, str(server.config.max_message_bytes)),))
        conn = server._attach(silo)
        bad: list[str] = []

        def read() -> None:
            try:
                raw: bytes | None
                for raw in request_iterator:
                    try:
                        if not server._receive(conn, raw):
                            return  # the server stops
                    except EncodingError as exc:
                        bad.append(str(exc))
                        conn.outbox.put(None)
                        return
                    raw = None  # not held while the next message is awaited (the inbox no longer counts it)
            except grpc.RpcError:
                pass
            finally:
                conn.outbox.put(None)

        reader = threading.Thread(target=read, name=f"secagg-read-{silo}", daemon=True)
        reader.start()
        context.add_callback(lambda: conn.outbox.put(None))
        try:
            while True:
                env = conn.outbox.get()
                if env is None:
                    break
                yield env
        finally:
            server._detach(conn)
        if bad:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed message: {bad[0]}"[:200])

    def FetchTask(  # noqa: N802 - gRPC method name
        self, request: pb.TaskRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TaskChunk]:
        self._identify(context)  # only rostered silos may read a round's task
        blob = self._server._task(bytes(request.task_hash))
        if blob is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such task")
            return
        step = max(1024, self._server.config.max_message_bytes // 2)
        for start in range(0, len(blob), step):
            yield pb.TaskChunk(data=blob[start : start + step], total_bytes=len(blob))

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:  # noqa: N802
        status = pb.HealthResponse.SERVING if self._server.serving else pb.HealthResponse.NOT_SERVING
        return pb.HealthResponse(status=status, wire_version=1)
