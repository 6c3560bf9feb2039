"""Model parameters as a list of numpy arrays, flattened to one float32 vector for aggregation.

Also the PyTorch bridge (state_dict <-> flat vector), imported lazily so torch stays optional.
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


def state_dict_to_vector(state_dict: Any) -> tuple[NDArray[np.float32], list[tuple[str, tuple[int, ...]]]]:
    """A PyTorch state_dict as one float32 vector plus (name, shape) entries to restore it."""
    layout = [(name, tuple(t.shape)) for name, t in state_dict.items()]
    arrays = [t.detach().cpu().numpy() for t in state_dict.values()]
    flat, _ = flatten(arrays)
    return flat, layout


def vector_to_state_dict(flat: NDArray[Any], layout: list[tuple[str, tuple[int, ...]]]) -> dict[str, Any]:
    """Inverse of state_dict_to_vector (float32 torch tensors)."""
    import torch

    arrays = unflatten(flat, [shape for _, shape in layout])
    return {name: torch.from_numpy(a.copy()) for (name, _), a in zip(layout, arrays, strict=True)}
