"""Scenario E2 (in-process part): a fixed seed gives a byte-identical transcript and aggregate.

protocols/vectors/transcript.json pins, for a few seeded rounds in both modes, the SHA-256 of the transcript
(every message in flight, in delivery order, as canonical bytes) and of the aggregate. The tests check that
two runs agree byte for byte, that they match the file, that the generator reproduces the file, and that
the server is a pure function of what it received: replaying the recorded client messages into a fresh
ServerSession gives the same server messages and the same aggregate.
"""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from secagg.protocol.messages import ClientAbort, decode_message, encode_message
from secagg.protocol.rules import SERVER_COLLECTS, TERMINAL_SERVER
from secagg.protocol.server import Send, ServerSession
from tests.vectors import VECTORS, load_vectors, regenerate


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_transcript", VECTORS / "generate_transcript.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
CASES: list[dict[str, Any]] = GEN.CASES
NAMES = [c["name"] for c in CASES]


def _pinned(name: str) -> dict[str, Any]:
    return next(c for c in load_vectors("transcript")["cases"] if c["name"] == name)


@pytest.mark.property("P12")
def test_vector_file_is_what_the_generator_writes() -> None:
    assert (VECTORS / "transcript.json").read_text() == regenerate("transcript")


def test_cases_cover_both_modes_and_the_interesting_paths() -> None:
    pinned = load_vectors("transcript")["cases"]
    assert [c["name"] for c in pinned] == NAMES
    assert {c["mode"] for c in pinned} == {"semi-honest", "hardened"}
    assert any(c["dropped"] for c in pinned)  # a key-share reconstruction is in some transcript
    assert any(c["chunk_elems"] for c in pinned)  # so are chunked masked inputs
    assert any(int(c["modulus"]) == 1 << 64 for c in pinned)


@pytest.mark.property("P12")
@pytest.mark.parametrize("case", CASES, ids=NAMES)
def test_two_runs_are_byte_identical_and_match_the_file(case: dict[str, Any]) -> None:
    setup_a, first = GEN.record(case)
    setup_b, second = GEN.record(case)
    assert first == second  # every message, every byte, same order
    res_a, res_b = setup_a.server.result, setup_b.server.result
    assert res_a is not None and res_b is not None
    assert np.array_equal(res_a.sum, res_b.sum) and res_a.total_weight == res_b.total_weight
    pinned = _pinned(case["name"])
    assert GEN.transcript_digest(first) == pinned["transcript_sha256"]
    assert GEN.aggregate_digest(res_a) == pinned["aggregate_sha256"]
    assert len(first) == pinned["messages"]
    assert sum(len(b) for _, _, b in first) == pinned["transcript_bytes"]
    assert [str(int(v)) for v in res_a.sum] == pinned["sum"]
    assert list(res_a.survivors) == pinned["survivors"] and list(res_a.dropped) == pinned["dropped"]
    assert res_a.session_id.hex() == pinned["session_id"]
    assert setup_a.config.config_hash().hex() == pinned["config_hash"]


@pytest.mark.parametrize("case", CASES, ids=NAMES)
def test_pinned_sum_is_the_plaintext_sum(case: dict[str, Any]) -> None:
    """The golden aggregate is not just stable, it is right: the exact sum of the survivors' inputs."""
    setup = GEN.setup_case(case)
    pinned = _pinned(case["name"])
    want, total = GEN.simulation.expected_sum(setup, tuple(pinned["survivors"]))
    assert [str(int(v)) for v in want] == pinned["sum"] and total == pinned["total_weight"]


@pytest.mark.parametrize("case", CASES, ids=NAMES)
def test_transcript_entries_are_canonical_messages(case: dict[str, Any]) -> None:
    _, transcript = GEN.record(case)
    directions = {d for d, _, _ in transcript}
    assert directions == {"to-client", "to-server"}
    for _, _, blob in transcript:
        assert encode_message(decode_message(blob)) == blob


@pytest.mark.property("P12")
@pytest.mark.parametrize("case", CASES, ids=NAMES)
def test_server_is_a_function_of_what_it_received(case: dict[str, Any]) -> None:
    """Replay the recorded client messages into a fresh server (closing a stage when the next message
    belongs to a later one, as the deadline did in the recorded run): every message it sends to a client
    is, in order, what that client received in the recording, and the aggregate is the same."""
    setup, transcript = GEN.record(case)
    fresh = ServerSession(setup.config, roster=setup.server.roster, timeouts=setup.server.timeouts)
    sent: dict[int, list[bytes]] = {}

    def collect(events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, Send):
                sent.setdefault(ev.to, []).append(encode_message(ev.message))

    now = 0.0
    collect(fresh.start(now))
    for direction, client, blob in transcript:
        if direction != "to-server":
            continue
        msg = decode_message(blob)
        while (
            fresh.state not in TERMINAL_SERVER
            and not isinstance(msg, ClientAbort)
            and not isinstance(msg, SERVER_COLLECTS[fresh.state])
        ):
            now = fresh.deadline
            collect(fresh.poll(now))
        collect(fresh.receive(client, msg, now))  # type: ignore[arg-type]
    while fresh.state not in TERMINAL_SERVER:
        now = fresh.deadline
        collect(fresh.poll(now))
    received: dict[int, list[bytes]] = {}
    for direction, client, blob in transcript:
        if direction == "to-client":
            received.setdefault(client, []).append(blob)
    for client, blobs in received.items():
        assert sent[client][: len(blobs)] == blobs, client
    res = fresh.result
    assert res is not None
    assert GEN.aggregate_digest(res) == _pinned(case["name"])["aggregate_sha256"]


def test_a_different_seed_or_chunking_changes_the_transcript() -> None:
    """The digest is sensitive: another seed, or another chunk size, gives another transcript."""
    base = CASES[0]
    _, t0 = GEN.record(base)
    _, t1 = GEN.record({**base, "seed": base["seed"] + 1})
    _, t2 = GEN.record({**base, "chunk_elems": 4})
    digests = {GEN.transcript_digest(t) for t in (t0, t1, t2)}
    assert len(digests) == 3


def test_digest_framing_is_unambiguous() -> None:
    """Moving a byte from one entry to the next changes the digest (entries are length-framed)."""
    a = [("to-client", 1, b"\x01\x02"), ("to-server", 1, b"\x03")]
    b = [("to-client", 1, b"\x01"), ("to-server", 1, b"\x02\x03")]
    c = [("to-client", 2, b"\x01\x02"), ("to-server", 1, b"\x03")]
    assert len({GEN.transcript_digest(x) for x in (a, b, c)}) == 3


@pytest.mark.property("P11")
def test_vector_file_is_plain_json_without_secrets() -> None:
    """Only public values are pinned: digests, ids, counts and the public aggregate."""
    data = json.loads((VECTORS / "transcript.json").read_text())
    allowed = {
        "aggregate_sha256", "chunk_elems", "config_hash", "dim", "drop_at", "dropped",
        "first_message_sha256", "messages", "mode", "modulus", "n", "name", "seed", "session_id", "sum",
        "survivors", "t", "to_client", "to_server", "total_weight", "transcript_bytes", "transcript_sha256",
    }  # fmt: skip
    for case in data["cases"]:
        assert set(case) == allowed
