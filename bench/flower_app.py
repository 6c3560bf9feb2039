"""FA: the Flower example app (examples/flower-secagg) run three ways, round time and accuracy side by side.

The same model (64-64-10 tanh MLP, 4,810 parameters), data (scikit-learn's digits, partitioned by node), local
training and evaluation, and the same in-process grid (`secagg.flower.local.LocalGrid`: every message and each
node's Context cross Flower's protobuf serde, one node after another in this process):

- **ours**: the app as shipped, `SecureFedAvg` (Flower Message API) + `secagg_mod`: SecAgg+ for the update
  (quantised, 16 bits over [-1, 1]) and for the train and evaluate metrics (fixed point).
- **Flower**: Flower 1.42's own secure aggregation, as its docs wire it: a legacy `ClientApp(client_fn=...,
  mods=[secaggplus_mod])` whose `NumPyClient` calls the same train/test functions, driven by
  `DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))` with the legacy `FedAvg` in a `LegacyContext`.
  SecAgg+ covers the fit (the weighted model, quantised over Flower's clipping range); evaluation is plain.
- **plain**: the app without the mod and with Flower's `FedAvg` (Message API): no secure aggregation.

A round is timed from the strategy's configure-train call to the end of its aggregate-evaluate call: local
training, secure (or plain) aggregation, the server's central evaluation and the nodes' evaluation. Every run
starts from the same seeded model. Flower and the example's packages must import in this interpreter (flwr,
torch, scikit-learn: `pip install -e .[flower] torch scikit-learn`).
"""

from __future__ import annotations

import logging
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flower-secagg"
FULL = {"nodes": 10, "rounds": 10}
QUICK = {"nodes": 4, "rounds": 2}
FLOWER_CLIP = 8.0  # SecAggPlusWorkflow's defaults: it secures whole weights, not updates, so its range is wider
FLOWER_QRANGE = 1 << 22
FLOWER_MODULUS = 1 << 32


class _Clock:
    """Seconds spent inside the example's train and test functions on the nodes (the same work in all three)."""

    spent = 0.0


