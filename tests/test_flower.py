"""secagg.flower: SecureFedAvg + secagg_mod inside Flower apps, run through Flower's own strategy loop and serde.

Nodes are real ClientApps on a LocalGrid (messages and each node's Context cross Flower's protobuf serde, so
nothing survives between stages except the sealed session in the Context). Checked: the secure result equals
Flower's plain FedAvg within quantisation error (arrays) and fixed-point error (metrics); a dropout mid-round;
a tampered unmask request and a model substitution refused; hardened mode; refusals of strategies that need
individual updates; composition with Flower's client-side clipping DP.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
    Krum,
)

from secagg.crypto.keys import IdentityKey
from secagg.crypto.rng import DeterministicRandom
from secagg.errors import ConfigurationError
from secagg.fl.strategy import IndividualUpdatesRequired
from secagg.flower import SecAggSettings, SecureFedAvg, secagg_mod, secure
from secagg.flower import records as rec_
from secagg.flower.local import LocalGrid
from secagg.flower.mod import STATE_SESSION, default_state_key_path, load_state_key
from secagg.protocol.config import ClientPolicy, Mode
from secagg.protocol.messages import (
    AdvertiseKeys,
    ClientAbort,
    KeyAdvertisement,
    MaskedInputChunk,
    ServerMessage,
    SetupRequest,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)

NODES = [101, 202, 303, 404, 505]
SHAPES = [(3, 4), (5,)]
CLIP, BITS = 1.0, 16
STEP = 2 * CLIP / (1 << BITS)


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes' default state key goes to a per-test directory, not the home directory."""
    monkeypatch.setenv("SECAGG_STATE_DIR", str(tmp_path / "state"))


def _new_arrays(node: int, arrays: list[np.ndarray], rnd: int) -> list[np.ndarray]:
    """A node's "training": a fixed, node- and round-specific move of every weight (|move| < 0.3)."""
    rng = np.random.default_rng(node * 1000 + rnd)
    return [a + (0.3 * rng.uniform(-1, 1, a.shape)).astype(np.float32) for a in arrays]


def _examples(node: int) -> int:
    return 10 * (NODES.index(node) + 1)


def make_app(node: int, mods: list[Any] | None, *, crash: bool = False) -> ClientApp:
    app = ClientApp()

    @app.train(mods=mods or [])
    def train(msg: Message, context: Context) -> Message:
        if crash:
            raise RuntimeError("this node's training failed")
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        rnd = int(msg.content["config"]["server-round"])
        metrics = MetricRecord({"num-examples": _examples(node), "train_loss": node / 100.0})
        return Message(
            RecordDict({"arrays": ArrayRecord(_new_arrays(node, arrays, rnd)), "metrics": metrics}), reply_to=msg
        )

    @app.evaluate(mods=mods or [])
    def evaluate(msg: Message, context: Context) -> Message:
        metrics = MetricRecord({"num-examples": _examples(node), "eval_acc": node / 1000.0, "eval_loss": -node / 7.0})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def initial() -> ArrayRecord:
    return ArrayRecord([np.zeros(SHAPES[0], np.float32), np.full(SHAPES[1], 0.5, np.float32)])


def secure_grid(**kw: Any) -> LocalGrid:
    return LocalGrid({n: make_app(n, [secagg_mod()]) for n in NODES}, **kw)


def plain_grid() -> LocalGrid:
    return LocalGrid({n: make_app(n, None) for n in NODES})


def strategy(**kw: Any) -> SecureFedAvg:
    return SecureFedAvg(secagg=SecAggSettings(clip=CLIP, bits=BITS, **kw), rng=DeterministicRandom(5))


def flat(arrays: ArrayRecord) -> np.ndarray:
    return np.concatenate([a.ravel() for a in arrays.to_numpy_ndarrays()])


def expected_round(before: np.ndarray, nodes: list[int], rnd: int) -> np.ndarray:
    """FedAvg over `nodes` of one round, from the flat model `before`."""
    arrays = [before[:12].reshape(SHAPES[0]).astype(np.float32), before[12:].astype(np.float32)]
    total = sum(_examples(n) for n in nodes)
    return sum(_examples(n) / total * np.concatenate([a.ravel() for a in _new_arrays(n, arrays, rnd)]) for n in nodes)


