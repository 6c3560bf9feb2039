"""Federated training loops: a strategy, a federation of silos, rounds of fit then evaluate.

A secure strategy's rounds run through SecAgg+ (`secure_round`): the server learns only the example-weighted
mean of the updates, and of the evaluation metrics. A plain strategy's rounds collect individual updates
(`plain_fit`), for comparison. `InProcessFederation` runs the silos in this process (the same sans-IO
sessions as over gRPC); `secagg.fl.grpc.GrpcFederation` runs them as real processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from secagg.crypto.rng import DeterministicRandom, RandomSource, SystemRandom
from secagg.errors import ConfigurationError, RoundAborted
from secagg.fl.strategy import Strategy, Update
from secagg.fl.task import EVAL_DIM, LOSS_SCALE, LocalTrainer, RoundTask, ddp_instructions, task_inputs
from secagg.protocol.client import ClientSession
from secagg.protocol.codes import AbortCode
from secagg.protocol.config import ClientPolicy, Mode, RoundConfig, propose_round
from secagg.protocol.ledger import MemoryLedger
from secagg.protocol.recipes import task_digest
from secagg.protocol.server import AggregateResult, ServerSession
from secagg.transport.inprocess import InProcessNetwork

if TYPE_CHECKING:
    from secagg.fl.ddp import DDPParams

log = logging.getLogger("secagg.fl")


class Federation(Protocol):
    """Where rounds run. `secure_round` returns the SecAgg+ aggregate of the silos' inputs for a task."""

    def secure_round(
        self, secagg_round: int, task: RoundTask, *, dim: int, clip: float, encoding: str = "quantised"
    ) -> AggregateResult:
        """Run one SecAgg+ round for the task; RoundAborted if it produced no aggregate."""
        ...

    def plain_fit(self, task: RoundTask) -> list[Update]:
        """Every silo's individual update (plain FedAvg baseline)."""
        ...

    def plain_evaluate(self, task: RoundTask) -> list[tuple[float, float, int]]:
        """Every silo's (loss, accuracy, examples)."""
        ...


@dataclass(frozen=True)
class SecureSettings:
    """SecAgg+ parameters of a federation's rounds (k and t derived from the fractions unless given)."""

    mode: Mode = Mode.SEMI_HONEST
    bits: int = 16
    modulus: int = 1 << 32
    max_weight: int = 1024
    min_aggregate: int = 2
    corrupt_fraction: float = 0.1
    dropout_fraction: float = 0.1
    k: int | None = None
    t: int | None = None
    run_id: str = "federation"


class InProcessFederation:
    """Silos as LocalTrainers in this process; secure rounds drive ClientSessions and a ServerSession."""

    def __init__(
        self,
        trainers: dict[int, LocalTrainer],
        *,
        settings: SecureSettings | None = None,
        rng: RandomSource | None = None,
        drop_at: Callable[[int], dict[int, Any]] | None = None,
        policy: ClientPolicy | None = None,
    ) -> None:
        """policy: every silo's ClientPolicy (default: no derived-degree check, the settings' min_aggregate)."""
        if len(trainers) < 2:
            raise ConfigurationError("a federation needs at least two silos")
        self.trainers = dict(sorted(trainers.items()))
        self.settings = settings or SecureSettings()
        self._rng = rng or SystemRandom()
        self._ledgers = {c: MemoryLedger() for c in self.trainers}
        self._drop_at = drop_at
        self._policy = policy or ClientPolicy(require_derived_degree=False, min_aggregate=self.settings.min_aggregate)
        self.last_clients: dict[int, ClientSession] = {}  # the sessions of the latest secure round

    def _config(self, secagg_round: int, task: RoundTask, dim: int, clip: float, encoding: str) -> RoundConfig:
        s = self.settings
        return propose_round(
            run_id=s.run_id,
            round_=secagg_round,
            participants=self.trainers,
            mode=s.mode,
            graph_seed=self._rng.random_bytes(32),
            dim=dim,
            corrupt_fraction=s.corrupt_fraction,
            dropout_fraction=s.dropout_fraction,
            k=s.k,
            t=s.t,
            modulus=s.modulus,
            clip=clip,
            bits=s.bits,
            max_weight=s.max_weight,
            min_aggregate=s.min_aggregate,
            model_hash=task.digest(),
            encoding=encoding,
        )

    def secure_round(
        self, secagg_round: int, task: RoundTask, *, dim: int, clip: float, encoding: str = "quantised"
    ) -> AggregateResult:
        """One in-process SecAgg+ round: each silo fetches the task by hash and contributes its input."""
        cfg = self._config(secagg_round, task, dim, clip, encoding)
        blob = task.encode()
        published = {task_digest(blob): blob}

        def fetch(digest: bytes) -> bytes:
            if digest not in published:
                raise ConfigurationError("unknown task")
            return published[digest]

        policy = self._policy
        clients = {
            c: ClientSession(
                c,
                rng=DeterministicRandom(self._rng.random_bytes(32)),
                policy=policy,
                ledger=self._ledgers[c],
                input=task_inputs(trainer, fetch, rng=DeterministicRandom(self._rng.random_bytes(32)), policy=policy),
            )
            for c, trainer in self.trainers.items()
        }
        if cfg.mode is Mode.HARDENED:
            raise ConfigurationError("in-process federations run the semi-honest mode; use gRPC for hardened")
        server = ServerSession(cfg, corrupt_fraction=self.settings.corrupt_fraction)
        self.last_clients = clients
        drops = self._drop_at(secagg_round) if self._drop_at else {}
        InProcessNetwork(server, clients, drop_at=drops).run()
        if server.result is None:
            raise server.error or RoundAborted(AbortCode.NO_RESULT, "the round ended without an aggregate")
        return server.result

    def plain_fit(self, task: RoundTask) -> list[Update]:
        """Each silo's own update (the plaintext baseline)."""
        return [t.fit(task.parameters, dict(task.instructions)) for t in self.trainers.values()]

    def plain_evaluate(self, task: RoundTask) -> list[tuple[float, float, int]]:
        """Each silo's own evaluation (the plaintext baseline)."""
        return [t.evaluate(task.parameters) for t in self.trainers.values()]


