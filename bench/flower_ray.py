"""FR: the Flower example app (examples/flower-secagg) under Flower's Simulation Engine with the Ray backend.

Flower's simulation runs the ServerApp in a thread of this process and every virtual SuperNode's ClientApp in
a pool of Ray actors (`flwr.simulation.run_simulation`, backend "ray"; Ray is `flwr[simulation]`). Each
virtual node gets `partition-id` and `num-partitions` from the simulation, as the app expects. Two runs of
R rounds over N nodes, each with its own Ray instance, side by side:

- **plain**: the app's train and evaluate functions without the mod, Flower's `FedAvg` (no secure aggregation);
- **ours**: the app as shipped, `SecureFedAvg` + `secagg_mod` (SecAgg+ for the update and the metrics).

A round is timed from one `configure_train` call of the strategy to the next (the last one to the end of
`start()`): the nodes' training, the aggregation, the server's central evaluation and the nodes' evaluation,
as Flower's Ray backend and in-memory grid deliver them. Round 1 also pays the actors' first imports (torch,
the app, secagg). The peak RSS is that of this process and every process under it (Ray's GCS, raylet, agents
and the ClientApp actors), sampled every 0.2 s. After each run the Ray processes must be gone.

    python bench/flower_ray.py                       # 100 nodes, 3 rounds each (the full run)
    python bench/flower_ray.py --quick               # 10 nodes, 2 rounds each
    python bench/flower_ray.py --client-cpus 0.25    # Ray CPUs per ClientApp actor (2 cores / 0.5 = 4 actors)

Prints a table and writes bench/results/flower-ray.json (flower-ray-quick.json with --quick). Numbers only,
never assertions; every secure round must still end with all N nodes among the survivors (exit 1 if not).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import logging
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flower-secagg"
RESULTS = ROOT / "bench" / "results"
FULL = {"nodes": 100, "rounds": 3}
QUICK = {"nodes": 10, "rounds": 2}  # round 2 also carries the evaluation of round 1's model
CLIENT_CPUS = 0.5  # Ray CPUs per ClientApp actor: 2 cores -> 4 actors
ACTOR_NAME = "ray::ClientAppA"  # /proc/<pid>/comm of a ClientAppActor (15 characters)


class RayUnavailableError(RuntimeError):
    """flwr[simulation] (Ray), torch or scikit-learn does not import here."""


def _modules() -> tuple[Any, Any, Any, Any]:
    """The example's run_local, server_app, client_app and task modules (the example directory goes on sys.path;
    Flower's Ray backend hands this process's sys.path to the actors as PYTHONPATH)."""
    try:
        import ray  # noqa: F401
        import sklearn  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise RayUnavailableError(f"{exc.name} is not installed (pip install -e '.[flower]')") from None
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    import run_local
    from secagg_example import client_app, server_app, task

    return run_local, server_app, client_app, task


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, name, RSS bytes) of every process we can read."""
    out: dict[int, tuple[int, str, int]] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            rss = int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        name, rest = stat.split("(", 1)[1].rsplit(")", 1)
        fields = rest.split()
        if fields[0] == "Z":
            continue  # a zombie holds no memory and runs nothing
        out[int(entry)] = (int(fields[1]), name, rss)
    return out


