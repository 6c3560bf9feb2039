"""Flower 1.42 side of the suite: its own virtual environment, and one driver subprocess per configuration.

flwr 1.42.0 pins an older protobuf than ours, so it lives in a venv of its own, created on demand
(`python -m venv DIR && DIR/bin/pip install flwr==1.42.0 numpy`) or given with --flower-venv. Each
configuration runs in bench/flower_driver.py under that venv's python; inputs go over as .npy, the
configuration as JSON, and the aggregate comes back as .npy (no pickle).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from secagg.protocol.rules import Stage

FLWR_VERSION = "1.42.0"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / ".bench-venvs" / "flwr-1.42"
DRIVER = Path(__file__).resolve().parent / "flower_driver.py"

# Where a client dropped "at stage S" in our protocol stops answering, in Flower's stage names: the stage
# whose reply it never sends (our advertise-keys reply is Flower's setup reply, which carries the keys).
FLOWER_STAGE = {
    Stage.ADVERTISE_KEYS: "setup",
    Stage.SHARE_KEYS: "share_keys",
    Stage.MASKED_INPUT: "collect_masked_vectors",
    Stage.UNMASK: "unmask",
}


class FlowerUnavailableError(RuntimeError):
    """Flower's venv could not be created or does not hold flwr 1.42.0."""


def _flwr_version(python: Path) -> str | None:
    """The flwr version importable by `python`, or None."""
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import flwr; print(flwr.__version__)"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_venv(path: Path | None, *, create: bool = True, log: Any = print) -> Path:
    """The python of a venv holding flwr 1.42.0: `path` if given, else the default one, created if missing."""
    venv = path or DEFAULT_VENV
    python = venv / "bin" / "python"
    version = _flwr_version(python)
    if version == FLWR_VERSION:
        return python
    if version is not None:
        raise FlowerUnavailableError(f"{venv} holds flwr {version}, the suite compares against {FLWR_VERSION}")
    if path is not None and python.exists():
        raise FlowerUnavailableError(f"{venv} has no importable flwr")
    if not create:
        raise FlowerUnavailableError(f"no Flower venv at {venv}")
    log(f"creating Flower's venv at {venv} (flwr=={FLWR_VERSION}, numpy)...")
    venv.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_PROGRESS_BAR="off")
    steps = (
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", f"flwr=={FLWR_VERSION}", "numpy"],
    )
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise FlowerUnavailableError(f"{' '.join(cmd[:4])} failed: " + " | ".join(tail))
    version = _flwr_version(python)
    if version != FLWR_VERSION:
        raise FlowerUnavailableError(f"after installing, {venv} holds flwr {version}")
    return python


@dataclass(frozen=True)
class FlowerRound:
    """Flower's SecAgg+ parameters for one configuration, mapped from ours."""

    n: int
    dim: int
    num_shares: int
    threshold: int
    clip: float
    target_range: int
    mod_range: int
    drop: dict[int, str]


def flower_params(
    n: int, dim: int, k: int, t: int, clip: float, bits: int, modulus: int, drop: dict[int, Stage]
) -> FlowerRound:
    """Map our (k, t, clip, bits, modulus, dropouts) onto Flower's knobs.

    Flower's num_shares counts the client itself (our k neighbours + 1; on the complete graph that is n), its
    reconstruction_threshold is our t; its quantisation_range = 2^bits - 1 gives the same grid as ours
    (2^bits - 1 steps over [-clip, clip]), with max_weight = 1 and every weight 1.
    """
    return FlowerRound(
        n=n,
        dim=dim,
        num_shares=min(k + 1, n),
        threshold=t,
        clip=clip,
        target_range=(1 << bits) - 1,
        mod_range=modulus,
        drop={c: FLOWER_STAGE[s] for c, s in drop.items()},
    )


def run_flower(
    python: Path, params: FlowerRound, inputs: NDArray[np.float32], repeats: int, seed: int = 0
) -> tuple[dict[str, Any], NDArray[np.float64] | None]:
    """Run `repeats` Flower rounds on `inputs` (N x D, row i = node i + 1); the driver's report and aggregate."""
    cfg = {
        "n": params.n,
        "dim": params.dim,
        "num_shares": params.num_shares,
        "threshold": params.threshold,
        "clip": params.clip,
        "target_range": params.target_range,
        "mod_range": params.mod_range,
        "max_weight": 1,
        "repeats": repeats,
        "seed": seed,
        "drop": {str(c): s for c, s in params.drop.items()},
    }
    with tempfile.TemporaryDirectory(prefix="secagg-bench-flower-") as tmp:
        d = Path(tmp)
        np.save(d / "inputs.npy", inputs)
        (d / "round.json").write_text(json.dumps(cfg))
        proc = subprocess.run(
            [str(python), str(DRIVER), "--inputs", str(d / "inputs.npy"), "--config", str(d / "round.json"),
             "--out", str(d / "out")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"Flower driver failed (exit {proc.returncode}):\n{tail}")
        report = json.loads((d / "out.json").read_text())
        agg_path = d / "out.npy"
        agg = np.load(agg_path) if agg_path.exists() else None
    return report, agg