@dataclass
class RoundReport:
    """One federated round: evaluation of the model it produced, and timings."""

    round: int
    loss: float
    accuracy: float
    fit_seconds: float
    evaluate_seconds: float
    survivors: int
    extra: dict[str, Any] = field(default_factory=dict)


def run_federated(
    strategy: Strategy,
    federation: Federation,
    rounds: int,
    *,
    on_round: Callable[[RoundReport], None] | None = None,
    first_round: int = 0,
    distributed_dp: DDPParams | None = None,
    rng: RandomSource | None = None,
) -> list[RoundReport]:
    """Train for `rounds` rounds (fit, then federated evaluation of the new model), numbered from first_round.

    Round r uses SecAgg+ rounds 2r (fit) and 2r + 1 (evaluate): every (run, round) is used once, as the silos'
    contribution ledgers require. With distributed_dp, every silo adds discrete noise to its update before
    SecAgg+ (Kairouz et al. 2021; Agarwal et al. 2021): fit rounds carry ring integers, the server decodes the
    noisy sum and the model moves by its mean over the survivors (unweighted, as the noise calibration
    assumes); rotation seeds are public and fresh each round (from rng).
    """
    seeds: RandomSource = rng if rng is not None else SystemRandom()
    reports: list[RoundReport] = []
    for r in range(first_round, first_round + rounds):
        instructions: dict[str, Any] = dict(strategy.configure_fit(r).as_dict())
        rotation_seed = b""
        if distributed_dp is not None:
            rotation_seed = seeds.random_bytes(32)
            instructions.update(ddp_instructions(distributed_dp, rotation_seed))
        fit_task = RoundTask("fit", r, strategy.flat_parameters, instructions)
        t0 = time.perf_counter()
        if strategy.secure and distributed_dp is not None:
            from secagg.fl import ddp

            res = federation.secure_round(
                2 * r, fit_task, dim=distributed_dp.padded_dim, clip=strategy.clip, encoding="integers"
            )
            noisy_sum = ddp.decode(res.sum, distributed_dp, rotation_seed, len(res.survivors))
            strategy.apply_weighted_mean(r, noisy_sum / len(res.survivors), res.total_weight)
            survivors = len(res.survivors)
        elif strategy.secure:
            res = federation.secure_round(2 * r, fit_task, dim=strategy.dim, clip=strategy.clip)
            assert res.mean is not None  # quantised round
            strategy.apply_weighted_mean(r, res.mean, res.total_weight)
            survivors = len(res.survivors)
        else:
            updates = federation.plain_fit(fit_task)
            strategy.aggregate_fit(r, updates)
            survivors = len(updates)
        t1 = time.perf_counter()
        eval_task = RoundTask("evaluate", r, strategy.flat_parameters, {})
        if strategy.secure:
            ev = federation.secure_round(2 * r + 1, eval_task, dim=EVAL_DIM, clip=1.0)
            assert ev.mean is not None
            loss, accuracy = float(ev.mean[0]) * LOSS_SCALE, float(ev.mean[1])
        else:
            results = federation.plain_evaluate(eval_task)
            total = sum(n for _, _, n in results)
            loss = sum(lo * n for lo, _, n in results) / total
            accuracy = sum(a * n for _, a, n in results) / total
        rep = RoundReport(r, loss, accuracy, t1 - t0, time.perf_counter() - t1, survivors)
        reports.append(rep)
        if on_round is not None:
            on_round(rep)
    return reports
