"""A federation of silo processes over gRPC: each round's task is published, then run through SecAgg+."""

from __future__ import annotations

from secagg.errors import ConfigurationError, RoundAborted
from secagg.fl.strategy import Update
from secagg.fl.task import RoundTask
from secagg.protocol.codes import AbortCode
from secagg.protocol.server import AggregateResult
from secagg.transport.grpc_server import AggregationServer


class GrpcFederation:
    """Secure rounds on a running AggregationServer whose silos run a task-fetching trainer."""

    def __init__(self, server: AggregationServer, *, first_round: int = 0) -> None:
        self.server = server
        self.first_round = first_round
        self.outcomes: list[float] = []

    def secure_round(
        self, secagg_round: int, task: RoundTask, *, dim: int, clip: float, encoding: str = "quantised"
    ) -> AggregateResult:
        """Publish the task, run one SecAgg+ round bound to its digest, return the aggregate."""
        digest = self.server.publish_task(task.encode())
        r = self.first_round + secagg_round
        outcome = self.server.run_round(r, model_hash=digest, dim=dim, clip=clip, encoding=encoding)
        self.outcomes.append(outcome.seconds)
        if outcome.result is None:
            raise outcome.error or RoundAborted(AbortCode.NO_RESULT, "the round ended without an aggregate")
        return outcome.result

    def plain_fit(self, task: RoundTask) -> list[Update]:
        """Refused: over gRPC the server never collects individual updates."""
        raise ConfigurationError("a gRPC federation runs secure rounds only")

    def plain_evaluate(self, task: RoundTask) -> list[tuple[float, float, int]]:
        """Refused: over gRPC the server never collects individual results."""
        raise ConfigurationError("a gRPC federation runs secure rounds only")
