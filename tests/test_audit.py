"""Audit log: the hash chain, fsync'd appends that continue across reopen, the verifier catching edited,
deleted, reordered and torn lines, and the refusal of anything but plain scalars (no secret bytes)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.crypto.secret import SecretBytes
from secagg.deploy.audit import GENESIS, AuditLog, read_audit_log, verify_audit_log
from secagg.errors import ConfigurationError


def ticking(start: float = 1_700_000_000.0, step: float = 0.5) -> Callable[[], float]:
    t = [start - step]

    def clock() -> float:
        t[0] += step
        return t[0]

    return clock


def write_log(path: Path, n: int) -> str:
    with AuditLog(path, clock=ticking()) as log:
        for i in range(n):
            log.append("client-rejected", client=i + 1, stage="masked-input", detail={"reason": "B1", "i": i})
        return log.head


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.mark.property("P14")
def test_records_and_chain(tmp_path: Path) -> None:
    path = tmp_path / "out" / "audit.jsonl"
    with AuditLog(path, clock=lambda: 0.25) as log:
        assert log.seq == 0 and log.head == GENESIS
        assert log.append("round-started", detail={"n": 3, "mode": "hardened", "ok": True, "x": 1.5}) == 1
        assert log.append("client-dropped", client=2, stage="share-keys", detail={"why": None}) == 2
        head = log.head
    raw = lines(path)
    first = json.loads(raw[0])
    assert list(first) == ["seq", "time", "event", "client", "stage", "detail", "prev"]
    assert first["seq"] == 1 and first["time"] == "1970-01-01T00:00:00.250000Z" and first["prev"] == GENESIS
    assert first["client"] is None and first["stage"] is None
    assert first["detail"] == {"n": 3, "mode": "hardened", "ok": True, "x": 1.5}
    second = json.loads(raw[1])
    assert second["prev"] == hashlib.sha256(raw[0].rstrip(b"\n")).hexdigest()
    assert (second["client"], second["stage"], second["detail"]) == (2, "share-keys", {"why": None})
    assert head == hashlib.sha256(raw[1].rstrip(b"\n")).hexdigest()
    assert verify_audit_log(path) == 2 and verify_audit_log(path, expected_head=head) == 2
    records = read_audit_log(path)
    assert [r.event for r in records] == ["round-started", "client-dropped"] and records[1].client == 2


@pytest.mark.property("P14")
def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    head = write_log(path, 3)
    with AuditLog(path, clock=ticking()) as log:
        assert log.seq == 3 and log.head == head
        assert log.append("round-completed") == 4
    assert verify_audit_log(path) == 4
    assert json.loads(lines(path)[3])["prev"] == head


def test_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).close()
    assert path.exists() and verify_audit_log(path) == 0
    assert verify_audit_log(path, expected_head=GENESIS) == 0
    with pytest.raises(ConfigurationError, match="not found"):
        verify_audit_log(tmp_path / "absent.jsonl")


@pytest.mark.property("P11", "P14")
@pytest.mark.parametrize(
    "detail",
    [
        {"key": b"\x01" * 32},
        {"share": bytearray(4)},
        {"view": memoryview(b"ab")},
        {"secret": SecretBytes(b"k" * 32, label="x")},
        {"array": np.zeros(2)},
        {"np_int": np.int64(3)},
        {"nested": {"a": 1}},
        {"list": [1, 2]},
        {"nan": float("nan")},
        {"inf": float("inf")},
        {3: "non-string key"},
    ],
)
def test_refuses_non_scalar_values(tmp_path: Path, detail: dict[object, object]) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        with pytest.raises(ConfigurationError) as info:
            log.append("e", detail=detail)  # type: ignore[arg-type]
        assert log.seq == 0
    assert path.read_bytes() == b""
    assert "kkkk" not in str(info.value) and "\\x01" not in str(info.value)


@pytest.mark.property("P14")
def test_long_detail_strings_are_cut(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("e", detail={"long": "x" * 10_000, "short": "y"})
    (record,) = read_audit_log(path)
    long = record.detail["long"]
    assert isinstance(long, str) and len(long) == 4096 and long.endswith("...[truncated]")
    assert record.detail["short"] == "y"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": ""},
        {"event": b"e"},
        {"event": "e", "client": "1"},
        {"event": "e", "client": True},
        {"event": "e", "stage": b"s"},
        {"event": "e", "stage": 3},
    ],
)
def test_refuses_bad_fields(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with AuditLog(tmp_path / "audit.jsonl") as log, pytest.raises(ConfigurationError):
        log.append(**kwargs)  # type: ignore[arg-type]


@pytest.mark.property("P14")
def test_detects_edited_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    raw = lines(path)
    record = json.loads(raw[1])
    record["detail"]["reason"] = "nothing to see"
    raw[1] = json.dumps(record, separators=(",", ":")).encode() + b"\n"  # canonical, but not the original
    path.write_bytes(b"".join(raw))
    with pytest.raises(ConfigurationError, match=r"record 3 \(line 3\): prev does not match") as info:
        verify_audit_log(path)
    assert str(path) in str(info.value)


@pytest.mark.property("P14")
def test_detects_non_canonical_edit(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    raw = lines(path)
    raw[0] = raw[0].replace(b'"seq":1,', b'"seq": 1,')
    path.write_bytes(b"".join(raw))
    with pytest.raises(ConfigurationError, match=r"record 1 \(line 1\): not in canonical form"):
        verify_audit_log(path)


@pytest.mark.property("P14")
def test_detects_deleted_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    raw = lines(path)
    del raw[2]
    path.write_bytes(b"".join(raw))
    with pytest.raises(ConfigurationError, match=r"record 3 \(line 3\): seq is 4, expected 3"):
        verify_audit_log(path)


@pytest.mark.property("P14")
def test_detects_deleted_first_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    path.write_bytes(b"".join(lines(path)[1:]))
    with pytest.raises(ConfigurationError, match=r"record 1 \(line 1\): seq is 2, expected 1"):
        verify_audit_log(path)


@pytest.mark.property("P14")
def test_detects_reordered_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    raw = lines(path)
    raw[1], raw[3] = raw[3], raw[1]
    path.write_bytes(b"".join(raw))
    with pytest.raises(ConfigurationError, match=r"record 2 \(line 2\): seq is 4, expected 2"):
        verify_audit_log(path)


@pytest.mark.property("P14")
def test_detects_renumbered_reorder(tmp_path: Path) -> None:
    """Swapping two lines and fixing their seq numbers still breaks the hash chain."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    raw = [json.loads(line) for line in lines(path)]
    raw[1], raw[2] = raw[2], raw[1]
    raw[1]["seq"], raw[2]["seq"] = 2, 3
    path.write_bytes(b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in raw))
    with pytest.raises(ConfigurationError, match=r"record 2 \(line 2\): prev does not match"):
        verify_audit_log(path)