@pytest.mark.property("P16")
def test_secure_fedavg_matches_flower_fedavg() -> None:
    rounds = 3
    secure_result = strategy().start(grid=secure_grid(), initial_arrays=initial(), num_rounds=rounds)
    plain_result = FedAvg().start(grid=plain_grid(), initial_arrays=initial(), num_rounds=rounds)
    gap = np.abs(flat(secure_result.arrays) - flat(plain_result.arrays)).max()
    assert 0 < gap <= 2 * rounds * STEP  # quantised (so not bit-equal), within the quantisation error
    for rnd in range(1, rounds + 1):
        for key, value in plain_result.train_metrics_clientapp[rnd].items():
            assert secure_result.train_metrics_clientapp[rnd][key] == pytest.approx(value, abs=1e-5)
        for key, value in plain_result.evaluate_metrics_clientapp[rnd].items():
            assert secure_result.evaluate_metrics_clientapp[rnd][key] == pytest.approx(value, abs=1e-5)
    assert set(secure_result.evaluate_metrics_clientapp[rounds]) == {"eval_acc", "eval_loss"}


@pytest.mark.property("P16")
def test_dropout_mid_round_aggregates_the_survivors() -> None:
    grid = secure_grid(drop={303: (rec_.PURPOSE_ARRAYS, "SharesDelivery")})  # shared its keys, never sends its input
    strat = strategy()
    result = strat.start(grid=grid, initial_arrays=initial(), num_rounds=1)
    survivors = [n for n in NODES if n != 303]
    want = expected_round(flat(initial()), survivors, 1)
    assert np.abs(flat(result.arrays) - want).max() <= 2 * STEP
    assert strat.last_result is not None and len(strat.last_result.survivors) == 4
    assert strat.last_result.dropped == (3,)  # node 303 is SecAgg+ id 3 (ids follow node order)
    assert (303, rec_.PURPOSE_ARRAYS, "UnmaskRequest") not in grid.seen


@pytest.mark.property("P16")
def test_masked_inputs_travel_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import secagg.flower.mod as mod_module

    monkeypatch.setattr(mod_module, "CHUNK_ELEMS", 5)  # 17 values + the weight: four chunks per node
    grid = secure_grid()
    seen = _replies_of(grid)
    result = strategy().start(grid=grid, initial_arrays=initial(), num_rounds=1)
    chunks = [m for node, msgs in seen if node == 101 for m in msgs if isinstance(m, MaskedInputChunk)]
    assert [c.index for c in chunks if c.count == 4] == [0, 1, 2, 3]
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), NODES, 1)).max() <= 2 * STEP


@pytest.mark.property("P16")
def test_a_node_whose_training_fails_is_left_out_before_secagg() -> None:
    apps = {n: make_app(n, [secagg_mod()], crash=n == 505) for n in NODES}
    result = strategy().start(grid=LocalGrid(apps), initial_arrays=initial(), num_rounds=1)
    want = expected_round(flat(initial()), NODES[:4], 1)
    assert np.abs(flat(result.arrays) - want).max() <= 2 * STEP


def _replies_of(grid: LocalGrid) -> list[tuple[int, list[Any]]]:
    """Wrap the grid so every SecAgg+ reply is recorded as (node, decoded client messages)."""
    seen: list[tuple[int, list[Any]]] = []
    inner = grid.send_and_receive

    def spy(messages: Any, *, timeout: float | None = None) -> Any:
        replies = list(inner(messages, timeout=timeout))
        for r in replies:
            if not r.has_content():
                continue
            for key, rec in r.content.array_records.items():
                if key.startswith("secagg-replies."):
                    seen.append((r.metadata.src_node_id, [decode_message(b) for b in rec_.unpack_replies(rec)]))
        return replies

    grid.send_and_receive = spy  # type: ignore[method-assign]
    return seen


