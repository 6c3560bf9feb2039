"""The benchmark suite: W1-W5 in process (ours, the floor, Flower 1.42 on identical inputs), the scaling curves,
and W6/W7 over gRPC when bench/grpc_bench.py is there; writes JSON, Markdown and PNG charts.

Every figure is measured side by side in one invocation on one machine: ours (secagg.simulation rounds,
each checked exactly against the plaintext sum), the floor (AES-256-CTR keystream + vector add per mask
expansion the round cannot avoid, timed in this process; see bench/protocol.py) and Flower's SecAgg+
(bench/flower_driver.py in Flower's own venv) on the same N, D, k, t, dropout set, clipping and
quantisation grid; the two aggregates must agree within quantisation error.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench import flower as fl
from bench.protocol import count_expansions, expansion_cost
from secagg.protocol.config import RoundConfig
from secagg.protocol.rules import Stage
from secagg.simulation import SimulationSetup, build, expected_sum, make_config, run

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_DIR = ROOT / "docs"
BITS = 16
CLIP = 1.0
MODULUS = 1 << 32


@dataclass(frozen=True)
class Case:
    """One in-process round configuration: a workload or a point of a scaling curve."""

    n: int
    dim: int
    complete: bool
    dropout: float
    stage: Stage | None

    @property
    def key(self) -> str:
        """A stable name for the configuration (curve points reuse workloads measured on the same one)."""
        graph = "complete" if self.complete else "rule"
        stage = self.stage.value if self.stage else "none"
        return f"n={self.n} D={self.dim} {graph} drop={self.dropout:g}@{stage}"


@dataclass(frozen=True)
class Workload:
    """A workload of the design's table: its case, repeats, Flower's anchor and the target."""

    wid: str
    title: str
    case: Case
    repeats: int
    flower_repeats: int  # 0: Flower is not run on it in this mode
    anchor_s: float | None  # Flower 1.42 on a 2-core machine, from the design's table
    target_kind: str  # "floor": ours / floor <= bound; "flower": Flower / ours >= bound
    bound: float
    per_client: bool = False  # W1: one client's work, not the whole round


FULL = [
    Workload("W1", "one client's whole round, k=22 neighbours", Case(23, 1_000_000, True, 0.0, None),
             5, 3, None, "floor", 1.3, per_client=True),
    Workload("W2", "N=10, complete graph, 10% drop after masked input",
             Case(10, 1_000_000, True, 0.1, Stage.UNMASK), 5, 5, 1.46, "flower", 10),
    Workload("W3", "N=100, SecAgg+ (k,t by the rule), 10% drop before masked input",
             Case(100, 100_000, False, 0.1, Stage.MASKED_INPUT), 5, 3, 17.1, "flower", 50),
    Workload("W4", "N=100, complete graph, 10% drop before masked input",
             Case(100, 100_000, True, 0.1, Stage.MASKED_INPUT), 3, 1, 226.0, "flower", 100),
    Workload("W5", "N=1000, SecAgg+ (k,t by the rule), 10% drop before masked input",
             Case(1000, 100_000, False, 0.1, Stage.MASKED_INPUT), 3, 1, 159.0, "floor", 1.5),
]  # fmt: skip
QUICK = [
    Workload("W1", "one client's whole round, k=22 neighbours (quick: D=1e4)", Case(23, 10_000, True, 0.0, None),
             2, 1, None, "floor", 1.3, per_client=True),
    Workload("W2", "N=10, complete graph, 10% drop after masked input (quick: D=1e4)",
             Case(10, 10_000, True, 0.1, Stage.UNMASK), 2, 1, None, "flower", 10),
    Workload("W3", "N=100, SecAgg+ rule, 10% drop before masked input (quick: D=1e3)",
             Case(100, 1_000, False, 0.1, Stage.MASKED_INPUT), 2, 0, None, "flower", 50),
    Workload("W4", "N=100, complete graph, 10% drop before masked input (quick: D=1e3)",
             Case(100, 1_000, True, 0.1, Stage.MASKED_INPUT), 1, 0, None, "flower", 100),
    Workload("W5", "N=200, SecAgg+ rule, 10% drop before masked input (quick: N=200, D=1e3)",
             Case(200, 1_000, False, 0.1, Stage.MASKED_INPUT), 1, 0, None, "floor", 1.5),
]  # fmt: skip

# Scaling curves: time vs N at D=1e5 (W3's configuration) and vs D at N=10 (W2's configuration).
# (n or dim, ours repeats, Flower repeats); a point equal to a workload's case reuses that measurement.
N_CURVE_FULL = [(10, 5, 3), (30, 5, 3), (100, 5, 3), (300, 3, 1), (1000, 3, 1)]
D_CURVE_FULL = [(10_000, 5, 3), (100_000, 5, 3), (1_000_000, 5, 5), (10_000_000, 3, 1), (100_000_000, 1, 1)]
N_CURVE_QUICK = [(10, 2, 1), (30, 2, 1), (100, 2, 0)]
D_CURVE_QUICK = [(1_000, 2, 1), (10_000, 2, 1), (100_000, 2, 1)]
N_CURVE_DIM, D_CURVE_N = 100_000, 10
N_CURVE_DIM_QUICK = 1_000


def n_case(n: int, dim: int) -> Case:
    """A point of the N curve: SecAgg+ k,t by the rule (complete graph below 64), 10% drop before masked input."""
    return Case(n, dim, False, 0.1, Stage.MASKED_INPUT)


def d_case(dim: int) -> Case:
    """A point of the D curve: N=10, complete graph, 10% drop after masked input."""
    return Case(D_CURVE_N, dim, True, 0.1, Stage.UNMASK)


def case_of(row: dict[str, Any]) -> Case:
    """The case a result row was measured on."""
    stage = Stage(row["dropout_stage"]) if row["dropout_stage"] else None
    return Case(row["n"], row["dim"], row.get("case_complete", row["k"] == row["n"] - 1), row["dropout"], stage)


def config_for(case: Case) -> RoundConfig:
    """Our round configuration for a case (every weight 1: max_weight=1, as Flower's comparison needs)."""
    return make_config(
        case.n, case.dim, k=case.n - 1 if case.complete else None, max_weight=1, bits=BITS, clip=CLIP, modulus=MODULUS
    )


def mem_available() -> int | None:
    """Bytes of memory available now (Linux), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def ours_memory_estimate(case: Case) -> int:
    """Peak bytes of one in-process round, measured at ~7.2 bytes per client coordinate (N=10, D=1e7), plus 1 GiB."""
    return 8 * case.n * case.dim + (1 << 30)


def flower_memory_estimate(case: Case) -> int:
    """Flower keeps every masked vector as int64 bytes until the sum, plus int64 temporaries per client."""
    return 8 * case.n * case.dim * 3 + (1 << 30)


@dataclass
class OursRun:
    """What one measured configuration of ours yields (the Flower comparison needs round 0's inputs)."""

    row: dict[str, Any]
    inputs: NDArray[np.float32] | None
    drop: dict[int, Stage]
    survivors: tuple[int, ...]
    mean: NDArray[np.float64] | None
    true_mean: NDArray[np.float64] | None


def _true_mean(setup: SimulationSetup, survivors: tuple[int, ...]) -> NDArray[np.float64]:
    acc = np.zeros(setup.config.dim)
    for c in survivors:
        acc += np.clip(setup.inputs[c].vector.astype(np.float64), -CLIP, CLIP)
    return acc / len(survivors)


def measure_ours(case: Case, repeats: int, *, keep_inputs: bool, profile: bool) -> OursRun:
    """Median of `repeats` fresh rounds (seeds 0..R-1), each checked exactly; the floor of that round."""
    cfg = config_for(case)
    walls, clients, servers, per_client = [], [], [], []
    exact = True
    first: dict[str, Any] = {}
    expansions = 0
    for r in range(repeats):
        setup = build(cfg, seed=r, dropout=case.dropout, stage=case.stage)
        t = time.perf_counter()
        rr = run(setup)
        walls.append(time.perf_counter() - t)
        res = setup.server.result
        if res is None:
            raise RuntimeError(f"{case.key}: our round aborted: {setup.server.error}")
        client_s = sum(rr.client_seconds.values())
        clients.append(client_s)
        servers.append(sum(rr.server_seconds.values()))
        per_client.append(client_s / case.n)
        want, total = expected_sum(setup, res.survivors)
        exact = exact and bool(np.array_equal(want, res.sum)) and total == res.total_weight
        if r == 0:
            expansions = count_expansions(setup)
            first = {
                "survivors": res.survivors,
                "drop": dict(setup.drop_at),
                "mean": np.asarray(res.mean, dtype=np.float64) if keep_inputs else None,
                "true_mean": _true_mean(setup, res.survivors) if keep_inputs else None,
                "inputs": np.stack([setup.inputs[c].vector for c in cfg.participants]) if keep_inputs else None,
            }
        del setup, rr, res
    samples = max(5, min(40, int(4e7 // case.dim)))
    per = expansion_cost(case.dim, samples)
    row: dict[str, Any] = {
        "config": case.key,
        "n": case.n,
        "dim": case.dim,
        "k": cfg.k,
        "t": cfg.t,
        "complete_graph": cfg.is_complete_graph,
        "case_complete": case.complete,
        "dropout": case.dropout,
        "dropout_stage": case.stage.value if case.stage else None,
        "dropped": sorted(first["drop"]),
        "survivors": len(first["survivors"]),
        "repeats": repeats,
        "ours_s": statistics.median(walls),
        "ours_samples_s": walls,
        "ours_client_s": statistics.median(clients),
        "ours_server_s": statistics.median(servers),
        "ours_per_client_s": statistics.median(per_client),
        "exact": exact,
        "expansions": expansions,
        "expansion_s": per,
        "floor_s": per * expansions,
        "floor_per_client_s": per * (1 + cfg.k),
    }
    row["ratio_to_floor"] = row["ours_s"] / row["floor_s"]
    if profile:
        row["profile"] = profile_round(case)
    return OursRun(row, first["inputs"], first["drop"], first["survivors"], first["mean"], first["true_mean"])


# Where ours spends its time, by kind of work (cProfile own time, matched on file and function names).
BUCKETS = (
    ("AES-CTR keystream (masks, rounding randomness)", ("update_into", "create_encryption_ctx", "CipherContext")),
    ("ring add/sub kernels", ("ring.py",)),
    ("mask expansion glue (PRG keys, chunk loop)", ("prg.py",)),
    ("X25519 key agreement", ("x25519", "keys.py")),
    ("HKDF", ("HKDF", "kdf.py")),
    ("AEAD (share encryption)", ("aead.py", "AESGCM", "ChaCha20")),
    ("Shamir", ("shamir.py", "field.py")),
    ("quantise / dequantise", ("quantise.py",)),
)
OTHER = "protocol, messages, checks (Python)"


def profile_round(case: Case, top: int = 14) -> dict[str, Any]:
    """cProfile of one more round of ours: own time by kind of work, and the functions with the most own time."""
    setup = build(config_for(case), seed=0, dropout=case.dropout, stage=case.stage)
    prof = cProfile.Profile()
    prof.enable()
    run(setup)
    prof.disable()
    stats = pstats.Stats(prof)
    total = max(stats.total_tt, 1e-12)  # type: ignore[attr-defined]
    rows = []
    buckets = {name: 0.0 for name, _ in BUCKETS} | {OTHER: 0.0}
    for (file, line, func), (_cc, calls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}({func})" if line else func
        rows.append({"function": where, "calls": calls, "own_s": tt, "cum_s": ct, "own_share": tt / total})
        bucket = next((name for name, pats in BUCKETS if any(p in where for p in pats)), OTHER)
        buckets[bucket] += tt
    rows.sort(key=lambda r: -r["own_s"])
    return {
        "profiled_s": total,
        "buckets": {k: {"own_s": v, "share": v / total} for k, v in buckets.items()},
        "top": rows[:top],
    }


def compare_flower(python: Path, case: Case, ours: OursRun, repeats: int, log: Any = print) -> dict[str, Any]:
    """Flower's rounds on our round-0 inputs and dropout set; timings and the agreement of the aggregates."""
    cfg = config_for(case)
    assert ours.inputs is not None and ours.mean is not None and ours.true_mean is not None
    params = fl.flower_params(case.n, case.dim, cfg.k, cfg.t, CLIP, BITS, MODULUS, ours.drop)
    report, agg = fl.run_flower(python, params, ours.inputs, repeats)
    rounds = report["rounds"]
    if not all(r["ok"] for r in rounds) or agg is None:
        raise RuntimeError(f"{case.key}: a Flower round did not complete")
    walls = [r["wall_s"] for r in rounds]
    per_client = [statistics.mean(r["per_client_s"].values()) for r in rounds]
    step = 2 * CLIP / ((1 << BITS) - 1)
    # Each aggregate is within one quantisation step of the true mean (stochastic rounding, averaged), and
    # the two grids are identical, so they differ by less than two steps.
    tolerance = 2 * step
    diff = float(np.max(np.abs(agg - ours.mean)))
    same_survivors = sorted(rounds[0]["survivors"]) == sorted(ours.survivors)
    out = {
        "flower_version": report["flwr_version"],
        "flower_num_shares": rounds[0]["num_shares"],
        "flower_threshold": rounds[0]["threshold"],
        "flower_repeats": repeats,
        "flower_s": statistics.median(walls),
        "flower_samples_s": walls,
        "flower_client_s": statistics.median(r["client_s"] for r in rounds),
        "flower_server_s": statistics.median(r["server_s"] for r in rounds),
        "flower_per_client_s": statistics.median(per_client),
        "flower_stage_s": rounds[0]["stage_s"],
        "same_survivors": same_survivors,
        "aggregate_max_abs_diff": diff,
        "aggregate_tolerance": tolerance,
        "ours_max_abs_error": float(np.max(np.abs(ours.mean - ours.true_mean))),
        "flower_max_abs_error": float(np.max(np.abs(agg - ours.true_mean))),
        "aggregates_agree": bool(same_survivors and diff <= tolerance),
    }
    log(
        f"    Flower {out['flower_s']:.3f} s (median of {repeats}); aggregates differ by at most {diff:.2e} "
        f"(tolerance {tolerance:.2e}), same survivors: {same_survivors}"
    )
    return out


def judge(w: Workload, row: dict[str, Any]) -> dict[str, Any]:
    """Speed-ups, ratios and whether the target is met (None when it cannot be judged in this run)."""
    out: dict[str, Any] = {}
    ours = row["ours_per_client_s"] if w.per_client else row["ours_s"]
    floor = row["floor_per_client_s"] if w.per_client else row["floor_s"]
    out["metric_ours_s"] = ours
    out["metric_floor_s"] = floor
    out["metric_ratio_to_floor"] = ours / floor
    if "flower_s" in row:
        flower = row["flower_per_client_s"] if w.per_client else row["flower_s"]
        out["metric_flower_s"] = flower
        out["speedup_vs_flower"] = flower / ours
    if w.anchor_s is not None:
        out["flower_anchor_s"] = w.anchor_s
        out["speedup_vs_anchor"] = w.anchor_s / ours
    if w.target_kind == "floor":
        out["target"] = f"<= {w.bound:g} x floor"
        out["target_met"] = out["metric_ratio_to_floor"] <= w.bound
    else:
        out["target"] = f">= {w.bound:g} x faster than Flower"
        out["target_met"] = out["speedup_vs_flower"] >= w.bound if "speedup_vs_flower" in out else None
    return out


def run_grpc(wids: list[str], quick: bool, log: Any = print) -> dict[str, Any] | None:
    """W6/W7 come from bench/grpc_bench.py (its own module and its own JSON), run as a subprocess if it is there."""
    script = ROOT / "bench" / "grpc_bench.py"
    if not script.exists() or not wids:
        return None
    cmd = [sys.executable, str(script), "--workloads", ",".join(wids)] + (["--quick"] if quick else [])
    shown = " ".join(["python", str(script.relative_to(ROOT)), *cmd[2:]])
    log(f"W6/W7: {shown}")
    out_json = RESULTS_DIR / ("grpc-quick.json" if quick else "grpc.json")
    before = out_json.stat().st_mtime if out_json.exists() else None
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    result: dict[str, Any] = {"command": shown, "exit": proc.returncode, "elapsed_s": time.perf_counter() - t}
    result["tables"] = [line for line in proc.stdout.splitlines() if line.startswith("|") or not line.strip()]
    if proc.returncode != 0:
        result["stderr_tail"] = proc.stderr.strip().splitlines()[-15:]
        log(f"    grpc_bench failed (exit {proc.returncode})")
    if out_json.exists() and out_json.stat().st_mtime != before:
        result["json"] = json.loads(out_json.read_text())
    return result


def run_flower_app(quick: bool, no_flower: bool, log: Any = print) -> dict[str, Any]:
    """FA: the Flower example app, ours vs Flower's SecAgg+ vs plain FedAvg, in this process (bench/flower_app.py)."""
    if no_flower:
        return {"skipped": "--no-flower"}
    from bench import flower_app

    try:
        return flower_app.measure(quick, log)
    except flower_app.FlowerAppUnavailableError as exc:
        log(f"FA skipped: {exc}")
        return {"skipped": f"{exc} (FA runs in this interpreter: pip install -e .[flower] torch scikit-learn)"}


def run_flower_deploy(
    quick: bool, no_flower: bool, results_dir: Path, command: str, log: Any = print
) -> dict[str, Any]:
    """FD: the Flower example app on a real SuperLink + SuperNodes, three ways (bench/flower_fd.py); writes its JSON.

    Not among the default workloads: it takes minutes (Flower starts a process per message) and starts servers."""
    if no_flower:
        return {"skipped": "--no-flower"}
    from bench import flower_fd

    try:
        fd = flower_fd.measure(quick, log=log)
    except flower_fd.FlowerDeployUnavailableError as exc:
        log(f"FD skipped: {exc}")
        return {"skipped": f"{exc} (FD runs from this interpreter: pip install -e .[flower] torch scikit-learn)"}
    fd["command"] = command
    out = flower_fd.write(fd, results_dir)
    log(flower_fd.table(fd))
    log(f"wrote {out}")
    return fd


def run_flower_ray(quick: bool, no_flower: bool, results_dir: Path, log: Any = print) -> dict[str, Any]:
    """FR: the Flower example app under Flower's Simulation Engine on Ray, plain FedAvg and ours
    (bench/flower_ray.py, in a process of its own: it starts a Ray instance); its JSON, or why not.

    Not among the default workloads: it takes minutes (100 virtual nodes) and needs Ray (flwr[simulation])."""
    if no_flower:
        return {"skipped": "--no-flower"}
    script = ROOT / "bench" / "flower_ray.py"
    cmd = [sys.executable, str(script), "--results-dir", str(results_dir)] + (["--quick"] if quick else [])
    log(f"FR: python {script.relative_to(ROOT)}" + (" --quick" if quick else ""))
    out_json = results_dir / ("flower-ray-quick.json" if quick else "flower-ray.json")
    before = out_json.stat().st_mtime if out_json.exists() else None
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    tables = [line for line in proc.stdout.splitlines() if line.startswith(("|", "FR", "ours /"))]
    for line in tables:
        log(line)
    if not out_json.exists() or out_json.stat().st_mtime == before:
        reason = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FR skipped")), None)
        return {"skipped": reason or f"exit {proc.returncode}", "stderr_tail": proc.stderr.strip().splitlines()[-15:]}
    result: dict[str, Any] = json.loads(out_json.read_text())
    result["exit"] = proc.returncode
    return result


def fa_json_path(results_dir: Path, quick: bool) -> Path:
    """Where FA's own JSON goes (the full-run docs pick it up when a result JSON has no FA of its own)."""
    return results_dir / ("flower-app-quick.json" if quick else "flower-app.json")


def machine_info() -> dict[str, Any]:
    """Which machine and when (the docs say so)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    with contextlib.suppress(ValueError, OSError):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return {
        "when": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": proc.stdout.strip() or None,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1) if mem else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run everything selected, write bench/results/*.json, Markdown and charts."""
    from bench import report

    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="small N and D everywhere, a small Flower round; < 2 min")
    ap.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6,W7,curves,FA",
                    help="comma-separated subset of W1..W7, 'curves' and FA (the Flower example app; alone, it "
                         "rewrites only its section of benchmarks.md) (default: all of these), and FD (the "
                         "example app on a real local SuperLink + SuperNodes, bench/flower_fd.py; only when "
                         "named: it takes minutes; writes bench/results/flower-deploy.json), and FR (the "
                         "example app on Flower's Simulation Engine with Ray, 100 virtual nodes, bench/flower_ray.py; "
                         "only when named; writes bench/results/flower-ray.json)")  # fmt: skip
    ap.add_argument("--flower-venv", type=Path, default=None,
                    help=f"a venv holding flwr {fl.FLWR_VERSION} (default: {fl.DEFAULT_VENV.relative_to(ROOT)}, "
                         "created if missing)")  # fmt: skip
    ap.add_argument("--no-flower", action="store_true", help="ours and the floor only")
    ap.add_argument("--profile", action="store_true", help="cProfile one more round of ours per workload")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    ap.add_argument("--docs-dir", type=Path, default=None,
                    help="where benchmarks.md and the charts go (default: docs/ for a full run, the results "
                         "directory for --quick, so a quick run never overwrites the published figures)")  # fmt: skip
    ap.add_argument("--from-json", type=Path, default=None,
                    help="only rewrite the docs from a result JSON written earlier (no measurement)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
        fa_file = fa_json_path(args.results_dir, bool(result["quick"]))
        if "flower_app" not in result and fa_file.exists():
            result["flower_app"] = json.loads(fa_file.read_text())
        if args.profile:
            for row in result["workloads"]:
                if "skipped" not in row:
                    print(f"profiling {row['workload']} [{row['config']}]", flush=True)
                    row["profile"] = profile_round(case_of(row))
            args.from_json.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
        docs = args.docs_dir or (args.results_dir / "quick" if result["quick"] else DOCS_DIR)
        docs.mkdir(parents=True, exist_ok=True)
        print(f"wrote {report.write_docs(result, docs)}")
        return 0
    chosen = {w.strip() for w in args.workloads.split(",") if w.strip()}
    quick = args.quick
    docs_dir = args.docs_dir or (args.results_dir / "quick" if quick else DOCS_DIR)
    t_start = time.perf_counter()
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    flower_ray_result = None
    if "FR" in chosen:
        flower_ray_result = run_flower_ray(quick, args.no_flower, args.results_dir, print)
        chosen.discard("FR")
        if not chosen:
            return 0 if flower_ray_result.get("exit", 0) == 0 else 1
    flower_deploy_result = None
    if "FD" in chosen:
        flower_deploy_result = run_flower_deploy(quick, args.no_flower, args.results_dir, command.strip(), print)
        chosen.discard("FD")
        if not chosen:
            return 0 if all(r.get("ok") for r in flower_deploy_result.get("runs", {}).values()) else 1
    if chosen == {"FA"}:  # FA alone: its JSON, and only its section of an existing benchmarks.md
        fa = run_flower_app(quick, args.no_flower, print)
        fa.update(command=command.strip(), machine=machine_info(), elapsed_s=time.perf_counter() - t_start)
        args.results_dir.mkdir(parents=True, exist_ok=True)
        out = fa_json_path(args.results_dir, quick)
        out.write_text(json.dumps(fa, indent=1, default=_json_default) + "\n")
        docs_dir.mkdir(parents=True, exist_ok=True)
        report.update_fa_section(docs_dir / "benchmarks.md", fa)
        print(f"wrote {out} and the FA section of {docs_dir / 'benchmarks.md'} ({fa['elapsed_s']:.0f} s)")
        return 0

    def log(msg: str) -> None:
        print(msg, flush=True)

    python: Path | None = None
    flower_error = None
    if not args.no_flower:
        try:
            python = fl.ensure_venv(args.flower_venv, log=log)
        except fl.FlowerUnavailableError as exc:
            flower_error = str(exc)
            log(f"Flower is not available, ours and the floor only: {exc}")

    log("warming up (Numba kernels, caches)...")
    run(build(make_config(4, 1000), seed=99))

    workloads = [w for w in (QUICK if quick else FULL) if w.wid in chosen]
    measured: dict[str, dict[str, Any]] = {}  # config key -> row (ours + Flower), reused by the curves

    def measure(case: Case, repeats: int, flower_repeats: int, label: str, profile: bool = False) -> dict[str, Any]:
        if case.key in measured and (flower_repeats == 0 or "flower_s" in measured[case.key]):
            return measured[case.key]
        need = ours_memory_estimate(case)
        avail = mem_available()
        if avail is not None and need > 0.7 * avail:
            log(f"  {label}: skipped, needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available")
            return {"config": case.key, "n": case.n, "dim": case.dim, "skipped": "memory"}
        want_flower = python is not None and flower_repeats > 0
        flower_skipped = None
        if want_flower and avail is not None and flower_memory_estimate(case) > 0.7 * avail:
            want_flower = False
            flower_skipped = f"memory: needs ~{flower_memory_estimate(case) / 2**30:.0f} GiB"
            log(f"  {label}: Flower skipped ({flower_skipped}, {avail / 2**30:.0f} GiB available)")
        log(f"  {label}: ours, {repeats} round(s) [{case.key}]")
        ours = measure_ours(case, repeats, keep_inputs=want_flower, profile=profile)
        row = ours.row
        log(
            f"    ours {row['ours_s']:.3f} s, floor {row['floor_s']:.3f} s ({row['ratio_to_floor']:.2f} x), "
            f"exact: {row['exact']}"
        )
        if flower_skipped:
            row["flower_skipped"] = flower_skipped
        if want_flower:
            assert python is not None
            log(f"  {label}: Flower {fl.FLWR_VERSION}, {flower_repeats} round(s)")
            row.update(compare_flower(python, case, ours, flower_repeats, log))
        measured[case.key] = row
        return row

    rows = []
    for w in workloads:
        if w.wid in ("W6", "W7"):
            continue
        log(f"{w.wid}: {w.title}")
        row = {"workload": w.wid, "title": w.title}
        row.update(measure(w.case, w.repeats, w.flower_repeats, w.wid, profile=args.profile))
        if "skipped" not in row:
            row.update(judge(w, row))
        rows.append(row)

    curves: dict[str, list[dict[str, Any]]] = {}
    if "curves" in chosen:
        n_dim = N_CURVE_DIM_QUICK if quick else N_CURVE_DIM
        log(f"curve: round time vs N at D={n_dim:.0e}")
        curves["n"] = [
            {"x": n, **measure(n_case(n, n_dim), r, fr, f"N={n}")}
            for n, r, fr in (N_CURVE_QUICK if quick else N_CURVE_FULL)
        ]
        log(f"curve: round time vs D at N={D_CURVE_N}")
        curves["d"] = [
            {"x": d, **measure(d_case(d), r, fr, f"D={d:.0e}")}
            for d, r, fr in (D_CURVE_QUICK if quick else D_CURVE_FULL)
        ]

    grpc = run_grpc(sorted(chosen & {"W6", "W7"}), quick, log)

    flower_app_result = None
    if "FA" in chosen:
        flower_app_result = run_flower_app(quick, args.no_flower, log)
        flower_app_result.update(command=command.strip(), machine=machine_info())
        args.results_dir.mkdir(parents=True, exist_ok=True)
        fa_json_path(args.results_dir, quick).write_text(
            json.dumps(flower_app_result, indent=1, default=_json_default) + "\n"
        )

    result = {
        "suite": "secagg benchmark suite",
        "quick": quick,
        "machine": machine_info(),
        "flower": {"version": fl.FLWR_VERSION, "python": str(python) if python else None, "error": flower_error},
        "parameters": {"bits": BITS, "clip": CLIP, "modulus": MODULUS, "max_weight": 1},
        "workloads": rows,
        "curves": curves,
        "slopes": report.slopes(curves),
        "grpc": grpc,
        "flower_app": flower_app_result,
        "flower_deploy": flower_deploy_result,
        "flower_ray": flower_ray_result,
        "elapsed_s": time.perf_counter() - t_start,
        "command": command,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out_json = args.results_dir / ("bench-quick.json" if quick else "bench.json")
    out_json.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    docs_dir.mkdir(parents=True, exist_ok=True)
    md = report.write_docs(result, docs_dir)
    log("")
    log(report.workload_table(result))
    log(f"\nwrote {out_json} and {md} ({result['elapsed_s']:.0f} s)")
    every = rows + [p for pts in curves.values() for p in pts]
    bad = sorted({r["config"] for r in every if r.get("exact") is False or r.get("aggregates_agree") is False})
    if bad:
        log(f"WRONG AGGREGATE in {', '.join(bad)}")
        return 1
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Stage):
        return o.value
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(type(o).__name__)
