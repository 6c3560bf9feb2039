"""Run the example's ServerApp strategy and ClientApps for N nodes in this process, without Ray or a SuperLink.

    python run_local.py --nodes 4 --rounds 3            # SecureFedAvg + secagg_mod (the app as shipped)
    python run_local.py --nodes 4 --rounds 3 --plain    # the same app as plain FedAvg, for comparison

Every message and each node's Context cross Flower's protobuf serde (`secagg.flower.local.LocalGrid`), as they
would between a SuperLink and SuperNodes. The run config is the app's `[tool.flwr.app.config]`; node i gets
`partition-id` = i and `num-partitions` = N, as Flower's simulation engine sets them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg, Result, Strategy  # noqa: E402
from secagg_example import client_app, server_app  # noqa: E402

from secagg.flower import SecureFedAvg  # noqa: E402
from secagg.flower.local import LocalGrid  # noqa: E402


def load_run_config(**overrides: Any) -> dict[str, Any]:
    """The app's run config from its pyproject.toml, with overrides (keys as in the TOML)."""
    with (HERE / "pyproject.toml").open("rb") as f:
        config: dict[str, Any] = dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])
    unknown = set(overrides) - set(config)
    if unknown:
        raise KeyError(f"not in the app's run config: {sorted(unknown)}")
    config.update(overrides)
    return config


def plain_client_app() -> ClientApp:
    """The same train and evaluate functions registered without the mod: the app as plain FedAvg would have it."""
    app = ClientApp()
    app.train()(client_app.train)
    app.evaluate()(client_app.evaluate)
    return app


def make_grid(num_nodes: int, *, secure: bool = True) -> LocalGrid:
    """A LocalGrid of N nodes (ids 1..N) running the example's ClientApp, with Flower's partition node config."""
    app = client_app.app if secure else plain_client_app()
    nodes = range(1, num_nodes + 1)
    node_config = {n: {"partition-id": n - 1, "num-partitions": num_nodes} for n in nodes}
    return LocalGrid(dict.fromkeys(nodes, app), node_config=node_config)


def make_strategy(run_config: dict[str, Any], *, secure: bool = True) -> Strategy:
    """The ServerApp's strategy (SecureFedAvg), or FedAvg with the same arguments."""
    cls = SecureFedAvg if secure else FedAvg
    return cls(fraction_evaluate=float(run_config["fraction-evaluate"]))


def run(
    num_nodes: int = 4,
    num_rounds: int = 3,
    *,
    secure: bool = True,
    strategy: Strategy | None = None,
    **overrides: Any,
) -> Result:
    """The ServerApp's run over a LocalGrid of N nodes; returns Flower's Result (final arrays, metrics per round)."""
    config = load_run_config(**{"num-server-rounds": num_rounds, **overrides})
    grid = make_grid(num_nodes, secure=secure)
    return server_app.run(strategy or make_strategy(config, secure=secure), grid, config)


def main(argv: list[str] | None = None) -> int:
    """Run and print the accuracy of each round."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--plain", action="store_true", help="plain FedAvg (no secure aggregation), for comparison")
    ap.add_argument("--verbose", action="store_true", help="Flower's and SecAgg+'s INFO logs")
    args = ap.parse_args(argv)
    if not args.verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    result = run(args.nodes, args.rounds, secure=not args.plain)
    name = "FedAvg (plain)" if args.plain else "SecureFedAvg (SecAgg+)"
    print(f"{name}, {args.nodes} nodes, {args.rounds} rounds")
    print("round | server test accuracy | server test loss | nodes' eval_acc (weighted mean) | train_loss")
    for r in range(0, args.rounds + 1):
        central = result.evaluate_metrics_serverapp.get(r, {})
        fed = result.evaluate_metrics_clientapp.get(r, {})
        train = result.train_metrics_clientapp.get(r, {})
        cells = [
            f"{central['accuracy']:.4f}" if "accuracy" in central else "-",
            f"{central['loss']:.4f}" if "loss" in central else "-",
            f"{fed['eval_acc']:.4f}" if "eval_acc" in fed else "-",
            f"{train['train_loss']:.4f}" if "train_loss" in train else "-",
        ]
        print(f"{r:5d} | " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
