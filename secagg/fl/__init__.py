"""Federated-learning layer: strategies, training loops and differential privacy for silos."""
