"""FD: the Flower example app deployed for real, three ways, one after the other, in one invocation.

Each way runs on its own fresh local deployment (examples/flower-secagg/deploy_local.py): a `flower-superlink`,
3 `flower-supernode` processes and `flwr run --stream`, all on 127.0.0.1, Flower 1.42's subprocess isolation (a
new `flwr-clientapp` process for every message a SuperNode answers, a `flwr-serverapp` process for the run).
The same model (64-64-10 tanh MLP, 4,810 parameters), data (scikit-learn's digits, partitioned by node), local
training, seeds and run config (the app's [tool.flwr.app.config], 3 rounds) in all three:

- **fedavg**: the example's train/evaluate functions with Flower's FedAvg and no mod (bench/flower_fd/fd_fedavg.py);
- **flower-secaggplus**: Flower's own SecAgg+ as its examples/flower-secure-aggregation wires it, legacy
  `SecAggPlusWorkflow` in a `DefaultWorkflow` + `secaggplus_mod` (bench/flower_fd/fd_secaggplus.py): secure fit,
  plain evaluation;
- **secagg**: the app as shipped, `SecureFedAvg` + `secagg_mod` (update, train metrics and evaluate metrics all
  through our SecAgg+).

Per way: seconds per round (the mean over the rounds of the time between the arrivals of the ServerApp's round
lines in the stream, the last round ending at its final line; every round and the median too: the mean, because
SecureFedAvg carries a round's client-side evaluation in the next round's train messages, so its last round does
more than the others), message exchanges per node per round (messages each SuperNode received, over the
rounds), the ServerApp's own strategy time, the final model's accuracy on the server's held-out test set. Then
secagg / fedavg and secagg / flower-secaggplus for both. Nothing is asserted: numbers only. Read the seconds with
the deployment's fixed costs in mind: a SuperNode sleeps 3 s between polls when idle, its SuperExec polls for work
every 1 s and starts a new Python process per message (imports, FAB install), and Flower's stock Grid (fedavg,
flower-secaggplus) looks for replies every 3 s, where SecureFedAvg pulls them itself every <= 0.25 s.

Before the first deployment, a warm-up (`run_local.py --nodes 3 --rounds 1` in a subprocess) fills the Numba cache
that every deployment's processes share, so no way pays for compiling our kernels.

    python -m bench.flower_fd                       # 3 rounds each (the FD workload)
    python -m bench.flower_fd --quick               # 1 round each
    python -m bench --workloads FD                  # the same through the suite

Writes bench/results/flower-deploy.json (flower-deploy-quick.json with --quick); the deployments' work directories
(app copies, every process's log) stay under --work-dir (default: a new temp directory), printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flower-secagg"
RESULTS_DIR = ROOT / "bench" / "results"
ORDER = ("fedavg", "flower-secaggplus", "secagg")
FULL = {"nodes": 3, "rounds": 3}
QUICK = {"nodes": 3, "rounds": 1}


class FlowerDeployUnavailableError(RuntimeError):
    """flwr, torch or scikit-learn does not import here, or Flower's commands are missing."""


def _deploy_local() -> Any:
    try:
        import flwr  # noqa: F401
        import sklearn  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise FlowerDeployUnavailableError(f"{exc.name} is not installed") from None
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    import deploy_local

    try:
        deploy_local.find_bin_dir()
    except deploy_local.DeploymentError as exc:
        raise FlowerDeployUnavailableError(str(exc)) from None
    return deploy_local


