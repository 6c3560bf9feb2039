"""`secagg_mod`: the client side of our SecAgg+ as a Flower ClientApp mod; the user's functions stay unchanged.

    app = ClientApp()
    secure = secagg_mod(app=app)

    @app.train(mods=[secure])
    def train(msg: Message, context: Context) -> Message: ...   # returns arrays + metrics as for FedAvg

    @app.evaluate(mods=[secure])
    def evaluate(msg: Message, context: Context) -> Message: ...   # returns metrics as for FedAvg

On a round's first message the mod runs the user's function (and, when the train message also carries an
evaluation of the model it brings, the app's evaluate function first), keeps the update (new arrays minus
the ones received) and the metrics on the node, and answers with their names only; when the message carries
the SecAgg+ setup requests, the same reply holds this node's key advertisements. The SecAgg+ stages that
follow run our ClientSession: every check against a lying server happens there, and the model and
configuration(s) the node worked on are bound into the round (model_hash). Flower may run every message in a
fresh process, so between stages the session is exported and stored in the node's Context state, sealed with
AES-GCM under a node-local key (`state_key`; else the file named by the node config
`secagg-state-key-file`; else `$SECAGG_STATE_DIR/flower-state.key`, by default under ~/.local/state/secagg,
made on first use); a session's secrets are erased once it has answered the unmask request or aborted.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from secagg.crypto import aead
from secagg.crypto.keys import IdentityKey
from secagg.crypto.rng import RandomSource, SystemRandom
from secagg.crypto.secret import SecretBytes
from secagg.encoding import Writer, domain
from secagg.errors import AuthenticationError, ConfigurationError, SecAggError
from secagg.flower import records as rec_
from secagg.protocol.client import ClientInput, ClientSession
from secagg.protocol.codes import AbortCode
from secagg.protocol.config import ClientPolicy, RoundConfig
from secagg.protocol.messages import (
    ClientAbort,
    ClientMessage,
    MaskedInputChunk,
    ServerMessage,
    SetupRequest,
    UnmaskRequest,
    decode_message,
    encode_message,
)
from secagg.protocol.rules import ClientState

log = logging.getLogger("flwr.secagg")  # under Flower's logger, so its handlers show our lines

Mod = Callable[[Message, Context, Callable[[Message, Context], Message]], Message]
STATE_SESSION, STATE_PENDING, STATE_UPDATE, STATE_LEDGER = (
    "secagg.session",
    "secagg.pending",
    "secagg.update",
    "secagg.ledger",
)
CHUNK_ELEMS = 1 << 20
"""Ring elements per masked-input chunk (4 MiB in a 2^32 ring), about Flower's array chunk size."""
ERROR_CODE = 4201
"""Flower Error code of a message this mod refuses (not a SecAgg+ abort, which travels as ClientAbort)."""


class _ContextLedger:
    """The A10 contribution ledger, kept in the node's Context state (it lives as long as the run)."""

    def __init__(self, context: Context) -> None:
        self._state = context.state

    def _done(self) -> list[str]:
        rec = self._state.config_records.get(STATE_LEDGER)
        return rec_.get_names(rec, "done") if rec is not None else []

    def has_contributed(self, run_id: str, round_: int) -> bool:
        """See ContributionLedger."""
        return f"{run_id}#{round_}" in self._done()

    def reserve(self, run_id: str, round_: int) -> bool:
        """See ContributionLedger. Atomic because a node handles its messages one at a time, each with the
        Context the previous one left (Flower's SuperNode and simulation engine both do)."""
        done = self._done()
        if f"{run_id}#{round_}" in done:
            return False
        self._state[STATE_LEDGER] = ConfigRecord({"done": json.dumps([*done, f"{run_id}#{round_}"])})
        return True


