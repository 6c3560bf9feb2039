"""The server side of SecAgg+ as a sans-IO state machine.

`ServerSession.start(now)` opens the round; `receive(sender, message, now)` takes one client message, whose
sender is the id the transport authenticated (never a field of the message); `poll(now)` closes a stage
whose deadline passed. Each returns events: `Send` (a message for one client) and `Audit` (an append-only
record without secrets). The masked inputs are summed in place as they arrive (memory O(D), plus one
staging buffer per client that streams in several chunks). The result is the exact modular sum over the
survivors, or a typed `RoundAborted`: never a silently wrong sum.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from secagg.crypto import shamir
from secagg.crypto.keys import (
    X25519KeyPair,
    verify_signature,
    x25519_public_from_private,
)
from secagg.crypto.prg import MaskExpander
from secagg.crypto.secret import SecretBytes
from secagg.encoding import Writer
from secagg.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidPeerKeyError,
    RoundAborted,
    ShamirError,
)
from secagg.native.quantise import dequantise  # type: ignore[import-not-found, unused-ignore]
from secagg.protocol import params as _params
from secagg.protocol import recipes
from secagg.protocol.codes import AbortCode, AuditEvent
from secagg.protocol.config import Mode, RoundConfig, StageTimeouts
from secagg.protocol.messages import (
    AdvertiseKeys,
    ClientAbort,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    KeysBroadcast,
    MaskedInputChunk,
    RoundComplete,
    ServerAbort,
    ServerMessage,
    SetupRequest,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.protocol.rules import SERVER_NEXT, SERVER_STAGE, TERMINAL_SERVER, ServerState, server_accepts
from secagg.ring import Ring

log = logging.getLogger("secagg.server")

MAX_CHUNKS = 1 << 16
_DECODE_BLOCK = 1 << 20


@dataclass(frozen=True)
class Send:
    """Deliver `message` to client `to`."""

    to: int
    message: ServerMessage


@dataclass(frozen=True)
class Audit:
    """One audit record: what happened, to whom, why. Never carries secret material."""

    event: str
    client: int | None = None
    detail: str = ""
    stage: str = ""


ServerEvent = Send | Audit


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """The round's output: the exact ring sum over `survivors` and, for quantised rounds, their weighted mean
    (None when the round's encoding is "integers": the caller decodes the ring sum itself).

    The mean is decoded when first read (float32, block by block), or straight into a caller's buffer with
    `mean_into` (e.g. a memory-mapped file), so the server never needs more than the accumulator in memory.
    """

    session_id: bytes
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    sum: NDArray[Any]
    total_weight: int
    clip: float = 1.0
    bits: int = 16
    encoding: str = "quantised"

    def mean_into(self, out: NDArray[np.float32], start: int = 0) -> None:
        """Write mean[start : start + len(out)] into out (float32), decoding block by block."""
        if self.encoding != "quantised":
            raise ConfigurationError("an 'integers' round has no mean: decode its ring sum")
        for lo in range(0, out.shape[0], _DECODE_BLOCK):
            hi = min(lo + _DECODE_BLOCK, out.shape[0])
            out[lo:hi] = dequantise(self.sum[start + lo : start + hi], self.total_weight, self.clip, self.bits)

    @functools.cached_property
    def mean(self) -> NDArray[np.float32] | None:
        """The example-weighted mean of the survivors' clipped inputs (None for an 'integers' round)."""
        if self.encoding != "quantised":
            return None
        out = np.empty(self.sum.shape[0], dtype=np.float32)
        self.mean_into(out)
        return out


@dataclass
class _Staging:
    """A client's masked input while its chunks arrive; added to the sum only when complete and valid."""

    count: int
    direct: bool = False
    received: int = 0
    offset: int = 0
    buffer: NDArray[Any] | None = None
    chunks: list[tuple[int, int, bytes]] = field(default_factory=list)
    """Each arrived chunk, by index: (offset, end, fingerprint); the fingerprint is only taken for a direct
    stream, a staged chunk is compared with the buffer when it is repeated."""


class ServerSession:
    """The aggregation server's side of one round."""

    def __init__(
        self,
        config: RoundConfig,
        *,
        roster: Mapping[int, bytes] | None = None,
        timeouts: StageTimeouts | None = None,
        expander: MaskExpander | None = None,
        staging_budget_bytes: int | None = None,
        corrupt_fraction: float = 0.1,
    ) -> None:
        if config.mode is Mode.HARDENED:
            if roster is None:
                raise ConfigurationError("hardened mode needs the roster of identity keys")
            missing = [p for p in config.participants if p not in roster]
            if missing:
                raise ConfigurationError(f"participants without a roster key: {missing[:5]}")
        self.config = config
        self.roster = dict(roster) if roster is not None else None
        self.timeouts = timeouts or StageTimeouts()
        self.state = ServerState.NOT_STARTED
        self.deadline: float = float("inf")
        self.error: RoundAborted | None = None
        self.result: AggregateResult | None = None
        self.session_id: bytes | None = None
        self.ring = Ring(config.modulus)
        self._expander = expander if expander is not None and expander.ring == self.ring else MaskExpander(self.ring)
        self._hood = recipes.neighbourhoods(config.participants, config.k, config.graph_seed)
        self._tag = config.round_tag()
        self._staging_budget = staging_budget_bytes
        self._partial: set[int] = set()  # clients dropped after some of their chunks entered the sum
        self._expected: set[int] = set()
        self._rejected: set[int] = set()
        self._ads: dict[int, KeyAdvertisement] = {}
        self._seen_keys: set[bytes] = set()  # every accepted public key, so a reused one is caught in O(1)
        self._shares: dict[int, ShareKeys] = {}
        self._u1: tuple[int, ...] = ()
        self._u2: tuple[int, ...] = ()
        self._u3: tuple[int, ...] = ()
        self._staging: dict[int, _Staging] = {}
        self._complete: set[int] = set()
        self._acc: NDArray[Any] | None = None
        self._signatures: dict[int, bytes] = {}
        self._responders: tuple[int, ...] = ()
        self._unmask: dict[int, UnmaskResponse] = {}
        self._unmask_ys: dict[int, NDArray[np.uint32]] = {}  # responder -> y values, response order
        self._sent_unmask: dict[int, UnmaskRequest] = {}
        self._fixed: list[int] = []
        self._corrupt = _params.max_corrupt(config.n, corrupt_fraction)
        self._complaints: dict[int, set[int]] = defaultdict(set)  # accused sender -> clients it failed
        self._notes: list[Audit] = []  # audit records that must outlive an abort of the call that made them
        self._repeats: dict[tuple[str, int | None, str], int] = {}  # folded audit kinds in this stage
        self._bad_shares: dict[int, set[int]] = defaultdict(set)  # holder -> owners whose share it gave was bad
        self.blamed: dict[int, str] = {}
        """Clients named as the cause of a failure, on evidence colluders cannot forge against an honest client
        (SPEC §11.8): a message no honest client sends, share ciphertexts more than C peers could not open,
        or shares found corrupt for more than C others."""

    def __repr__(self) -> str:
        return f"ServerSession(state={self.state.value}, n={self.config.n})"

    # ------------------------------------------------------------------ driving

    def start(self, now: float) -> list[ServerEvent]:
        """Open the round: send the configuration to every participant."""
        if self.state is not ServerState.NOT_STARTED:
            raise RoundAborted(AbortCode.ALREADY_STARTED, "start() called twice")
        self._enter(ServerState.COLLECT_KEYS, now, set(self.config.participants))
        out: list[ServerEvent] = [
            Audit(AuditEvent.ROUND_STARTED, detail=f"n={self.config.n} mode={self.config.mode.value}")
        ]
        out += [Send(p, SetupRequest(self.config)) for p in self.config.participants]
        return out

    def receive(self, sender: int, message: ClientMessage, now: float) -> list[ServerEvent]:
        """Take one message from an authenticated sender. Bad messages are rejected, never raised."""
        return self._fold(self._receive(sender, message, now))

    def _fold(self, events: list[ServerEvent]) -> list[ServerEvent]:
        """Repeated audit records of one kind from one client in one stage (duplicates, stray messages): the
        first FOLD_AFTER are kept, the rest counted and reported in one `audit-folded` record when the stage
        closes, so a client flooding the server with repeats cannot flood its audit log (SPEC §12.3)."""
        out: list[ServerEvent] = []
        for ev in events:
            if isinstance(ev, Audit) and ev.event in FOLDED_EVENTS:
                key = (ev.event, ev.client, ev.stage)
                self._repeats[key] = self._repeats.get(key, 0) + 1
                if self._repeats[key] > FOLD_AFTER:
                    continue
            out.append(ev)
        return out

    def _folded(self) -> list[ServerEvent]:
        """One record per folded kind since the last stage close (see _fold)."""
        out: list[ServerEvent] = [
            Audit(AuditEvent.AUDIT_FOLDED, client, f"{event}: {count - FOLD_AFTER} more not recorded", stage)
            for (event, client, stage), count in sorted(
                self._repeats.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1] or 0)
            )
            if count > FOLD_AFTER
        ]
        self._repeats.clear()
        return out

    def _receive(self, sender: int, message: ClientMessage, now: float) -> list[ServerEvent]:
        out: list[ServerEvent] = []
        if now >= self.deadline and self.state not in TERMINAL_SERVER:
            out += self._close(now)
        if not server_accepts(self.state, message):
            # B6/C7: a message for another stage, a late one, or after completion: no state change.
            return [
                *out,
                self._audit(AuditEvent.MESSAGE_REJECTED, sender, f"{type(message).__name__} in {self.state.value}"),
            ]
        if sender not in self.config.participants:
            return [*out, self._audit(AuditEvent.MESSAGE_REJECTED, sender, "sender is not a participant")]
        if isinstance(message, ClientAbort):
            out.append(self._audit(AuditEvent.CLIENT_ABORTED, sender, f"{message.code}: {message.reason}"[:200]))
            self._complaint(sender, message)
            self._drop(sender)
        elif sender not in self._expected:
            out.append(self._audit(AuditEvent.MESSAGE_REJECTED, sender, "not expected in this stage"))
        else:
            out += self._handle(sender, message)
        if self._partial and self.state not in TERMINAL_SERVER:
            who = sorted(self._partial)[:5]
            return (
                out
                + self._drain()
                + self._abort(
                    RoundAborted(
                        AbortCode.PARTIAL_INPUT, f"clients {who} failed mid-stream after chunks entered the sum"
                    )
                )
            )
        if self._stage_complete():
            out += self._close(now)
        return out + self._drain()

    def poll(self, now: float) -> list[ServerEvent]:
        """Close the current stage if its deadline has passed (C7: the slow are treated as dropped)."""
        if self.state in TERMINAL_SERVER or self.state is ServerState.NOT_STARTED or now < self.deadline:
            return []
        return self._close(now)

    def abort(self, code: str, reason: str) -> list[ServerEvent]:
        """Stop the round (e.g. on shutdown): every live client is told to erase its round secrets."""
        return self._abort(RoundAborted(code, reason))

    # ------------------------------------------------------------------ per-stage handling

    def _handle(self, sender: int, msg: ClientMessage) -> list[ServerEvent]:
        if isinstance(msg, AdvertiseKeys):
            return self._on_advertise(sender, msg)
        if isinstance(msg, ShareKeys):
            return self._on_share_keys(sender, msg)
        if isinstance(msg, MaskedInputChunk):
            return self._on_chunk(sender, msg)
        if isinstance(msg, ConsistencySignature):
            return self._on_signature(sender, msg)
        if isinstance(msg, UnmaskResponse):
            return self._on_unmask(sender, msg)
        return []  # pragma: no cover - server_accepts filters

    def _duplicate(self, sender: int, first: object, again: object) -> list[ServerEvent]:
        """B5: an identical duplicate is ignored; a conflicting one is rejected and the first stands (its sender,
        which no honest client is, is blamed)."""
        if first == again:
            return [self._audit(AuditEvent.DUPLICATE_IGNORED, sender)]
        self._blame(sender, "sent two different versions of one message")
        return [self._audit(AuditEvent.CONFLICTING_DUPLICATE_REJECTED, sender, "first message stands")]

    def _on_advertise(self, sender: int, msg: AdvertiseKeys) -> list[ServerEvent]:
        if sender in self._ads:
            return self._duplicate(sender, AdvertiseKeys(self._tag, self._ads[sender]), msg)
        adv = msg.advertisement
        if msg.round_tag != self._tag:
            return self._reject(sender, "advertisement for another round or configuration")
        if adv.client_id != sender:  # B8: the id comes from the transport's authentication
            return self._reject(sender, f"claims id {adv.client_id}", blame=True)
        try:
            recipes.check_round_public_key(adv.enc_public)
            recipes.check_round_public_key(adv.mask_public)
        except InvalidPeerKeyError as exc:  # A12: a bad key never reaches the peers
            return self._reject(sender, str(exc), blame=True)
        if adv.enc_public == adv.mask_public or {adv.enc_public, adv.mask_public} & self._seen_keys:
            return self._reject(sender, "reuses a public key", blame=True)
        if self.config.mode is Mode.HARDENED:
            assert self.roster is not None
            payload = recipes.advertisement_payload(self._tag, sender, adv.enc_public, adv.mask_public)
            try:
                verify_signature(self.roster[sender], adv.signature, payload, context=recipes.SIG_ADVERTISE)
            except AuthenticationError:
                return self._reject(sender, "advertisement not signed by its roster identity", blame=True)
        self._ads[sender] = adv
        self._seen_keys.update((adv.enc_public, adv.mask_public))
        return []

    def _on_share_keys(self, sender: int, msg: ShareKeys) -> list[ServerEvent]:
        if sender in self._shares:
            return self._duplicate(sender, self._shares[sender], msg)
        if msg.session_id != self.session_id:
            return self._reject(sender, "shares for another session")
        recipients = [r for r, _ in msg.ciphertexts]
        expected = sorted(self._hood.of(sender) & set(self._u1))
        if recipients != expected:  # B7: non-neighbours, itself, missing or duplicate recipients
            return self._reject(sender, "share recipients are not exactly its neighbours with keys", blame=True)
        if any(len(ct) != _SHARE_CT_BYTES for _, ct in msg.ciphertexts):
            return self._reject(sender, "malformed share ciphertext", blame=True)
        self._shares[sender] = msg
        return []

    def _on_chunk(self, sender: int, msg: MaskedInputChunk) -> list[ServerEvent]:
        if sender in self._complete:  # B5: a chunk after completion changes nothing
            return [self._audit(AuditEvent.LATE_CHUNK_IGNORED, sender, "masked input already complete")]
        cfg, length = self.config, self.config.vector_length
        if msg.session_id != self.session_id:
            return self._reject(sender, "masked input for another session")
        st = self._staging.get(sender)
        if st is not None and msg.index < st.received:  # B5: a chunk of this stream that already arrived
            return self._duplicate(sender, True, _same_chunk(st, msg))
        if st is None:
            if not 1 <= msg.count <= min(MAX_CHUNKS, length):
                return self._reject(sender, "bad chunk count", blame=True)
            st = _Staging(count=msg.count)
            if msg.count > 1 and self._staging_budget is not None:
                vector_bytes = length * self.ring.word_bytes
                staged = sum(vector_bytes for s in self._staging.values() if not s.direct)
                st.direct = staged + vector_bytes > self._staging_budget
        data = msg.data
        if msg.count != st.count or msg.index != st.received or msg.offset != st.offset:
            return self._reject(sender, "chunk out of order, or a changed chunk count", blame=True)
        if not isinstance(data, np.ndarray) or data.dtype != self.ring.dtype or data.ndim != 1 or data.size == 0:
            return self._reject(sender, "chunk of the wrong dtype or shape", blame=True)
        data = np.ascontiguousarray(data)  # the ring kernels take C-contiguous arrays (a no-op for decoded chunks)
        end = msg.offset + data.shape[0]
        last = msg.index == st.count - 1
        if end > length or (last and end != length):
            return self._reject(sender, "masked vector of the wrong length", blame=True)
        narrow = not self.ring.is_power_of_two or cfg.modulus < (1 << (8 * self.ring.word_bytes))
        if narrow and int(data.max()) >= cfg.modulus:  # B1: an element outside the ring
            return self._reject(sender, "element >= modulus", blame=True)
        acc = self._accumulator()
        if st.count == 1 or st.direct:
            # one chunk, or no staging budget left: straight into the sum (a direct stream that fails
            # later cannot be taken back out, so it aborts the round: see _drop)
            self.ring.add_into(acc[msg.offset : end], data)
        else:
            if st.buffer is None:
                # every element is written before the buffer is read: chunks arrive in order, without gaps, and
                # only a complete stream is added to the sum
                st.buffer = np.empty(length, dtype=self.ring.dtype)
            st.buffer[msg.offset : end] = data
        if st.count > 1:
            st.chunks.append((msg.offset, end, _chunk_digest(msg) if st.direct else b""))
        st.received += 1
        st.offset = end
        self._staging[sender] = st
        if last:
            if st.buffer is not None:
                self.ring.add_into(acc, st.buffer)
            del self._staging[sender]
            self._complete.add(sender)
        return []

    def _on_signature(self, sender: int, msg: ConsistencySignature) -> list[ServerEvent]:
        if sender in self._signatures:
            return self._duplicate(sender, self._signatures[sender], msg.signature)
        assert self.roster is not None and self.session_id is not None
        if msg.session_id != self.session_id:
            return self._reject(sender, "signature for another session")
        payload = recipes.consistency_payload(self.session_id, self._u3)
        try:
            verify_signature(self.roster[sender], msg.signature, payload, context=recipes.SIG_CONSISTENCY)
        except AuthenticationError:
            return self._reject(sender, "consistency signature does not verify", blame=True)
        self._signatures[sender] = msg.signature
        return []

    def _on_unmask(self, sender: int, msg: UnmaskResponse) -> list[ServerEvent]:
        if sender in self._unmask:
            return self._duplicate(sender, self._unmask[sender], msg)
        if msg.session_id != self.session_id:
            return self._reject(sender, "unmask response for another session")
        req = self._sent_unmask[sender]
        seed_owners = [o for o, _ in msg.seed_shares]
        key_owners = [o for o, _ in msg.key_shares]
        if seed_owners != sorted({*req.alive, sender}) or key_owners != list(req.dropped):
            return self._reject(sender, "unmask response does not answer the request", blame=True)  # B3
        blobs = [blob for _, blob in (*msg.seed_shares, *msg.key_shares)]
        if any(len(b) != shamir.SHARE_BYTES for b in blobs):
            return self._reject(sender, "undecodable share", blame=True)
        table = np.frombuffer(b"".join(blobs), dtype=">u4").reshape(len(blobs), 1 + shamir.LIMBS)
        if not np.all(table[:, 0] == sender):
            return self._reject(sender, "share x-coordinate is not the responder's id", blame=True)
        if table.size and int(table[:, 1:].max()) >= shamir.P:
            return self._reject(sender, "share value outside the field", blame=True)
        self._unmask[sender] = msg
        self._unmask_ys[sender] = table[:, 1:].astype(np.uint32)
        return []

    # ------------------------------------------------------------------ stage transitions

    def _stage_complete(self) -> bool:
        if self.state is ServerState.COLLECT_KEYS:
            return self._expected <= self._ads.keys()
        if self.state is ServerState.COLLECT_SHARES:
            return self._expected <= self._shares.keys()
        if self.state is ServerState.COLLECT_MASKED:
            return self._expected <= self._complete
        if self.state is ServerState.COLLECT_SIGNATURES:
            return self._expected <= self._signatures.keys()
        if self.state is ServerState.COLLECT_UNMASK:
            return self._expected <= self._unmask.keys()
        return False

    def _close(self, now: float) -> list[ServerEvent]:
        """Close the current stage: whoever has not answered in full is dropped; then open the next one."""
        folded = self._folded()
        out = self._close_stage(now)
        return folded + self._drain() + out

    def _close_stage(self, now: float) -> list[ServerEvent]:
        state = self.state
        stage = SERVER_STAGE[state].value
        try:
            if state is ServerState.COLLECT_KEYS:
                return self._after_keys(now, stage)
            if state is ServerState.COLLECT_SHARES:
                return self._after_shares(now, stage)
            if state is ServerState.COLLECT_MASKED:
                return self._after_masked(now, stage)
            if state is ServerState.COLLECT_SIGNATURES:
                return self._after_signatures(now, stage)
            if state is ServerState.COLLECT_UNMASK:
                return self._finalise(stage)
        except RoundAborted as exc:
            return self._drain() + self._abort(exc)
        return []  # pragma: no cover

    def _require(self, survivors: int, what: str) -> None:
        cfg = self.config
        floor = max(cfg.t, cfg.min_aggregate)
        if survivors < floor:
            raise RoundAborted(
                AbortCode.TOO_FEW_CLIENTS, f"{survivors} {what}, fewer than max(t, min_aggregate)={floor}"
            )

    def _after_keys(self, now: float, stage: str) -> list[ServerEvent]:
        u1 = tuple(sorted(self._ads))
        self._require(len(u1), "clients advertised keys")
        ads = tuple(self._ads[c] for c in u1)
        self._u1 = u1
        self.session_id = recipes.session_id(self._tag, ads)
        out: list[ServerEvent] = [self._stage_audit(stage, u1)]
        self._enter(SERVER_NEXT[self.config.mode][self.state], now, set(u1))
        msg = KeysBroadcast(round_tag=self._tag, session_id=self.session_id, advertisements=ads)
        return out + [Send(c, msg) for c in u1]

    def _after_shares(self, now: float, stage: str) -> list[ServerEvent]:
        u2 = tuple(sorted(self._shares))
        self._require(len(u2), "clients shared keys")
        self._u2 = u2
        assert self.session_id is not None
        inbox: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        for sender in u2:
            for recipient, ct in self._shares[sender].ciphertexts:
                if recipient in self._shares:
                    inbox[recipient].append((sender, ct))
        out: list[ServerEvent] = [self._stage_audit(stage, u2)]
        self._enter(SERVER_NEXT[self.config.mode][self.state], now, set(u2))
        for c in u2:
            out.append(Send(c, SharesDelivery(session_id=self.session_id, ciphertexts=tuple(inbox[c]))))
        return out

    def _after_masked(self, now: float, stage: str) -> list[ServerEvent]:
        out: list[ServerEvent] = []
        for c in sorted(self._staging):  # incomplete streams: rejected (and their partial data discarded)
            self._notes.append(self._audit(AuditEvent.CLIENT_REJECTED, c, "masked input incomplete at the deadline"))
            self._drop(c)
        if self._partial:
            raise RoundAborted(
                AbortCode.PARTIAL_INPUT, f"clients {sorted(self._partial)[:5]} did not finish their stream"
            )
        u3 = tuple(sorted(self._complete))
        self._require(len(u3), "masked inputs")
        self._u3 = u3
        out.append(self._stage_audit(stage, u3))
        assert self.session_id is not None
        self._enter(SERVER_NEXT[self.config.mode][self.state], now, set(u3))
        if self.state is ServerState.COLLECT_SIGNATURES:
            msg = ConsistencyRequest(session_id=self.session_id, survivors=u3)
            return out + [Send(c, msg) for c in u3]
        return out + self._send_unmask(u3, ())

    def _after_signatures(self, now: float, stage: str) -> list[ServerEvent]:
        u4 = tuple(sorted(self._signatures))
        self._require(len(u4), "consistency signatures")
        # Clients reveal only against a quorum over U1 (SPEC §10.5); each counts the corrupt clients its own policy
        # assumes, which the server does not know, so it checks the least any client accepts (no corrupt client).
        quorum = _params.consistency_quorum(len(self._u1), 0)
        if len(u4) < quorum:
            raise RoundAborted(
                AbortCode.TOO_FEW_CLIENTS, f"{len(u4)} consistency signatures, below the quorum {quorum}"
            )
        out: list[ServerEvent] = [self._stage_audit(stage, u4)]
        self._enter(SERVER_NEXT[self.config.mode][self.state], now, set(u4))
        sigs = tuple((c, self._signatures[c]) for c in u4)
        return out + self._send_unmask(u4, sigs)

    def _send_unmask(self, recipients: tuple[int, ...], sigs: tuple[tuple[int, bytes], ...]) -> list[ServerEvent]:
        assert self.session_id is not None
        u2, u3 = set(self._u2), set(self._u3)
        out: list[ServerEvent] = []
        hardened = self.config.mode is Mode.HARDENED
        for c in recipients:
            hood = self._hood.of(c) & u2
            req = UnmaskRequest(
                session_id=self.session_id,
                alive=tuple(sorted(hood & u3)),
                dropped=tuple(sorted(hood - u3)),
                survivors=self._u3 if hardened else (),
                signatures=sigs,
            )
            self._sent_unmask[c] = req
            out.append(Send(c, req))
        return out

    def _finalise(self, stage: str) -> list[ServerEvent]:
        responders = tuple(sorted(self._unmask))
        self._responders = responders
        out: list[ServerEvent] = [self._stage_audit(stage, responders)]
        acc = self._accumulator()
        cfg = self.config
        assert self.session_id is not None
        sid = self.session_id
        dropped = tuple(c for c in self._u2 if c not in set(self._u3))
        # Collect the shares each secret owner's neighbours (and, for seeds, the owner itself) revealed.
        seed_shares: dict[int, list[tuple[int, NDArray[np.uint32]]]] = defaultdict(list)
        key_shares: dict[int, list[tuple[int, NDArray[np.uint32]]]] = defaultdict(list)
        for r in responders:  # ascending, so every owner's shares come sorted by x
            resp, ys = self._unmask[r], self._unmask_ys[r]
            n_seed = len(resp.seed_shares)
            for i, (owner, _) in enumerate(resp.seed_shares):
                seed_shares[owner].append((r, ys[i]))
            for i, (owner, _) in enumerate(resp.key_shares):
                key_shares[owner].append((r, ys[n_seed + i]))
        seeds = self._reconstruct(
            self._u3,
            seed_shares,
            lambda o, s: recipes.seed_commitment(sid, o, s) == self._shares[o].seed_commitment,
        )
        keys = self._reconstruct(
            dropped, key_shares, lambda o, s: x25519_public_from_private(s) == self._ads[o].mask_public
        )
        out += [self._audit(AuditEvent.SHARES_CORRECTED, o, "a corrupted share was set aside") for o in self._fixed]
        # every survivor's self mask, and each dropped client's pairwise masks with its surviving neighbours
        # (the peer added sign(peer, gone) * PRG(seed); subtract exactly that), removed in one pass over acc
        unmask: list[tuple[SecretBytes, int]] = [(seeds[owner], -1) for owner in self._u3]
        u3 = set(self._u3)
        for gone in dropped:
            pair = X25519KeyPair(keys[gone])
            for peer in sorted(self._hood.of(gone) & u3):
                seed = recipes.pairwise_seed(pair.agree(self._ads[peer].mask_public), sid, peer, gone)
                unmask.append((seed, -recipes.pairwise_sign(peer, gone)))
        self._expander.accumulate_many(acc, unmask)
        total_weight = int(acc[-1])
        if not 1 <= total_weight <= len(self._u3) * cfg.max_weight:
            raise RoundAborted(AbortCode.BAD_AGGREGATE, "total weight outside its possible range")
        if cfg.encoding == "quantised" and cfg.dim and int(acc[:-1].max()) > total_weight * ((1 << cfg.bits) - 1):
            # no honest set of inputs reaches this (a client cheated with its masked vector)
            raise RoundAborted(AbortCode.BAD_AGGREGATE, "aggregate outside the range honest inputs can reach")
        self.result = AggregateResult(sid, self._u3, dropped, acc[:-1], total_weight, cfg.clip, cfg.bits, cfg.encoding)
        self.state = ServerState.DONE
        self.deadline = float("inf")
        out.append(self._audit(AuditEvent.ROUND_COMPLETED, detail=f"survivors={len(self._u3)} dropped={len(dropped)}"))
        done = RoundComplete(session_id=sid, survivors=self._u3)
        return out + [Send(c, done) for c in self._u3]

    def _reconstruct(
        self,
        owners: tuple[int, ...],
        shares: dict[int, list[tuple[int, NDArray[np.uint32]]]],
        check: Callable[[int, SecretBytes], bool],
    ) -> dict[int, SecretBytes]:
        """Recover each owner's secret from >= t shares and check it against its commitment (B4).

        Owners whose first t shares come from the same responders are reconstructed in one vectorised
        batch; a secret that fails its check is retried on other t-subsets of all its shares, and the round
        aborts if none passes.
        """
        t = self.config.t
        out: dict[int, SecretBytes] = {}
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for owner in owners:
            have = shares.get(owner, [])
            if len(have) < t:
                raise RoundAborted(AbortCode.TOO_FEW_SHARES, f"{len(have)} shares for client {owner}, t={t}")
            groups[tuple(x for x, _ in have[:t])].append(owner)
        for xs, group in groups.items():
            ys = np.stack([np.stack([y for _, y in shares[o][:t]]) for o in group])
            try:
                batch: list[SecretBytes | None] = list(shamir.reconstruct_many(xs, ys))
            except ShamirError:
                batch = [None] * len(group)
            for owner, secret in zip(group, batch, strict=True):
                if secret is not None and check(owner, secret):
                    out[owner] = secret
                    continue
                out[owner] = self._recover(owner, shares[owner], functools.partial(check, owner))
        for holder, owners_ in sorted(self._bad_shares.items()):
            if len(owners_) > self._corrupt:
                self._blame(holder, f"gave corrupt shares of {len(owners_)} clients (more than C = {self._corrupt})")
        return out

    def _recover(
        self, owner: int, have: list[tuple[int, NDArray[np.uint32]]], check: Callable[[SecretBytes], bool]
    ) -> SecretBytes:
        """B4: an owner whose first t shares do not give a secret that passes its check (SPEC §11.6 step 2).

        The shares are decoded as a Reed-Solomon code: while at most e = floor((m - t) / 2) of the m are
        corrupt, they are found and set aside. A bad share incriminates its holder or the owner (one of the two
        is corrupt, no honest pair makes one), so holders are named only once they gave bad shares of more
        than C owners, and an owner once more than C of its shares were bad, or once its shares could not be
        decoded although e >= C (an honest owner's shares, with at most C corrupt holders, always decode)."""
        t = self.config.t
        candidates = [shamir.Share(x, tuple(y.tolist())) for x, y in have]
        try:
            secret, bad = shamir.decode(candidates, t, check)
        except ShamirError:
            try:  # beyond the decoding radius a subset may still pass the check (e.g. m = t + 1, one bad share)
                secret, good = shamir.reconstruct_verified(candidates, t, check)
            except ShamirError:
                if (len(have) - t) // 2 >= self._corrupt:
                    self._blame(owner, "its shares do not decode: it dealt inconsistent shares")
                raise RoundAborted(AbortCode.CORRUPT_SHARES, f"no consistent shares for client {owner}") from None
            # the secret passed its check, so the t shares it came from are good: every share off their
            # polynomial is bad
            bad = shamir.off_polynomial(candidates, good)
        if bad:
            self._fixed.append(owner)
            for x in bad:
                self._bad_shares[x].add(owner)
            if len(bad) > self._corrupt:
                self._blame(owner, f"{len(bad)} of its shares were corrupt (more than C = {self._corrupt})")
        return secret

    # ------------------------------------------------------------------ helpers

    def _accumulator(self) -> NDArray[Any]:
        if self._acc is None:
            self._acc = self.ring.zeros(self.config.vector_length)
        return self._acc

    def _enter(self, state: ServerState, now: float, expected: set[int]) -> None:
        self.state = state
        self._expected = expected - self._rejected
        stage = SERVER_STAGE[state]
        self.deadline = now + getattr(self.timeouts, stage.value.replace("-", "_"))

    def _drop(self, client: int) -> None:
        self._expected.discard(client)
        st = self._staging.pop(client, None)
        if st is not None and st.direct and st.received:
            self._partial.add(client)

    def _reject(self, client: int, why: str, *, blame: bool = False) -> list[ServerEvent]:
        """Reject the client for the rest of the round; with blame, also name it (a message whose content no
        honest client sends; never for a stale session or a late message, which an honest one may cause)."""
        self._rejected.add(client)
        self._drop(client)
        if blame:
            self._blame(client, why)
        return [self._audit(AuditEvent.CLIENT_REJECTED, client, why)]

    def _blame(self, client: int, why: str) -> None:
        """Name a client (once) and queue its audit record; the queue is drained into whatever the current
        receive / poll returns, so the record survives an abort that follows."""
        if client not in self.blamed:
            self.blamed[client] = why
            log.warning("client %d blamed: %s", client, why)
            self._notes.append(self._audit(AuditEvent.CLIENT_BLAMED, client, why))

    def _drain(self) -> list[ServerEvent]:
        notes, self._notes = self._notes, []
        return list(notes)

    def _complaint(self, client: int, abort: ClientAbort) -> None:
        """A client that could not use the share ciphertext of one sender aborts naming it (SPEC §10.3). Any
        such pair holds a corrupt party, so a sender more than C clients complain about is corrupt (an honest
        sender's ciphertexts fail only for corrupt recipients, of which there are at most C)."""
        if self.state is not ServerState.COLLECT_MASKED or abort.code not in SHARE_FAULTS:
            return
        m = _PEERS_PREFIX.match(abort.reason)
        if m is None or client not in self._shares:
            return
        for peer in {int(p) for p in m.group(1).split(",")}:
            relayed = self._shares.get(peer)
            if relayed is None or all(r != client for r, _ in relayed.ciphertexts):
                continue  # the server never relayed a share from that peer to this client: not a complaint
            accusers = self._complaints[peer]
            accusers.add(client)
            if len(accusers) > self._corrupt:
                self._blame(peer, f"{len(accusers)} clients could not open its shares (more than C = {self._corrupt})")

    def _audit(self, event: AuditEvent, client: int | None = None, detail: str = "") -> Audit:
        stage = SERVER_STAGE[self.state].value if self.state in SERVER_STAGE else self.state.value
        if event in (
            AuditEvent.CLIENT_REJECTED,
            AuditEvent.MESSAGE_REJECTED,
            AuditEvent.CONFLICTING_DUPLICATE_REJECTED,
        ):
            log.info("%s client=%s stage=%s %s", event, client, stage, detail)
        return Audit(event, client, detail, stage)

    def _stage_audit(self, stage: str, kept: tuple[int, ...]) -> Audit:
        missing = sorted(self._expected - set(kept))
        return Audit(AuditEvent.STAGE_CLOSED, None, f"kept={len(kept)} dropped={missing[:50]}", stage)

    def _abort(self, exc: RoundAborted) -> list[ServerEvent]:
        if self.state in TERMINAL_SERVER:
            return []
        self.error = exc
        self.state = ServerState.ABORTED
        self.deadline = float("inf")
        self._acc = None
        self._staging.clear()
        log.warning("round aborted: %s", exc)
        live = set(self._ads) | set(self.config.participants)
        notice = ServerAbort(round_tag=self._tag, code=exc.code, reason=exc.reason)
        return [Audit(AuditEvent.ROUND_ABORTED, None, str(exc)), *[Send(c, notice) for c in sorted(live)]]


