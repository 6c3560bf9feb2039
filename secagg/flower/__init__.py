"""Our SecAgg+ inside Flower apps: `SecureFedAvg` (server strategy, Message API) and `secagg_mod` (ClientApp mod).

Needs the `flower` extra (flwr >= 1.42, < 2). A Flower app changes one line on each side:
`FedAvg(...)` -> `SecureFedAvg(...)` and `@app.train()` -> `@app.train(mods=[secagg_mod()])`.
"""

from secagg.flower.mod import secagg_mod
from secagg.flower.strategy import SecAggSettings, SecureFedAvg, secure

__all__ = ["SecAggSettings", "SecureFedAvg", "secagg_mod", "secure"]
