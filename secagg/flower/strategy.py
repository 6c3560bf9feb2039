"""`SecureFedAvg`: Flower's FedAvg (Message API) whose aggregation runs our SecAgg+ through the given grid.

`strategy.start(grid=..., initial_arrays=...)` works as with Flower's FedAvg: sampling, rounds, evaluation,
logging and the Result are Flower's. What changes is what the server sees: the example-weighted mean of the
updates (quantised, clipped to `clip` per coordinate) and of the metrics (fixed point, exact), never one
node's values.

Exchanges per round, the fewest the protocol allows: the train message carries the SecAgg+ setup requests
(the node trains and advertises its keys in one reply), then three SecAgg+ exchanges (keys -> encrypted shares,
shares -> masked input, unmask request -> shares); the update and the metrics run as two SecAgg+ rounds in the
same exchanges. The evaluation of each round's new model runs in the next round's train message (its
metrics join that round's metrics), when it would sample the same nodes (`fraction_evaluate ==
fraction_train`); the last model is evaluated with evaluate messages, also carrying their setup. So a run of
R rounds takes 4R + 4 exchanges where Flower's FedAvg takes 2R; the hardened mode adds one (the consistency
check) per SecAgg+ step.
"""

from __future__ import annotations

import inspect
import io
import logging
import time
from collections.abc import Callable, Iterable, Mapping
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
    Result,
    Strategy,
)
from flwr.serverapp.strategy.strategy_utils import log_strategy_start_info

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
"""Fewest nodes a secure round is started with: with two, each node can compute the other's update from the
new model. It is also every SecAgg+ round's minimum aggregate, so the nodes check it too."""
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
    min_aggregate: int = MIN_NODES
    """Fewest survivors a SecAgg+ round may complete with (at least MIN_NODES, and C + 2 as the protocol asks)."""
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
    metric_slots: int = rec_.METRIC_SLOTS
    """Length of a metrics round's vector: per metric group (train, evaluate) 1 + its number of metrics."""
    evaluate_with_train: bool = True
    """Run the evaluation of a round's model in the next round's train message when it would sample the same
    nodes (nodes need `secagg_mod(app=app)`); False: evaluate messages every round, as Flower's loop does."""
    poll_interval: float = 0.25
    """Longest pause, in seconds, between two pulls of replies from the grid (Flower's own loop waits 3 s)."""


