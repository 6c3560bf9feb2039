"""Deployment: TOML configuration of the server and silos, a developer PKI, and the audit log."""

from __future__ import annotations