@pytest.mark.property("P14")
def test_tail_changes_need_the_recorded_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    head = write_log(path, 4)
    raw = lines(path)
    path.write_bytes(b"".join(raw[:3]))  # last record cut off: the chain alone cannot tell
    assert verify_audit_log(path) == 3
    with pytest.raises(ConfigurationError, match="different head"):
        verify_audit_log(path, expected_head=head)
    last = json.loads(raw[3])
    last["event"] = "round-completed"
    path.write_bytes(b"".join(raw[:3]) + json.dumps(last, separators=(",", ":")).encode() + b"\n")
    with pytest.raises(ConfigurationError, match="different head"):
        verify_audit_log(path, expected_head=head)


@pytest.mark.property("P14")
def test_torn_last_line_and_broken_log_refused_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    with path.open("ab") as fh:
        fh.write(b'{"seq":3,"ti')
    with pytest.raises(ConfigurationError, match=r"record 3 \(line 3\): incomplete last line"):
        verify_audit_log(path)
    with pytest.raises(ConfigurationError, match="incomplete last line"):
        AuditLog(path)
    path.write_bytes(b"not json\n")
    with pytest.raises(ConfigurationError, match=r"record 1 \(line 1\): not valid JSON"):
        AuditLog(path)


@pytest.mark.property("P14")
def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        with pytest.raises(ConfigurationError, match="already open"):
            AuditLog(path)
        log.append("e")
    with AuditLog(path) as again:  # released on close
        assert again.seq == 1
    again.close()
    with pytest.raises(ConfigurationError, match="closed"):
        again.append("e")


def test_clock_must_be_finite(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.jsonl", clock=lambda: float("nan")) as log, pytest.raises(ConfigurationError):
        log.append("e")


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
records = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=12),
        st.one_of(st.none(), st.integers(min_value=0, max_value=2**31)),
        st.one_of(st.none(), st.text(min_size=1, max_size=12)),
        st.dictionaries(st.text(min_size=1, max_size=8), scalars, max_size=4),
    ),
    min_size=1,
    max_size=6,
)


@pytest.mark.property("P14")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=records, where=st.floats(min_value=0, max_value=1, exclude_max=True), flip=st.integers(1, 255))
def test_any_byte_change_is_detected(tmp_path: Path, items: list, where: float, flip: int) -> None:  # type: ignore[type-arg]
    """Round trip of arbitrary scalar records; then any single changed byte fails verification."""
    path = tmp_path / "prop.jsonl"
    path.unlink(missing_ok=True)
    with AuditLog(path, clock=ticking()) as log:
        for event, client, stage, detail in items:
            log.append(event, client=client, stage=stage, detail=detail)
        head = log.head
    assert verify_audit_log(path, expected_head=head) == len(items)
    back = read_audit_log(path)
    assert [(r.event, r.client, r.stage, dict(r.detail)) for r in back] == [tuple(i) for i in items]
    data = bytearray(path.read_bytes())
    data[int(where * len(data))] ^= flip
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigurationError):
        verify_audit_log(path, expected_head=head)