@pytest.mark.property("P16")
def test_tampered_unmask_request_is_refused() -> None:
    """A1: asking node 101 to reveal both shares of a peer (alive and dropped at once) is refused."""

    def tamper(node: int, msg: ServerMessage) -> ServerMessage:
        if node == 101 and isinstance(msg, UnmaskRequest) and msg.alive:
            victim = msg.alive[0]
            return UnmaskRequest(
                msg.session_id, msg.alive, tuple(sorted({*msg.dropped, victim})), msg.survivors, msg.signatures
            )
        return msg

    grid = secure_grid(tamper=tamper)
    seen = _replies_of(grid)
    result = strategy().start(grid=grid, initial_arrays=initial(), num_rounds=1)
    answers = [m for node, msgs in seen if node == 101 for m in msgs]
    aborts = [m for m in answers if isinstance(m, ClientAbort)]
    assert aborts and {a.code for a in aborts} == {"OVERLAPPING_PARTITION"}  # in every round it was asked
    assert not any(isinstance(m, UnmaskResponse) for m in answers)
    # the other four still unmask: the round completes over all five inputs
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), NODES, 1)).max() <= 2 * STEP


@pytest.mark.property("P16")
def test_a_node_shown_another_model_refuses_before_making_keys() -> None:
    """A9 at the model level: the setup's model_hash must be the digest of what the node trained on."""

    def tamper(node: int, msg: ServerMessage) -> ServerMessage:
        if node == 202 and isinstance(msg, SetupRequest):
            import dataclasses

            return SetupRequest(dataclasses.replace(msg.config, model_hash=bytes(32)))
        return msg

    grid = secure_grid(tamper=tamper)
    seen = _replies_of(grid)
    result = strategy().start(grid=grid, initial_arrays=initial(), num_rounds=1)
    first = next(msgs for node, msgs in seen if node == 202)
    assert [type(m) for m in first] == [ClientAbort] and first[0].code == "MODEL_MISMATCH"
    survivors = [n for n in NODES if n != 202]
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), survivors, 1)).max() <= 2 * STEP


@pytest.mark.property("P16")
def test_a_weight_above_the_rounds_max_weight_is_refused_at_setup() -> None:
    grid = secure_grid()
    seen = _replies_of(grid)
    strat = strategy(max_weight=45)  # node 505 reports 50 examples
    result = strat.start(grid=grid, initial_arrays=initial(), num_rounds=1)
    first = next(msgs for node, msgs in seen if node == 505)
    assert [type(m) for m in first] == [ClientAbort] and first[0].code == "BAD_INPUT"
    assert "max_weight" in first[0].reason
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), NODES[:4], 1)).max() <= 2 * STEP


@pytest.mark.property("P16")
def test_nodes_refuse_plain_rounds() -> None:
    """require_secure (default): a plain FedAvg server gets errors, never an update."""
    grid = secure_grid()
    replies: list[Message] = []
    inner = grid.send_and_receive

    def spy(messages: Any, *, timeout: float | None = None) -> Any:
        out = list(inner(messages, timeout=timeout))
        replies.extend(out)
        return out

    grid.send_and_receive = spy  # type: ignore[method-assign]
    result = FedAvg().start(grid=grid, initial_arrays=initial(), num_rounds=1)
    assert len(replies) == 2 * len(NODES)  # train and evaluate
    assert all(r.has_error() and "only through SecAgg+" in r.error.reason for r in replies)
    assert len(result.arrays) == 0 and result.train_metrics_clientapp == {}  # no model was ever aggregated


@pytest.mark.property("P16")
def test_session_between_stages_is_sealed_in_the_context() -> None:
    grid = secure_grid(drop={101: (rec_.PURPOSE_ARRAYS, "SharesDelivery")})
    strategy().start(grid=grid, initial_arrays=initial(), num_rounds=1)
    # node 101 went silent after sharing keys: its context still holds the session of that stage, sealed
    sealed = rec_.get_bytes(grid.context(101).state.config_records[f"{STATE_SESSION}.arrays"], "blob")
    assert len(sealed) > 100
    # the others finished: their session (and its secrets) is gone from the context
    assert all(not any(k.startswith(STATE_SESSION) for k in grid.context(n).state.config_records) for n in NODES[1:])