def secagg_mod(
    *,
    policy: ClientPolicy | None = None,
    identity: IdentityKey | str | Path | None = None,
    client_id: int | None = None,
    state_key: bytes | None = None,
    require_secure: bool = True,
    rng: RandomSource | None = None,
    app: ClientApp | None = None,
) -> Mod:
    """A Flower mod running this node's side of SecAgg+ around the user's train or evaluate function.

    policy: the node's floor for the rounds it joins (scenario A7); `roster` (and `identity`, `client_id`: this
    node's id in that roster) for the hardened mode. require_secure: refuse plain rounds, so the update never
    leaves the node unmasked. state_key: 32 bytes sealing the session between messages (default: the node
    config's `secagg-state-key-file`, else `default_state_key_path()`, made on first use; Flower may run each
    message in a new process, so the key must outlive the process). identity: the key, or the path of its
    PEM file, read when needed (Flower's simulation engine pickles the ClientApp; a key object refuses that).
    rng: by default the OS's CSPRNG, opened per message. app: the ClientApp this mod is registered in; with it,
    a train message can also run the app's evaluate function on the model it received (the strategy's
    evaluation of the previous round's model), so one message serves both and their metrics share one
    SecAgg+ round.
    """
    pol = policy or ClientPolicy()
    if state_key is not None and len(state_key) != 32:
        raise ConfigurationError("state_key must be 32 bytes")
    if client_id is not None and not 1 <= client_id < 2**31 - 1:
        raise ConfigurationError("client_id must be in 1..2^31-2")

    def _identity() -> IdentityKey | None:
        if identity is None or isinstance(identity, IdentityKey):
            return identity
        return IdentityKey.from_pem(Path(identity).read_bytes())

    def mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if _inner_call_active():  # this mod's own call of the evaluate function, inside a train message
            return call_next(msg, context)
        rec = msg.content.config_records.get(rec_.SECAGG_KEY) if msg.has_content() else None
        if rec is None:
            if require_secure:
                return _refuse(msg, "this node contributes only through SecAgg+ (use secagg.flower.SecureFedAvg)")
            return call_next(msg, context)
        try:
            stage = rec_.get_str(rec, "stage")
            if stage in (rec_.STAGE_TRAIN, rec_.STAGE_EVALUATE):
                return _local(msg, context, call_next, rec, stage)
            if stage == rec_.STAGE_PROTOCOL:
                return _protocol(msg, context, rec)
            return _refuse(msg, f"unknown SecAgg+ stage {stage!r}")
        except (SecAggError, KeyError, TypeError, ValueError) as exc:
            log.warning("secagg_mod refuses a message: %s", exc)
            log.debug("secagg_mod refusal", exc_info=True)
            return _refuse(msg, f"{type(exc).__name__}: {exc}")

    def _local(
        msg: Message, context: Context, call_next: Callable[[Message, Context], Message], rec: ConfigRecord, stage: str
    ) -> Message:
        """Run the user's function (and, when the train message asks, the evaluate function on the received model
        first); keep the update and metrics here; answer with their names only, and, when the message carries
        the SecAgg+ setup requests, with this node's key advertisements in the same reply."""
        for key in [k for k in context.state if k.startswith(STATE_SESSION)] + [STATE_PENDING, STATE_UPDATE]:
            context.state.pop(key, None)  # a new Flower round: whatever the last one left is void
        arrays_key, config_key = rec_.get_str(rec, "arrays-key"), rec_.get_str(rec, "config-key")
        weight_key = rec_.get_str(rec, "weight-key")
        slots = rec_.get_int(rec, "metric-slots")
        content = msg.content
        sent_arrays = content.array_records.get(arrays_key)
        evaluate_config = content.config_records.get(rec_.EVALUATE_CONFIG_KEY) if stage == rec_.STAGE_TRAIN else None
        records = rec_.records_digest(sent_arrays, content.config_records.get(config_key), evaluate_config)
        groups: dict[str, tuple[int, list[str], list[float]]] = {}
        if evaluate_config is not None:
            evaluate = _evaluate_function(app)
            if evaluate is None or sent_arrays is None:
                return _refuse(msg, "this node cannot evaluate inside a train message (secagg_mod(app=...) not given)")
            metadata = copy.deepcopy(msg.metadata)  # not Message(content, dst, type): that reads TaskIdentity,
            metadata.message_type = MessageType.EVALUATE  # which Flower's Ray actors never set
            evaluate_content = RecordDict({arrays_key: sent_arrays, config_key: evaluate_config})
            inner = Message(evaluate_content, metadata=metadata)  # type: ignore[call-overload]  # (serde's form)
            token = _enter_inner_call()
            try:
                evaluated = evaluate(inner, context)
            finally:
                _leave_inner_call(token)
            if evaluated.has_error():
                return Message(evaluated.error, reply_to=msg)
            found = _metrics_of(evaluated, weight_key)
            if isinstance(found, str):
                return _refuse(msg, f"evaluate: {found}")
            groups[rec_.GROUP_EVALUATE] = found
        # The user's function (and inner mods, e.g. Flower's fixedclipping_mod) see exactly a FedAvg message.
        msg.content = RecordDict(
            {k: v for k, v in content.items() if k not in (rec_.SECAGG_KEY, rec_.EVALUATE_CONFIG_KEY)}
        )
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        found = _metrics_of(reply, weight_key)
        if isinstance(found, str):
            return _refuse(msg, found)
        groups[rec_.GROUP_TRAIN if stage == rec_.STAGE_TRAIN else rec_.GROUP_EVALUATE] = found
        dim = 0
        if stage == rec_.STAGE_TRAIN:
            array_records = list(reply.content.array_records.values())
            if sent_arrays is None or len(array_records) != 1:
                return _refuse(msg, "a train round sends one ArrayRecord and the reply must carry one")
            new = array_records[0]
            if list(new.keys()) != list(sent_arrays.keys()):
                return _refuse(msg, "the reply's arrays do not match the model's keys")
            before, after = rec_.flatten_arrays(sent_arrays), rec_.flatten_arrays(new)
            if before.shape != after.shape or not np.isfinite(after).all():
                return _refuse(msg, "the reply's arrays do not match the model's shapes or are not finite")
            delta = (after - before).astype(np.float32)
            dim = int(delta.shape[0])
            context.state[STATE_UPDATE] = ArrayRecord({"delta": Array(delta)})
        ordered = {g: groups[g] for g in rec_.GROUPS if g in groups}
        context.state[STATE_PENDING] = ConfigRecord(
            {
                "records": records,
                "slots": slots,
                "groups": json.dumps({g: {"weight": w, "keys": k, "values": v} for g, (w, k, v) in ordered.items()}),
            }
        )
        answer = {
            "ok": True,
            "client-id": client_id or 0,
            "metric-groups": json.dumps({g: k for g, (_, k, _) in ordered.items()}),
            "dim": dim,
            "can-evaluate": _evaluate_function(app) is not None,
        }
        answers = _protocol_steps(msg, context, rec) if "msgs" in rec else {}
        if isinstance(answers, Message):
            return answers
        return _answer(msg, answers, answer)

    def _protocol(msg: Message, context: Context, rec: ConfigRecord) -> Message:
        """SecAgg+ server messages in (one per round this exchange serves), the ClientSessions' answers out."""
        answers = _protocol_steps(msg, context, rec)
        return answers if isinstance(answers, Message) else _answer(msg, answers)

    def _protocol_steps(msg: Message, context: Context, rec: ConfigRecord) -> dict[str, list[ClientMessage]] | Message:
        """Each server message of the record to this node's session of its purpose; the answers by purpose, or
        the refusal of the whole message."""
        pid = rec_.get_int(rec, "client-id")
        if client_id is not None and pid != client_id:
            return _refuse(msg, f"the server assigned id {pid}; this node's SecAgg+ id is {client_id}")
        purposes = rec_.get_names_list(rec, "purposes")
        blobs = rec_.get_bytes_list(rec, "msgs")
        if len(purposes) != len(blobs) or len(set(purposes)) != len(purposes):
            return _refuse(msg, "one message per purpose expected")
        inbound: list[ServerMessage] = []
        for blob in blobs:
            m = decode_message(blob)
            if not isinstance(m, ServerMessage):
                return _refuse(msg, f"{type(m).__name__} is not a server message")
            inbound.append(m)
        source = rng if rng is not None else SystemRandom()
        key = _state_key(context, source)
        return {
            purpose: _step(msg, context, pid, purpose, m, key, source)
            for purpose, m in zip(purposes, inbound, strict=True)
        }

    def _session_kwargs(
        context: Context, purpose: str, pending: ConfigRecord | None, source: RandomSource
    ) -> dict[str, Any]:
        """What a session of this node needs, new or restored: policy, identity, ledger, input, chunking."""
        return {
            "rng": source,
            "policy": pol,
            "identity": _identity(),
            "ledger": _ContextLedger(context),
            "input": _input(purpose, pending, context),
            "chunk_elems": CHUNK_ELEMS,
        }

    def _step(
        msg: Message,
        context: Context,
        pid: int,
        purpose: str,
        inbound: ServerMessage,
        key: SecretBytes,
        source: RandomSource,
    ) -> list[ClientMessage]:
        """One server message to this node's session for `purpose`, restored from (and sealed back to) the
        Context; the answers, or a ClientAbort naming why this node leaves that round."""
        slot = f"{STATE_SESSION}.{purpose}"
        ad = _state_ad(msg, context, pid, purpose)
        pending = context.state.config_records.get(STATE_PENDING)
        if isinstance(inbound, SetupRequest):
            refusal = _check_setup(inbound.config, purpose, pending, context)
            if refusal is not None:
                context.state.pop(slot, None)
                log.warning("node %d refuses the SecAgg+ round: %s %s", msg.metadata.dst_node_id, *refusal)
                return [ClientAbort(code=refusal[0], reason=refusal[1])]
            session = ClientSession(pid, **_session_kwargs(context, purpose, pending, source))
        else:
            sealed = context.state.config_records.get(slot)
            if sealed is None:
                return [
                    ClientAbort(code=AbortCode.NO_SESSION, reason=f"no {purpose} session on this node for this message")
                ]
            try:
                blob = aead.open_sealed(key, rec_.get_bytes(sealed, "blob"), associated_data=ad)
            except AuthenticationError:
                context.state.pop(slot, None)
                reason = "the stored session does not open under this node's state key"
                log.warning("node %d: %s", msg.metadata.dst_node_id, reason)
                return [ClientAbort(code=AbortCode.STATE_UNREADABLE, reason=reason)]
            session = ClientSession.restore(
                SecretBytes(blob, label="client-session-state"), **_session_kwargs(context, purpose, pending, source)
            )
        out = session.receive(inbound)
        if any(isinstance(m, MaskedInputChunk) for m in out) and purpose == rec_.PURPOSE_ARRAYS:
            context.state.pop(STATE_UPDATE, None)  # the update has left, masked; nothing keeps it here
        if session.state in (ClientState.DONE, ClientState.ABORTED) or isinstance(inbound, UnmaskRequest):
            context.state.pop(slot, None)  # the round needs nothing more from this node
        else:
            state = session.export_state()
            context.state[slot] = ConfigRecord(
                {"blob": aead.seal(key, state.expose_secret(), associated_data=ad, rng=source)}
            )
        return out

    def _state_key(context: Context, source: RandomSource) -> SecretBytes:
        if state_key is not None:
            return SecretBytes(state_key, label="flower-state-key")
        path = context.node_config.get("secagg-state-key-file")
        return load_state_key(Path(str(path)) if path else default_state_key_path(), source)

    return mod


