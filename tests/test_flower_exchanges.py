"""SecureFedAvg in the fewest exchanges: the setup rides on the train/evaluate message, each round's evaluation on
the next round's train message; FedAvg's semantics (fraction_evaluate, evaluate-only rounds, server-side
evaluation) stay, and a node whose state is missing or stale, a message of another round or a configuration
changed between rounds ends in a typed refusal naming the node, never a hang or a wrong aggregate.

Nodes are real ClientApps on a LocalGrid (messages and Contexts cross Flower's protobuf serde)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from secagg.flower import SecureFedAvg, secagg_mod
from secagg.flower import records as rec_
from secagg.flower.local import LocalGrid
from secagg.protocol.config import ClientPolicy, Mode
from secagg.protocol.messages import KeysBroadcast, ServerMessage, SharesDelivery
from tests.test_flower import NODES, STEP, expected_round, flat, initial, make_app, strategy

pytestmark = pytest.mark.property("P16")


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECAGG_STATE_DIR", str(tmp_path / "state"))


def model_app(node: int, *, with_app: bool = True, mods: list[Any] | None = None, lr: bool = False) -> ClientApp:
    """make_app's training, with an evaluation that depends on the model received (so a test can tell which
    model was evaluated) and on the node (so the weighted mean is not trivial)."""
    app = ClientApp()
    secure = mods if mods is not None else [secagg_mod(app=app if with_app else None)]
    base = make_app(node, None)

    @app.train(mods=secure)
    def train(msg: Message, context: Context) -> Message:
        if lr and "lr" not in msg.content["config"]:  # the train config, never the evaluation's that rode along
            raise RuntimeError("the train function was given another config than the train config")
        return base._registered_funcs["train.default"](msg, context)

    @app.evaluate(mods=secure)
    def evaluate(msg: Message, context: Context) -> Message:
        arrays = np.concatenate([a.ravel() for a in msg.content["arrays"].to_numpy_ndarrays()])
        metrics = MetricRecord(
            {
                "num-examples": 3 + node % 7,
                "model_mean": float(arrays.mean()),
                "node_mix": float(arrays.sum()) * node / 1000.0,
                "seen_round": int(msg.content["config"]["server-round"]),
            }
        )
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def grid(**kw: Any) -> LocalGrid:
    with_app, lr = kw.pop("with_app", True), kw.pop("lr", False)
    return LocalGrid({n: model_app(n, with_app=with_app, lr=lr) for n in NODES}, **kw)


def plain() -> LocalGrid:
    return LocalGrid({n: model_app(n, mods=[]) for n in NODES})


def _same_metrics(got: dict[int, Any], want: dict[int, Any], tol: float) -> None:
    assert sorted(got) == sorted(want)
    for r in want:
        assert sorted(got[r]) == sorted(want[r])
        for key in want[r]:
            assert got[r][key] == pytest.approx(want[r][key], abs=tol), (r, key)


def test_a_round_takes_four_exchanges_and_evaluation_rides_on_the_next_train_message() -> None:
    strat = strategy()
    train = ConfigRecord({"lr": 0.5})
    secure = strat.start(grid=grid(lr=True), initial_arrays=initial(), num_rounds=3, train_config=train)
    ref = FedAvg(min_train_nodes=3, min_evaluate_nodes=3).start(
        grid=plain(), initial_arrays=initial(), num_rounds=3, train_config=ConfigRecord({"lr": 0.5})
    )
    assert strat.exchanges == {(1, "train"): 4, (2, "train"): 4, (3, "train"): 4, (3, "evaluate"): 4}
    assert np.abs(flat(secure.arrays) - flat(ref.arrays)).max() <= 3 * 2 * STEP
    # round r's evaluation is of round r's model (FedAvg's), although it travelled in round r + 1's messages
    _same_metrics(dict(secure.evaluate_metrics_clientapp), dict(ref.evaluate_metrics_clientapp), 1e-3)
    assert [int(secure.evaluate_metrics_clientapp[r]["seen_round"]) for r in (1, 2, 3)] == [1, 2, 3]
    _same_metrics(dict(secure.train_metrics_clientapp), dict(ref.train_metrics_clientapp), 1e-5)


def test_server_side_evaluation_runs_every_round() -> None:
    seen: list[int] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        seen.append(server_round)
        return MetricRecord({"mean": float(flat(arrays).mean())})

    result = strategy().start(grid=grid(), initial_arrays=initial(), num_rounds=2, evaluate_fn=evaluate_fn)
    assert seen == [0, 1, 2] and sorted(result.evaluate_metrics_serverapp) == [0, 1, 2]


def test_a_different_evaluation_sample_keeps_its_own_messages() -> None:
    """fraction_evaluate != fraction_train: evaluation cannot ride on training; it runs every round, its setup in
    the evaluate message (4 exchanges), over the sample FedAvg draws for it."""
    strat = SecureFedAvg(fraction_evaluate=0.6, secagg=strategy().secagg)
    result = strat.start(grid=grid(), initial_arrays=initial(), num_rounds=2)
    assert strat.exchanges == {(1, "train"): 4, (1, "evaluate"): 4, (2, "train"): 4, (2, "evaluate"): 4}
    assert sorted(result.evaluate_metrics_clientapp) == [1, 2]


def test_no_evaluation_with_fraction_evaluate_zero() -> None:
    strat = SecureFedAvg(fraction_evaluate=0.0, secagg=strategy().secagg)
    result = strat.start(grid=grid(), initial_arrays=initial(), num_rounds=2)
    assert strat.exchanges == {(1, "train"): 4, (2, "train"): 4}
    assert dict(result.evaluate_metrics_clientapp) == {}


def test_evaluate_only_rounds() -> None:
    """fraction_train = 0: FedAvg's evaluate-only rounds; the model is evaluated securely each round."""
    strat = SecureFedAvg(fraction_train=0.0, secagg=strategy().secagg)
    result = strat.start(grid=grid(), initial_arrays=initial(), num_rounds=2)
    ref = FedAvg(fraction_train=0.0).start(grid=plain(), initial_arrays=initial(), num_rounds=2)
    assert strat.exchanges == {(1, "evaluate"): 4, (2, "evaluate"): 4}
    _same_metrics(dict(result.evaluate_metrics_clientapp), dict(ref.evaluate_metrics_clientapp), 1e-3)