@pytest.mark.property("P16")
def test_state_key_from_the_node_config(tmp_path: Any) -> None:
    keys = {}
    for n in NODES:
        keys[n] = tmp_path / f"key-{n}"
        keys[n].write_bytes(bytes([n % 256]) * 32)
    cfg = {n: {"secagg-state-key-file": str(keys[n])} for n in NODES}
    grid = LocalGrid({n: make_app(n, [secagg_mod()]) for n in NODES}, node_config=cfg)
    result = strategy().start(grid=grid, initial_arrays=initial(), num_rounds=1)
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), NODES, 1)).max() <= 2 * STEP


@pytest.mark.property("P16")
def test_the_default_state_key_is_made_once_and_reused(tmp_path: Any) -> None:
    """A node's ClientApp processes share the key file: the first makes it (0600), the rest read it."""
    import os
    import stat

    path = default_state_key_path()
    assert str(path).startswith(str(tmp_path))
    first = load_state_key(path, DeterministicRandom(1))
    second = load_state_key(path, DeterministicRandom(2))
    assert first == second and len(first) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.write_bytes(b"short")
    with pytest.raises(ConfigurationError, match="32 bytes"):
        load_state_key(path, DeterministicRandom(3))


@pytest.mark.property("P16")
def test_a_session_sealed_under_another_key_is_refused() -> None:
    """A stored session opens only under the key it was sealed with (e.g. a Context moved to another host):
    node 101 advertises keys, then its key changes; it cannot go on, and the round completes without it."""
    grid = LocalGrid({n: make_app(n, [secagg_mod(state_key=bytes(32))]) for n in NODES})
    inner = grid.send_and_receive

    def spy(messages: Any, *, timeout: float | None = None) -> Any:
        out = list(inner(messages, timeout=timeout))
        if (101, rec_.PURPOSE_ARRAYS, "SetupRequest") in grid.seen:
            grid.apps[101] = make_app(101, [secagg_mod(state_key=bytes([1]) * 32)])
        return out

    grid.send_and_receive = spy  # type: ignore[method-assign]
    seen = _replies_of(grid)
    strat = strategy()
    result = strat.start(grid=grid, initial_arrays=initial(), num_rounds=1)
    aborts = [m for node, msgs in seen if node == 101 for m in msgs if isinstance(m, ClientAbort)]
    assert aborts and aborts[0].code == "STATE_UNREADABLE" and "state key" in aborts[0].reason
    assert strat.last_result is not None and 1 not in strat.last_result.survivors
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), NODES[1:], 1)).max() <= 2 * STEP


@pytest.mark.property("P16")
def test_two_nodes_are_refused_with_a_clear_error() -> None:
    """With two nodes each could compute the other's update from the new model: a strategy that could sample two
    is refused at construction, and a round left with two sampled nodes (the others benched) sends nothing."""
    for key in ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes"):
        with pytest.raises(ConfigurationError, match="at least 3 nodes"):
            SecureFedAvg(**{key: 2})
    grid = LocalGrid({n: make_app(n, [secagg_mod()]) for n in NODES[:3]})
    strat = strategy()
    strat.exclusions.bench(NODES[0], 0, "benched by hand for this test")
    with pytest.raises(ConfigurationError, match="at least 3 nodes"):
        strat.start(grid=grid, initial_arrays=initial(), num_rounds=1)
    assert grid.seen == []  # nothing was sent


@pytest.mark.property("P16")
def test_too_few_ready_nodes_skip_the_round() -> None:
    """Three sampled, one fails training: two are ready, below the minimum, so the model stays as it was."""
    apps = {n: make_app(n, [secagg_mod()], crash=n == 303) for n in NODES[:3]}
    strat = strategy()
    result = strat.start(grid=LocalGrid(apps), initial_arrays=initial(), num_rounds=1)
    assert strat.last_result is None and len(result.arrays) == 0


def _closure_values(fn: Any, seen: set[int] | None = None) -> list[Any]:
    """Every value a closure captures, following nested closures of the same module (what cloudpickle copies)."""
    seen = seen if seen is not None else set()
    out: list[Any] = []
    for cell in fn.__closure__ or ():
        value = cell.cell_contents
        if callable(value) and getattr(value, "__module__", None) == fn.__module__ and hasattr(value, "__closure__"):
            if id(value) not in seen:
                seen.add(id(value))
                out += _closure_values(value, seen)
        else:
            out.append(value)
    return out


