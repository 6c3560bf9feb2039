"""A hash-chained, append-only audit log in JSON lines, and its verifier.

Each line is one canonical JSON object with the keys seq, time, event, client, stage, detail, prev, in that
order. `prev` is the hex SHA-256 of the previous line's bytes (without its newline; 64 zeros for the first
line), so editing, deleting or reordering a line breaks the chain at the next one. Each record is flushed
and fsynced before `append` returns; reopening a log verifies it and continues the chain. Records carry
only str / int / float / bool / None values: bytes (keys, shares, masks) are refused, so secret material
cannot slip in by accident. A chain cannot reveal that its newest lines were cut off or its last line
rewritten: keep `AuditLog.head` somewhere else (e.g. with the round's result) and pass it as
`expected_head` to `verify_audit_log`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeAlias

from secagg.errors import ConfigurationError

__all__ = [
    "GENESIS",
    "AuditLog",
    "AuditRecord",
    "Scalar",
    "read_audit_log",
    "verify_audit_log",
]

Scalar: TypeAlias = str | int | float | bool | None
GENESIS: Final = "0" * 64
FIELDS: Final = ("seq", "time", "event", "client", "stage", "detail", "prev")
MAX_TEXT: Final = 4096  # longest string value: an audit record names things, it does not carry blobs
_TRUNCATED: Final = "...[truncated]"
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class AuditRecord:
    """One verified line of the audit log."""

    seq: int
    time: str
    event: str
    client: int | None
    stage: str | None
    detail: Mapping[str, Scalar] = field(default_factory=dict)
    prev: str = GENESIS


def _utc_iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_text(what: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise ConfigurationError(f"audit {what} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_TEXT:
        raise ConfigurationError(f"audit {what} must be 1..{MAX_TEXT} characters")


def _check_detail(detail: Mapping[str, object]) -> None:
    for key, value in detail.items():
        _check_text("detail key", key, optional=False)
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise ConfigurationError(f"audit detail {key!r}: bytes are refused (no key or share material in logs)")
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                raise ConfigurationError(f"audit detail {key!r}: strings are limited to {MAX_TEXT} characters")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ConfigurationError(f"audit detail {key!r}: floats must be finite")
        elif value is not None and not isinstance(value, (int, bool)):
            raise ConfigurationError(
                f"audit detail {key!r}: only str, int, float, bool or None, not {type(value).__name__}"
            )


def _encode(record: Mapping[str, Any]) -> bytes:
    """The one canonical byte form of a record (key order fixed by FIELDS, ASCII, no spaces)."""
    ordered = {k: record[k] for k in FIELDS}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _iter_verified(path: Path) -> Iterator[tuple[AuditRecord, str]]:
    """Yield each record with the hash of its line; ConfigurationError at the first broken record."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: audit log not found") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read audit log ({type(exc).__name__})") from None
    prev = GENESIS
    if not data:
        return
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline, as every complete log does
    for n, line in enumerate(lines, start=1):
        record = _check_line(path, n, line, prev)
        prev = _line_hash(line)
        yield record, prev
    if torn:
        raise ConfigurationError(f"{path}: record {len(lines) + 1} (line {len(lines) + 1}): incomplete last line")


def _check_line(path: Path, n: int, line: bytes, prev: str) -> AuditRecord:
    def broken(what: str) -> ConfigurationError:
        return ConfigurationError(f"{path}: record {n} (line {n}): {what}")

    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise broken("not valid JSON") from None
    if not isinstance(obj, dict) or tuple(obj) != FIELDS:
        raise broken(f"expected an object with the keys {', '.join(FIELDS)} in that order")
    seq, time_s, event, client, stage, detail, prev_s = (obj[k] for k in FIELDS)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq != n:
        raise broken(f"seq is {seq!r}, expected {n} (a record was deleted, inserted or reordered)"[:300])
    if not isinstance(prev_s, str) or not _HEX64.fullmatch(prev_s):
        raise broken("prev is not a hex SHA-256")
    if prev_s != prev:
        raise broken("prev does not match the previous line's hash (a line was edited, deleted or reordered)")
    if not isinstance(time_s, str) or not _TIME.fullmatch(time_s):
        raise broken("time is not ISO 8601 UTC (YYYY-MM-DDTHH:MM:SS.ffffffZ)")
    try:
        _check_text("event", event, optional=False)
        _check_text("stage", stage, optional=True)
        if client is not None and (isinstance(client, bool) or not isinstance(client, int)):
            raise ConfigurationError("audit client must be an integer or null")
        if not isinstance(detail, dict):
            raise ConfigurationError("audit detail must be an object")
        _check_detail(detail)
    except ConfigurationError as exc:
        raise broken(str(exc)) from None
    if _encode(obj) != line:
        raise broken("not in canonical form (the line was edited)")
    return AuditRecord(seq, time_s, event, client, stage, detail, prev_s)