def _state_ad(msg: Message, context: Context, pid: int, purpose: str) -> bytes:
    """Associated data of a sealed session: it opens only for this run, node, SecAgg+ id and purpose."""
    w = Writer().raw(domain("flower", "session-state")).u64(context.run_id).u64(msg.metadata.dst_node_id)
    return w.u32(pid).text(purpose).getvalue()


def _check_setup(
    cfg: RoundConfig, purpose: str, pending: ConfigRecord | None, context: Context
) -> tuple[str, str] | None:
    """Why this node will not join the proposed round, as (code, reason); None: it will. Checked before any
    key is made, so a refusal costs the round nothing but this node."""
    reason = _mismatch(cfg, purpose, pending, context)
    if reason is not None:
        return AbortCode.MODEL_MISMATCH, reason
    assert pending is not None
    groups = _pending_groups(pending)
    if purpose == rec_.PURPOSE_ARRAYS:
        weight = groups[rec_.GROUP_TRAIN][0]
        if weight > cfg.max_weight:
            return AbortCode.BAD_INPUT, (
                f"num-examples {weight} above the round's max_weight {cfg.max_weight}: the server should raise "
                "SecAggSettings.max_weight with modulus 2**64, or use fewer bits"
            )
    else:
        need = rec_.slots_needed({g: keys for g, (_, keys, _) in groups.items()})
        if need > cfg.dim:
            return AbortCode.BAD_INPUT, (
                f"this node's metrics take {need} slots, the round has {cfg.dim} (raise SecAggSettings.metric_slots)"
            )
    return None