@pytest.mark.property("P16")
def test_the_mod_can_be_shipped_to_simulation_workers(tmp_path: Any) -> None:
    """Flower's simulation engine pickles the ClientApp: the mod must capture nothing that refuses pickling
    (no random source, no key object; a hardened node's identity is given as the path of its PEM file)."""
    import pickle

    pem = tmp_path / "identity.pem"
    key = IdentityKey.generate(DeterministicRandom(9))
    pem.write_bytes(key.to_pem())
    roster = {7: key.public_bytes}
    mod = secagg_mod(policy=ClientPolicy(roster=roster), identity=str(pem), client_id=7)
    for value in _closure_values(mod):
        pickle.dumps(value)
    with pytest.raises(Exception, match="pickle"):
        pickle.dumps(key)  # which is why the key object itself cannot be captured for Ray


@pytest.mark.property("P16")
def test_hardened_mode_with_identity_files(tmp_path: Any) -> None:
    ids = {n: i + 10 for i, n in enumerate(NODES)}
    roster = {}
    apps = {}
    for n in NODES:
        key = IdentityKey.generate(DeterministicRandom(n))
        (tmp_path / f"{n}.pem").write_bytes(key.to_pem())
        roster[ids[n]] = key.public_bytes
    policy = ClientPolicy(roster=roster, require_derived_degree=False)
    for n in NODES:
        apps[n] = make_app(n, [secagg_mod(policy=policy, identity=tmp_path / f"{n}.pem", client_id=ids[n])])
    strat = strategy(mode=Mode.HARDENED, roster=roster)
    result = strat.start(grid=LocalGrid(apps), initial_arrays=initial(), num_rounds=1)
    assert strat.last_result is not None and len(strat.last_result.survivors) == 5
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), NODES, 1)).max() <= 2 * STEP


@pytest.mark.property("P16")
def test_hardened_mode_with_a_roster() -> None:
    ids = {n: i + 10 for i, n in enumerate(NODES)}
    identities = {n: IdentityKey.generate(DeterministicRandom(n)) for n in NODES}
    roster = {ids[n]: identities[n].public_bytes for n in NODES}
    policy = ClientPolicy(roster=roster, require_derived_degree=False)
    apps = {n: make_app(n, [secagg_mod(policy=policy, identity=identities[n], client_id=ids[n])]) for n in NODES}
    strat = strategy(mode=Mode.HARDENED, roster=roster)
    result = strat.start(grid=LocalGrid(apps), initial_arrays=initial(), num_rounds=1)
    assert strat.last_result is not None and strat.last_result.survivors == tuple(sorted(ids.values()))
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), NODES, 1)).max() <= 2 * STEP


@pytest.mark.property("P16")
def test_hardened_mode_leaves_out_a_node_outside_the_roster() -> None:
    ids = {n: i + 10 for i, n in enumerate(NODES)}
    identities = {n: IdentityKey.generate(DeterministicRandom(n)) for n in NODES}
    roster = {ids[n]: identities[n].public_bytes for n in NODES[:4]}
    policy = ClientPolicy(roster=roster, require_derived_degree=False)
    apps = {n: make_app(n, [secagg_mod(policy=policy, identity=identities[n], client_id=ids[n])]) for n in NODES}
    strat = strategy(mode=Mode.HARDENED, roster=roster)
    result = strat.start(grid=LocalGrid(apps), initial_arrays=initial(), num_rounds=1)
    assert strat.last_result is not None and 14 not in strat.last_result.survivors
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), NODES[:4], 1)).max() <= 2 * STEP


@pytest.mark.property("P16")
@pytest.mark.parametrize(
    "make",
    [
        lambda: FedMedian(),
        lambda: Krum(),
        lambda: DifferentialPrivacyServerSideFixedClipping(FedAvg(), 1.0, 1.0, 5),
    ],
)
def test_secure_refuses_strategies_that_need_individual_updates(make: Any) -> None:
    with pytest.raises(IndividualUpdatesRequired, match="individual updates"):
        secure(make())