def verify_audit_log(path: str | os.PathLike[str], *, expected_head: str | None = None) -> int:
    """Check the whole chain and return the number of records.

    Raises ConfigurationError naming the first broken record (edited, deleted, inserted or reordered line,
    incomplete last line), or, given expected_head (a recorded `AuditLog.head`), when the log does not end
    there (cut off, or last line rewritten).
    """
    file = Path(os.path.abspath(os.fspath(path)))
    count, head = 0, GENESIS
    for record, line_hash in _iter_verified(file):
        count, head = record.seq, line_hash
    if expected_head is not None and head != expected_head:
        raise ConfigurationError(
            f"{file}: the log ends at record {count} with a different head than expected "
            "(records cut off, or the last record rewritten)"
        )
    return count


def read_audit_log(path: str | os.PathLike[str]) -> list[AuditRecord]:
    """Every record of a verified log (ConfigurationError as verify_audit_log if the chain is broken)."""
    return [record for record, _ in _iter_verified(Path(os.path.abspath(os.fspath(path))))]


class AuditLog:
    """Append-only, hash-chained JSON-lines log; every record is on disk (fsync) when append returns.

    One writer per file: the file is locked (flock) while open, so two processes cannot fork the chain.
    `clock` returns seconds since the epoch (injected so tests and simulations are reproducible).
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))
        self._clock = clock
        self._lock = threading.Lock()
        self._broken = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            _lock_file(self._fd, self.path)
            self._seq, self._head = 0, GENESIS
            if os.fstat(self._fd).st_size:
                for record, head in _iter_verified(self.path):
                    self._seq, self._head = record.seq, head
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def seq(self) -> int:
        """Number of records in the log (the seq of the last one)."""
        return self._seq

    @property
    def head(self) -> str:
        """Hex SHA-256 of the last line (GENESIS when empty): record it elsewhere to detect truncation."""
        return self._head

    def append(
        self,
        event: str,
        *,
        client: int | None = None,
        stage: str | None = None,
        detail: Mapping[str, Scalar] | None = None,
    ) -> int:
        """Write one record and fsync it; returns its seq.

        Detail values must be str / int / float / bool / None (bytes are refused); detail strings longer
        than MAX_TEXT characters are cut to MAX_TEXT.
        """
        _check_text("event", event, optional=False)
        _check_text("stage", stage, optional=True)
        if client is not None and (isinstance(client, bool) or not isinstance(client, int)):
            raise ConfigurationError(f"audit client must be an integer id, got {type(client).__name__}")
        details: dict[str, Scalar] = dict(detail) if detail is not None else {}
        for key, value in details.items():  # a long message is cut, never a reason to lose the record
            if isinstance(value, str) and len(value) > MAX_TEXT:
                details[key] = value[: MAX_TEXT - len(_TRUNCATED)] + _TRUNCATED
        _check_detail(details)
        with self._lock:
            if self._fd < 0:
                raise ConfigurationError(f"{self.path}: audit log is closed")
            if self._broken:
                raise ConfigurationError(f"{self.path}: an earlier write failed; reopen the log to verify it")
            seconds = self._clock()
            if not math.isfinite(seconds):
                raise ConfigurationError("audit clock returned a non-finite time")
            record = {
                "seq": self._seq + 1,
                "time": _utc_iso(seconds),
                "event": event,
                "client": client,
                "stage": stage,
                "detail": details,
                "prev": self._head,
            }
            line = _encode(record)
            try:
                _write_all(self._fd, line + b"\n")
                os.fsync(self._fd)
            except OSError:
                self._broken = True
                raise
            self._seq += 1
            self._head = _line_hash(line)
            return self._seq

    def close(self) -> None:
        """Close the file (releases the lock). Idempotent."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, seq={self._seq})"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _lock_file(fd: int, path: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover - no flock; one writer is then the operator's duty
        return
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigurationError(f"{path}: audit log is already open for writing elsewhere") from None
