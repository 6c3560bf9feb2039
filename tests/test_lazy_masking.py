"""The masked input is produced chunk by chunk, as it is taken (issue 4).

Each chunk must equal the same slice of the eagerly masked vector (quantise the whole input, add the self mask
and every pairwise mask over the whole vector) byte for byte; the contribution is recorded before the first
chunk; the input provider runs once; and once the round's secrets are erased no further chunk is made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from secagg.native.quantise import quantise

import secagg.protocol.client as client_mod
from secagg.crypto.prg import MaskExpander
from secagg.crypto.rng import DeterministicRandom, random_uint32
from secagg.crypto.secret import SecretBytes
from secagg.protocol import recipes
from secagg.protocol.client import ClientInput, ClientSession, MaskedChunks
from secagg.protocol.config import RoundConfig
from secagg.protocol.messages import MaskedInputChunk, ServerAbort, ServerMessage, SharesDelivery
from secagg.protocol.rules import ClientState
from secagg.ring import Ring
from secagg.simulation import SimulationSetup, build, expected_sum, make_config, run

VICTIM = 2
ROUNDING_LABEL = b"secagg/v1/simulation/rounding"  # secagg.simulation's label for each client's rounding stream


def _eager_masked_vector(setup: SimulationSetup, client: ClientSession, live: list[int]) -> NDArray[Any]:
    """What the client sends, computed in one pass over the whole vector (the masking before issue 4)."""
    cfg, sid, secrets = client.config, client.session_id, client._secrets
    assert cfg is not None and sid is not None and secrets is not None and secrets.seed is not None
    ring = Ring(cfg.modulus)
    out = ring.zeros(cfg.vector_length)
    inp = setup.inputs[client.client_id]
    if cfg.encoding == "integers":
        assert inp.encoded is not None
        out[:-1] = inp.encoded
    else:
        rounding = DeterministicRandom(setup.rounding_seeds[client.client_id], label=ROUNDING_LABEL)
        rand = random_uint32(rounding, cfg.dim)
        out[:-1] = quantise(inp.vector, cfg.clip, cfg.bits, inp.weight, rand, cfg.modulus)
    out[-1] = inp.weight
    expander = MaskExpander(ring, chunk_elems=3)  # its own internal chunking, unlike the client's
    expander.accumulate(out, secrets.seed, +1)
    for peer in sorted(live):
        shared = secrets.mask.agree(client._peer_mask_keys[peer])
        seed = recipes.pairwise_seed(shared, sid, client.client_id, peer)
        expander.accumulate(out, seed, recipes.pairwise_sign(client.client_id, peer))
    return out


def _capture_victim(setup: SimulationSetup) -> tuple[dict[str, Any], Any]:
    """A to_client hook that computes the victim's eager masked vector just before its shares arrive."""
    seen: dict[str, Any] = {}

    def hook(cid: int, msg: ServerMessage) -> ServerMessage:
        if cid == VICTIM and isinstance(msg, SharesDelivery):
            seen["eager"] = _eager_masked_vector(setup, setup.clients[cid], [s for s, _ in msg.ciphertexts])
        return msg

    return seen, hook


def _chunks_sent(setup: SimulationSetup) -> tuple[dict[str, Any], Any]:
    sent: dict[str, Any] = {"chunks": []}

    def hook(cid: int, msg: Any) -> Any:
        if cid == VICTIM and isinstance(msg, MaskedInputChunk):
            sent["chunks"].append(msg)
        return msg

    return sent, hook


def _integers_setup(cfg: RoundConfig, chunk_elems: int | None) -> SimulationSetup:
    cfg = dataclasses.replace(cfg, encoding="integers")
    setup = build(cfg, seed=5, chunk_elems=chunk_elems)
    ring = Ring(cfg.modulus)
    for c, session in setup.clients.items():
        words = random_uint32(DeterministicRandom(c, label=b"test-lazy-integers"), cfg.dim).astype(np.uint64)
        enc = (words % np.uint64(cfg.modulus)).astype(ring.dtype)
        setup.inputs[c] = ClientInput.integers(enc, weight=1 + c % cfg.max_weight)
        session.provide_input(setup.inputs[c])
    return setup


CASES = [
    # (modulus, encoding, dim, chunk_elems, quantise block)
    (1 << 32, "quantised", 23, None, 1 << 20),
    (1 << 32, "quantised", 23, 1, 1 << 20),
    (1 << 32, "quantised", 23, 7, 5),  # rounding blocks inside and across chunks
    (1 << 32, "quantised", 23, 5, 7),
    (1 << 32, "quantised", 23, 24, 4),  # one chunk, exactly the vector
    (1 << 32, "quantised", 23, 1000, 1 << 20),  # one chunk, larger than the vector
    (1 << 64, "quantised", 19, 4, 3),
    ((1 << 61) - 1, "quantised", 19, 6, 4),  # a prime: the PRG's rejection sampling, with random access
    (1 << 32, "integers", 17, 5, 1 << 20),
]


