"""Run Flower 1.42's SecAgg+ rounds in one process, for the benchmark suite (runs in Flower's own venv).

Usage (the suite calls it; no pickle anywhere, inputs and outputs are .npy and JSON):

    <flower-venv>/bin/python bench/flower_driver.py --inputs X.npy --config round.json --out OUT

X.npy holds the N x D float32 client updates (row i is node id i + 1). round.json holds n, dim, num_shares,
threshold, clip, target_range, mod_range, max_weight, repeats, seed and `drop` ({node id: Flower stage name
at which that node stops answering}). The driver writes OUT.json (timings, survivors, Flower's version) and
OUT.npy (the float64 aggregate of the last round).

What runs is Flower's own code, unchanged: the server side is `SecAggPlusWorkflow`'s four stage methods
(setup_stage, share_keys_stage, collect_masked_vectors_stage, unmask_stage, called in order exactly as its
`__call__` does), talking to a `Grid` whose `send_and_receive` delivers each message in memory to the
node's `secaggplus_mod` (the client-side mod, which dispatches to Flower's _setup / _share_keys /
_collect_masked_vectors / _unmask handlers and keeps its state in the node's Context). Only the Grid (an
in-memory message pump, 60 lines below) and the node's "training" callable (returns the given update) are
ours. A dropped node receives the stage's message and never answers, as a node that went away would.

Timing: wall time of the four stage calls; the time inside each node's mod is that node's client time, the
training callable's time (wrapping the update in a FitRes) is subtracted from it and from the wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import flwr
import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod.secure_aggregation.secaggplus_mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow, WorkflowState
from flwr.serverapp.grid import Grid
from flwr.supercore.task_identity import TaskIdentity

RUN_ID = 1


def _copy_content(content: RecordDict) -> RecordDict:
    """What the wire would do: the receiver gets its own records (the mod pops keys from its ConfigRecord)."""
    return RecordDict({k: ConfigRecord(dict(v)) if isinstance(v, ConfigRecord) else v for k, v in content.items()})


class LocalGrid(Grid):
    """An in-memory Grid: send_and_receive runs every addressed node's secaggplus_mod in this process."""

    def __init__(self, inputs: np.ndarray, drop: dict[int, str]) -> None:
        self.inputs = inputs
        self.drop = drop
        self.gone: set[int] = set()
        self.contexts: dict[int, Context] = {}
        self.client_s: dict[int, float] = {}
        self.train_s = 0.0
        self._run: Any = None

    # The abstract parts of Grid that the workflow does not use.
    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return range(1, len(self.inputs) + 1)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("the benchmark grid only does send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("the benchmark grid only does send_and_receive")

    def _train(self, msg: Message, ctxt: Context) -> Message:
        """The node's ClientApp: returns its update for this round (no training in a benchmark)."""
        t = time.perf_counter()
        nid = msg.metadata.dst_node_id
        update = np.asarray(self.inputs[nid - 1], dtype=np.float32)
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([update]), num_examples=1, metrics={})
        out = Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)
        self.train_s += time.perf_counter() - t
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            stage = msg.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]
            if nid in self.gone:
                continue
            if self.drop.get(nid) == stage:
                self.gone.add(nid)
                continue
            ctxt = self.contexts.setdefault(
                nid, Context(run_id=RUN_ID, node_id=nid, node_config={}, state=RecordDict(), run_config={})
            )
            inbound = Message(
                _copy_content(msg.content), nid, msg.metadata.message_type, group_id=msg.metadata.group_id
            )
            train_before = self.train_s
            t = time.perf_counter()
            reply = secaggplus_mod(inbound, ctxt, self._train)
            spent = time.perf_counter() - t - (self.train_s - train_before)
            self.client_s[nid] = self.client_s.get(nid, 0.0) + spent
            replies.append(reply)
        return replies


class CaptureStrategy(FedAvg):
    """FedAvg that keeps the secure aggregate: every FitRes the workflow hands over carries that same aggregate,
    so re-averaging N copies of it (FedAvg's aggregate_fit) would only add cost that is not SecAgg+'s."""

    aggregate: list[np.ndarray] | None = None

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        if not results:
            return None, {}
        params = results[0][1].parameters
        self.aggregate = parameters_to_ndarrays(params)
        return params, {}


