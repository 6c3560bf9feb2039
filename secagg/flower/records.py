"""What our SecAgg+ stages look like inside Flower messages, shared by the strategy and the client mod.

Every message of ours carries a ConfigRecord under `SECAGG_KEY`. Its "stage" is "train" or "evaluate" (the
first message of a Flower round: the node runs the user's function, keeps its update and metrics locally,
and answers with no values: with the SecAgg+ setup requests in the message, its key advertisements; else
just the metric names) or "protocol" (SecAgg+ server messages as canonical bytes, answered by the client
messages they produce). Both sides compute the same digest of the model and configuration(s) the node was
sent; it becomes the round's `model_hash`, so a server that shows different models to different nodes
splits them into sessions that cannot complete (scenario A9).

Metrics travel in one integer SecAgg+ round per Flower step, in groups ("train": what the train function
reported; "evaluate": what the evaluate function reported, in the same message when the strategy folds the
evaluation into the next training message). A group is its own weight followed by each metric times that
weight, in fixed point; the round's vector has a fixed number of slots (bound in the configuration), so it
can be configured before the node has reported its metric names.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from numpy.typing import NDArray

from secagg.encoding import Writer, digest, domain
from secagg.errors import ConfigurationError

SECAGG_KEY = "secagg"
"""Key of our ConfigRecord in a message's RecordDict."""
STAGE_TRAIN, STAGE_EVALUATE, STAGE_PROTOCOL = "train", "evaluate", "protocol"
PURPOSE_ARRAYS, PURPOSE_METRICS = "arrays", "metrics"
METRIC_FRACTION_BITS = 20
"""Metrics travel as fixed-point integers (value x weight x 2^20) in a 2^64 ring: exact sums, no clipping."""
METRIC_MODULUS = 1 << 64
METRIC_MAX_WEIGHT = 1 << 31


GROUP_TRAIN, GROUP_EVALUATE = "train", "evaluate"
GROUPS = (GROUP_TRAIN, GROUP_EVALUATE)
"""Metric groups in the order they take in a metrics round's vector."""
METRIC_SLOTS = 32
"""Default length of a metrics round's vector: per group, 1 + the number of its metrics."""
EVALUATE_CONFIG_KEY = "secagg.evaluate-config"
"""Key, in a train message, of the ConfigRecord for the evaluation that runs in the same message."""


def records_digest(
    arrays: ArrayRecord | None, config: ConfigRecord | None, evaluate_config: ConfigRecord | None = None
) -> bytes:
    """SHA-256 (domain separated) over the arrays (keys, dtype, shape, bytes) and the config items, in order;
    with the configuration of an evaluation folded into the same message, over that too."""
    w = Writer().u16(1 if evaluate_config is None else 2)
    items = list(arrays.items()) if arrays is not None else []
    w.u32(len(items))
    for key, arr in items:
        w.text(key).text(str(arr.dtype)).text(json.dumps([int(d) for d in arr.shape])).text(arr.stype)
        w.bytes_(bytes(arr.data))
    cfg = sorted(config.items()) if config is not None else []
    w.u32(len(cfg))
    for key, value in cfg:
        w.text(key).text(_canonical(value))
    if evaluate_config is not None:
        items_e = sorted(evaluate_config.items())
        w.u32(len(items_e))
        for key, value in items_e:
            w.text(key).text(_canonical(value))
    return digest(domain("flower", "records"), w.getvalue())


def metrics_digest(records: bytes, groups: list[str]) -> bytes:
    """The model_hash of a metrics round: the records' digest and the metric groups it carries, in order."""
    w = Writer().raw(records).u32(len(groups))
    for group in groups:
        w.text(group)
    return digest(domain("flower", "metrics"), w.getvalue())


def slots_needed(names: dict[str, list[str]]) -> int:
    """Vector length the metric groups take: per group its weight and one slot per metric."""
    return sum(1 + len(keys) for keys in names.values())


def encode_metric_groups(groups: list[tuple[list[float], int]], slots: int) -> NDArray[np.uint64]:
    """Per group (values, weight): weight, then value x weight, in fixed point; zeros up to `slots`."""
    vec = np.zeros(slots, dtype=np.uint64)
    pos = 0
    for values, weight in groups:
        part = encode_metrics([1.0, *values], weight)
        if pos + part.shape[0] > slots:
            raise ConfigurationError(f"the metrics take more than the round's {slots} slots")
        vec[pos : pos + part.shape[0]] = part
        pos += part.shape[0]
    return vec


