"""In-process round benchmarks W2-W5 (see the design's benchmark table): ours against the hardware floor.

Run `python bench/protocol.py [--workloads W2,W3,W4,W5] [--repeats R] [--quick]`. For each workload it runs
whole SecAgg+ rounds in one process, single threaded (every client's and the server's work, wall time),
checks each aggregate exactly against the plaintext sum, and measures in the same process the floor: the
AES-256-CTR keystream plus vector add for every mask expansion the round cannot avoid (each masking
client: its self mask and one per live neighbour; the server: every survivor's self mask and, for each
client dropped after sharing keys, one per surviving neighbour), timed per expansion at the same D and
multiplied by the count. Prints a Markdown table and writes bench/results/protocol.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.protocol.config import Mode
from secagg.protocol.recipes import neighbourhoods
from secagg.protocol.rules import Stage
from secagg.simulation import build, expected_sum, make_config, run

RESULTS = Path(__file__).resolve().parent / "results" / "protocol.json"


@dataclass(frozen=True)
class Workload:
    """One in-process round configuration and the Flower 1.42 anchor from the design's table."""

    wid: str
    n: int
    dim: int
    complete: bool
    dropout: float
    stage: Stage
    flower_s: float | None
    target: str


WORKLOADS = {
    "W2": Workload("W2", 10, 1_000_000, True, 0.1, Stage.UNMASK, 1.46, ">= 10x faster than Flower"),
    "W3": Workload("W3", 100, 100_000, False, 0.1, Stage.MASKED_INPUT, 17.1, "<= 0.3 s, >= 50x faster than Flower"),
    "W4": Workload("W4", 100, 100_000, True, 0.1, Stage.MASKED_INPUT, 226.0, ">= 100x faster than Flower"),
    "W5": Workload("W5", 1000, 100_000, False, 0.1, Stage.MASKED_INPUT, 159.0, "<= 1.5x floor"),
}
QUICK = {
    "W2": Workload("W2", 10, 100_000, True, 0.1, Stage.UNMASK, None, "smoke"),
    "W3": Workload("W3", 100, 10_000, False, 0.1, Stage.MASKED_INPUT, None, "smoke"),
}


def expansion_cost(dim: int, samples: int = 40) -> float:
    """Median seconds of one floor expansion: AES-256-CTR keystream of 4*D bytes + one vector add."""
    zeros = memoryview(bytes(4 * dim))
    buf = bytearray(4 * dim + 15)
    words = np.frombuffer(buf, dtype=np.uint32, count=dim)
    acc = np.zeros(dim, dtype=np.uint32)
    key = bytes(range(32))
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, buf)
        np.add(acc, words, out=acc)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def count_expansions(setup: Any) -> int:
    """Mask expansions the round cannot avoid, from what actually happened in it."""
    server = setup.server
    res = server.result
    cfg = setup.config
    hood = neighbourhoods(cfg.participants, cfg.k, cfg.graph_seed)
    u2 = set(server._u2)
    u3 = set(res.survivors)
    maskers = u3 | {c for c in u2 if setup.drop_at.get(c) in (Stage.UNMASK, Stage.CONSISTENCY_CHECK)}
    clients = sum(1 + len(hood.of(c) & u2) for c in maskers)
    dropped = u2 - maskers
    server_side = len(u3) + sum(len(hood.of(v) & u3) for v in dropped)
    return clients + server_side


def run_workload(w: Workload, repeats: int) -> dict[str, Any]:
    """Median round time of `repeats` fresh rounds (each checked exactly), and the floor of that round."""
    cfg = make_config(w.n, w.dim, mode=Mode.SEMI_HONEST, k=w.n - 1 if w.complete else None, max_weight=1)
    times, exact = [], True
    setup = None
    for r in range(repeats):
        setup = build(cfg, seed=r, dropout=w.dropout, stage=w.stage)
        t = time.perf_counter()
        run(setup)
        times.append(time.perf_counter() - t)
        res = setup.server.result
        if res is None:
            raise RuntimeError(f"{w.wid}: round aborted: {setup.server.error}")
        want, total = expected_sum(setup, res.survivors)
        exact = exact and bool(np.array_equal(want, res.sum)) and total == res.total_weight
    assert setup is not None
    expansions = count_expansions(setup)
    per = expansion_cost(w.dim)
    ours = statistics.median(times)
    floor = per * expansions
    out: dict[str, Any] = {
        "workload": w.wid,
        "n": w.n,
        "dim": w.dim,
        "k": cfg.k,
        "t": cfg.t,
        "complete_graph": cfg.is_complete_graph,
        "dropout": w.dropout,
        "dropout_stage": w.stage.value,
        "repeats": repeats,
        "ours_s": ours,
        "ours_samples_s": times,
        "exact": exact,
        "expansions": expansions,
        "floor_s": floor,
        "ratio_to_floor": ours / floor,
        "target": w.target,
    }
    if w.flower_s is not None:
        out["flower_anchor_s"] = w.flower_s
        out["speedup_vs_flower_anchor"] = w.flower_s / ours
    return out


def main() -> None:
    """Run the selected workloads, print a Markdown table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="W2,W3,W4,W5", help="comma-separated subset of W2,W3,W4,W5")
    p.add_argument("--repeats", type=int, default=5, help="rounds per workload (W5 runs at most 3)")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat: checks the bench runs")
    args = p.parse_args()
    table = QUICK if args.quick else WORKLOADS
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip() in table]
    # warm up the kernels and caches once
    run(build(make_config(4, 1000), seed=99))
    rows = []
    for wid in chosen:
        reps = 1 if args.quick else (min(args.repeats, 3) if wid == "W5" else args.repeats)
        print(f"running {wid} ({reps} rounds)...", flush=True)
        rows.append(run_workload(table[wid], reps))
    print()
    print(
        "| workload | n | D | k | t | ours (s) | floor (s) | ours / floor | Flower 1.42 anchor (s) | speed-up | exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        flower = f"{r['flower_anchor_s']:.2f}" if "flower_anchor_s" in r else "-"
        speed = f"{r['speedup_vs_flower_anchor']:.0f}x" if "speedup_vs_flower_anchor" in r else "-"
        print(
            f"| {r['workload']} | {r['n']} | {r['dim']:.0e} | {r['k']} | {r['t']} | {r['ours_s']:.3f} | "
            f"{r['floor_s']:.3f} | {r['ratio_to_floor']:.2f} | {flower} | {speed} | {r['exact']} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%d"),
    }
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
