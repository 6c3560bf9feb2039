"""Transports that drive the protocol sessions: in-process (simulation, tests) and gRPC (deployment)."""
