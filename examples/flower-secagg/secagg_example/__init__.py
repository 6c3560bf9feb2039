"""secagg_example: a Flower app (PyTorch MLP on scikit-learn's digits) whose aggregation runs our SecAgg+."""
