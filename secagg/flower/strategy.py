"""`SecureFedAvg`: Flower's FedAvg (Message API) whose aggregation runs our SecAgg+ through the given grid.

`strategy.start(grid=..., initial_arrays=...)` works as with Flower's FedAvg: sampling, rounds, evaluation,
logging and the Result are Flower's. What changes is what the server sees: nodes (running `secagg_mod`)
answer the train or evaluate message with the names of their metrics only; then SecAgg+ rounds over the same
grid give the server the example-weighted mean of the updates (quantised, clipped to `clip` per coordinate)
and of the metrics (fixed point, exact), never one node's values.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    FedAvg,
    Strategy,
)

from secagg.crypto.rng import RandomSource, SystemRandom
from secagg.errors import ConfigurationError, SecAggError
from secagg.exclusion import ExclusionList
from secagg.fl.strategy import IndividualUpdatesRequired
from secagg.flower import records as rec_
from secagg.protocol.config import MAX_CLIENT_ID, Mode, RoundConfig, StageTimeouts, propose_round
from secagg.protocol.messages import ClientAbort, ClientMessage, ServerMessage, decode_message, encode_message
from secagg.protocol.rules import TERMINAL_SERVER
from secagg.protocol.server import AggregateResult, Audit, Send, ServerSession

MIN_NODES = 3
"""Fewest nodes a secure round is started with (see _mark)."""
log = logging.getLogger("flwr.secagg")  # under Flower's logger, so its handlers show our lines


@dataclass(frozen=True)
class SecAggSettings:
    """SecAgg+ parameters of a SecureFedAvg (k and t follow the SecAgg+ rule from the fractions)."""

    mode: Mode = Mode.SEMI_HONEST
    clip: float = 1.0
    """Per-coordinate bound of an update (new arrays minus the ones sent); larger values are clipped."""
    bits: int = 16
    modulus: int = 1 << 32
    max_weight: int | None = None
    """Largest num-examples a node may report (default: the most the ring allows for the sampled nodes)."""
    min_aggregate: int = 2
    corrupt_fraction: float = 0.1
    dropout_fraction: float = 0.1
    stage_timeout: float = 600.0
    """Seconds a SecAgg+ stage waits for replies; nodes that did not answer by then count as dropped."""
    roster: Mapping[int, bytes] | None = None
    """Hardened mode: SecAgg+ id -> Ed25519 public key of every node (nodes report their configured id)."""
    run_id: str | None = None
    """Names the run in the round configurations (default: 'flower-<the grid's run id>')."""
    exclusion_strikes: int = 1
    """SecAgg+ rounds in which a node is named as the cause of a failure before it is no longer sampled
    (0: never); `SecureFedAvg.exclusions` holds the list, `reinstate(node)` lets a node back."""


class SecureFedAvg(FedAvg):
    """Flower's FedAvg with SecAgg+: the server learns only the example-weighted means of updates and metrics."""

    def __init__(
        self, *args: Any, secagg: SecAggSettings | None = None, rng: RandomSource | None = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.secagg = secagg or SecAggSettings()
        if self.secagg.mode is Mode.HARDENED and not self.secagg.roster:
            raise ConfigurationError("hardened mode needs the roster of the nodes' identity keys")
        self._rng = rng or SystemRandom()
        self._grid: Grid | None = None
        self._sent: dict[str, tuple[ArrayRecord | None, ConfigRecord | None]] = {}
        self._reported_ids: dict[int, int] = {}  # node id -> the SecAgg+ id it reported (hardened mode)
        self.last_result: AggregateResult | None = None
        """The latest arrays round's aggregate (sum, survivors, dropped), for inspection."""
        self.exclusions = ExclusionList(strikes=self.secagg.exclusion_strikes)
        """Flower node ids named as culprits by SecAgg+ rounds, and those benched (no longer sampled)."""

    def reinstate(self, node: int) -> bool:
        """Let a benched node be sampled again; False if it was not benched."""
        back = self.exclusions.reinstate(node)
        if back:
            log.info("node %d reinstated: it may be sampled again", node)
        return back

    def summary(self) -> None:
        """Log FedAvg's summary and the SecAgg+ settings."""
        super().summary()
        s = self.secagg
        log.info(
            "SecAgg+: mode=%s clip=%s bits=%d modulus=2^%d", s.mode.value, s.clip, s.bits, s.modulus.bit_length() - 1
        )

    # ------------------------------------------------------------------ Flower's Strategy interface

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling and messages, marked as the first step of a secure round."""
        self._refuse_wrappers(inspect.currentframe())
        return self._mark(list(super().configure_train(server_round, arrays, config, grid)), rec_.STAGE_TRAIN, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling and messages, marked as the first step of a secure evaluation."""
        msgs = list(super().configure_evaluate(server_round, arrays, config, grid))
        return self._mark(msgs, rec_.STAGE_EVALUATE, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The new global arrays (sent arrays + the secure weighted mean of the updates) and mean metrics."""
        nodes = self._ready(replies, "aggregate_train")
        arrays, config = self._sent.get(rec_.STAGE_TRAIN, (None, None))
        if arrays is None or not nodes:
            return None, None
        records = rec_.records_digest(arrays, config)
        dim = int(rec_.flatten_arrays(arrays).shape[0])
        ids = self._ids(nodes)
        if len(ids) < MIN_NODES:
            log.warning("SecAgg+ needs at least %d nodes; %d ready: the model stays as it was", MIN_NODES, len(ids))
            return None, None
        cfg = self._config(3 * server_round, ids, dim=dim, model_hash=records)
        jobs = [_Job(rec_.PURPOSE_ARRAYS, cfg)]
        metrics_job = self._metrics_job(3 * server_round + 1, ids, nodes, records)
        if metrics_job is not None:
            jobs.append(metrics_job)
        self._run(jobs, ids, MessageType.TRAIN)  # the update and the metrics in the same exchanges
        res = self.last_result = jobs[0].result
        if res is None or res.mean is None:
            return None, None
        new = rec_.flatten_arrays(arrays) + res.mean.astype(np.float64)
        return rec_.unflatten_like(new, arrays), _metric_record(metrics_job)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The secure example-weighted mean of the nodes' evaluation metrics."""
        nodes = self._ready(replies, "aggregate_evaluate")
        arrays, config = self._sent.get(rec_.STAGE_EVALUATE, (None, None))
        ids = self._ids(nodes)
        if len(ids) < MIN_NODES:
            return None
        job = self._metrics_job(3 * server_round + 2, ids, nodes, rec_.records_digest(arrays, config))
        if job is not None:
            self._run([job], ids, MessageType.EVALUATE)
        return _metric_record(job)

    # ------------------------------------------------------------------ internals

    def _refuse_wrappers(self, frame: FrameType | None) -> None:
        """A strategy wrapping this one (e.g. server-side clipping DP) would read individual replies, which
        carry no values here: its clipping would silently do nothing. Refuse it, unless it is one of the
        client-side clipping wrappers, which only touch the configuration and the aggregate."""
        caller = frame.f_back if frame is not None else None
        while caller is not None:
            outer = caller.f_locals.get("self")
            if not isinstance(outer, Strategy) or outer is self:
                return
            if not isinstance(outer, _COMPOSABLE):
                raise IndividualUpdatesRequired(_refusal(outer))
            caller = caller.f_back

    def _mark(self, msgs: list[Message], stage: str, grid: Grid) -> list[Message]:
        self._grid = grid
        benched = [m.metadata.dst_node_id for m in msgs if m.metadata.dst_node_id in self.exclusions.benched]
        if benched:
            log.warning("SecAgg+: nodes %s are benched and not sampled (SecureFedAvg.reinstate lets one back)", benched)
            msgs = [m for m in msgs if m.metadata.dst_node_id not in self.exclusions.benched]
        if not msgs:
            return msgs
        if len(msgs) < MIN_NODES:
            raise ConfigurationError(
                f"SecAgg+ needs at least {MIN_NODES} nodes per round, {len(msgs)} sampled: with two, each node can "
                "compute the other's update from the new model (raise min_train_nodes / min_evaluate_nodes)"
            )
        content = msgs[0].content
        self._sent[stage] = (
            content.array_records.get(self.arrayrecord_key),
            content.config_records.get(self.configrecord_key),
        )
        marker = ConfigRecord(
            {
                "stage": stage,
                "arrays-key": self.arrayrecord_key,
                "config-key": self.configrecord_key,
                "weight-key": self.weighted_by_key,
            }
        )
        for m in msgs:  # FedAvg sends one RecordDict to all; each message gets its own, marked
            m.content = RecordDict({**dict(m.content.items()), rec_.SECAGG_KEY: marker})
        return msgs

    def _ready(self, replies: Iterable[Message], what: str) -> dict[int, list[str]]:
        """Nodes that ran the user's function: node id -> the metric names it reported."""
        out: dict[int, list[str]] = {}
        failures = 0
        for msg in replies:
            rec = msg.content.config_records.get(rec_.SECAGG_KEY) if msg.has_content() else None
            if msg.has_error() or rec is None or not rec.get("ok"):
                failures += 1
                if msg.has_error():
                    log.info("%s: node %d failed: %s", what, msg.metadata.src_node_id, msg.error.reason)
                continue
            out[msg.metadata.src_node_id] = rec_.get_names(rec, "metric-keys")
            self._reported_ids[msg.metadata.src_node_id] = rec_.get_int(rec, "client-id")
        log.info("%s: %d nodes ready for SecAgg+, %d failures", what, len(out), failures)
        return out

    def _ids(self, nodes: Mapping[int, Any]) -> dict[int, int]:
        """Flower node id -> SecAgg+ id: the configured ids in hardened mode, else 1..n by node id."""
        if self.secagg.mode is not Mode.HARDENED:
            return {node: i + 1 for i, node in enumerate(sorted(nodes))}
        roster = self.secagg.roster or {}
        ids: dict[int, int] = {}
        for node in sorted(nodes):
            pid = self._reported_ids.get(node, 0)
            if pid not in roster or pid in ids.values() or not 1 <= pid <= MAX_CLIENT_ID:
                log.warning("node %d reports SecAgg+ id %d, not a free roster id: left out", node, pid)
                continue
            ids[node] = pid
        return ids

    def _run_id(self) -> str:
        if self.secagg.run_id:
            return self.secagg.run_id
        try:
            return f"flower-{self._grid.run.run_id}" if self._grid is not None else "flower"
        except Exception:  # a grid without a run (tests, custom grids)
            return "flower"

    def _config(self, round_: int, ids: Mapping[int, int], **fields: Any) -> RoundConfig:
        s = self.secagg
        n = len(ids)
        settings: dict[str, Any] = {
            "modulus": s.modulus,
            "clip": s.clip,
            "bits": s.bits,
            "max_weight": s.max_weight or max(1, (s.modulus - 1) // (n << s.bits)),
            "min_aggregate": min(s.min_aggregate, n),
        }
        settings.update(fields)
        return propose_round(
            run_id=self._run_id(),
            round_=round_,
            participants=ids.values(),
            mode=s.mode,
            graph_seed=self._rng.random_bytes(32),
            corrupt_fraction=s.corrupt_fraction,
            dropout_fraction=s.dropout_fraction,
            **settings,
        )

    def _metrics_job(
        self, round_: int, ids: Mapping[int, int], nodes: Mapping[int, list[str]], records: bytes
    ) -> _Job | None:
        """A SecAgg+ round over the metric names every node reported (fixed point, exact weighted mean)."""
        keys = sorted(set.intersection(*(set(nodes[n]) for n in ids)))
        if any(nodes[n] != keys for n in ids):
            log.warning("nodes report different metric names; metrics are not aggregated this round")
            return None
        if not keys:
            return _Job(rec_.PURPOSE_METRICS, None, keys)
        cfg = self._config(
            round_,
            ids,
            dim=len(keys),
            model_hash=rec_.metrics_digest(records, keys),
            encoding="integers",
            modulus=rec_.METRIC_MODULUS,
            max_weight=rec_.METRIC_MAX_WEIGHT,
        )
        return _Job(rec_.PURPOSE_METRICS, cfg, keys)

    def _run(self, jobs: list[_Job], ids: Mapping[int, int], kind: str) -> None:
        """Drive the jobs' ServerSessions over the grid together: each exchange is one send_and_receive carrying,
        to each node, what every session has for it; silence past the stage timeout counts as a dropout (the
        sessions' clock advances by exchange, so nothing depends on timing). Results land in each job."""
        grid = self._grid
        if grid is None:
            raise ConfigurationError("no grid: configure_train/configure_evaluate were not called")
        t = self.secagg.stage_timeout
        roster = dict(self.secagg.roster) if self.secagg.roster else None
        node_of = {pid: node for node, pid in ids.items()}
        now = 0.0
        live: dict[str, tuple[_Job, ServerSession]] = {}
        events: dict[str, list[Any]] = {}
        for job in jobs:
            if job.config is None:
                continue
            server = ServerSession(
                job.config,
                roster=roster,
                timeouts=StageTimeouts(t, t, t, t, t),
                corrupt_fraction=self.secagg.corrupt_fraction,
            )
            live[job.purpose] = (job, server)
            events[job.purpose] = server.start(now)
        while live:
            outbox: dict[int, list[tuple[str, ServerMessage]]] = {}
            for purpose, evs in events.items():
                for e in evs:
                    if isinstance(e, Send):
                        outbox.setdefault(e.to, []).append((purpose, e.message))
                    elif isinstance(e, Audit):
                        log.debug("secagg %s: %s %s %s", purpose, e.event, e.client, e.detail)
            events = {purpose: [] for purpose in live}
            stages = {purpose: server.state for purpose, (_, server) in live.items()}
            if outbox:
                msgs = [self._message(node_of[pid], pid, items, kind) for pid, items in outbox.items()]
                for reply in grid.send_and_receive(msgs, timeout=t):
                    self._take_reply(reply, ids, live, events, now)
            for purpose, (job, server) in list(live.items()):
                if server.state is stages[purpose] and server.state not in TERMINAL_SERVER:
                    now = max(now, server.deadline)  # everyone who will answer has answered: close the stage
                    events[purpose] += server.poll(now)
                if server.state in TERMINAL_SERVER:
                    self._bench(job, server, node_of)
                    job.result = server.result
                    if server.result is None:
                        log.warning("SecAgg+ %s round aborted: %s", purpose, server.error)
                    else:
                        res = server.result
                        log.info(
                            "SecAgg+ %s round: %d survivors, %d dropped", purpose, len(res.survivors), len(res.dropped)
                        )
                    del live[purpose]
                    events.pop(purpose, None)

    def _bench(self, job: _Job, server: ServerSession, node_of: Mapping[int, int]) -> None:
        """Give a strike to every node the round named as a culprit; bench those at the limit."""
        blamed = {node_of[pid]: why for pid, why in server.blamed.items() if pid in node_of}
        assert job.config is not None
        for node in self.exclusions.record(job.config.round, blamed):
            log.error(
                "SecAgg+: node %d benched after %d strike(s) (%s); SecureFedAvg.reinstate(%d) lets it back",
                node,
                self.exclusions.counts[node],
                blamed[node],
                node,
            )

    def _take_reply(
        self,
        reply: Message,
        ids: Mapping[int, int],
        live: Mapping[str, tuple[_Job, ServerSession]],
        events: dict[str, list[Any]],
        now: float,
    ) -> None:
        """Feed one node's answers to the sessions they belong to; anything malformed counts as no answer."""
        node = reply.metadata.src_node_id
        pid = ids.get(node)
        if pid is None or not reply.has_content():
            if reply.has_error():
                log.info("node %d: %s", node, reply.error.reason)
            return
        for purpose, (_, server) in live.items():
            rec = reply.content.array_records.get(rec_.reply_key(purpose))
            if rec is None:
                continue
            try:
                inbound_all = [decode_message(b) for b in rec_.unpack_replies(rec)]
            except SecAggError as exc:
                log.warning("node %d sent an undecodable %s reply: %s", node, purpose, exc)
                continue
            for inbound in inbound_all:
                if not isinstance(inbound, ClientMessage):
                    log.warning("node %d sent a server message", node)
                    continue
                if isinstance(inbound, ClientAbort):
                    log.warning("node %d left the %s round: %s %s", node, purpose, inbound.code, inbound.reason)
                events[purpose] += server.receive(pid, inbound, now)

    def _message(self, node: int, pid: int, items: list[tuple[str, ServerMessage]], kind: str) -> Message:
        rec = ConfigRecord(
            {
                "stage": rec_.STAGE_PROTOCOL,
                "client-id": pid,
                "purposes": [purpose for purpose, _ in items],
                "msgs": [encode_message(m) for _, m in items],
            }
        )
        return Message(RecordDict({rec_.SECAGG_KEY: rec}), dst_node_id=node, message_type=kind)


@dataclass
class _Job:
    """One SecAgg+ round a Flower step runs: its purpose, its configuration (None: nothing to aggregate) and,
    for metrics, the names; `result` once it ended."""

    purpose: str
    config: RoundConfig | None
    keys: list[str] = field(default_factory=list)
    result: AggregateResult | None = None


def _metric_record(job: _Job | None) -> MetricRecord | None:
    """The decoded weighted means of a metrics job (empty when no metric was reported; None if it failed)."""
    if job is None:
        return None
    if job.config is None:
        return MetricRecord()
    res = job.result
    if res is None or res.total_weight <= 0:
        return None
    return MetricRecord(dict(zip(job.keys, rec_.decode_metrics(res.sum, res.total_weight), strict=True)))


_COMPOSABLE = (DifferentialPrivacyClientSideFixedClipping, DifferentialPrivacyClientSideAdaptiveClipping)


def secure(strategy: Strategy, secagg: SecAggSettings | None = None) -> Strategy:
    """The SecAgg+ version of a Flower strategy: FedAvg becomes SecureFedAvg with its settings;
    client-side clipping DP wrappers keep wrapping it. Anything that needs individual updates (robust
    aggregators, server-side clipping, adaptive server optimisers that read replies) is refused."""
    if isinstance(strategy, _COMPOSABLE):
        strategy.strategy = secure(strategy.strategy, secagg)
        return strategy
    if type(strategy) in (FedAvg, SecureFedAvg):
        fields = ("fraction_train", "fraction_evaluate", "min_train_nodes", "min_evaluate_nodes")
        kwargs: dict[str, Any] = {f: getattr(strategy, f) for f in fields}
        kwargs.update(
            min_available_nodes=strategy.min_available_nodes,  # type: ignore[attr-defined]
            weighted_by_key=strategy.weighted_by_key,  # type: ignore[attr-defined]
            arrayrecord_key=strategy.arrayrecord_key,  # type: ignore[attr-defined]
            configrecord_key=strategy.configrecord_key,  # type: ignore[attr-defined]
        )
        settings = secagg or (strategy.secagg if isinstance(strategy, SecureFedAvg) else None)
        return SecureFedAvg(secagg=settings, **kwargs)
    raise IndividualUpdatesRequired(_refusal(strategy))


def _refusal(strategy: Strategy) -> str:
    return (
        f"{type(strategy).__name__} needs the individual updates (robust aggregation, server-side clipping or "
        "per-reply logic); under SecAgg+ the server only learns their weighted sum. Use FedAvg (optionally with "
        "DifferentialPrivacyClientSide*Clipping and the matching client mod) instead."
    )
