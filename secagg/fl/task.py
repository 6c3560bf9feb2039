"""What a silo is asked to do in a round, and how it turns that into its SecAgg+ input.

A `RoundTask` (train or evaluate, the global model, the instructions) has one canonical encoding; its digest
is the `model_hash` of the SecAgg+ round configuration, so the session id binds the exact model and
instructions: a server that sends different models to different silos splits them into sessions that
cannot complete (scenario A9). A silo fetches the task by digest and checks the digest before training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from secagg.crypto.rng import RandomSource, SystemRandom
from secagg.encoding import Reader, Writer
from secagg.errors import ConfigurationError, EncodingError
from secagg.fl.strategy import Update
from secagg.protocol.client import ClientInput
from secagg.protocol.config import ClientPolicy, RoundConfig
from secagg.protocol.recipes import task_digest

if TYPE_CHECKING:
    from secagg.fl.ddp import DDPParams

log = logging.getLogger("secagg.fl")

TaskKind = Literal["fit", "evaluate"]
LOSS_SCALE = 10.0
"""Evaluation inputs are (loss / LOSS_SCALE, accuracy), both in [0, 1] for the quantiser's clip of 1."""
EVAL_DIM = 2


@dataclass(frozen=True, eq=False)
class RoundTask:
    """One round's job for every silo: train from (or evaluate) `parameters` following `instructions`."""

    kind: TaskKind
    round: int
    parameters: NDArray[np.float32]
    instructions: dict[str, float | int | str]

    def encode(self) -> bytes:
        """Canonical bytes: version, kind, round, canonical JSON instructions, little-endian float32 model."""
        if self.kind not in ("fit", "evaluate"):
            raise ConfigurationError("task kind must be 'fit' or 'evaluate'")
        params = np.ascontiguousarray(self.parameters, dtype="<f4")
        text = json.dumps(self.instructions, sort_keys=True, separators=(",", ":"), allow_nan=False)
        w = Writer().u16(1).text(self.kind).u32(self.round).text(text).u64(params.shape[0])
        return w.raw(params.tobytes()).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> RoundTask:
        """Inverse of encode; EncodingError on malformed bytes."""
        r = Reader(data)
        if r.u16() != 1:
            raise EncodingError("unknown task version")
        kind, rnd, text, n = r.text(16), r.u32(), r.text(1 << 20), r.u64()
        if kind not in ("fit", "evaluate"):
            raise EncodingError("unknown task kind")
        if n > (r.remaining()) // 4:
            raise EncodingError("task model truncated")
        params = np.frombuffer(r.raw(4 * n), dtype="<f4").astype(np.float32)
        r.finish()
        try:
            instructions = json.loads(text)
        except json.JSONDecodeError:
            raise EncodingError("task instructions are not JSON") from None
        if not isinstance(instructions, dict):
            raise EncodingError("task instructions must be an object")
        return cls(kind, rnd, params, instructions)  # type: ignore[arg-type]

    def digest(self) -> bytes:
        """The 32-byte hash that goes into the round configuration as model_hash."""
        return task_digest(self.encode())


class LocalTrainer(Protocol):
    """A silo's model code: trains on its own data and evaluates; nothing leaves but the SecAgg+ input."""

    def fit(self, parameters: NDArray[np.float32], instructions: dict[str, Any]) -> Update:
        """Train from parameters; return the update (new - old) and the number of examples used."""
        ...

    def evaluate(self, parameters: NDArray[np.float32]) -> tuple[float, float, int]:
        """(mean loss, accuracy, number of examples) of parameters on the silo's held-out data."""
        ...


def task_inputs(
    trainer: LocalTrainer,
    fetch: Callable[[bytes], bytes],
    *,
    on_result: Callable[[RoundTask, Update], None] | None = None,
    rng: RandomSource | None = None,
    policy: ClientPolicy | None = None,
) -> Callable[[RoundConfig], ClientInput]:
    """The silo's SecAgg+ input provider: fetch the round's task by its hash, check it, train or evaluate.

    Training updates are clipped to the round's clip (the quantiser clips too; clipping here keeps the
    weight honest) and weighted by the number of examples (capped at the round's max_weight). A task that
    asks for distributed DP (instructions "ddp" and "ddp_seed", a round with encoding "integers") gets the
    update encoded with discrete noise by secagg.fl.ddp (randomness from rng, the OS by default), weight 1,
    unless the noise it asks of this silo is below the policy's `min_ddp_local_noise_multiplier` (BAD_INPUT).
    """
    noise_rng: RandomSource = rng if rng is not None else SystemRandom()
    noise_floor = policy.min_ddp_local_noise_multiplier if policy is not None else 0.0

    def provide(config: RoundConfig) -> ClientInput:
        blob = fetch(config.model_hash)
        if task_digest(blob) != config.model_hash:
            raise ConfigurationError("the task fetched does not match the round's model hash")
        task = RoundTask.decode(blob)
        if task.kind == "fit":
            if task.parameters.shape[0] != config.dim and "ddp" not in task.instructions:
                raise ConfigurationError(f"model has {task.parameters.shape[0]} values, the round {config.dim}")
            update = trainer.fit(task.parameters, dict(task.instructions))
            if on_result is not None:
                on_result(task, update)
            if "ddp" in task.instructions:
                return _ddp_input(update, task, config, noise_rng, noise_floor)
            delta = np.clip(update.delta.astype(np.float32), -config.clip, config.clip)
            return ClientInput(delta, _weight(update.num_examples, config))
        loss, accuracy, n = trainer.evaluate(task.parameters)
        vec = np.array([min(max(loss / LOSS_SCALE, 0.0), 1.0), accuracy], dtype=np.float32)
        return ClientInput(vec, _weight(n, config))

    return provide


def ddp_instructions(params: DDPParams, rotation_seed: bytes) -> dict[str, str]:
    """Task instructions asking silos for a distributed-DP encoding (all public)."""
    return {"ddp": json.dumps(dataclasses.asdict(params), sort_keys=True), "ddp_seed": rotation_seed.hex()}


def _ddp_input(
    update: Update, task: RoundTask, config: RoundConfig, rng: RandomSource, noise_floor: float = 0.0
) -> ClientInput:
    from secagg.fl import ddp

    try:
        params = ddp.DDPParams(**json.loads(str(task.instructions["ddp"])))
        seed = bytes.fromhex(str(task.instructions["ddp_seed"]))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad distributed-DP instructions: {exc}") from None
    if config.encoding != "integers" or config.dim != params.padded_dim or config.modulus != params.modulus:
        raise ConfigurationError("the round does not match the distributed-DP instructions")
    local = params.local_noise_multiplier
    if local < noise_floor:
        raise ConfigurationError(
            f"distributed-DP noise asked of this silo ({local:.4g} x its clip) is below its policy's {noise_floor:.4g}"
        )
    return ClientInput.integers(ddp.encode(update.delta, params, seed, rng), 1)


def _weight(n: int, config: RoundConfig) -> int:
    if n < 1:
        raise ConfigurationError("a silo needs at least one example")
    if n > config.max_weight:
        log.warning("weight %d capped at the round's max_weight %d", n, config.max_weight)
    return min(n, config.max_weight)
