"""secagg_example: the ServerApp. `SecureFedAvg` is Flower's FedAvg whose aggregation runs our SecAgg+."""

from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result, Strategy

from secagg.flower import SecureFedAvg
from secagg_example.task import Net, initial_model, load_centralized_dataset, test

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run SecureFedAvg for `num-server-rounds` rounds and save the final model."""
    strategy = SecureFedAvg(fraction_evaluate=float(context.run_config["fraction-evaluate"]))
    result = run(strategy, grid, context.run_config)
    if len(result.arrays) == 0:  # Flower would report the run as completed; say that nothing was trained
        raise RuntimeError("no secure round completed, so there is no model to save: see the SecAgg+ lines above")
    if context.run_config["save-model"]:
        path = Path(str(context.run_config["model-path"])).resolve()
        torch.save(result.arrays.to_torch_state_dict(), path)
        print(f"\nSaved the final model to {path}")


def run(strategy: Strategy, grid: Grid, run_config: dict[str, Any]) -> Result:
    """Start `strategy` from the seeded initial model; the train config carries everything a node needs."""
    arrays = ArrayRecord(initial_model(int(run_config["seed"])).state_dict())
    train_config = ConfigRecord(
        {
            "lr": float(run_config["learning-rate"]),
            "local-epochs": int(run_config["local-epochs"]),
            "batch-size": int(run_config["batch-size"]),
            "seed": int(run_config["seed"]),
        }
    )
    return strategy.start(
        grid=grid,
        initial_arrays=arrays,
        train_config=train_config,
        num_rounds=int(run_config["num-server-rounds"]),
        evaluate_fn=global_evaluate,
    )


def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """Loss and accuracy of the global model on the server's held-out test set."""
    model = Net()
    model.load_state_dict(arrays.to_torch_state_dict())
    loss, acc = test(model, load_centralized_dataset())
    return MetricRecord({"accuracy": acc, "loss": loss})