def _pending_groups(pending: ConfigRecord) -> dict[str, tuple[int, list[str], list[float]]]:
    """The metric groups kept on the node for the round: group -> (weight, names, values)."""
    raw = json.loads(rec_.get_str(pending, "groups"))
    return {g: (int(d["weight"]), list(d["keys"]), [float(v) for v in d["values"]]) for g, d in raw.items()}


def _mismatch(cfg: RoundConfig, purpose: str, pending: ConfigRecord | None, context: Context) -> str | None:
    """Why the proposed round is not the one this node's local result is waiting for (None: it is)."""
    if pending is None:
        return "no local update or metrics waiting for a SecAgg+ round"
    records = rec_.get_bytes(pending, "records")
    if purpose == rec_.PURPOSE_ARRAYS:
        update = context.state.array_records.get(STATE_UPDATE)
        if update is None:
            return "no model update waiting (already sent, or this was an evaluate round)"
        if cfg.encoding != "quantised" or cfg.model_hash != records:
            return "the round is not bound to the model and configuration this node trained on"
        if cfg.dim != int(update["delta"].shape[0]):
            return f"dim={cfg.dim}, this node's update has {int(update['delta'].shape[0])} values"
        return None
    if purpose == rec_.PURPOSE_METRICS:
        if cfg.encoding != "integers" or cfg.modulus != rec_.METRIC_MODULUS:
            return "a metrics round uses the integers encoding in the 2^64 ring"
        groups = list(_pending_groups(pending))
        if cfg.model_hash != rec_.metrics_digest(records, groups) or cfg.dim != rec_.get_int(pending, "slots"):
            return "the metrics round is not bound to this node's model and metric groups"
        return None
    return f"unknown purpose {purpose!r}"


