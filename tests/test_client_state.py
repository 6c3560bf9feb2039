"""A client session exported after every message and restored in a fresh object still runs the round exactly.

Hosts such as Flower's ClientApp handle each message in a new process, so the session's state must survive
`export_state` / `restore` at every stage: with dropouts at each stage, in both modes, the server's sum must be
the exact ring sum over the same survivors as an uninterrupted run.
"""

from __future__ import annotations

from typing import Any

import pytest

from secagg.crypto.rng import DeterministicRandom
from secagg.crypto.secret import SecretBytes
from secagg.errors import EncodingError
from secagg.protocol.client import ClientSession
from secagg.protocol.config import Mode
from secagg.protocol.messages import ServerMessage
from secagg.protocol.rules import ClientState, Stage
from tests.protocol_helpers import assert_exact_sum, new_round, play, round_config


class Reborn:
    """Stands in for a ClientSession: every message is handled by a session restored from the last export."""

    def __init__(self, session: ClientSession) -> None:
        self.client_id = session.client_id
        self._kw: dict[str, Any] = {
            "policy": session.policy,
            "identity": session._identity,
            "ledger": session._ledger,
            "input": session._input,
            "rounding_rng": session._rounding_rng,
        }
        self.blob = session.export_state()
        self.last: ClientSession = session
        self.restores = 0

    def receive(self, message: ServerMessage) -> list[Any]:
        s = ClientSession.restore(self.blob, rng=DeterministicRandom(self.restores + 1000 * self.client_id), **self._kw)
        self.restores += 1
        out = s.receive(message)
        self.blob = s.export_state()
        self.last = s
        return out


@pytest.mark.property("P16")
@pytest.mark.parametrize("mode", [Mode.SEMI_HONEST, Mode.HARDENED])
@pytest.mark.parametrize("stage", [None, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK])
def test_restored_sessions_aggregate_exactly(mode: Mode, stage: Stage | None) -> None:
    cfg = round_config(6, dim=40, mode=mode, k=5, t=4 if mode is Mode.HARDENED else 3)
    setup = new_round(cfg, seed=7)
    if stage is not None:
        setup.drop_at = {2: stage}
    wrapped = {c: Reborn(s) for c, s in setup.clients.items()}
    setup.clients = wrapped  # type: ignore[assignment]
    play(setup)
    survivors = [c for c in cfg.participants if stage not in (Stage.SHARE_KEYS, Stage.MASKED_INPUT) or c != 2]
    assert_exact_sum(setup, survivors)
    assert all(w.restores >= 4 for c, w in wrapped.items() if c != 2)
    finished = [w.last for c, w in wrapped.items() if c != 2]
    assert all(s.state is ClientState.DONE and not s.holds_round_secrets for s in finished)


def test_export_carries_secrets_only_while_the_round_runs() -> None:
    setup = new_round(round_config(3, dim=8), seed=3)
    wrapped = {c: Reborn(s) for c, s in setup.clients.items()}
    setup.clients = wrapped  # type: ignore[assignment]
    play(setup)
    done = wrapped[1].last
    fresh = ClientSession.restore(done.export_state(), rng=DeterministicRandom(1))
    assert fresh.state is ClientState.DONE and not fresh.holds_round_secrets


def test_restore_refuses_foreign_bytes() -> None:
    with pytest.raises(EncodingError):
        ClientSession.restore(SecretBytes(b"\x00\x09junk"), rng=DeterministicRandom(1))
    session = new_round(round_config(3, dim=8), seed=3).clients[1]
    blob = session.export_state().expose_secret()
    with pytest.raises(EncodingError):
        ClientSession.restore(SecretBytes(blob + b"\x00"), rng=DeterministicRandom(1))