def test_nodes_without_the_app_get_evaluate_messages() -> None:
    """secagg_mod() without app= cannot run the evaluate function from a train message: the nodes say so in
    their first reply and the strategy keeps evaluate messages for them; the results are the same."""
    strat = strategy()
    result = strat.start(grid=grid(with_app=False), initial_arrays=initial(), num_rounds=2)
    ref = FedAvg(min_train_nodes=3, min_evaluate_nodes=3).start(grid=plain(), initial_arrays=initial(), num_rounds=2)
    assert strat.exchanges == {(1, "train"): 4, (1, "evaluate"): 4, (2, "train"): 4, (2, "evaluate"): 4}
    _same_metrics(dict(result.evaluate_metrics_clientapp), dict(ref.evaluate_metrics_clientapp), 1e-3)


def test_a_node_asked_to_evaluate_without_the_app_refuses_the_message() -> None:
    """A server that asks a node without app= to evaluate in a train message gets an error from it, not a round
    in which that node's evaluation is missing: the others complete exactly."""
    apps = {n: model_app(n, with_app=n != 101) for n in NODES}
    strat = strategy()
    strat._can_evaluate = dict.fromkeys(NODES, True)  # what a lying or mistaken server believes
    g = LocalGrid(apps)
    replies: list[Message] = []
    inner = g.send_and_receive

    def spy(messages: Any, *, timeout: float | None = None) -> Any:
        out = list(inner(messages, timeout=timeout))
        replies.extend(out)
        return out

    g.send_and_receive = spy  # type: ignore[method-assign]
    strat._fold = (0, ConfigRecord({"server-round": 0}))
    msgs = list(strat.configure_train(1, initial(), ConfigRecord(), g))
    arrays, _ = strat.aggregate_train(1, g.send_and_receive(msgs))
    refused = [r for r in replies if r.has_error() and r.metadata.src_node_id == 101]
    assert refused and "cannot evaluate" in refused[0].error.reason
    assert arrays is not None
    assert np.abs(flat(arrays) - expected_round(flat(initial()), NODES[1:], 1)).max() <= 2 * STEP
    assert strat._folded[0] is not None  # the evaluation of the others went through


