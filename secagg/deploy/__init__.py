"""Deployment: TOML configuration of the server and silos, a developer PKI, and the audit log.

The gRPC server and silo processes read their files with `load_server_config` / `load_silo_config`,
keep contributions in a `FileLedger`, write events to an `AuditLog`; `init_pki` sets up a local run.
"""

from __future__ import annotations

from secagg.deploy.audit import AuditLog, AuditRecord, read_audit_log, verify_audit_log
from secagg.deploy.config import (
    FileLedger,
    Roster,
    RosterEntry,
    ServerConfig,
    SiloConfig,
    load_roster,
    load_server_config,
    load_silo_config,
)
from secagg.deploy.pki import (
    IssuedCertificate,
    PkiLayout,
    init_pki,
)

__all__ = [
    "AuditLog",
    "AuditRecord",
    "FileLedger",
    "IssuedCertificate",
    "PkiLayout",
    "Roster",
    "RosterEntry",
    "ServerConfig",
    "SiloConfig",
    "init_pki",
    "load_roster",
    "load_server_config",
    "load_silo_config",
    "read_audit_log",
    "verify_audit_log",
]