def _chunk_digest(msg: MaskedInputChunk) -> bytes:
    """Fingerprint of a chunk (its header and its elements, hashed in place), so that a repeat of a chunk that
    went straight into the sum can be told identical or conflicting (B5)."""
    data = msg.data
    if not isinstance(data, np.ndarray):
        return b""
    h = hashlib.sha256(Writer().raw(msg.session_id).u32(msg.index).u32(msg.count).u64(msg.offset).getvalue())
    h.update(data.dtype.str.encode())
    h.update(np.ascontiguousarray(data).view(np.uint8).data)
    return h.digest()


def _same_chunk(st: _Staging, msg: MaskedInputChunk) -> bool:
    """Whether a repeated chunk equals the one that arrived at its index (B5: identical, or conflicting)."""
    offset, end, digest = st.chunks[msg.index]
    if msg.count != st.count or msg.offset != offset:
        return False
    if st.direct or st.buffer is None:
        return _chunk_digest(msg) == digest
    data = msg.data
    return (
        isinstance(data, np.ndarray)
        and data.dtype == st.buffer.dtype
        and data.shape == (end - offset,)
        and bool(np.array_equal(st.buffer[offset:end], data))
    )


FOLDED_EVENTS = frozenset(
    {
        AuditEvent.DUPLICATE_IGNORED,
        AuditEvent.MESSAGE_REJECTED,
        AuditEvent.LATE_CHUNK_IGNORED,
        AuditEvent.CONFLICTING_DUPLICATE_REJECTED,
    }
)
FOLD_AFTER = 3
"""Records of one folded kind from one client kept per stage (later ones are counted in `audit-folded`)."""

SHARE_FAULTS = frozenset({AbortCode.AUTHENTICATION_FAILED, AbortCode.BAD_ENCODING, AbortCode.SHARE_RELABELLED})
"""Client abort codes that name the senders of the share ciphertexts that failed (reason "peers <id>,<id>: ...")."""
_PEERS_PREFIX = re.compile(r"peers ([1-9][0-9]{0,9}(?:,[1-9][0-9]{0,9}){0,1023}): ")

# nonce + (u32 sender, u32 recipient, two 68-byte shares) + tag
_SHARE_CT_BYTES = 12 + 8 + 2 * shamir.Share.ENCODED_LEN + 16