def _input(purpose: str, pending: ConfigRecord | None, context: Context) -> ClientInput | None:
    """This node's contribution to the round: its update (arrays) or its metric groups in fixed point."""
    if pending is None:
        return None
    groups = _pending_groups(pending)
    if purpose == rec_.PURPOSE_ARRAYS:
        update = context.state.array_records.get(STATE_UPDATE)
        if update is None or rec_.GROUP_TRAIN not in groups:
            return None
        return ClientInput(np.asarray(update["delta"].numpy(), dtype=np.float32), groups[rec_.GROUP_TRAIN][0])
    parts = [(values, weight) for weight, _, values in groups.values()]
    try:
        vector = rec_.encode_metric_groups(parts, rec_.get_int(pending, "slots"))
    except ConfigurationError:
        return None  # more metrics than slots: refused at setup (BAD_INPUT), so no round reaches masking
    return ClientInput.integers(vector, 1)


def _metrics_of(reply: Message, weight_key: str) -> tuple[int, list[str], list[float]] | str:
    """(weight, sorted names, values) of the one MetricRecord a user's function replied with, or why not."""
    metric_records = list(reply.content.metric_records.values()) if reply.has_content() else []
    if len(metric_records) != 1:
        return "the reply must carry exactly one MetricRecord"
    metrics = metric_records[0]
    weight = metrics.get(weight_key)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 1 or weight != int(weight):
        return f"metric {weight_key!r} must be a positive whole number"
    keys = sorted(k for k in metrics if k != weight_key)
    return int(weight), keys, rec_.metric_values(metrics, keys)


