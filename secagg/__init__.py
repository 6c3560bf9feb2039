"""secagg: secure cross-silo aggregation for federated learning (SecAgg+, Bell et al. 2020)."""

from secagg.errors import SecAggError

__all__ = ["SecAggError", "__version__"]
__version__ = "0.1.0"
