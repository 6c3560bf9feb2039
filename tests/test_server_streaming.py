"""Streaming masked inputs in chunks: staged (undoable) or, past the staging budget, straight into the sum.

With no staging budget left, a client's chunks go directly into the accumulator (memory O(D) whatever N);
if such a client then fails mid-stream its partial input cannot be taken out again, so the round aborts
with PARTIAL_INPUT instead of producing a wrong sum.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg.protocol.messages import ClientMessage, MaskedInputChunk
from secagg.protocol.server import ServerSession
from secagg.simulation import build, expected_sum, make_config, run


def _setup(budget: int | None, n: int = 5, dim: int = 100, chunk: int = 30):  # type: ignore[no-untyped-def]
    cfg = make_config(n, dim, max_weight=2)
    setup = build(cfg, seed=3, chunk_elems=chunk)
    setup.server = ServerSession(cfg, staging_budget_bytes=budget)
    return setup


@pytest.mark.property("P6")
@pytest.mark.parametrize("budget", [None, 0, 404])
def test_chunked_inputs_sum_exactly_staged_or_direct(budget: int | None) -> None:
    setup = _setup(budget)
    run(setup)
    res = setup.server.result
    assert res is not None
    want, total = expected_sum(setup, res.survivors)
    assert np.array_equal(res.sum, want) and total == res.total_weight
    assert len(res.survivors) == 5


def _break_third_chunk_of(victim: int):  # type: ignore[no-untyped-def]
    def hook(cid: int, msg: ClientMessage) -> ClientMessage | None:
        if cid == victim and isinstance(msg, MaskedInputChunk) and msg.index == 2:
            bad = msg.data.copy()
            return dataclasses.replace(msg, data=bad[:-1])  # wrong length: rejected
        return msg

    return hook


@pytest.mark.property("P7")
def test_staged_stream_failing_midway_is_rejected_and_round_continues() -> None:
    setup = _setup(None)
    run(setup, to_server=_break_third_chunk_of(2))
    res = setup.server.result
    assert res is not None and 2 not in res.survivors and len(res.survivors) == 4
    want, total = expected_sum(setup, res.survivors)
    assert np.array_equal(res.sum, want) and total == res.total_weight


@pytest.mark.property("P6")
def test_direct_stream_failing_midway_aborts_instead_of_a_wrong_sum() -> None:
    setup = _setup(0)
    run(setup, to_server=_break_third_chunk_of(2))
    assert setup.server.result is None
    assert setup.server.error is not None and setup.server.error.code == "PARTIAL_INPUT"


@pytest.mark.property("P6")
def test_direct_stream_cut_off_aborts_at_the_deadline() -> None:
    setup = _setup(0)

    def drop_rest(cid: int, msg: ClientMessage) -> ClientMessage | None:
        if cid == 4 and isinstance(msg, MaskedInputChunk) and msg.index >= 1:
            return None  # the stream stops after its first chunk
        return msg

    run(setup, to_server=drop_rest)
    assert setup.server.result is None
    assert setup.server.error is not None and setup.server.error.code == "PARTIAL_INPUT"


@pytest.mark.property("P6")
def test_budget_for_one_stream_stages_the_first_and_streams_the_rest_directly() -> None:
    """404 bytes = one staged vector of 101 uint32: the first client is staged, later ones go direct."""
    setup = _setup(404)
    run(setup, to_server=_break_third_chunk_of(1))  # client 1 streams first: staged, so undoable
    res = setup.server.result
    assert res is not None and 1 not in res.survivors
    want, total = expected_sum(setup, res.survivors)
    assert np.array_equal(res.sum, want) and total == res.total_weight


def _repeat_first_chunk_of(victim: int, change: bool):  # type: ignore[no-untyped-def]
    """The victim's chunk 0 arrives again after chunk 1, unchanged or with one element changed."""
    first: dict[int, MaskedInputChunk] = {}

    def hook(cid: int, msg: ClientMessage) -> ClientMessage | list[ClientMessage] | None:
        if cid != victim or not isinstance(msg, MaskedInputChunk):
            return msg
        if msg.index == 0:
            first[0] = msg
        if msg.index == 1:
            again = first[0]
            if change:
                data = again.data.copy()
                data[0] ^= 1
                again = dataclasses.replace(again, data=data)
            return [msg, again]
        return msg

    return hook


@pytest.mark.parametrize("budget", [None, 0])
@pytest.mark.parametrize("change", [False, True])
def test_a_repeated_chunk_is_told_identical_or_conflicting_staged_or_direct(budget: int | None, change: bool) -> None:
    """B5 for chunks: a staged chunk is compared with its buffer, a direct one by its fingerprint; either way
    the first stands and the sum is exact."""
    setup = _setup(budget)
    rr = run(setup, to_server=_repeat_first_chunk_of(2, change))
    want = ["conflicting-duplicate-rejected", "client-blamed"] if change else ["duplicate-ignored"]
    assert [a.event for a in rr.audit if a.client == 2] == want
    res = setup.server.result
    assert res is not None and len(res.survivors) == 5
    want, total = expected_sum(setup, res.survivors)
    assert np.array_equal(res.sum, want) and total == res.total_weight
