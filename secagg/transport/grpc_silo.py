"""A silo over gRPC: dials out to the aggregation server (mutual TLS) and runs one ClientSession per round.

Silos sit behind firewalls that allow only outbound connections, so the silo opens the stream and keeps it
open; the server sends each stage's request on it. A broken stream ends the round in progress for this
silo (its round secrets are dropped with the session) and the silo reconnects with exponential backoff.
Masked-input chunks are masked and converted to protobuf one at a time as gRPC pulls them, so memory stays
about the model's size plus a chunk, and masking chunk i+1 overlaps sending chunk i.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from secagg.crypto.keys import IdentityKey
from secagg.crypto.rng import DeterministicRandom, RandomSource, SystemRandom
from secagg.deploy.config import DEFAULT_CHUNK_ELEMS, MESSAGE_OVERHEAD_BYTES, SiloConfig
from secagg.errors import ConfigurationError, EncodingError
from secagg.protocol.client import ClientInput, ClientSession, MaskedChunks
from secagg.protocol.codes import AbortCode
from secagg.protocol.config import RoundConfig
from secagg.protocol.ledger import ContributionLedger
from secagg.protocol.messages import ClientMessage, RoundComplete, ServerAbort, SetupRequest
from secagg.protocol.rules import ClientState, Stage
from secagg.transport import wire
from secagg.transport._generated import secagg_pb2 as pb
from secagg.transport._generated import secagg_pb2_grpc as pb_grpc
from secagg.transport.grpc_server import INSECURE_ID_HEADER, MAX_MESSAGE_HEADER, PARTICIPATE
from secagg.transport.inprocess import REPLY_STAGE

log = logging.getLogger("secagg.silo")

InputProvider = Callable[[RoundConfig], ClientInput]


@dataclass
class SiloRound:
    """What this silo saw of one round."""

    run_id: str
    round: int
    state: str
    error: str | None = None
    error_code: str | None = None
    survivors: tuple[int, ...] = ()


@dataclass
class _Stream:
    outbox: queue.Queue[ClientMessage | MaskedChunks | None] = field(default_factory=queue.Queue)


class SiloRunner:
    """Connects, takes part in rounds, reconnects; `run` returns the rounds it saw end."""

    def __init__(
        self,
        config: SiloConfig,
        *,
        inputs: InputProvider | None = None,
        ledger: ContributionLedger | None = None,
        rng: RandomSource | None = None,
        identity: IdentityKey | None = None,
        fault_exit_at: Stage | None = None,
    ) -> None:
        tls = config.tls
        if not tls.insecure and (tls.ca is None or tls.cert is None or tls.key is None):
            raise ConfigurationError("a silo needs the CA, its certificate and its key (or an explicit insecure)")
        self.config = config
        self.silo_id = config.silo_id
        self._fault_exit_at = fault_exit_at
        self._inputs: InputProvider = inputs or config.data.client_input
        self._ledger: ContributionLedger = ledger if ledger is not None else config.open_ledger()
        self._identity = identity if identity is not None else config.load_identity()
        self._policy = config.to_client_policy()
        self._chunk_elems = _chunk_elems_for(config.max_message_bytes)  # narrowed per stream to the server's cap
        seeded = config.seed is not None
        self._rng: RandomSource = rng or (DeterministicRandom(config.seed or 0) if seeded else SystemRandom())
        self._session: ClientSession | None = None
        self._chunks: MaskedChunks | None = None  # the masked input being streamed, if any
        self._live_channel: grpc.Channel | None = None
        self.rounds: list[SiloRound] = []
        self.connections = 0

    def use_inputs(self, inputs: InputProvider) -> None:
        """Replace the input provider (e.g. a federated-learning trainer that fetches each round's task)."""
        self._inputs = inputs

    def fetch_task(self, digest: bytes, timeout: float = 120.0) -> bytes:
        """Download a round's task by digest over the live connection (the caller checks the digest)."""
        channel = self._live_channel
        if channel is None:
            raise ConfigurationError("not connected to the server")
        metadata = [(INSECURE_ID_HEADER, str(self.silo_id))] if self.config.tls.insecure else None
        parts: list[bytes] = []
        total = None
        for chunk in pb_grpc.AggregatorStub(channel).FetchTask(
            pb.TaskRequest(task_hash=digest), timeout=timeout, metadata=metadata
        ):
            total = chunk.total_bytes if total is None else total
            if chunk.total_bytes != total or sum(map(len, parts)) + len(chunk.data) > total:
                raise EncodingError("task chunks inconsistent with the announced size")
            parts.append(chunk.data)
        blob = b"".join(parts)
        if total is None or len(blob) != total:
            raise EncodingError("task truncated")
        return blob

    def _channel(self) -> grpc.Channel:
        c = self.config
        chan_opts: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", c.max_message_bytes),
            ("grpc.max_send_message_length", c.max_message_bytes),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        if c.tls.insecure:
            log.warning("INSECURE: connecting without TLS. For local experiments only.")
            return grpc.insecure_channel(c.server, options=chan_opts)
        assert c.tls.ca is not None and c.tls.cert is not None and c.tls.key is not None
        chan_opts.append(("grpc.ssl_target_name_override", c.server_name))
        creds = grpc.ssl_channel_credentials(
            root_certificates=c.tls.ca.read_bytes(),
            private_key=c.tls.key.read_bytes(),
            certificate_chain=c.tls.cert.read_bytes(),
        )
        return grpc.secure_channel(c.server, creds, options=chan_opts)

    def run(self, rounds: int | None = None, stop: threading.Event | None = None) -> list[SiloRound]:
        """Take part until `rounds` rounds ended (completed or aborted), or until stop is set."""
        stop = stop or threading.Event()
        backoff = self.config.reconnect.initial_backoff
        while not stop.is_set() and (rounds is None or len(self.rounds) < rounds):
            got_message = self._connect_once(rounds, stop)
            if stop.is_set() or (rounds is not None and len(self.rounds) >= rounds):
                break
            rc = self.config.reconnect
            backoff = rc.initial_backoff if got_message else min(backoff * 2, rc.max_backoff)
            stop.wait(backoff)
        return self.rounds

    def _connect_once(self, rounds: int | None, stop: threading.Event) -> bool:
        """One connection: returns whether the server sent anything on it."""
        stream = _Stream()
        got = False
        channel = self._channel()
        self._live_channel = channel
        self.connections += 1
        metadata = [(INSECURE_ID_HEADER, str(self.silo_id))] if self.config.tls.insecure else None

        def requests() -> Iterator[bytes]:
            while True:
                item = stream.outbox.get()
                if item is None:
                    return
                if isinstance(item, MaskedChunks):
                    for chunk in item:  # masked, then serialized, as gRPC pulls it; stops if the round ends
                        yield wire.encode_client(chunk)
                else:
                    yield wire.encode_client(item)

        def watch() -> None:  # a stop request ends the request stream too
            stop.wait()
            stream.outbox.put(None)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            responses = participate(channel, raw=True)(requests(), metadata=metadata)
            self._chunk_elems = _chunk_elems_for(self.config.max_message_bytes, responses.initial_metadata())
            for raw in responses:  # serialized: _handle decodes it, refusing what costs more than its size pays for
                got = True
                self._handle(raw, stream)
                raw = None  # not held while the next message is awaited
                if stop.is_set() or (rounds is not None and len(self.rounds) >= rounds):
                    responses.cancel()
                    break
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code is not grpc.StatusCode.CANCELLED:
                log.warning("silo %d: stream ended: %s %s", self.silo_id, code, getattr(exc, "details", lambda: "")())
        finally:
            stream.outbox.put(None)
            self._live_channel = None
            channel.close()
            self._end_round(AbortCode.DISCONNECTED, "the stream to the server ended")
        return got

    def _handle(self, env: bytes | pb.ServerEnvelope, stream: _Stream) -> None:
        """Take one server message: serialized (from the stream: wire.decode_server walks it before protobuf
        parses it) or already parsed. One that does not decode ends the round in progress as MALFORMED."""
        try:
            msg = wire.decode_server(env) if isinstance(env, bytes) else wire.server_from_proto(env)
        except EncodingError as exc:
            log.warning("silo %d: malformed message from the server: %s", self.silo_id, exc)
            self._end_round(AbortCode.MALFORMED, str(exc))
            return
        if isinstance(msg, SetupRequest):
            self._end_round(AbortCode.SUPERSEDED, "a new round started")
            cfg = msg.config
            rng = self._rng
            rounding = None
            seed = self.config.seed
            if seed is not None:
                rng = DeterministicRandom(seed, label=b"secagg/v1/silo/round-%d" % cfg.round)
                rounding = DeterministicRandom(rounding_seed(seed, cfg.round), label=ROUNDING_LABEL)
            self._session = ClientSession(
                self.silo_id,
                rng=rng,
                policy=self._policy,
                identity=self._identity,
                ledger=self._ledger,
                input=self._inputs,
                chunk_elems=self._chunk_elems,
                rounding_rng=rounding,
            )
        session = self._session
        if session is None:
            return  # a stage request of a round we are not part of (e.g. we reconnected mid-round)
        if self._fault_exit_at is not None and REPLY_STAGE.get(type(msg)) == self._fault_exit_at:
            log.warning("silo %d: fault injection: dying at stage %s", self.silo_id, self._fault_exit_at.value)
            os.kill(os.getpid(), signal.SIGKILL)
        replies = session.receive(msg, lazy=True)
        if isinstance(replies, MaskedChunks):
            self._chunks = replies
            stream.outbox.put(replies)  # the request stream takes the chunks one by one
        else:
            for reply in replies:
                stream.outbox.put(reply)
        if session.state in (ClientState.DONE, ClientState.ABORTED):
            self._record(session, msg)
            self._session = None
            self._chunks = None  # the session erased its secrets: the chunks stream stops by itself

    def _record(self, session: ClientSession, last: object) -> None:
        cfg = session.config or session.proposal
        err = session.error
        survivors = last.survivors if isinstance(last, RoundComplete) else ()
        rep = SiloRound(
            run_id=cfg.run_id if cfg else "",
            round=cfg.round if cfg else -1,
            state=session.state.value,
            error=str(err) if err else None,
            error_code=getattr(err, "code", None),
            survivors=tuple(survivors),
        )
        if isinstance(last, ServerAbort):
            rep.error_code = last.code
        self.rounds.append(rep)
        log.info("silo %d: round %s ended: %s %s", self.silo_id, rep.round, rep.state, rep.error or "")

    def _end_round(self, code: str, reason: str) -> None:
        """Drop the session in progress (and with it the round's secrets)."""
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            chunks.close()  # a half-streamed masked input stops here (its masking state is dropped now)
        session = self._session
        if session is None:
            return
        self._session = None
        if session.state not in (ClientState.DONE, ClientState.ABORTED):
            cfg = session.config or session.proposal
            self.rounds.append(SiloRound(cfg.run_id if cfg else "", cfg.round if cfg else -1, "aborted", reason, code))
            log.info("silo %d: round abandoned: %s", self.silo_id, reason)


def _raw(data: bytes) -> bytes:
    return data


def _chunk_elems_for(own_max: int, server_metadata: Iterable[tuple[str, Any]] | None = ()) -> int:
    """Ring elements per masked chunk: 1 MiB of uint32 at most, and small enough for the smaller of this silo's
    and the server's message cap (the server announces its cap when the stream opens; 8 bytes an element
    covers every ring)."""
    cap = own_max
    for key, value in server_metadata or ():
        if key == MAX_MESSAGE_HEADER:
            try:
                cap = min(cap, int(value))
            except ValueError:
                log.warning("the server announced an unreadable message cap %r; using this silo's", value)
    return max(1024, min(DEFAULT_CHUNK_ELEMS, (cap - MESSAGE_OVERHEAD_BYTES) // 8))


def participate(channel: grpc.Channel, *, raw: bool = False) -> grpc.StreamStreamMultiCallable:
    """The Participate method of the generated stub, except that it takes each ClientEnvelope already
    serialized (wire.encode_client: a masked chunk's elements are copied once, not through a message), and that
    the server's envelopes are never parsed unguarded: with raw, each is returned serialized (SiloRunner decodes
    it with wire.decode_server, so a hostile one ends the round, not the stream); otherwise it is parsed after
    wire.decode_server's walk (wire.parse_server; an envelope it refuses fails the call)."""
    return channel.stream_stream(
        PARTICIPATE, request_serializer=_raw, response_deserializer=_raw if raw else wire.parse_server
    )


ROUNDING_LABEL = b"secagg/v1/silo/rounding"


def rounding_seed(seed: int, round_: int) -> bytes:
    """The stochastic-rounding seed of a seeded silo in a round (tests recompute its quantised input)."""
    return seed.to_bytes(16, "big") + round_.to_bytes(8, "big")