def _clocked(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _Clock.spent += time.perf_counter() - t

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


def _clock_nodes(client_app: Any, task: Any) -> list[tuple[Any, str, Any]]:
    """Time the nodes' train/test calls (every app imports them from the task module when called); returns what
    to restore."""
    saved = [(task, "train", task.train), (task, "test", task.test)]
    for mod, name, fn in saved:
        setattr(mod, name, _clocked(fn))
    return saved


class FlowerAppUnavailableError(RuntimeError):
    """flwr, torch or scikit-learn does not import here."""


def _modules() -> tuple[Any, Any, Any, Any]:
    """The example's run_local, server_app, client_app and task modules (the example directory goes on sys.path)."""
    try:
        import flwr  # noqa: F401
        import sklearn  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise FlowerAppUnavailableError(f"{exc.name} is not installed") from None
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    import run_local
    from secagg_example import client_app, server_app, task

    return run_local, server_app, client_app, task


def _timed(cls: type) -> type:
    """A subclass of a Message-API strategy that notes when each round starts and ends."""

    class Timed(cls):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.started: dict[int, float] = {}
            self.ended: dict[int, float] = {}
            self.local: dict[int, float] = {}
            self.secure: dict[str, float] = {}
            self._round = 0
            self._spent_from: dict[int, float] = {}

        def configure_train(self, server_round: int, *args: Any, **kwargs: Any) -> Any:
            self._round = server_round
            self.started[server_round] = time.perf_counter()
            self._spent_from[server_round] = _Clock.spent
            return super().configure_train(server_round, *args, **kwargs)

        def _end(self, server_round: int) -> None:
            """A round ends with the last of its aggregate calls (SecureFedAvg evaluates a round's model in the
            next round's train messages, so only its last round has an aggregate_evaluate)."""
            self.ended[server_round] = time.perf_counter()
            self.local[server_round] = _Clock.spent - self._spent_from[server_round]

        def aggregate_train(self, server_round: int, *args: Any, **kwargs: Any) -> Any:
            out = super().aggregate_train(server_round, *args, **kwargs)
            self._end(server_round)
            return out

        def aggregate_evaluate(self, server_round: int, *args: Any, **kwargs: Any) -> Any:
            out = super().aggregate_evaluate(server_round, *args, **kwargs)
            self._end(server_round)
            return out

        def _drive(self, step: Any, replies: Any, kind: str) -> Any:  # SecureFedAvg's SecAgg+ exchanges
            t = time.perf_counter()
            try:
                return super()._drive(step, replies, kind)
            finally:
                key = f"{kind}/" + "+".join(job.purpose for job in step.jobs)
                self.secure[key] = self.secure.get(key, 0.0) + time.perf_counter() - t

    Timed.__name__ = cls.__name__
    return Timed


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def run_message_api(nodes: int, rounds: int, *, secure: bool) -> dict[str, Any]:
    """Ours (SecureFedAvg + secagg_mod) or plain FedAvg, the example app over a LocalGrid."""
    from flwr.serverapp.strategy import FedAvg

    from secagg.flower import SecureFedAvg

    run_local, server_app, _, _ = _modules()
    config = run_local.load_run_config(**{"num-server-rounds": rounds})
    strategy = _timed(SecureFedAvg if secure else FedAvg)(fraction_evaluate=float(config["fraction-evaluate"]))
    grid = run_local.make_grid(nodes, secure=secure)
    t = time.perf_counter()
    result = server_app.run(strategy, grid, config)
    total = time.perf_counter() - t
    acc = {int(r): float(m["accuracy"]) for r, m in result.evaluate_metrics_serverapp.items()}
    fed = {int(r): float(m["eval_acc"]) for r, m in result.evaluate_metrics_clientapp.items() if "eval_acc" in m}
    return {
        "round_s": [strategy.ended[r] - strategy.started[r] for r in range(1, rounds + 1)],
        "local_s": [strategy.local[r] for r in range(1, rounds + 1)],
        "secagg_s_by_purpose": {k: v / rounds for k, v in strategy.secure.items()},
        "total_s": total,
        "accuracy": acc,
        "nodes_eval_acc": fed,
        "arrays": _flat(result.arrays.to_numpy_ndarrays()),
    }


def _legacy_client_fn(task: Any) -> Any:
    """A legacy client_fn whose NumPyClient runs the example's own train/test functions on the node's partition."""
    import torch
    from flwr.client import NumPyClient

    class DigitsClient(NumPyClient):  # type: ignore[misc]
        def __init__(self, partition_id: int, num_partitions: int) -> None:
            self.partition_id, self.num_partitions = partition_id, num_partitions

        def _model(self, parameters: list[np.ndarray]) -> Any:
            model = task.Net()
            keys = list(model.state_dict())
            model.load_state_dict({k: torch.from_numpy(np.asarray(p)) for k, p in zip(keys, parameters, strict=True)})
            return model

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            model = self._model(parameters)
            trainset, _ = task.load_data(self.partition_id, self.num_partitions, int(config["batch-size"]))
            seed = int(config["seed"]) * 100_003 + int(config["server-round"]) * 1_009 + self.partition_id
            loss = task.train(
                model, trainset, int(config["local-epochs"]), float(config["lr"]), int(config["batch-size"]), seed
            )
            new = [v.detach().numpy() for v in model.state_dict().values()]
            return new, len(trainset), {"train_loss": loss}

        def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            _, valset = task.load_data(self.partition_id, self.num_partitions, 32)
            loss, acc = task.test(self._model(parameters), valset)
            return loss, len(valset), {"eval_acc": acc}

    def client_fn(context: Any) -> Any:
        node = context.node_config
        return DigitsClient(int(node["partition-id"]), int(node["num-partitions"])).to_client()

    return client_fn


def run_flower(nodes: int, rounds: int, *, num_shares: int, threshold: int, seed: int = 0) -> dict[str, Any]:
    """Flower 1.42's SecAgg+ (SecAggPlusWorkflow + secaggplus_mod) driving the same training, legacy FedAvg."""
    import torch
    from flwr.app import Context, RecordDict
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.supercore.run import Run

    from secagg.flower.local import LocalGrid

    run_local, _, _, task = _modules()
    config = run_local.load_run_config(**{"num-server-rounds": rounds})
    random.seed(seed)  # Flower's client manager samples with `random`
    np.random.seed(seed)  # and its stochastic rounding draws from numpy's global generator
    central = task.load_centralized_dataset()
    keys = list(task.Net().state_dict())
    accuracy: dict[int, float] = {}
    fed: dict[int, float] = {}
    last: list[np.ndarray] = []

    def evaluate_fn(server_round: int, parameters: list[np.ndarray], cfg: dict[str, Any]) -> Any:
        model = task.Net()
        model.load_state_dict({k: torch.from_numpy(np.asarray(p)) for k, p in zip(keys, parameters, strict=True)})
        loss, acc = task.test(model, central)
        accuracy[server_round] = acc
        last[:] = [np.array(p) for p in parameters]
        return loss, {"accuracy": acc}

    def fit_config(server_round: int) -> dict[str, Any]:
        return {
            "lr": float(config["learning-rate"]),
            "local-epochs": int(config["local-epochs"]),
            "batch-size": int(config["batch-size"]),
            "seed": int(config["seed"]),
            "server-round": server_round,
        }

    class TimedFedAvg(LegacyFedAvg):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.started: dict[int, float] = {}
            self.ended: dict[int, float] = {}
            self.local: dict[int, float] = {}

        def configure_fit(self, server_round: int, *args: Any, **kwargs: Any) -> Any:
            self.started[server_round] = time.perf_counter()
            self.local[server_round] = -_Clock.spent
            return super().configure_fit(server_round, *args, **kwargs)

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
            loss, metrics = super().aggregate_evaluate(server_round, results, failures)
            total = sum(r.num_examples for _, r in results)
            if total:
                fed[server_round] = sum(r.num_examples * float(r.metrics["eval_acc"]) for _, r in results) / total
            self.ended[server_round] = time.perf_counter()
            self.local[server_round] += _Clock.spent
            return loss, metrics

    def weighted(metrics: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        """Flower's usual example-weighted mean of the nodes' metrics (what FedAvg's Message API does by default)."""
        total = sum(n for n, _ in metrics)
        keys = set.intersection(*(set(m) for _, m in metrics)) if metrics else set()
        return {k: sum(n * float(m[k]) for n, m in metrics) / total for k in sorted(keys)} if total else {}

    initial = [v.detach().numpy() for v in task.initial_model(int(config["seed"])).state_dict().values()]
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=float(config["fraction-evaluate"]),
        min_fit_clients=nodes,
        min_evaluate_clients=nodes,
        min_available_clients=nodes,
        initial_parameters=ndarrays_to_parameters(initial),
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=fit_config,
        fit_metrics_aggregation_fn=weighted,
        evaluate_metrics_aggregation_fn=weighted,
    )
    app = ClientApp(client_fn=_legacy_client_fn(task), mods=[secaggplus_mod])
    ids = range(1, nodes + 1)
    grid = LocalGrid(
        dict.fromkeys(ids, app), node_config={n: {"partition-id": n - 1, "num-partitions": nodes} for n in ids}
    )
    grid.set_run(Run.create_empty(run_id=grid.run_id))
    base = Context(run_id=grid.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
    context = LegacyContext(base, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=num_shares,
            reconstruction_threshold=threshold,
            clipping_range=FLOWER_CLIP,
            quantization_range=FLOWER_QRANGE,
            modulus_range=FLOWER_MODULUS,
        )
    )
    t = time.perf_counter()
    workflow(grid, context)
    total = time.perf_counter() - t
    return {
        "round_s": [strategy.ended[r] - strategy.started[r] for r in range(1, rounds + 1)],
        "local_s": [strategy.local[r] for r in range(1, rounds + 1)],
        "total_s": total,
        "accuracy": accuracy,
        "nodes_eval_acc": fed,
        "arrays": _flat(last),
    }


def our_k_t(nodes: int) -> tuple[int, int]:
    """k and t that SecureFedAvg's default settings give for this many nodes (the SecAgg+ rule)."""
    from secagg.flower import SecAggSettings
    from secagg.protocol.config import Mode, propose_round

    s = SecAggSettings()
    cfg = propose_round(
        run_id="fa",
        round_=3,
        participants=range(1, nodes + 1),
        mode=Mode.SEMI_HONEST,
        graph_seed=bytes(32),
        corrupt_fraction=s.corrupt_fraction,
        dropout_fraction=s.dropout_fraction,
        dim=1,
        model_hash=bytes(32),
        modulus=s.modulus,
        clip=s.clip,
        bits=s.bits,
        max_weight=1,
        min_aggregate=min(s.min_aggregate, nodes),
    )
    return cfg.k, cfg.t


def measure(quick: bool, log: Any = print) -> dict[str, Any]:
    """Run FA (warm-up first, then each way once with N nodes and R rounds); the figures for the report."""
    size = QUICK if quick else FULL
    nodes, rounds = size["nodes"], size["rounds"]
    _, _, client_app, task = _modules()
    saved = _clock_nodes(client_app, task)
    logging.disable(logging.INFO)  # Flower's INFO lines (its legacy workflow logs every stage)
    try:
        import flwr

        k, t = our_k_t(nodes)
        num_shares = k + 1  # Flower counts the node itself
        log(f"FA: the Flower example app, {nodes} nodes, {rounds} rounds (warming up...)")
        wk, wt = our_k_t(3)
        run_message_api(3, 1, secure=True)
        run_message_api(3, 1, secure=False)
        run_flower(3, 1, num_shares=wk + 1, threshold=wt)
        runs = {}
        for name in ("plain", "ours", "flower"):
            if name == "flower":
                runs[name] = run_flower(nodes, rounds, num_shares=num_shares, threshold=t)
            else:
                runs[name] = run_message_api(nodes, rounds, secure=name == "ours")
            r = runs[name]
            log(
                f"    {name}: median round {statistics.median(r['round_s']):.3f} s, "
                f"accuracy {r['accuracy'][rounds]:.4f}"
            )
    finally:
        logging.disable(logging.NOTSET)
        for mod, name, fn in saved:
            setattr(mod, name, fn)
    step_ours = 2 * 1.0 / 2**16
    out: dict[str, Any] = {
        "nodes": nodes,
        "rounds": rounds,
        "dim": int(runs["plain"]["arrays"].shape[0]),
        "k": k,
        "t": t,
        "flwr_version": flwr.__version__,
        "flower_params": {
            "num_shares": num_shares,
            "reconstruction_threshold": t,
            "clipping_range": FLOWER_CLIP,
            "quantization_range": FLOWER_QRANGE,
            "modulus_range": FLOWER_MODULUS,
        },
        "quant_step_ours": step_ours,
        "quant_step_flower": 2 * FLOWER_CLIP / FLOWER_QRANGE,
    }
    plain = runs["plain"]["arrays"]
    for name, r in runs.items():
        overhead = [a - b for a, b in zip(r["round_s"], r["local_s"], strict=True)]
        out[name] = {
            "round_s": r["round_s"],
            "median_round_s": statistics.median(r["round_s"]),
            "local_s": r["local_s"],
            "median_local_s": statistics.median(r["local_s"]),
            "median_overhead_s": statistics.median(overhead),
            "secagg_s_by_purpose": r.get("secagg_s_by_purpose"),
            "total_s": r["total_s"],
            "accuracy": r["accuracy"],
            "final_accuracy": r["accuracy"][rounds],
            "nodes_eval_acc": r["nodes_eval_acc"],
            "max_abs_diff_vs_plain": float(np.abs(r["arrays"] - plain).max()),
        }
    base = out["plain"]["median_round_s"]
    out["ours_over_plain"] = out["ours"]["median_round_s"] / base
    out["flower_over_plain"] = out["flower"]["median_round_s"] / base
    out["flower_over_ours"] = out["flower"]["median_round_s"] / out["ours"]["median_round_s"]
    out["overhead_flower_over_ours"] = out["flower"]["median_overhead_s"] / out["ours"]["median_overhead_s"]
    return out
