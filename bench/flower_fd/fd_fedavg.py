"""FD baseline `fedavg`: the example app as plain FedAvg, in a real deployment.

Not imported from bench/: examples/flower-secagg/deploy_local.py (`--strategy fedavg`) copies this file into a copy
of the example app, next to its `secagg_example` package, and points that copy's `[tool.flwr.app.components]` at
`fd_fedavg:server_app` and `fd_fedavg:client_app`. It is the app exactly as `run_local.py --plain` runs it: the
example's own train and evaluate functions registered without `secagg_mod`, and the example's ServerApp loop
(`server_app.run`: seeded initial model, the train config, the server-side evaluation) with Flower's FedAvg instead
of SecureFedAvg. Like the shipped ServerApp it saves the final model to `model-path`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from secagg_example import client_app as example_client
from secagg_example import server_app as example_server

client_app = ClientApp()
client_app.train()(example_client.train)
client_app.evaluate()(example_client.evaluate)

server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg for `num-server-rounds` rounds over the example's training; saves the final model."""
    strategy = FedAvg(fraction_evaluate=float(context.run_config["fraction-evaluate"]))
    result = example_server.run(strategy, grid, dict(context.run_config))
    if context.run_config["save-model"]:
        path = Path(str(context.run_config["model-path"])).resolve()
        torch.save(result.arrays.to_torch_state_dict(), path)
        print(f"\nSaved the final model to {path}")