def run_round(cfg: dict[str, Any], inputs: np.ndarray, seed: int) -> tuple[dict[str, Any], np.ndarray | None]:
    """One SecAgg+ round through Flower's workflow stages and client mod; returns timings and the aggregate."""
    random.seed(seed)  # the workflow shuffles node ids and the client manager samples with `random`
    np.random.seed(seed)  # Flower's stochastic rounding draws from numpy's global generator
    n = cfg["n"]
    grid = LocalGrid(inputs, {int(k): v for k, v in cfg["drop"].items()})
    strategy = CaptureStrategy(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n)
    manager = SimpleClientManager()
    for nid in range(1, n + 1):
        manager.register(GridClientProxy(nid, grid, RUN_ID))
    base = Context(run_id=RUN_ID, node_id=0, node_config={}, state=RecordDict(), run_config={})
    context = LegacyContext(base, strategy=strategy, client_manager=manager)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    model = ndarrays_to_parameters([np.zeros(1, dtype=np.float32)])  # the global model is not SecAgg+'s cost
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(model, keep_input=True)
    workflow = SecAggPlusWorkflow(
        cfg["num_shares"],
        cfg["threshold"],
        max_weight=float(cfg["max_weight"]),
        clipping_range=float(cfg["clip"]),
        quantization_range=int(cfg["target_range"]),
        modulus_range=int(cfg["mod_range"]),
    )
    state = WorkflowState()
    steps = (
        ("setup", workflow.setup_stage),
        ("share_keys", workflow.share_keys_stage),
        ("collect_masked_vectors", workflow.collect_masked_vectors_stage),
        ("unmask", workflow.unmask_stage),
    )
    stage_s: dict[str, float] = {}
    ok = True
    survivors: list[int] = []
    t0 = time.perf_counter()
    for name, step in steps:
        train_before = grid.train_s
        t = time.perf_counter()
        ok = step(grid, context, state)
        stage_s[name] = time.perf_counter() - t - (grid.train_s - train_before)
        if name == "collect_masked_vectors":
            survivors = sorted(state.active_node_ids)
        if not ok:
            break
    wall = time.perf_counter() - t0 - grid.train_s
    client_total = sum(grid.client_s.values())
    report = {
        "ok": bool(ok and strategy.aggregate is not None),
        "wall_s": wall,
        "client_s": client_total,
        "server_s": wall - client_total,
        "per_client_s": {str(k): v for k, v in sorted(grid.client_s.items())},
        "stage_s": stage_s,
        "survivors": survivors,
        "num_shares": state.num_shares,
        "threshold": state.threshold,
    }
    agg = None
    if strategy.aggregate is not None:
        agg = np.asarray(strategy.aggregate[0], dtype=np.float64)
    return report, agg


def main() -> None:
    """Read the round's inputs and configuration, run the rounds, write the JSON report and the aggregate."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", required=True, type=Path)
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="output prefix: writes OUT.json and OUT.npy")
    args = ap.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    # What Flower's own legacy in-process entry point (run_simulation) sets when no Run is given.
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = RUN_ID
    TaskIdentity.node_id = 0
    cfg = json.loads(args.config.read_text())
    inputs = np.load(args.inputs, mmap_mode="r")
    if inputs.shape != (cfg["n"], cfg["dim"]):
        sys.exit(f"inputs have shape {inputs.shape}, the configuration says {(cfg['n'], cfg['dim'])}")
    inputs = np.ascontiguousarray(inputs)
    rounds = []
    agg = None
    for r in range(int(cfg.get("repeats", 1))):
        report, agg = run_round(cfg, inputs, int(cfg.get("seed", 0)) + r)
        rounds.append(report)
        print(f"flower round {r}: {report['wall_s']:.3f} s ok={report['ok']}", file=sys.stderr, flush=True)
    out = {"flwr_version": flwr.__version__, "python": sys.version.split()[0], "rounds": rounds}
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    if agg is not None:
        np.save(args.out.with_suffix(".npy"), agg)


if __name__ == "__main__":
    main()