def warm_up(numba_cache_dir: Path, log: Any = print) -> float | None:
    """One in-process round of the example (3 nodes) with this NUMBA_CACHE_DIR; its seconds, or None if it failed."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache_dir))
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "run_local.py"), "--nodes", "3", "--rounds", "1"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if proc.returncode != 0:
        log(f"  warm-up failed (exit {proc.returncode}), going on cold: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    return time.perf_counter() - t


def accuracy(model_path: str) -> float:
    """The final model's accuracy on the example's server test set."""
    import torch

    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    from secagg_example import task

    model = task.Net()
    model.load_state_dict(torch.load(model_path, weights_only=True))
    return float(task.test(model, task.load_centralized_dataset())[1])


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def measure(
    quick: bool = False,
    *,
    rounds: int | None = None,
    nodes: int | None = None,
    strategies: tuple[str, ...] = ORDER,
    work_dir: Path | None = None,
    timeout: float = 3600.0,
    warm: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Run FD: each strategy on a fresh deployment, one after the other; the figures for the JSON."""
    dl = _deploy_local()
    size = QUICK if quick else FULL
    rounds = rounds or size["rounds"]
    nodes = nodes or size["nodes"]
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="bench-fd-"))
    work.mkdir(parents=True, exist_ok=True)
    numba_cache = work / "numba-cache"
    numba_cache.mkdir(exist_ok=True)
    log(f"FD: the Flower example app deployed on 127.0.0.1, {nodes} SuperNodes, {rounds} round(s) each; work {work}")
    t_start = time.perf_counter()
    warm_s = None
    if warm:
        log("  warm-up (run_local.py, fills the shared Numba cache)...")
        warm_s = warm_up(numba_cache, log)
    runs: dict[str, dict[str, Any]] = {}
    for name in strategies:
        log(f"  {name}: deploying...")
        try:
            result = dl.run(
                name,
                nodes,
                rounds,
                work_dir=work / name,
                numba_cache_dir=numba_cache,
                timeout=timeout,
                log=lambda msg: log(f"    {msg}"),
            )
        except dl.DeploymentError as exc:
            log(f"  {name}: FAILED: {str(exc).splitlines()[0]} (logs under {work / name / 'logs'})")
            row = exc.result.to_json() if exc.result is not None else {"strategy": name, "ok": False}
            row["error"] = str(exc).splitlines()[0]
            runs[name] = row
            continue
        row = result.to_json()
        row["final_accuracy"] = accuracy(result.model_path) if result.model_path else None
        runs[name] = row
        log(
            f"  {name}: {row['seconds_per_round']:.2f} s per round (mean of "
            + ", ".join(f"{s:.2f}" for s in row["round_seconds"])
            + f"), {row['exchanges_per_node_per_round']:.2f} exchanges per node per round, "
            f"accuracy {row['final_accuracy']:.4f}"
        )
    import flwr

    out: dict[str, Any] = {
        "workload": "FD",
        "title": "the Flower example app on a real SuperLink + SuperNodes (127.0.0.1), three ways",
        "quick": quick,
        "nodes": nodes,
        "rounds": rounds,
        "flwr_version": flwr.__version__,
        "order": list(strategies),
        "warm_up_s": warm_s,
        "work_dir": str(work),
        "runs": runs,
        "elapsed_s": time.perf_counter() - t_start,
    }

    def metric(name: str, key: str) -> float | None:
        value = runs.get(name, {}).get(key)
        return float(value) if value is not None and runs[name].get("ok") else None

    ratios: dict[str, float | None] = {}
    for key, label in (("seconds_per_round", "seconds_per_round"), ("exchanges_per_node_per_round", "exchanges")):
        ratios[f"{label}_secagg_over_fedavg"] = _ratio(metric("secagg", key), metric("fedavg", key))
        ratios[f"{label}_secagg_over_flower_secaggplus"] = _ratio(
            metric("secagg", key), metric("flower-secaggplus", key)
        )
    out["ratios"] = ratios
    return out


def table(out: dict[str, Any]) -> str:
    """A Markdown table of the runs and the ratios."""

    def cell(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = [
        "| way | s per round (mean) | median | rounds (s) | exchanges per node per round | accuracy | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in out["order"]:
        r = out["runs"].get(name, {})
        rounds = ", ".join(f"{s:.1f}" for s in r.get("round_seconds") or []) or "-"
        rows.append(
            f"| {name} | {cell(r.get('seconds_per_round'), '.2f')} | {cell(r.get('median_seconds_per_round'), '.2f')} "
            f"| {rounds} | {cell(r.get('exchanges_per_node_per_round'), '.2f')} "
            f"| {cell(r.get('final_accuracy'), '.4f')} | {'ok' if r.get('ok') else r.get('error', 'not run')} |"
        )
    q = out["ratios"]
    rows += [
        "",
        "| ratio | seconds per round | exchanges per node per round |",
        "|---|---|---|",
        f"| secagg / fedavg | {cell(q['seconds_per_round_secagg_over_fedavg'], '.2f')} "
        f"| {cell(q['exchanges_secagg_over_fedavg'], '.2f')} |",
        f"| secagg / flower-secaggplus | {cell(q['seconds_per_round_secagg_over_flower_secaggplus'], '.2f')} "
        f"| {cell(q['exchanges_secagg_over_flower_secaggplus'], '.2f')} |",
    ]
    return "\n".join(rows)


def json_path(results_dir: Path, quick: bool) -> Path:
    return results_dir / ("flower-deploy-quick.json" if quick else "flower-deploy.json")


def write(out: dict[str, Any], results_dir: Path) -> Path:
    """The result JSON, with the machine and the commit (as the suite's other results)."""
    from bench.suite import machine_info

    out.setdefault("machine", machine_info())
    results_dir.mkdir(parents=True, exist_ok=True)
    path = json_path(results_dir, bool(out["quick"]))
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.flower_fd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="1 round each instead of 3")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per way (default: 3; 1 with --quick)")
    ap.add_argument("--nodes", type=int, default=None, help="SuperNodes (default: 3)")
    ap.add_argument(
        "--strategies", default=",".join(ORDER), help=f"comma-separated subset, in order (default: {','.join(ORDER)})"
    )
    ap.add_argument("--work-dir", type=Path, default=None, help="where the deployments run (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take (default: 3600)")
    ap.add_argument("--no-warm-up", action="store_true", help="skip the Numba warm-up run")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = ap.parse_args(argv)
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    unknown = sorted(set(strategies) - set(ORDER))
    if unknown:
        ap.error(f"unknown strategies {unknown}: choose from {', '.join(ORDER)}")
    command = "python -m bench.flower_fd " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        out = measure(
            args.quick,
            rounds=args.rounds,
            nodes=args.nodes,
            strategies=strategies,
            work_dir=args.work_dir,
            timeout=args.timeout,
            warm=not args.no_warm_up,
        )
    except FlowerDeployUnavailableError as exc:
        print(f"FD skipped: {exc}")
        return 0
    out["command"] = command.strip()
    path = write(out, args.results_dir)
    print()
    print(table(out))
    print(f"\nwrote {path} ({out['elapsed_s']:.0f} s)")
    return 0 if all(r.get("ok") for r in out["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