def test_a_node_shown_another_evaluation_config_refuses(caplog: pytest.LogCaptureFixture) -> None:
    """A9 for the folded evaluation: the evaluate config is bound into both SecAgg+ rounds with the model, so a
    node shown a different one refuses before making keys and the others complete exactly."""
    g = grid()
    inner = g.send_and_receive

    def swap(messages: Any, *, timeout: float | None = None) -> Any:
        for m in messages:
            ev = m.content.config_records.get(rec_.EVALUATE_CONFIG_KEY)
            if m.metadata.dst_node_id == 303 and ev is not None:  # the record is shared: give 303 its own
                m.content[rec_.EVALUATE_CONFIG_KEY] = ConfigRecord({**dict(ev.items()), "server-round": 99})
        return inner(messages, timeout=timeout)

    g.send_and_receive = swap  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, logger="flwr.secagg")
    strat = strategy()
    result = strat.start(grid=g, initial_arrays=initial(), num_rounds=2)
    assert any("node 303" in r.message and "MODEL_MISMATCH" in r.message for r in caplog.records)
    one = expected_round(flat(initial()), NODES, 1)
    want = expected_round(one, [n for n in NODES if n != 303], 2)
    assert np.abs(flat(result.arrays) - want).max() <= 2 * 2 * STEP


def test_different_metric_names_leave_metrics_out_but_not_the_update() -> None:
    apps = {n: make_app(n, [secagg_mod()]) for n in NODES}
    odd = ClientApp()
    base = make_app(505, None)

    @odd.train(mods=[secagg_mod()])
    def train(msg: Message, context: Context) -> Message:
        reply = base._registered_funcs["train.default"](msg, context)
        reply.content["metrics"]["extra"] = 1.0
        return reply

    apps[505] = odd
    strat = strategy(evaluate_with_train=False)
    result = strat.start(grid=LocalGrid(apps), initial_arrays=initial(), num_rounds=1)
    assert dict(result.train_metrics_clientapp) == {}
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), NODES, 1)).max() <= 2 * STEP


def test_more_metrics_than_slots_are_refused_for_the_metrics_only() -> None:
    strat = strategy(metric_slots=2)  # train: weight + train_loss fits; the folded evaluation would not
    result = strat.start(grid=grid(), initial_arrays=initial(), num_rounds=2)
    assert sorted(result.train_metrics_clientapp) == [1]  # round 2's metrics round (with round 1's evaluation) ended
    assert 1 not in result.evaluate_metrics_clientapp
    one = expected_round(flat(initial()), NODES, 1)
    assert np.abs(flat(result.arrays) - expected_round(one, NODES, 2)).max() <= 2 * 2 * STEP


class _Restart(LocalGrid):
    """A LocalGrid whose node 202 loses its Context state (a SuperNode restarted) after its nth SecAgg+ message."""

    def __init__(self, apps: dict[int, ClientApp], after: int) -> None:
        super().__init__(apps)
        self.after, self.count = after, 0

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        out = list(super().send_and_receive(messages, timeout=timeout))
        if any(m.metadata.dst_node_id == 202 for m in messages):
            self.count += 1
            if self.count == self.after:
                ctx = self.context(202)
                for key in list(ctx.state.keys()):
                    ctx.state.pop(key)
                from flwr.common.serde import context_to_proto

                self.contexts[202] = context_to_proto(ctx).SerializeToString()
        return out


@pytest.mark.parametrize("after", [1, 2, 3])
def test_a_node_that_lost_its_state_mid_round_is_refused_by_name(after: int, caplog: pytest.LogCaptureFixture) -> None:
    """Its next SecAgg+ message finds no session: it answers NO_SESSION, the ServerApp log names it, and the
    round ends with the exact sum of the others or, once its input was masked in, still exactly (recovered)."""
    caplog.set_level(logging.WARNING, logger="flwr.secagg")
    g = _Restart({n: make_app(n, [secagg_mod()]) for n in NODES}, after)
    strat = strategy(evaluate_with_train=False)
    result = strat.start(grid=g, initial_arrays=initial(), num_rounds=1)
    assert any("node 202" in r.message and "NO_SESSION" in r.message for r in caplog.records)
    assert strat.last_result is not None
    # SecAgg+ ids are 1..5 by node id (202 is 2): once its masked input is in, it survives and its shares held by
    # the others unmask it; before, it is a dropout
    assert (2 in strat.last_result.survivors) == (after == 3)
    included = NODES if after == 3 else [n for n in NODES if n != 202]
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), included, 1)).max() <= 2 * STEP