class SecureFedAvg(FedAvg):
    """Flower's FedAvg with SecAgg+: the server learns only the example-weighted means of updates and metrics."""

    def __init__(
        self, *args: Any, secagg: SecAggSettings | None = None, rng: RandomSource | None = None, **kwargs: Any
    ):
        for key in ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes"):
            if kwargs.setdefault(key, MIN_NODES) < MIN_NODES:
                raise ConfigurationError(
                    f"{key}={kwargs[key]}: SecAgg+ needs at least {MIN_NODES} nodes per round (with two, each node "
                    "can compute the other's update from the new model)"
                )
        super().__init__(*args, **kwargs)
        self.secagg = secagg or SecAggSettings()
        if self.secagg.mode is Mode.HARDENED and not self.secagg.roster:
            raise ConfigurationError("hardened mode needs the roster of the nodes' identity keys")
        if self.secagg.metric_slots < 2:
            raise ConfigurationError("metric_slots must be at least 2 (a group's weight and one metric)")
        self._rng = rng or SystemRandom()
        self._grid: Grid | None = None
        self._steps: dict[str, _Step] = {}  # the SecAgg+ step a configure_* opened, by stage, until aggregated
        self._reported_ids: dict[int, int] = {}  # node id -> the SecAgg+ id it reported (hardened mode)
        self._can_evaluate: dict[int, bool] = {}  # node id -> it can evaluate inside a train message
        self._fold: tuple[int, ConfigRecord] | None = None  # set by start(): evaluation to carry in train messages
        self._folded: dict[int, MetricRecord | None] = {}  # model round -> its evaluation carried by a train step
        self.last_result: AggregateResult | None = None
        """The latest arrays round's aggregate (sum, survivors, dropped), for inspection."""
        self.exclusions = ExclusionList(strikes=self.secagg.exclusion_strikes)
        """Flower node ids named as culprits by SecAgg+ rounds, and those benched (no longer sampled)."""
        self.exchanges: dict[tuple[int, str], int] = {}
        """(server round, stage) -> message exchanges per node that step took, first message included."""

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
            "SecAgg+: mode=%s clip=%s bits=%d modulus=2^%d, at least %d nodes per round, evaluation %s",
            s.mode.value,
            s.clip,
            s.bits,
            s.modulus.bit_length() - 1,
            MIN_NODES,
            "in the next train message" if self._folds() else "in evaluate messages",
        )

    # ------------------------------------------------------------------ Flower's Strategy interface

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Flower's FedAvg loop (the same steps, logs and Result) in fewer exchanges: each round's client-side
        evaluation of the new model travels in the next round's train messages when it would sample the same
        nodes (see SecAggSettings.evaluate_with_train); otherwise, and for the last round, evaluate messages."""
        log.info("Starting %s strategy:", type(self).__name__)
        log_strategy_start_info(num_rounds, initial_arrays, train_config, evaluate_config)
        self.summary()
        log.info("")
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        result = Result()
        t_start = time.time()
        if evaluate_fn:
            res = evaluate_fn(0, initial_arrays)
            log.info("Initial global evaluation results: %s", res)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        arrays = initial_arrays
        owed: int | None = None  # the round whose model's client-side evaluation is still to run
        for current in range(1, num_rounds + 1):
            log.info("")
            log.info("[ROUND %s/%s]", current, num_rounds)
            self._fold = None if owed is None else (owed, _with_round(evaluate_config, owed))
            msgs = list(self.configure_train(current, arrays, train_config, grid))
            folded, self._fold = self._fold, None  # configure_train leaves it set only if it folded
            if owed is not None and folded is None:
                self._evaluate_step(owed, arrays, evaluate_config, grid, timeout, result)
            replies = self._exchange(grid, msgs, timeout) if msgs else []
            agg_arrays, agg_train_metrics = self.aggregate_train(current, replies)
            if agg_arrays is not None:
                result.arrays = agg_arrays
                arrays = agg_arrays
            if agg_train_metrics is not None:
                log.info("\t└──> Aggregated MetricRecord: %s", agg_train_metrics)
                result.train_metrics_clientapp[current] = agg_train_metrics
            if owed is not None and folded is not None:
                carried = self._folded.pop(owed, None)
                if carried is not None:
                    log.info(
                        "\t└──> Evaluation of round %d's model (in this round's train messages): %s", owed, carried
                    )
                    result.evaluate_metrics_clientapp[owed] = carried
                else:
                    log.warning("the client-side evaluation of round %d's model did not complete", owed)
            owed = None
            if current < num_rounds and self._folds():
                owed = current  # evaluated by the next round's train messages
            else:
                self._evaluate_step(current, arrays, evaluate_config, grid, timeout, result)
            if evaluate_fn:
                log.info("Global evaluation")
                res = evaluate_fn(current, arrays)
                log.info("\t└──> MetricRecord: %s", res)
                if res is not None:
                    result.evaluate_metrics_serverapp[current] = res
        log.info("")
        log.info("Strategy execution finished in %.2fs", time.time() - t_start)
        log.info("")
        log.info("Final results:")
        log.info("")
        for line in io.StringIO(str(result)):
            log.info("\t%s", line.strip("\n"))
        log.info("")
        return result

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling and messages, marked as the first step of a secure round and carrying its setup."""
        self._refuse_wrappers(inspect.currentframe())
        msgs = list(super().configure_train(server_round, arrays, config, grid))
        fold, self._fold = self._fold, None
        if fold is not None and msgs and all(self._can_evaluate.get(m.metadata.dst_node_id) for m in msgs):
            self._fold = fold
        return self._open(msgs, rec_.STAGE_TRAIN, grid, server_round, self._fold)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling and messages, marked as the first step of a secure evaluation, with its setup."""
        msgs = list(super().configure_evaluate(server_round, arrays, config, grid))
        return self._open(msgs, rec_.STAGE_EVALUATE, grid, server_round, None)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The new global arrays (sent arrays + the secure weighted mean of the updates) and mean metrics."""
        step = self._finish(rec_.STAGE_TRAIN, server_round, replies, MessageType.TRAIN)
        if step is None:
            return None, None
        groups = _metric_groups(step.metrics)
        if step.evaluates is not None:
            found = groups.get(rec_.GROUP_EVALUATE) if groups is not None else None
            self._folded[step.evaluates] = _record(found)
        arrays_job = step.jobs[0] if step.jobs and step.jobs[0].purpose == rec_.PURPOSE_ARRAYS else None
        res = self.last_result = arrays_job.result if arrays_job is not None else None
        if res is None or res.mean is None or step.arrays is None:
            return None, None
        new = rec_.flatten_arrays(step.arrays) + res.mean.astype(np.float64)
        train = groups.get(rec_.GROUP_TRAIN) if groups is not None else None
        return rec_.unflatten_like(new, step.arrays), _record(train)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The secure example-weighted mean of the nodes' evaluation metrics."""
        step = self._finish(rec_.STAGE_EVALUATE, server_round, replies, MessageType.EVALUATE)
        groups = _metric_groups(step.metrics) if step is not None else None
        found = groups.get(rec_.GROUP_EVALUATE) if groups is not None else None
        return _record(found)

    # ------------------------------------------------------------------ a secure step: open, then finish

    def _folds(self) -> bool:
        """Whether a round's evaluation can ride on the next round's train messages: it samples as training does."""
        return (
            self.secagg.evaluate_with_train
            and self.fraction_evaluate > 0.0
            and self.fraction_evaluate == self.fraction_train
            and self.min_evaluate_nodes == self.min_train_nodes
        )

    def _evaluate_step(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid, timeout: float, result: Result
    ) -> None:
        """Flower's client-side evaluation step of `server_round`'s model, into the Result."""
        msgs = list(self.configure_evaluate(server_round, arrays, config, grid))
        metrics = self.aggregate_evaluate(server_round, self._exchange(grid, msgs, timeout) if msgs else [])
        if metrics is not None:
            log.info("\t└──> Aggregated MetricRecord: %s", metrics)
            result.evaluate_metrics_clientapp[server_round] = metrics

    def _open(
        self,
        msgs: list[Message],
        stage: str,
        grid: Grid,
        server_round: int,
        fold: tuple[int, ConfigRecord] | None,
    ) -> list[Message]:
        """Mark FedAvg's messages as the first step of a secure round; when every node's SecAgg+ id is known
        (always in semi-honest mode), start its SecAgg+ rounds and put their setup requests in the messages."""
        self._grid = grid
        self._steps.pop(stage, None)
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
        arrays = content.array_records.get(self.arrayrecord_key)
        config = content.config_records.get(self.configrecord_key)
        evaluate_config = fold[1] if fold is not None else None
        step = _Step(
            stage=stage,
            server_round=server_round,
            arrays=arrays,
            records=rec_.records_digest(arrays, config, evaluate_config),
            groups=[rec_.GROUP_TRAIN] * (stage == rec_.STAGE_TRAIN)
            + [rec_.GROUP_EVALUATE] * (stage == rec_.STAGE_EVALUATE or fold is not None),
            evaluates=fold[0] if fold is not None else None,
        )
        self._steps[stage] = step
        marker: dict[str, Any] = {
            "stage": stage,
            "arrays-key": self.arrayrecord_key,
            "config-key": self.configrecord_key,
            "weight-key": self.weighted_by_key,
            "metric-slots": self.secagg.metric_slots,
        }
        ids = self._ids([m.metadata.dst_node_id for m in msgs], quiet=True)
        setups: dict[int, list[tuple[str, ServerMessage]]] = {}
        if len(ids) == len(msgs):  # every node's id is known: the setup travels with this message
            step.ids = ids
            setups = self._start(step, dim=int(rec_.flatten_arrays(arrays).shape[0]) if arrays is not None else 0)
        extra = {rec_.EVALUATE_CONFIG_KEY: evaluate_config} if evaluate_config is not None else {}
        for m in msgs:  # FedAvg sends one RecordDict to all; each message gets its own, marked
            mine = dict(marker)
            items = setups.get(step.ids.get(m.metadata.dst_node_id, -1), [])
            if items:
                mine.update(
                    {
                        "client-id": step.ids[m.metadata.dst_node_id],
                        "purposes": [purpose for purpose, _ in items],
                        "msgs": [encode_message(sm) for _, sm in items],
                    }
                )
            m.content = RecordDict({**dict(m.content.items()), **extra, rec_.SECAGG_KEY: ConfigRecord(mine)})
        return msgs

    def _start(self, step: _Step, dim: int) -> dict[int, list[tuple[str, ServerMessage]]]:
        """The step's SecAgg+ rounds (the update's, then the metrics'), started: their setup requests by SecAgg+ id."""
        r = step.server_round
        if step.stage == rec_.STAGE_TRAIN and step.arrays is not None:
            step.jobs.append(_Job(rec_.PURPOSE_ARRAYS, self._config(3 * r, step.ids, dim=dim, model_hash=step.records)))
        metrics_round = 3 * r + (1 if step.stage == rec_.STAGE_TRAIN else 2)
        step.metrics = _Job(
            rec_.PURPOSE_METRICS,
            self._config(
                metrics_round,
                step.ids,
                dim=self.secagg.metric_slots,
                model_hash=rec_.metrics_digest(step.records, step.groups),
                encoding="integers",
                modulus=rec_.METRIC_MODULUS,
                max_weight=1,
            ),
        )
        step.jobs.append(step.metrics)
        t = self.secagg.stage_timeout
        roster = dict(self.secagg.roster) if self.secagg.roster else None
        out: dict[int, list[tuple[str, ServerMessage]]] = {}
        for job in step.jobs:
            assert job.config is not None
            server = ServerSession(
                job.config,
                roster=roster,
                timeouts=StageTimeouts(t, t, t, t, t),
                corrupt_fraction=self.secagg.corrupt_fraction,
            )
            step.live[job.purpose] = (job, server)
            for e in server.start(0.0):
                if isinstance(e, Send):
                    out.setdefault(e.to, []).append((job.purpose, e.message))
                elif isinstance(e, Audit):
                    log.debug("secagg %s: %s %s %s", job.purpose, e.event, e.client, e.detail)
        return out

    def _finish(self, stage: str, server_round: int, replies: Iterable[Message], kind: str) -> _Step | None:
        """Take the replies to a step's first message and drive its SecAgg+ rounds to their end."""
        step = self._steps.pop(stage, None)
        replies = list(replies)
        if step is None or step.server_round != server_round:
            return None
        nodes = self._ready(replies, f"aggregate_{stage}")
        exchanges = 1
        if not step.live:  # hardened mode, a node's id was not known yet: set up now, one exchange more
            step.ids = self._ids(list(nodes))
            if len(step.ids) < MIN_NODES:
                log.warning(
                    "SecAgg+ needs at least %d nodes; %d ready: nothing is aggregated", MIN_NODES, len(step.ids)
                )
                return step
            dim = int(rec_.flatten_arrays(step.arrays).shape[0]) if step.arrays is not None else 0
            first = self._start(step, dim)
            replies = self._exchange(self._grid_or_fail(), self._messages(first, step, kind), self.secagg.stage_timeout)
            exchanges += 1
        ready = [n for n in step.ids if n in nodes]
        if len(ready) < MIN_NODES:
            log.warning(
                "SecAgg+ needs at least %d nodes; %d ready: the rounds will end without a result", MIN_NODES, len(ready)
            )
        names = [nodes[n] for n in ready]
        if step.metrics is not None:
            if names and all(n == names[0] for n in names) and list(names[0]) == step.groups:
                step.metrics.names = names[0]
            else:
                log.warning("nodes report different metric names; metrics are not aggregated this round")
                step.live.pop(rec_.PURPOSE_METRICS, None)
                step.metrics.config = None
        exchanges += self._drive(step, replies, kind)
        self.exchanges[(server_round, stage)] = exchanges
        log.info("SecAgg+ %s step of round %d: %d exchanges per node", stage, server_round, exchanges)
        return step

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

    def _ready(self, replies: Iterable[Message], what: str) -> dict[int, dict[str, list[str]]]:
        """Nodes that ran the user's function: node id -> the metric names it reported, by group."""
        out: dict[int, dict[str, list[str]]] = {}
        failures = 0
        for msg in replies:
            rec = msg.content.config_records.get(rec_.SECAGG_KEY) if msg.has_content() else None
            node = msg.metadata.src_node_id
            try:
                if msg.has_error() or rec is None or not rec.get("ok"):
                    raise ConfigurationError(msg.error.reason if msg.has_error() else "no SecAgg+ answer")
                groups = rec_.get_groups(rec, "metric-groups")
                self._reported_ids[node] = rec_.get_int(rec, "client-id")
                self._can_evaluate[node] = rec.get("can-evaluate") is True
            except ConfigurationError as exc:
                failures += 1
                log.info("%s: node %d failed: %s", what, node, exc)
                continue
            out[node] = groups
        log.info("%s: %d nodes ready for SecAgg+, %d failures", what, len(out), failures)
        return out

    def _ids(self, nodes: Iterable[int], quiet: bool = False) -> dict[int, int]:
        """Flower node id -> SecAgg+ id: the configured ids in hardened mode, else 1..n by node id."""
        if self.secagg.mode is not Mode.HARDENED:
            return {node: i + 1 for i, node in enumerate(sorted(nodes))}
        roster = self.secagg.roster or {}
        ids: dict[int, int] = {}
        for node in sorted(nodes):
            pid = self._reported_ids.get(node, 0)
            if pid not in roster or pid in ids.values() or not 1 <= pid <= MAX_CLIENT_ID:
                if not quiet:
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

    def _grid_or_fail(self) -> Grid:
        if self._grid is None:
            raise ConfigurationError("no grid: configure_train/configure_evaluate were not called")
        return self._grid

    def _config(self, round_: int, ids: Mapping[int, int], **fields: Any) -> RoundConfig:
        s = self.secagg
        n = len(ids)
        settings: dict[str, Any] = {
            "modulus": s.modulus,
            "clip": s.clip,
            "bits": s.bits,
            "max_weight": s.max_weight or max(1, (s.modulus - 1) // (n << s.bits)),
            "min_aggregate": min(max(s.min_aggregate, MIN_NODES), n),
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

    def _exchange(self, grid: Grid, msgs: list[Message], timeout: float) -> list[Message]:
        """Push the messages and pull their replies until all are in or `timeout` seconds passed, pausing at most
        `poll_interval` between pulls (Flower's send_and_receive waits 3 s, which every exchange would pay)."""
        if not msgs:
            return []
        try:
            pending = set(grid.push_messages(msgs))
        except NotImplementedError:  # a grid that only answers whole exchanges (tests, custom grids)
            return list(grid.send_and_receive(msgs, timeout=timeout))
        end = time.monotonic() + timeout
        pause, out = 0.02, []
        while pending:
            got = list(grid.pull_messages(pending))
            out += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or time.monotonic() >= end:
                break
            time.sleep(pause)
            pause = min(pause * 2, self.secagg.poll_interval)
        return out

    def _messages(self, outbox: Mapping[int, list[tuple[str, ServerMessage]]], step: _Step, kind: str) -> list[Message]:
        node_of = {pid: node for node, pid in step.ids.items()}
        out = []
        for pid, items in outbox.items():
            rec = ConfigRecord(
                {
                    "stage": rec_.STAGE_PROTOCOL,
                    "client-id": pid,
                    "purposes": [purpose for purpose, _ in items],
                    "msgs": [encode_message(m) for _, m in items],
                }
            )
            out.append(Message(RecordDict({rec_.SECAGG_KEY: rec}), dst_node_id=node_of[pid], message_type=kind))
        return out

    def _drive(self, step: _Step, replies: list[Message], kind: str) -> int:
        """Drive the step's ServerSessions over the grid together, starting from the replies to the message that
        carried their setup: each exchange carries, to each node, what every session has for it; silence past the
        stage timeout counts as a dropout (the sessions' clock advances by exchange, so nothing depends on
        timing). Results land in each job; returns the number of exchanges it took."""
        grid = self._grid_or_fail()
        live = step.live
        node_of = {pid: node for node, pid in step.ids.items()}
        now, exchanges = 0.0, 0
        events: dict[str, list[Any]] = {purpose: [] for purpose in live}
        inbox: list[Message] | None = replies
        while live:
            stages = {purpose: server.state for purpose, (_, server) in live.items()}
            if inbox is None:
                outbox: dict[int, list[tuple[str, ServerMessage]]] = {}
                for purpose, evs in events.items():
                    for e in evs:
                        if isinstance(e, Send):
                            outbox.setdefault(e.to, []).append((purpose, e.message))
                        elif isinstance(e, Audit):
                            log.debug("secagg %s: %s %s %s", purpose, e.event, e.client, e.detail)
                inbox = []
                if outbox:
                    inbox = self._exchange(grid, self._messages(outbox, step, kind), self.secagg.stage_timeout)
                    exchanges += 1
            events = {purpose: [] for purpose in live}
            for reply in inbox:
                self._take_reply(reply, step.ids, live, events, now)
            inbox = None
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
        return exchanges

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
                log.warning("node %d: %s", node, reply.error.reason)
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


@dataclass
class _Job:
    """One SecAgg+ round a Flower step runs: its purpose, its configuration (None: nothing to aggregate), for
    metrics the names by group, and `result` once it ended."""

    purpose: str
    config: RoundConfig | None
    names: dict[str, list[str]] = field(default_factory=dict)
    result: AggregateResult | None = None


@dataclass
class _Step:
    """A secure Flower step (the train or evaluate messages of one server round and the SecAgg+ rounds that
    follow them): what was sent, the ids, and the SecAgg+ sessions once started."""

    stage: str
    server_round: int
    arrays: ArrayRecord | None
    records: bytes
    groups: list[str]
    evaluates: int | None
    """The round whose model this train step also evaluates (None: it does not)."""
    ids: dict[int, int] = field(default_factory=dict)
    jobs: list[_Job] = field(default_factory=list)
    metrics: _Job | None = None
    live: dict[str, tuple[_Job, ServerSession]] = field(default_factory=dict)


def _with_round(config: ConfigRecord, server_round: int) -> ConfigRecord:
    """A copy of the evaluate config with the round of the model it evaluates, as FedAvg sets it."""
    return ConfigRecord({**dict(config.items()), "server-round": server_round})


def _record(values: Mapping[str, float] | None) -> MetricRecord | None:
    """A MetricRecord of decoded means (None stays None)."""
    if values is None:
        return None
    items: dict[str, int | float | list[int] | list[float]] = dict(values)
    return MetricRecord(items)


def _metric_groups(job: _Job | None) -> dict[str, dict[str, float]] | None:
    """The decoded weighted means of a metrics job, by group (None if it failed or was not run)."""
    if job is None or job.config is None or job.result is None:
        return None
    return rec_.decode_metric_groups(job.result.sum, job.names)


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
        for key in ("min_train_nodes", "min_evaluate_nodes"):
            kwargs[key] = max(kwargs[key], MIN_NODES)  # FedAvg's default of 2 is too few for SecAgg+
        kwargs.update(
            min_available_nodes=max(strategy.min_available_nodes, MIN_NODES),  # type: ignore[attr-defined]
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