def decode_metric_groups(ring_sum: NDArray[Any], names: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Inverse of encode_metric_groups summed over nodes: per group, each metric's mean weighted by that
    group's weights (a group whose weights sum to zero or less decodes to nothing)."""
    sums = decode_metrics(ring_sum, 1)
    out: dict[str, dict[str, float]] = {}
    pos = 0
    for group, keys in names.items():
        total, values = sums[pos], sums[pos + 1 : pos + 1 + len(keys)]
        pos += 1 + len(keys)
        if total > 0:
            out[group] = {k: v / total for k, v in zip(keys, values, strict=True)}
    return out


def _canonical(value: Any) -> str:
    if isinstance(value, bytes):
        return "b:" + value.hex()
    if isinstance(value, list):
        return "l:" + json.dumps([_canonical(v) for v in value])
    return f"{type(value).__name__}:{value!r}"


def flatten_arrays(arrays: ArrayRecord) -> NDArray[np.float64]:
    """Every array of the record, in order, as one float64 vector (the shapes stay with the record)."""
    parts = [np.asarray(a.numpy(), dtype=np.float64).ravel() for a in arrays.values()]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def unflatten_like(flat: NDArray[Any], like: ArrayRecord) -> ArrayRecord:
    """An ArrayRecord with like's keys, shapes and dtypes holding `flat` (rounded for integer arrays)."""
    out: dict[str, Array] = {}
    pos = 0
    for key, arr in like.items():
        ref = arr.numpy()
        size = int(ref.size)
        values = flat[pos : pos + size].reshape(ref.shape)
        if np.issubdtype(ref.dtype, np.integer):
            values = np.rint(values)
        out[key] = Array(values.astype(ref.dtype))
        pos += size
    if pos != flat.shape[0]:
        raise ConfigurationError(f"{flat.shape[0]} values do not fit the model's {pos}")
    return ArrayRecord(out)


def metric_values(metrics: MetricRecord, keys: list[str]) -> list[float]:
    """The named scalar metrics as floats; ConfigurationError for a missing, list or non-finite one."""
    out = []
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"metric {key!r} must be a number (lists are not aggregated securely)")
        if not math.isfinite(float(value)):
            raise ConfigurationError(f"metric {key!r} is not finite")
        out.append(float(value))
    return out


def encode_metrics(values: list[float], weight: int) -> NDArray[np.uint64]:
    """value x weight in fixed point, two's complement in the 2^64 ring (the sum decodes exactly)."""
    scaled = [round(v * weight * (1 << METRIC_FRACTION_BITS)) for v in values]
    if any(abs(s) >= 1 << 62 for s in scaled):
        raise ConfigurationError("a metric times the weight is too large for the fixed-point encoding")
    return np.array([s % METRIC_MODULUS for s in scaled], dtype=np.uint64)


def decode_metrics(ring_sum: NDArray[Any], total_weight: int) -> list[float]:
    """Inverse of encode_metrics summed over clients: the weighted means."""
    out = []
    for word in ring_sum.tolist():
        signed = int(word) - METRIC_MODULUS if int(word) >= METRIC_MODULUS // 2 else int(word)
        out.append(signed / (1 << METRIC_FRACTION_BITS) / total_weight)
    return out


def get_int(rec: ConfigRecord, key: str) -> int:
    """An integer field of one of our records; ConfigurationError if missing or of another type."""
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"field {key!r} must be an integer")
    return value


def get_bytes(rec: ConfigRecord, key: str) -> bytes:
    """A bytes field of one of our records; ConfigurationError if missing or of another type."""
    value = rec.get(key)
    if not isinstance(value, bytes):
        raise ConfigurationError(f"field {key!r} must be bytes")
    return value


def get_str(rec: ConfigRecord, key: str) -> str:
    """A text field of one of our records; ConfigurationError if missing or of another type."""
    value = rec.get(key)
    if not isinstance(value, str):
        raise ConfigurationError(f"field {key!r} must be text")
    return value


def get_names(rec: ConfigRecord, key: str) -> list[str]:
    """A JSON list of names (metric keys); ConfigurationError if it is anything else."""
    try:
        names = json.loads(get_str(rec, key))
    except json.JSONDecodeError:
        raise ConfigurationError(f"field {key!r} must be a JSON list of names") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigurationError(f"field {key!r} must be a JSON list of names")
    return names


def get_groups(rec: ConfigRecord, key: str) -> dict[str, list[str]]:
    """A JSON object of metric group -> names, groups in GROUPS order; ConfigurationError for anything else."""
    try:
        raw = json.loads(get_str(rec, key))
    except json.JSONDecodeError:
        raise ConfigurationError(f"field {key!r} must be a JSON object of metric groups") from None
    if not isinstance(raw, dict) or not set(raw) <= set(GROUPS):
        raise ConfigurationError(f"field {key!r} must map metric groups {GROUPS} to lists of names")
    out: dict[str, list[str]] = {}
    for group in GROUPS:
        if group in raw:
            names = raw[group]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConfigurationError(f"field {key!r}: group {group!r} must be a list of names")
            out[group] = names
    return out


def reply_key(purpose: str) -> str:
    """Key of the ArrayRecord holding a node's encoded replies for one purpose (uint8 arrays, in order):
    Flower chunks ArrayRecords for transport, so a model-sized masked input never has to fit one gRPC message."""
    return f"secagg-replies.{purpose}"


def pack_replies(blobs: list[bytes]) -> ArrayRecord:
    """Encoded client messages as an ArrayRecord of uint8 arrays keyed by position."""
    return ArrayRecord({f"{i:06d}": Array(np.frombuffer(b, dtype=np.uint8).copy()) for i, b in enumerate(blobs)})


def unpack_replies(rec: ArrayRecord) -> list[bytes]:
    """Inverse of pack_replies; ConfigurationError for anything that is not a list of byte arrays."""
    out = []
    for key in sorted(rec.keys()):
        arr = rec[key].numpy()
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise ConfigurationError("a SecAgg+ reply must be a 1-D uint8 array")
        out.append(arr.tobytes())
    return out


def get_names_list(rec: ConfigRecord, key: str) -> list[str]:
    """A list-of-text field of one of our records; ConfigurationError if missing or of another type."""
    value = rec.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"field {key!r} must be a non-empty list of text")
    return [str(v) for v in value]


def get_bytes_list(rec: ConfigRecord, key: str) -> list[bytes]:
    """A list-of-bytes field of one of our records; ConfigurationError if missing or of another type."""
    value = rec.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, bytes) for v in value):
        raise ConfigurationError(f"field {key!r} must be a non-empty list of bytes")
    return [bytes(v) for v in value]  # type: ignore[arg-type]