@pytest.mark.property("P16")
@pytest.mark.parametrize(
    "wrapper", [DifferentialPrivacyServerSideFixedClipping, DifferentialPrivacyServerSideAdaptiveClipping]
)
def test_a_server_side_clipping_wrapper_around_secure_fedavg_is_refused(wrapper: Any) -> None:
    """Its clipping would read replies that carry no values and silently clip nothing: refused, not run."""
    args = (0.0, 1.0, 5) if wrapper is DifferentialPrivacyServerSideFixedClipping else (0.0, 5)
    with pytest.raises(IndividualUpdatesRequired, match=wrapper.__name__):
        wrapper(strategy(), *args).start(grid=secure_grid(), initial_arrays=initial(), num_rounds=1)


@pytest.mark.property("P16")
def test_secure_converts_fedavg_and_composes_with_client_side_clipping() -> None:
    plain = FedAvg(fraction_evaluate=0.5, min_available_nodes=3, weighted_by_key="n")
    out = secure(plain, SecAggSettings(clip=0.5))
    assert isinstance(out, SecureFedAvg) and out.secagg.clip == 0.5
    assert (out.fraction_evaluate, out.min_available_nodes, out.weighted_by_key) == (0.5, 3, "n")
    wrapped = secure(DifferentialPrivacyClientSideFixedClipping(FedAvg(), 0.0, 0.1, 5))
    assert isinstance(wrapped, DifferentialPrivacyClientSideFixedClipping)
    assert isinstance(wrapped.strategy, SecureFedAvg)


@pytest.mark.property("P16")
def test_client_side_clipping_dp_runs_through_secagg() -> None:
    """Flower's client-side clipping wrapper around SecureFedAvg, fixedclipping_mod inside secagg_mod: each
    update is clipped to L2 norm 0.1 on the node (noise 0 here, so the result is checkable)."""
    norm = 0.1
    apps = {n: make_app(n, [secagg_mod(), fixedclipping_mod]) for n in NODES}
    strat = DifferentialPrivacyClientSideFixedClipping(strategy(), 0.0, norm, len(NODES))
    result = strat.start(grid=LocalGrid(apps), initial_arrays=initial(), num_rounds=1)
    start = flat(initial())
    total = sum(_examples(n) for n in NODES)
    want = start.copy()
    for n in NODES:
        arrays = [start[:12].reshape(SHAPES[0]).astype(np.float32), start[12:].astype(np.float32)]
        delta = np.concatenate([a.ravel() for a in _new_arrays(n, arrays, 1)]) - start
        want += _examples(n) / total * delta * min(1.0, norm / np.linalg.norm(delta))
    assert np.abs(flat(result.arrays) - want).max() <= 2 * STEP


_ADV = encode_message(AdvertiseKeys(round_tag=bytes(32), advertisement=KeyAdvertisement(1, bytes(32), bytes(32))))


@pytest.mark.property("P16")
@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"purposes": [rec_.PURPOSE_ARRAYS], "client-id": 1, "msgs": [b"junk"]}, "EncodingError"),
        ({"purposes": [rec_.PURPOSE_ARRAYS], "client-id": 1, "msgs": [_ADV]}, "not a server message"),
        ({"purposes": ["arrays", "metrics"], "client-id": 1, "msgs": [b"x"]}, "one message per purpose"),
        ({"purposes": ["arrays", "arrays"], "client-id": 1, "msgs": [b"x", b"y"]}, "one message per purpose"),
        ({"purposes": [rec_.PURPOSE_ARRAYS], "client-id": "1", "msgs": [b"x"]}, "must be an integer"),
        ({"client-id": 1, "msgs": [b"x"]}, "'purposes'"),
    ],
)
def test_mod_refuses_malformed_protocol_messages(fields: dict[str, Any], why: str) -> None:
    mod = secagg_mod()
    ctx = Context(run_id=1, node_id=9, node_config={}, state=RecordDict(), run_config={})
    bad = ConfigRecord({"stage": rec_.STAGE_PROTOCOL, **fields})
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    msg = Message(RecordDict({rec_.SECAGG_KEY: bad}), dst_node_id=9, message_type="train")

    def never(m: Message, c: Context) -> Message:
        raise AssertionError("the user's function must not run")

    reply = mod(msg, ctx, never)
    assert reply.has_error() and why in reply.error.reason
    assert len(ctx.state) == 0  # nothing stored
