"""Regressions against the failure modes of Flower 1.42's SecAgg+ (secaggplus_mod / SecAggPlusWorkflow).

Each test's docstring says what Flower did; the test asserts what this engine does instead, precisely:
a typed abort with no share revealed, or the exact ring sum over exactly the survivors, or a refusal of
the configuration before any round runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from secagg.crypto import shamir
from secagg.errors import ConfigurationError
from secagg.protocol.client import ClientInput
from secagg.protocol.config import Mode, RoundConfig
from secagg.protocol.messages import UnmaskRequest, UnmaskResponse
from secagg.protocol.rules import ClientState, Stage
from secagg.simulation import make_config
from tests.protocol_helpers import (
    assert_aborted,
    assert_exact_sum,
    assert_server_aborted,
    never_both_shares,
    new_round,
    play,
    round_config,
)

MODES = [Mode.SEMI_HONEST, Mode.HARDENED]


@pytest.mark.property("P1", "P3")
@pytest.mark.parametrize("mode", MODES)
def test_overlapping_active_and_dead_lists_give_the_server_nothing(mode: Mode) -> None:
    """Flower: the client answers the unmask request without checking that the active and dead lists are
    disjoint, so a server listing a victim in both gets, from every neighbour, the share of its self-mask
    seed and of its mask key, reconstructs both and unmasks the victim's input.
    Here every asked client aborts (A1), no share of the victim leaves, and the round produces nothing."""
    n, victim = 6, 4
    setup = new_round(round_config(n, mode=mode, t=4), seed=201)

    def lie(cid: int, msg: Any) -> Any:
        if isinstance(msg, UnmaskRequest) and cid != victim:
            return dataclasses.replace(msg, dropped=tuple(sorted({*msg.dropped, victim})))
        return msg

    _, wire = play(setup, to_client=lie)
    for c in setup.clients:
        if c != victim:
            assert_aborted(setup.clients[c], "OVERLAPPING_PARTITION", wire)
    assert all(victim not in cl.revealed_key_owners for cl in setup.clients.values())
    never_both_shares(setup.clients.values())
    # only the victim answered (with its own shares): far below t, so no aggregate at all
    responders = [c for c, m in wire.sent if isinstance(m, UnmaskResponse)]
    assert responders == [victim]
    assert_server_aborted(setup, "TOO_FEW_SHARES")


@pytest.mark.property("P6", "P9")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("stage", "dropped"),
    [
        (Stage.ADVERTISE_KEYS, (2,)),  # C1: never advertises keys
        (Stage.SHARE_KEYS, (3, 5)),  # never shares its keys
        (Stage.MASKED_INPUT, (6,)),  # C2: shared keys, never sends its masked input
        (Stage.MASKED_INPUT, (1, 4)),
    ],
)
def test_dropout_before_the_masked_input_does_not_kill_the_round(
    mode: Mode, stage: Stage, dropped: tuple[int, ...]
) -> None:
    """Flower: a client that drops out before sending its masked input makes the whole round fail.
    Here the round continues: the exact sum over exactly the others, the dropouts' pairwise masks removed
    and their inputs absent."""
    n = 7
    setup = new_round(round_config(n, mode=mode, t=4), seed=202, drop_at=dict.fromkeys(dropped, stage))
    run, _ = play(setup)
    assert run.ok
    survivors = tuple(c for c in range(1, n + 1) if c not in dropped)
    assert_exact_sum(setup, survivors)
    assert setup.server.result is not None
    # only a client that shared its keys needs its mask key reconstructed (U2 minus U3)
    assert setup.server.result.dropped == (dropped if stage is Stage.MASKED_INPUT else ())
    assert all(setup.clients[c].state is ClientState.DONE for c in survivors)


def _sweep() -> list[tuple[Mode, int, int]]:
    return [(mode, n, k) for mode in MODES for n in (9, 10) for k in range(2, n)]


@pytest.mark.property("P6")
@pytest.mark.parametrize(("mode", "n", "k"), _sweep())
def test_every_neighbour_count_even_or_odd_gives_the_exact_sum(mode: Mode, n: int, k: int) -> None:
    """Flower: an even number of neighbours (num_shares) crashes every client.
    Here every k from 2 to n - 1, even and odd, on an odd and an even number of clients, with one dropout
    after the keys were shared, gives the exact sum over the survivors."""
    t = (k + 1) // 2 + 1 if mode is Mode.HARDENED else k // 2 + 1
    cfg = round_config(n, mode=mode, k=k, t=t, seed=k)
    gone = 1 + (k % n)
    setup = new_round(cfg, seed=203 + k, drop_at={gone: Stage.MASKED_INPUT})
    run, _ = play(setup)
    assert run.ok, str(setup.server.error)
    assert_exact_sum(setup, tuple(c for c in cfg.participants if c != gone))
    assert setup.server.result is not None and setup.server.result.dropped == (gone,)


@pytest.mark.property("P6")
@pytest.mark.parametrize(("n", "bits", "max_weight"), [(2000, 24, 1), (2000, 21, 3), (2048, 21, 1)])
def test_a_configuration_whose_sum_could_wrap_is_refused(n: int, bits: int, max_weight: int) -> None:
    """Flower: about 2000 clients quantised into a 2^32 ring wrap the sum around the modulus silently and
    the server decodes garbage. Here such a configuration is refused when it is built (n * max_weight *
    2^bits must stay below the modulus), and the same round fits once the ring is 2^64."""
    with pytest.raises(ConfigurationError, match="ring capacity"):
        make_config(n, 4, bits=bits, max_weight=max_weight)  # k and t derived by the SecAgg+ rule
    base = make_config(n, 4, bits=16, max_weight=1)
    assert base.n == n
    with pytest.raises(ConfigurationError, match="ring capacity"):
        dataclasses.replace(base, bits=bits, max_weight=max_weight)
    wide = dataclasses.replace(base, bits=bits, max_weight=max_weight, modulus=1 << 64)
    assert n * max_weight * (1 << bits) < wide.modulus


@pytest.mark.property("P6")
def test_the_capacity_bound_is_exact() -> None:
    """The largest accepted configuration is the last one whose worst-case sum fits below the modulus."""
    n, bits = 2000, 16
    fits = ((1 << 32) - 1) // (n * (1 << bits))  # the largest w with n * w * 2^b < 2^32
    assert fits == 32
    cfg = make_config(n, 4, bits=bits, max_weight=fits)
    assert n * cfg.max_weight * (1 << bits) < cfg.modulus <= n * (fits + 1) * (1 << bits)
    with pytest.raises(ConfigurationError, match="ring capacity"):
        RoundConfig(**{**_fields(cfg), "max_weight": fits + 1})


def _fields(cfg: RoundConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


@pytest.mark.property("P6")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pattern", ["all-plus", "all-minus", "half-and-half", "beyond-clip"])
def test_inputs_at_the_extremes_do_not_wrap(mode: Mode, pattern: str) -> None:
    """Flower: the same silent wrap of the ring sum (previous test). Here, with the largest weight the
    ring allows for n = 4 silos at 16 bits, every input at +clip or -clip (or far beyond, clipped) sums
    exactly: the ring sum is the plaintext sum, and the decoded mean is exactly +clip, -clip or 0."""
    n, bits, clip = 4, 16, 0.5
    qmax = (1 << bits) - 1
    max_weight = ((1 << 32) - 1) // (n * (1 << bits))
    cfg = round_config(n, mode=mode, t=3, bits=bits, clip=clip, max_weight=max_weight)
    setup = new_round(cfg, seed=204)
    signs = {"all-plus": [1] * n, "all-minus": [-1] * n, "half-and-half": [1, -1, 1, -1]}
    for i, c in enumerate(cfg.participants):
        if pattern == "beyond-clip":
            value = np.float32(1e30 if i % 2 == 0 else -np.inf)
        else:
            value = np.float32(signs[pattern][i] * clip)
        inp = ClientInput(np.full(cfg.dim, value, dtype=np.float32), max_weight)
        setup.inputs[c] = inp
        setup.clients[c].provide_input(inp)
    run, _ = play(setup)
    assert run.ok, str(setup.server.error)
    assert_exact_sum(setup, cfg.participants)
    res = setup.server.result
    assert res is not None
    ups = sum(1 for i in range(n) if (pattern == "all-plus" or (pattern != "all-minus" and i % 2 == 0)))
    assert res.total_weight == n * max_weight
    assert np.all(res.sum == ups * max_weight * qmax)  # the true integer sum, below the modulus
    assert ups * max_weight * qmax < cfg.modulus
    want_mean = {0: -clip, n: clip}.get(ups, 0.0)
    np.testing.assert_allclose(res.mean, want_mean, rtol=0, atol=1e-12)


def _corrupt(blob: bytes) -> bytes:
    """The same share with its first y value shifted by one (still a field element, same x)."""
    share = shamir.Share.from_bytes(blob)
    ys = list(share.y)
    ys[0] = (ys[0] + 1) % shamir.P
    return shamir.Share(share.x, tuple(ys)).to_bytes()


def _corrupting(owner: int, kind: str, liar: int) -> Any:
    def hook(cid: int, msg: Any) -> Any:
        if cid != liar or not isinstance(msg, UnmaskResponse):
            return msg
        field = "seed_shares" if kind == "seed" else "key_shares"
        items = tuple((o, _corrupt(b) if o == owner else b) for o, b in getattr(msg, field))
        assert any(o == owner for o, _ in items)
        return dataclasses.replace(msg, **{field: items})

    return hook


@pytest.mark.property("P6")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["seed", "key"])
def test_one_corrupt_share_with_spare_shares_still_gives_the_exact_sum(mode: Mode, kind: str) -> None:
    """Flower: one corrupted share crashes the server's reconstruction.
    Here, with more than t shares, the bad one is detected (the seed against its commitment, the mask key
    against its advertised public key), set aside and audited, and the sum is exact."""
    n, t, gone = 7, 4, 7
    setup = new_round(round_config(n, mode=mode, t=t), seed=205, drop_at={gone: Stage.MASKED_INPUT})
    owner = 3 if kind == "seed" else gone
    run, _ = play(setup, to_server=_corrupting(owner, kind, liar=1))  # responder 1 is in the first t
    assert run.ok, str(setup.server.error)
    assert_exact_sum(setup, range(1, n))
    corrected = [a for a in run.audit if a.event == "shares-corrected"]
    assert [a.client for a in corrected] == [owner]


@pytest.mark.property("P6")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["seed", "key"])
def test_one_corrupt_share_among_exactly_t_aborts_with_a_typed_error(mode: Mode, kind: str) -> None:
    """Flower: as above. Here, with exactly t shares no consistent subset exists: the round aborts with
    CORRUPT_SHARES; there is no aggregate, never a wrong one."""
    n, t, gone = 7, 4, 7
    drops = {gone: Stage.MASKED_INPUT, 5: Stage.UNMASK, 6: Stage.UNMASK}  # responders 1..4: exactly t
    setup = new_round(round_config(n, mode=mode, t=t), seed=206, drop_at=drops)
    owner = 3 if kind == "seed" else gone
    run, _ = play(setup, to_server=_corrupting(owner, kind, liar=2))
    assert not run.ok
    assert_server_aborted(setup, "CORRUPT_SHARES")
    assert setup.server.result is None
