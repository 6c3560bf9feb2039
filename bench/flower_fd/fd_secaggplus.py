"""FD baseline `flower-secaggplus`: the example's training under Flower 1.42's own SecAgg+, in a real deployment.

Not imported from bench/: examples/flower-secagg/deploy_local.py (`--strategy flower-secaggplus`) copies this file
into a copy of the example app and points that copy's `[tool.flwr.app.components]` at `fd_secaggplus:server_app`
and `fd_secaggplus:client_app`, adding the run config keys `num-shares` and `reconstruction-threshold`.

Wired as Flower's examples/flower-secure-aggregation wires it: a legacy `ClientApp(client_fn=...,
mods=[secaggplus_mod])` whose `NumPyClient` runs the example's own train/test functions (`secagg_example.task`,
the node's partition from its node config, the same seeds as the example's ClientApp), and a ServerApp running
`DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))` with the legacy FedAvg in a `LegacyContext`. SecAgg+
covers the fit only (Flower's clipping range 8.0, quantisation range 2^22, modulus 2^32: its defaults); the
evaluation rounds are plain, as in Flower's example (which turns them off) and its docs. The server evaluates the
global model on the example's held-out test set each round and saves the final model to `model-path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp
from secagg_example import task


def _model(parameters: list[np.ndarray]) -> task.Net:
    model = task.Net()
    keys = list(model.state_dict())
    model.load_state_dict({k: torch.from_numpy(np.array(p)) for k, p in zip(keys, parameters, strict=True)})
    return model


class DigitsClient(NumPyClient):
    """The example's local training and evaluation on this node's partition, as a legacy NumPyClient."""

    def __init__(self, partition_id: int, num_partitions: int) -> None:
        self.partition_id, self.num_partitions = partition_id, num_partitions

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        model = _model(parameters)
        trainset, _ = task.load_data(self.partition_id, self.num_partitions, int(config["batch-size"]))
        seed = int(config["seed"]) * 100_003 + int(config["server-round"]) * 1_009 + self.partition_id
        loss = task.train(
            model, trainset, int(config["local-epochs"]), float(config["lr"]), int(config["batch-size"]), seed
        )
        return [v.detach().numpy() for v in model.state_dict().values()], len(trainset), {"train_loss": loss}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        _, valset = task.load_data(self.partition_id, self.num_partitions, 32)
        loss, acc = task.test(_model(parameters), valset)
        return loss, len(valset), {"eval_acc": acc}


def client_fn(context: Context) -> Any:
    node = context.node_config
    return DigitsClient(int(node["partition-id"]), int(node["num-partitions"])).to_client()


client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])

server_app = ServerApp()


def _weighted(metrics: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The example-weighted mean of the nodes' metrics (what the Message API's FedAvg does by default)."""
    total = sum(n for n, _ in metrics)
    keys = set.intersection(*(set(m) for _, m in metrics)) if metrics else set()
    return {k: sum(n * float(m[k]) for n, m in metrics) / total for k in sorted(keys)} if total else {}


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """SecAggPlusWorkflow + legacy FedAvg for `num-server-rounds` rounds; saves the final model."""
    cfg = context.run_config
    nodes = len(list(grid.get_node_ids()))  # deploy_local starts the run once every SuperNode is connected
    central = task.load_centralized_dataset()
    final: list[np.ndarray] = []

    def evaluate_fn(server_round: int, parameters: list[np.ndarray], _: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        loss, acc = task.test(_model(parameters), central)
        final[:] = [np.array(p) for p in parameters]
        return loss, {"accuracy": acc}

    def fit_config(server_round: int) -> dict[str, Any]:
        return {
            "lr": float(cfg["learning-rate"]),
            "local-epochs": int(cfg["local-epochs"]),
            "batch-size": int(cfg["batch-size"]),
            "seed": int(cfg["seed"]),
            "server-round": server_round,
        }

    initial = [v.detach().numpy() for v in task.initial_model(int(cfg["seed"])).state_dict().values()]
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=float(cfg["fraction-evaluate"]),
        min_fit_clients=nodes,
        min_evaluate_clients=nodes if float(cfg["fraction-evaluate"]) > 0 else 0,
        min_available_clients=nodes,
        initial_parameters=ndarrays_to_parameters(initial),
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=fit_config,
        fit_metrics_aggregation_fn=_weighted,
        evaluate_metrics_aggregation_fn=_weighted,
    )
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=int(cfg["num-server-rounds"])), strategy=strategy)
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=int(cfg["num-shares"]), reconstruction_threshold=int(cfg["reconstruction-threshold"])
        )
    )
    workflow(grid, legacy)
    if cfg["save-model"] and final:
        keys = list(task.Net().state_dict())
        path = Path(str(cfg["model-path"])).resolve()
        torch.save({k: torch.from_numpy(p) for k, p in zip(keys, final, strict=True)}, path)
        print(f"\nSaved the final model to {path}")
