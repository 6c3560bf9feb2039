"""Model parameters as a list of numpy arrays, flattened to one float32 vector for aggregation.

The PyTorch bridge (state_dict <-> flat vector) lives in secagg.fl.opacus_dp, with the rest of the torch code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from secagg.errors import ConfigurationError

Parameters = list[NDArray[Any]]
Shapes = list[tuple[int, ...]]


def flatten(params: Sequence[NDArray[Any]]) -> tuple[NDArray[np.float32], Shapes]:
    """One float32 vector holding every array in order, and the shapes to undo it."""
    shapes = [tuple(int(d) for d in np.shape(p)) for p in params]
    if not shapes:
        return np.zeros(0, dtype=np.float32), shapes
    flat = np.concatenate([np.asarray(p, dtype=np.float32).ravel() for p in params])
    if not np.isfinite(flat).all():
        raise ConfigurationError("parameters contain NaN or infinity")
    return flat, shapes


def unflatten(flat: NDArray[Any], shapes: Shapes) -> Parameters:
    """Inverse of flatten."""
    sizes = [int(np.prod(s)) for s in shapes]
    if sum(sizes) != flat.shape[0]:
        raise ConfigurationError(f"vector of {flat.shape[0]} values does not fit shapes totalling {sum(sizes)}")
    out: Parameters = []
    pos = 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(np.array(flat[pos : pos + size], dtype=np.float32).reshape(shape))
        pos += size
    return out