_INNER_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("secagg_inner_evaluate", default=False)
"""Set while secagg_mod itself calls the app's evaluate function: the mods around that function let it through
(a message from the network cannot set it)."""


# The mod's closures reach the ContextVar only through these module-level functions: Flower's Ray backend
# cloudpickles the ClientApp (closures by value, with the globals they name) and a ContextVar cannot be pickled,
# while a module-level function is pickled by reference.
def _inner_call_active() -> bool:
    return _INNER_CALL.get()


def _enter_inner_call() -> contextvars.Token[bool]:
    return _INNER_CALL.set(True)


def _leave_inner_call(token: contextvars.Token[bool]) -> None:
    _INNER_CALL.reset(token)


def _evaluate_function(app: ClientApp | None) -> Callable[[Message, Context], Message] | None:
    """The app's default evaluate function with its mods, as Flower registered it; None without one."""
    funcs = getattr(app, "_registered_funcs", None) if app is not None else None
    fn = funcs.get(f"{MessageType.EVALUATE}.default") if isinstance(funcs, dict) else None
    return fn if callable(fn) else None


def _answer(msg: Message, answers: dict[str, list[ClientMessage]], ready: dict[str, Any] | None = None) -> Message:
    """The reply: our record (the purposes answered, and what the node reports on a round's first message) and
    each purpose's encoded client messages."""
    records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        rec_.SECAGG_KEY: ConfigRecord({**(ready or {}), "purposes": list(answers)})
    }
    for purpose, out in answers.items():
        records[rec_.reply_key(purpose)] = rec_.pack_replies([encode_message(m) for m in out])
    return Message(RecordDict(records), reply_to=msg)


def _refuse(msg: Message, reason: str) -> Message:
    return Message(Error(code=ERROR_CODE, reason=reason[:1000]), reply_to=msg)


def default_state_key_path() -> Path:
    """Where the node keeps its state key when none is configured: $SECAGG_STATE_DIR, else
    $XDG_STATE_HOME/secagg, else ~/.local/state/secagg; the file is flower-state.key."""
    base = os.environ.get("SECAGG_STATE_DIR")
    if base:
        return Path(base) / "flower-state.key"
    xdg = os.environ.get("XDG_STATE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return root / "secagg" / "flower-state.key"


def load_state_key(path: Path, rng: RandomSource) -> SecretBytes:
    """The 32-byte key in `path`, made (mode 0600) when it does not exist yet. The new key is written to a
    temporary file and linked into place, so concurrent ClientApp processes all end up with the same complete
    key. ConfigurationError for a file of another size."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".flower-state-key-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(rng.random_bytes(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
        data = path.read_bytes()
    if len(data) != 32:
        raise ConfigurationError(f"the state key file {path} must hold exactly 32 bytes")
    return SecretBytes(data, label="flower-state-key")


__all__ = ["default_state_key_path", "load_state_key", "secagg_mod"]