def descendants(root: int | None = None) -> dict[int, tuple[str, int]]:
    """pid -> (name, RSS bytes) of every live process below `root` (default: this process)."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    todo, out = list(children.get(root or os.getpid(), [])), {}
    while todo:
        pid = todo.pop()
        out[pid] = procs[pid][1:]
        todo += children.get(pid, [])
    return out


class TreeMonitor:
    """Samples the RSS of this process plus all its descendants; keeps the peak and the most actors seen."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self.peak_by_name: dict[str, int] = {}
        self.max_actors = 0
        self.max_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-monitor", daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        own = _processes().get(me)
        tree = descendants(me)
        total = (own[2] if own else 0) + sum(rss for _, rss in tree.values())
        self.max_actors = max(self.max_actors, sum(1 for name, _ in tree.values() if name == ACTOR_NAME))
        self.max_processes = max(self.max_processes, len(tree))
        if total > self.peak_bytes:
            self.peak_bytes = total
            by_name: Counter[str] = Counter()
            for name, rss in tree.values():
                by_name[name] += rss
            by_name["(this process)"] = own[2] if own else 0
            self.peak_by_name = dict(by_name.most_common())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeMonitor:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def wait_for_exit(pids: Sequence[int], timeout: float = 60.0) -> list[int]:
    """Wait up to `timeout` seconds for these processes to exit; the pids still alive."""
    end = time.monotonic() + timeout
    alive = list(pids)
    while True:
        now = descendants()
        alive = [p for p in alive if p in now]
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.2)


