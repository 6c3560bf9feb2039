"""Cheap stage messages: in a deployment every message runs in a fresh `flwr-clientapp` process, so importing
the example ClientApp (what each stage message pays) must not import torch or scikit-learn, and a stage
message's kernels must come from Numba's on-disk cache, never be compiled again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flower-secagg"

_IMPORTS = """
import json, sys
import secagg_example.client_app
print(json.dumps({m: m in sys.modules for m in ("torch", "sklearn", "secagg.flower")}))
"""

_ROUND = """
import json, logging, sys
logging.disable(logging.CRITICAL)
import numba.core.registry
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
import numpy as np
from secagg.native import field, quantise, ring
from secagg.flower import SecAggSettings, SecureFedAvg, secagg_mod
from secagg.flower.local import LocalGrid

def app_for(node):
    app = ClientApp()
    secure = secagg_mod(app=app)

    @app.train(mods=[secure])
    def train(msg, context):
        arrays = [a + 0.01 * node for a in msg.content["arrays"].to_numpy_ndarrays()]
        return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 5})}),
                       reply_to=msg)

    @app.evaluate(mods=[secure])
    def evaluate(msg, context):
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 5, "acc": 0.5})}), reply_to=msg)

    return app

grid = LocalGrid({n: app_for(n) for n in (1, 2, 3)})
SecureFedAvg().start(grid=grid, initial_arrays=ArrayRecord([np.zeros(300, np.float32)]), num_rounds=1)
misses = {}
for mod in (field, quantise, ring):
    for name, obj in vars(mod).items():
        stats = getattr(obj, "stats", None)
        if stats is not None and hasattr(stats, "cache_misses"):
            used = sum(stats.cache_hits.values()) + sum(stats.cache_misses.values())
            if used:
                misses[f"{mod.__name__}.{name}"] = sum(stats.cache_misses.values())
print(json.dumps(misses))
"""


def _python(code: str, env: dict[str, str], cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_importing_the_example_client_app_imports_neither_torch_nor_sklearn() -> None:
    seen = json.loads(_python(_IMPORTS, dict(os.environ), EXAMPLE))
    assert seen == {"torch": False, "sklearn": False, "secagg.flower": True}


def test_a_second_process_loads_every_kernel_from_the_cache(tmp_path: Path) -> None:
    """The first process fills an empty NUMBA_CACHE_DIR; a second one running the same secure round compiles
    nothing (every kernel it calls is a cache hit)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), SECAGG_STATE_DIR=str(tmp_path / "state"))
    env.pop("NUMBA_DISABLE_JIT", None)
    first = json.loads(_python(_ROUND, env, tmp_path))
    second = json.loads(_python(_ROUND, env, tmp_path))
    assert first and sum(first.values()) > 0  # kernels were used, and compiled the first time
    assert set(second) == set(first) and sum(second.values()) == 0, second
