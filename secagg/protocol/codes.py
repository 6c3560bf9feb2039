"""The protocol's vocabulary, defined once: abort and refusal codes (SPEC §12.1, §12.2) and audit events (§12.3).

Every raise site names a member (`RoundAborted(AbortCode.SESSION_ID_MISMATCH, ...)`); members are `str`, so
codes travel and compare as the SPEC's strings. `tests/test_codes.py` parses the SPEC's tables and checks them
against these enums both ways, so code and SPEC cannot drift apart.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CLIENT_CODES", "HOST_CODES", "SERVER_CODES", "AbortCode", "AuditEvent"]


class AbortCode(StrEnum):
    """Why a session aborted or refused (REFUSE codes are PolicyRefusal, the rest RoundAborted)."""

    # client, SPEC §12.1 (the section of the check in the comment)
    NOT_INVITED = "NOT_INVITED"  # §10.1
    MODE = "MODE"  # §10.1
    TOO_FEW_CLIENTS = "TOO_FEW_CLIENTS"  # §10.1; also the server's, §12.2
    THRESHOLD = "THRESHOLD"  # §10.1
    MIN_AGGREGATE = "MIN_AGGREGATE"  # §10.1, §10.4, §10.5, §10.6
    MODULUS = "MODULUS"  # §10.1
    CLIP = "CLIP"  # §10.1
    DP_NOISE = "DP_NOISE"  # §10.1
    DIMENSION = "DIMENSION"  # §10.1
    PARAMETERS = "PARAMETERS"  # §10.1
    GRAPH_DEGREE = "GRAPH_DEGREE"  # §10.1
    NO_ROSTER = "NO_ROSTER"  # §10.1
    NO_IDENTITY = "NO_IDENTITY"  # §10.1
    ALREADY_CONTRIBUTED = "ALREADY_CONTRIBUTED"  # §10.1, §10.3
    UNKNOWN_IDENTITY = "UNKNOWN_IDENTITY"  # §10.1, §10.2, §10.4, §10.6
    ROUND_MISMATCH = "ROUND_MISMATCH"  # §10.2
    BAD_KEY_LIST = "BAD_KEY_LIST"  # §10.2
    KEY_SUBSTITUTED = "KEY_SUBSTITUTED"  # §10.2
    SESSION_ID_MISMATCH = "SESSION_ID_MISMATCH"  # §10.2 and later
    INVALID_PEER_KEY = "INVALID_PEER_KEY"  # §10.2
    KEY_REUSE = "KEY_REUSE"  # §10.2
    BAD_KEY_SIGNATURE = "BAD_KEY_SIGNATURE"  # §10.2
    TOO_FEW_NEIGHBOURS = "TOO_FEW_NEIGHBOURS"  # §10.2, §10.3
    BAD_SHARE_LIST = "BAD_SHARE_LIST"  # §10.3
    NOT_A_NEIGHBOUR = "NOT_A_NEIGHBOUR"  # §10.3
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"  # §10.3
    BAD_ENCODING = "BAD_ENCODING"  # §10.3, §9.1
    SHARE_RELABELLED = "SHARE_RELABELLED"  # §10.3
    BAD_SURVIVORS = "BAD_SURVIVORS"  # §10.4, §10.6
    BAD_PARTITION = "BAD_PARTITION"  # §10.5
    OVERLAPPING_PARTITION = "OVERLAPPING_PARTITION"  # §10.5
    TOO_FEW_SURVIVORS = "TOO_FEW_SURVIVORS"  # §10.4, §10.5
    INCONSISTENT_SURVIVORS = "INCONSISTENT_SURVIVORS"  # §10.5, §10.6
    BAD_SIGNATURES = "BAD_SIGNATURES"  # §10.5
    TOO_FEW_SIGNATURES = "TOO_FEW_SIGNATURES"  # §10.5
    SECOND_UNMASK = "SECOND_UNMASK"  # §10.5
    DOUBLE_REVEAL = "DOUBLE_REVEAL"  # §10.5
    MASKING_FAILED = "MASKING_FAILED"  # §10.3
    BAD_INPUT = "BAD_INPUT"  # §10.3
    UNEXPECTED_MESSAGE = "UNEXPECTED_MESSAGE"  # §9.1
    SERVER_ABORT = "SERVER_ABORT"  # §10.6
    # server, SPEC §12.2
    PARTIAL_INPUT = "PARTIAL_INPUT"  # §11.4
    TOO_FEW_SHARES = "TOO_FEW_SHARES"  # §11.6
    CORRUPT_SHARES = "CORRUPT_SHARES"  # §11.6
    BAD_AGGREGATE = "BAD_AGGREGATE"  # §11.6
    SERVER_SHUTDOWN = "SERVER_SHUTDOWN"  # §13.4
    ALREADY_STARTED = "ALREADY_STARTED"  # §12.2 (raised to the caller)
    # hosts' local codes, never sent by a session: SPEC §12.1 (gRPC silo), §12.2, §13.9 (Flower mod)
    DISCONNECTED = "DISCONNECTED"
    SUPERSEDED = "SUPERSEDED"
    MALFORMED = "MALFORMED"
    NO_SESSION = "NO_SESSION"
    STATE_UNREADABLE = "STATE_UNREADABLE"
    MODEL_MISMATCH = "MODEL_MISMATCH"
    NO_RESULT = "NO_RESULT"


SERVER_CODES = frozenset(
    {
        AbortCode.TOO_FEW_CLIENTS,
        AbortCode.PARTIAL_INPUT,
        AbortCode.TOO_FEW_SHARES,
        AbortCode.CORRUPT_SHARES,
        AbortCode.BAD_AGGREGATE,
        AbortCode.SERVER_SHUTDOWN,
        AbortCode.ALREADY_STARTED,
    }
)
"""The codes of SPEC §12.2."""
HOST_CODES = frozenset(
    {
        AbortCode.DISCONNECTED,
        AbortCode.SUPERSEDED,
        AbortCode.MALFORMED,
        AbortCode.NO_SESSION,
        AbortCode.STATE_UNREADABLE,
        AbortCode.MODEL_MISMATCH,
        AbortCode.NO_RESULT,
    }
)
"""Codes a host records or raises without a session having raised them (gRPC silo and server, Flower mod, fl)."""
CLIENT_CODES = frozenset(set(AbortCode) - (SERVER_CODES - {AbortCode.TOO_FEW_CLIENTS}) - HOST_CODES)
"""The codes of SPEC §12.1's table."""


class AuditEvent(StrEnum):
    """What an audit record says happened (SPEC §12.3); records never carry secrets."""

    ROUND_STARTED = "round-started"
    STAGE_CLOSED = "stage-closed"
    CLIENT_REJECTED = "client-rejected"
    MESSAGE_REJECTED = "message-rejected"
    CLIENT_ABORTED = "client-aborted"
    DUPLICATE_IGNORED = "duplicate-ignored"
    CONFLICTING_DUPLICATE_REJECTED = "conflicting-duplicate-rejected"
    LATE_CHUNK_IGNORED = "late-chunk-ignored"
    SHARES_CORRECTED = "shares-corrected"
    CLIENT_BLAMED = "client-blamed"
    AUDIT_FOLDED = "audit-folded"
    ROUND_COMPLETED = "round-completed"
    ROUND_ABORTED = "round-aborted"
    ROUND_NOT_STARTED = "round-not-started"  # the gRPC server
    SILO_BENCHED = "silo-benched"  # the gRPC server