def _timed(cls: type) -> type:
    """A subclass of a Message-API strategy noting when each round's configure_train is called, the end of start(),
    and (SecureFedAvg) how many nodes survived each round's SecAgg+ arrays round."""

    class Timed(cls):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.marks: dict[int, float] = {}
            self.survivors: dict[int, int] = {}
            self.ended = 0.0

        def configure_train(self, server_round: int, *args: Any, **kwargs: Any) -> Any:
            self.marks[server_round] = time.perf_counter()
            return super().configure_train(server_round, *args, **kwargs)

        def aggregate_train(self, server_round: int, *args: Any, **kwargs: Any) -> Any:
            out = super().aggregate_train(server_round, *args, **kwargs)
            last = getattr(self, "last_result", None)  # SecureFedAvg: this round's arrays aggregate, or None
            self.survivors[server_round] = len(last.survivors) if last is not None else 0
            return out

        def start(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().start(*args, **kwargs)
            finally:
                self.ended = time.perf_counter()

    Timed.__name__ = cls.__name__
    return Timed


class CountingGrid:
    """The ServerApp's grid, counting the messages pushed to nodes (Flower's FedAvg pushes through
    send_and_receive, SecureFedAvg through push_messages)."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.messages = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def push_messages(self, messages: Any) -> Any:
        messages = list(messages)
        self.messages += len(messages)
        return self._grid.push_messages(messages)

    def send_and_receive(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        messages = list(messages)
        self.messages += len(messages)
        return self._grid.send_and_receive(messages, *args, **kwargs)


def backend_config(client_cpus: float, ray_cpus: int | None = None, address: str = "local") -> dict[str, Any]:
    """Flower's backend config for Ray: the CPUs one ClientApp actor reserves (Flower starts as many actors as
    fit in the cluster), `ray.init`'s address ("local": a new Ray instance of this process, whatever RAY_ADDRESS
    says; "auto" or "host:port": an existing cluster) and, for a local instance, the CPUs it advertises."""
    init_args: dict[str, Any] = {"address": address, "include_dashboard": False}
    if ray_cpus is not None:
        init_args["num_cpus"] = ray_cpus
    return {"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0}, "init_args": init_args}


@contextlib.contextmanager
def _simulation_env(state_dir: Path) -> Iterator[None]:
    """The environment Ray's processes inherit for one run: the nodes' state keys in a temporary directory,
    Flower's telemetry off, PYTHONPATH restored afterwards (Flower's Ray backend overwrites it)."""
    keys = ("SECAGG_STATE_DIR", "FLWR_TELEMETRY_ENABLED", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "PYTHONPATH")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["SECAGG_STATE_DIR"] = str(state_dir)
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"  # silences Ray's FutureWarning about GPUs
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_ray(
    nodes: int,
    rounds: int,
    *,
    secure: bool,
    client_cpus: float = CLIENT_CPUS,
    ray_cpus: int | None = None,
    address: str = "local",
) -> dict[str, Any]:
    """One simulation of the example app: N virtual nodes on Ray, R rounds; times, accuracy, survivors, memory."""
    import ray
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from secagg.flower import SecureFedAvg

    run_local, server_app, client_app, _ = _modules()
    config = run_local.load_run_config(**{"num-server-rounds": rounds})
    strategy = _timed(SecureFedAvg if secure else FedAvg)(fraction_evaluate=float(config["fraction-evaluate"]))
    captured: dict[str, Any] = {}
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Any) -> None:
        counting = captured["grid"] = CountingGrid(grid)
        captured["result"] = server_app.run(strategy, counting, config)

    before = set(descendants())
    with tempfile.TemporaryDirectory(prefix="secagg-ray-state-") as state, _simulation_env(Path(state)):
        with TreeMonitor() as mon:
            t = time.perf_counter()
            try:
                run_simulation(
                    server_app=app,
                    client_app=client_app.app if secure else run_local.plain_client_app(),
                    num_supernodes=nodes,
                    backend_config=backend_config(client_cpus, ray_cpus, address),
                )
            finally:
                if ray.is_initialized():  # Flower shuts Ray down when its backend terminates; make sure
                    ray.shutdown()
            total = time.perf_counter() - t
        left = wait_for_exit([p for p in descendants() if p not in before])
        for pid in left:  # reported below; not left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if "result" not in captured:
        raise RuntimeError("the ServerApp did not finish (see Flower's log above)")
    result = captured["result"]
    marks = [strategy.marks[r] for r in range(1, rounds + 1)] + [strategy.ended]
    return {
        "round_s": [b - a for a, b in itertools.pairwise(marks)],
        "total_s": total,
        "accuracy": {int(r): float(m["accuracy"]) for r, m in result.evaluate_metrics_serverapp.items()},
        "nodes_eval_acc": {
            int(r): float(m["eval_acc"]) for r, m in result.evaluate_metrics_clientapp.items() if "eval_acc" in m
        },
        "survivors": dict(strategy.survivors) if secure else None,
        "messages_per_node_per_round": captured["grid"].messages / (nodes * rounds),
        "peak_rss_bytes": mon.peak_bytes,
        "peak_rss_by_process": mon.peak_by_name,
        "actors": mon.max_actors,
        "max_processes": mon.max_processes,
        "left_behind": left,
        "arrays": np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in result.arrays.to_numpy_ndarrays()]),
    }


def measure(
    nodes: int,
    rounds: int,
    *,
    client_cpus: float = CLIENT_CPUS,
    ray_cpus: int | None = None,
    address: str = "local",
    log: Any = print,
) -> dict[str, Any]:
    """Plain FedAvg, then ours, each in a Ray simulation of its own; the figures for the JSON."""
    import flwr
    import ray

    log(f"FR: the Flower example app on Ray, {nodes} virtual nodes, {rounds} rounds, {client_cpus} CPU per actor")
    runs: dict[str, dict[str, Any]] = {}
    for name in ("plain", "ours"):
        runs[name] = run_ray(
            nodes, rounds, secure=name == "ours", client_cpus=client_cpus, ray_cpus=ray_cpus, address=address
        )
        r = runs[name]
        log(
            f"    {name}: rounds {', '.join(f'{s:.2f}' for s in r['round_s'])} s, accuracy "
            f"{r['accuracy'][rounds]:.4f}, {r['actors']} actors, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB"
            + (f", survivors {r['survivors']}" if r["survivors"] is not None else "")
        )
    out: dict[str, Any] = {
        "nodes": nodes,
        "rounds": rounds,
        "client_cpus": client_cpus,
        "ray_cpus": ray_cpus,
        "ray_address": address,
        "flwr_version": flwr.__version__,
        "ray_version": ray.__version__,
        "dim": int(runs["plain"]["arrays"].shape[0]),
    }
    plain = runs["plain"]["arrays"]
    for name, r in runs.items():
        out[name] = {k: v for k, v in r.items() if k != "arrays"}
        out[name]["mean_round_s"] = statistics.fmean(r["round_s"])
        out[name]["median_round_s"] = statistics.median(r["round_s"])
        # Round 1 also pays Ray's actors starting and importing the app; the rounds after it do not.
        later = r["round_s"][1:]
        out[name]["mean_round_s_after_first"] = statistics.fmean(later) if later else None
        out[name]["final_accuracy"] = r["accuracy"][rounds]
        out[name]["max_abs_diff_vs_plain"] = float(np.abs(r["arrays"] - plain).max())
    out["ours_over_plain_all_rounds"] = out["ours"]["mean_round_s"] / out["plain"]["mean_round_s"]
    out["ours_over_plain"] = (
        out["ours"]["mean_round_s_after_first"] / out["plain"]["mean_round_s_after_first"]
        if rounds > 1
        else out["ours_over_plain_all_rounds"]
    )
    out["all_survived"] = (
        all(v == nodes for v in (out["ours"]["survivors"] or {}).values())
        and len(out["ours"]["survivors"] or {}) == rounds
    )
    return out


def table(res: dict[str, Any]) -> str:
    """A Markdown table of the two runs."""
    lines = [
        f"FR: {res['nodes']} virtual nodes on Ray {res['ray_version']} (flwr {res['flwr_version']}), "
        f"{res['rounds']} rounds, {res['client_cpus']} CPU per ClientApp actor",
        "",
        "| run | seconds per round | mean after round 1 | messages per node per round | final accuracy | actors "
        "| peak RSS (tree) | survivors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("plain", "ours"):
        r = res[name]
        surv = ", ".join(str(v) for v in r["survivors"].values()) if r["survivors"] else "-"
        later = f"{r['mean_round_s_after_first']:.2f} s" if r["mean_round_s_after_first"] is not None else "-"
        lines.append(
            f"| {name} | {', '.join(f'{s:.2f}' for s in r['round_s'])} | {later} "
            f"| {r['messages_per_node_per_round']:.1f} | {r['final_accuracy']:.4f} | {r['actors']} "
            f"| {r['peak_rss_bytes'] / 2**20:.0f} MiB | {surv} |"
        )
    which = "mean round after round 1" if res["rounds"] > 1 else "the one round, with the actors' start"
    lines += ["", f"ours / plain: {res['ours_over_plain']:.2f} x ({which}); all rounds: "
              f"{res['ours_over_plain_all_rounds']:.2f} x"]  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"{QUICK['nodes']} nodes, {QUICK['rounds']} round")
    p.add_argument("--nodes", type=int, default=None, help=f"virtual SuperNodes (default {FULL['nodes']})")
    p.add_argument("--rounds", type=int, default=None, help=f"rounds of each run (default {FULL['rounds']})")
    p.add_argument("--client-cpus", type=float, default=CLIENT_CPUS, help="Ray CPUs per ClientApp actor")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs the local Ray instance advertises")
    p.add_argument("--ray-address", default="local",
                   help="ray.init's address: 'local' (default: a Ray instance of this run), 'auto' or host:port (an "
                        "existing cluster; the peak RSS then counts this process only)")  # fmt: skip
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--verbose", action="store_true", help="Flower's INFO logs")
    a = p.parse_args(args)
    size = QUICK if a.quick else FULL
    nodes, rounds = a.nodes or size["nodes"], a.rounds or size["rounds"]
    if not a.verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    load = os.getloadavg()
    t = time.perf_counter()
    try:
        res = measure(nodes, rounds, client_cpus=a.client_cpus, ray_cpus=a.ray_cpus, address=a.ray_address)
    except RayUnavailableError as exc:
        print(f"FR skipped: {exc}")
        return 0
    res["elapsed_s"] = time.perf_counter() - t
    res["meta"] = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_before": load,
        "load_average_after": os.getloadavg(),
        "command": "python bench/flower_ray.py " + " ".join(args),
    }
    print(table(res))
    a.results_dir.mkdir(parents=True, exist_ok=True)
    out = a.results_dir / ("flower-ray-quick.json" if a.quick else "flower-ray.json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"\nwrote {out} ({res['elapsed_s']:.0f} s)")
    return 0 if res["all_survived"] else 1


if __name__ == "__main__":
    sys.exit(main())