def test_a_message_of_another_round_is_refused_with_a_typed_code(caplog: pytest.LogCaptureFixture) -> None:
    """Round 1's key broadcast replayed to node 404 in round 2: another session, refused (SESSION_ID_MISMATCH or
    ROUND_MISMATCH), named in the log; round 2 ends exactly over the others."""
    kept: dict[str, ServerMessage] = {}

    def tamper(node: int, msg: ServerMessage) -> ServerMessage:
        if node != 404 or not isinstance(msg, (KeysBroadcast, SharesDelivery)):
            return msg
        key = type(msg).__name__ + str(len(kept))
        if not any(type(m) is type(msg) for m in kept.values()):
            kept[key] = msg  # round 1's
            return msg
        return next(m for m in kept.values() if type(m) is type(msg))

    caplog.set_level(logging.WARNING, logger="flwr.secagg")
    strat = strategy(evaluate_with_train=False, min_aggregate=3)
    result = strat.start(grid=LocalGrid({n: make_app(n, [secagg_mod()]) for n in NODES}, tamper=tamper),
                         initial_arrays=initial(), num_rounds=2)  # fmt: skip
    lines = [r.message for r in caplog.records if "node 404" in r.message]
    assert any("SESSION_ID_MISMATCH" in m or "ROUND_MISMATCH" in m for m in lines), lines
    one = expected_round(flat(initial()), NODES, 1)
    want = expected_round(one, [n for n in NODES if n != 404], 2)
    assert np.abs(flat(result.arrays) - want).max() <= 2 * 2 * STEP


def test_a_configuration_changed_between_rounds_below_a_nodes_policy_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Round 2 raises the clip above what the nodes accept: each refuses at setup with a typed code the log shows
    with its node id; the model stays at round 1's and nothing hangs."""
    apps = {n: make_app(n, [secagg_mod(policy=ClientPolicy(max_clip=1.0))]) for n in NODES}
    strat = strategy(evaluate_with_train=False)
    caplog.set_level(logging.WARNING, logger="flwr.secagg")

    class Raise(SecureFedAvg):
        def configure_train(self, server_round: int, *args: Any) -> Any:
            if server_round == 2:
                self.secagg = dataclasses.replace(self.secagg, clip=4.0)
            return super().configure_train(server_round, *args)

    raised = Raise(secagg=strat.secagg)
    result = raised.start(grid=LocalGrid(apps), initial_arrays=initial(), num_rounds=2)
    assert {n for n in NODES if any(f"node {n}" in r.message and "CLIP" in r.message for r in caplog.records)} == set(
        NODES
    )
    assert np.abs(flat(result.arrays) - expected_round(flat(initial()), NODES, 1)).max() <= 2 * STEP


def test_hardened_mode_learns_ids_once_then_sets_up_in_the_train_message() -> None:
    from secagg.crypto.keys import IdentityKey
    from secagg.crypto.rng import DeterministicRandom

    keys = {i: IdentityKey.generate(DeterministicRandom(i)) for i in range(1, len(NODES) + 1)}
    roster = {i: k.public_bytes for i, k in keys.items()}
    policy = ClientPolicy(roster=roster, require_derived_degree=False)
    apps = {}
    for i, n in enumerate(NODES, start=1):
        apps[n] = make_app(n, [secagg_mod(policy=policy, identity=keys[i], client_id=i)])
    strat = strategy(mode=Mode.HARDENED, roster=roster, evaluate_with_train=False)
    result = strat.start(grid=LocalGrid(apps), initial_arrays=initial(), num_rounds=2)
    # round 1: the train message cannot carry the setup (ids unknown), one exchange more; round 2 can
    assert strat.exchanges[(1, "train")] == strat.exchanges[(2, "train")] + 1
    one = expected_round(flat(initial()), NODES, 1)
    assert np.abs(flat(result.arrays) - expected_round(one, NODES, 2)).max() <= 2 * 2 * STEP


class _PushPull:
    """A grid with push/pull only: replies appear on the second pull, one node never answers."""

    def __init__(self) -> None:
        self.pulls = 0
        self.pushed: list[Message] = []

    def push_messages(self, messages: Any) -> list[str]:
        self.pushed = list(messages)
        return [f"id{i}" for i, _ in enumerate(self.pushed)]

    def pull_messages(self, ids: Any) -> list[Message]:
        self.pulls += 1
        if self.pulls < 2:
            return []
        out = []
        for i in range(len(self.pushed) - 1):
            if f"id{i}" in ids:
                reply = Message(RecordDict(), dst_node_id=0, message_type="train")
                reply.metadata.__dict__["_reply_to_message_id"] = f"id{i}"
                out.append(reply)
        return out


def test_replies_are_pulled_until_all_are_in_or_the_timeout() -> None:
    g = _PushPull()
    msgs = [Message(RecordDict(), dst_node_id=n, message_type="train") for n in (1, 2, 3)]
    strat = strategy(poll_interval=0.01)
    got = strat._exchange(g, msgs, timeout=0.5)  # type: ignore[arg-type]
    assert sorted(r.metadata.reply_to_message_id for r in got) == ["id0", "id1"]
    assert g.pulls >= 3  # it kept pulling for the silent node until the timeout