@pytest.mark.parametrize(("modulus", "encoding", "dim", "chunk_elems", "block"), CASES)
def test_lazy_chunks_equal_the_eager_masked_vector_slice_by_slice(
    modulus: int, encoding: str, dim: int, chunk_elems: int | None, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_mod, "_QUANTISE_BLOCK", block)
    cfg = make_config(4, dim, modulus=modulus, bits=8 if modulus < 1 << 40 else 16)
    setup = _integers_setup(cfg, chunk_elems) if encoding == "integers" else build(cfg, seed=3, chunk_elems=chunk_elems)
    seen, to_client = _capture_victim(setup)
    sent, to_server = _chunks_sent(setup)
    rr = run(setup, to_client=to_client, to_server=to_server)
    assert rr.ok, str(setup.server.error)
    eager: NDArray[Any] = seen["eager"]
    chunks: list[MaskedInputChunk] = sent["chunks"]
    size = chunk_elems or cfg.vector_length
    count = -(-cfg.vector_length // size)
    assert [c.index for c in chunks] == list(range(count))
    assert all(c.count == count for c in chunks)
    for c in chunks:
        assert c.offset == c.index * size
        assert c.data.dtype == eager.dtype
        assert c.data.tobytes() == eager[c.offset : c.offset + size].tobytes()  # byte for byte
    assert sum(c.data.shape[0] for c in chunks) == cfg.vector_length
    # and the round's aggregate is still exact
    if encoding == "quantised":
        want, total = expected_sum(setup, rr.server.result.survivors)  # type: ignore[union-attr]
        assert np.array_equal(rr.server.result.sum, want)  # type: ignore[union-attr]
        assert rr.server.result.total_weight == total  # type: ignore[union-attr]


def _victim_chunks(setup: SimulationSetup) -> tuple[dict[str, Any], Any]:
    """A to_client hook that hands the victim its shares itself and keeps the MaskedChunks, untaken."""
    held: dict[str, Any] = {}

    def hook(cid: int, msg: ServerMessage) -> ServerMessage | None:
        if cid == VICTIM and isinstance(msg, SharesDelivery):
            held["tag"] = setup.config.round_tag()
            held["chunks"] = setup.clients[cid].receive(msg, lazy=True)
            return None  # the network never sees the victim's chunks
        return msg

    return held, hook


def test_abort_between_chunks_produces_no_further_chunk() -> None:
    cfg = make_config(4, 40)
    setup = build(cfg, seed=1, chunk_elems=8)
    held, hook = _victim_chunks(setup)
    run(setup, to_client=hook)
    victim = setup.clients[VICTIM]
    chunks = held["chunks"]
    assert isinstance(chunks, MaskedChunks) and chunks.count == 6 and chunks.produced == 0
    first = next(chunks)
    assert first.index == 0 and chunks.produced == 1
    assert victim.holds_round_secrets
    assert victim.receive(ServerAbort(held["tag"], "STOP", "the server stopped the round")) == []
    assert victim.state is ClientState.ABORTED and not victim.holds_round_secrets
    assert next(chunks, None) is None  # nothing more, and nothing made from erased secrets
    assert list(chunks) == []
    assert chunks.produced == 1 and not chunks.complete


class _AbortWhileMasking(MaskExpander):
    """An expander that lets the round end (as another thread would) while a chunk is being masked."""

    __slots__ = ("armed", "on_mask")

    def accumulate(self, acc: NDArray[Any], seed: SecretBytes, sign: int = +1, start: int = 0) -> None:
        super().accumulate(acc, seed, sign, start)
        if self.armed:
            self.armed = False
            self.on_mask()


def test_a_chunk_masked_while_the_round_ends_does_not_leave() -> None:
    cfg = make_config(4, 40)
    setup = build(cfg, seed=2, chunk_elems=8)
    victim = setup.clients[VICTIM]
    trap = _AbortWhileMasking(Ring(cfg.modulus))
    trap.armed = False
    trap.on_mask = lambda: victim.receive(ServerAbort(cfg.round_tag(), "STOP", "mid-chunk"))
    victim._expander = trap
    held, hook = _victim_chunks(setup)
    run(setup, to_client=hook)
    chunks = held["chunks"]
    assert next(chunks).index == 0
    trap.armed = True  # the round ends during chunk 1's masks
    assert next(chunks, None) is None
    assert chunks.produced == 1
    assert victim.state is ClientState.ABORTED and not victim.holds_round_secrets


def test_close_stops_the_chunks_and_drops_the_masking_state() -> None:
    setup = build(make_config(4, 40), seed=4, chunk_elems=8)
    held, hook = _victim_chunks(setup)
    run(setup, to_client=hook)
    victim = setup.clients[VICTIM]
    chunks = held["chunks"]
    next(chunks)
    assert victim._secrets is not None and victim._secrets.masking is not None
    chunks.close()
    assert victim._secrets.masking is None  # input reference and pairwise seeds dropped
    assert victim.holds_round_secrets  # the shares are still needed to unmask the others
    assert list(chunks) == [] and chunks.produced == 1


def test_contribution_recorded_and_input_taken_once_before_the_first_chunk() -> None:
    cfg = make_config(4, 30)
    setup = build(cfg, seed=6, chunk_elems=4)
    victim = setup.clients[VICTIM]
    calls: list[RoundConfig] = []
    given = setup.inputs[VICTIM]

    def provider(c: RoundConfig) -> ClientInput:
        calls.append(c)
        return given

    victim.provide_input(provider)
    held, hook = _victim_chunks(setup)
    run(setup, to_client=hook)
    chunks = held["chunks"]
    assert victim._ledger.has_contributed(cfg.run_id, cfg.round)  # A10: before anything was taken
    assert len(calls) == 1
    taken = list(chunks)
    assert len(taken) == chunks.count == 8 and chunks.complete
    assert len(calls) == 1  # the provider ran once for all chunks
    assert victim._secrets is not None and victim._secrets.masking is None  # dropped after the last chunk
    assert victim.holds_round_secrets


def test_nan_anywhere_aborts_before_any_chunk() -> None:
    cfg = make_config(4, 30)
    setup = build(cfg, seed=7, chunk_elems=4)
    vec = setup.inputs[VICTIM].vector.copy()
    vec[-1] = np.nan  # in the last chunk: still refused before the first one exists
    setup.clients[VICTIM].provide_input(ClientInput(vec, 1))
    sent, to_server = _chunks_sent(setup)
    rr = run(setup, to_server=to_server)
    victim = setup.clients[VICTIM]
    assert sent["chunks"] == []
    assert victim.state is ClientState.ABORTED and victim.error is not None and victim.error.code == "BAD_INPUT"
    assert not victim.holds_round_secrets
    assert rr.ok and VICTIM not in rr.server.result.survivors  # type: ignore[union-attr]


class _FailingExpander(MaskExpander):
    __slots__ = ()

    def accumulate(self, acc: NDArray[Any], seed: SecretBytes, sign: int = +1, start: int = 0) -> None:
        if start:
            raise MemoryError("no room for this chunk")
        super().accumulate(acc, seed, sign, start)


def test_a_failure_while_masking_ends_the_round_for_this_client() -> None:
    cfg = make_config(4, 40)
    setup = build(cfg, seed=8, chunk_elems=8)
    victim = setup.clients[VICTIM]
    victim._expander = _FailingExpander(Ring(cfg.modulus))
    held, hook = _victim_chunks(setup)
    run(setup, to_client=hook)
    chunks = held["chunks"]
    assert next(chunks).index == 0
    with pytest.raises(MemoryError):
        next(chunks)
    assert victim.state is ClientState.ABORTED and not victim.holds_round_secrets
    assert victim.error is not None and victim.error.code == "MASKING_FAILED"
    assert next(chunks, None) is None and chunks.produced == 1


def test_receive_without_lazy_makes_every_chunk_now_and_they_are_the_lazy_ones() -> None:
    lazy_setup, eager_setup = (build(make_config(4, 30), seed=9, chunk_elems=4) for _ in range(2))
    held, hook = _victim_chunks(lazy_setup)
    run(lazy_setup, to_client=hook)
    got: dict[str, Any] = {}

    def eager_hook(cid: int, msg: ServerMessage) -> ServerMessage | None:
        if cid == VICTIM and isinstance(msg, SharesDelivery):
            got["replies"] = eager_setup.clients[cid].receive(msg)
            return None
        return msg

    run(eager_setup, to_client=eager_hook)
    eager = got["replies"]
    assert isinstance(eager, list) and len(eager) == 8
    lazy = list(held["chunks"])
    assert [(c.index, c.offset, c.data.tobytes()) for c in eager] == [
        (c.index, c.offset, c.data.tobytes()) for c in lazy
    ]
