"""`secagg demo`: hospitals train a digit classifier together over gRPC with mutual TLS and SecAgg+.

A throwaway PKI is made on the fly; the aggregation server runs in this process and each hospital (silo) is
its own process holding a non-IID shard of scikit-learn's bundled digits data. Every round the silos train
locally, and the server learns only the example-weighted mean of their updates (and of their evaluation
metrics) through SecAgg+. The same rounds are then replayed as plain FedAvg and compared with centralised
training on the pooled data. Writes a JSON report and a PNG plot of accuracy per round.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from secagg.crypto.rng import SystemRandom
from secagg.deploy.audit import AuditLog, verify_audit_log
from secagg.deploy.config import load_server_config, load_silo_config, write_server_config, write_silo_config
from secagg.deploy.pki import init_pki
from secagg.errors import ConfigurationError
from secagg.fl.digits import DigitsTrainer, initial_parameters, loss_and_accuracy, make_shards, sgd
from secagg.fl.federation import InProcessFederation, RoundReport, run_federated
from secagg.fl.grpc import GrpcFederation
from secagg.fl.strategy import FedAvg, FitInstructions, SecureFedAvg
from secagg.protocol.config import Mode
from secagg.protocol.server import Audit
from secagg.transport.grpc_server import AggregationServer

log = logging.getLogger("secagg.demo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def run_demo(
    out: Path,
    *,
    silos: int = 5,
    rounds: int = 20,
    mode: Mode = Mode.SEMI_HONEST,
    seed: int = 0,
    local_epochs: int = 1,
    learning_rate: float = 0.5,
    plot: bool = True,
    dp_noise_multiplier: float | None = None,
    ddp_epsilon: float | None = None,
    dp_delta: float = 1e-5,
    echo: Any = print,
) -> dict[str, Any]:
    """Run the demo; returns the report (also written to out/report.json)."""
    if silos < 3 or rounds < 1:
        raise ConfigurationError("the demo needs at least 3 silos and 1 round")
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    t_start = time.perf_counter()
    shards = make_shards(silos, seed=seed)
    fit = FitInstructions(local_epochs=local_epochs, learning_rate=learning_rate, batch_size=32)
    if dp_noise_multiplier is not None and ddp_epsilon is not None:
        raise ConfigurationError("choose DP-SGD on the silos (--dp) or distributed DP (--ddp), not both")
    distributed = None
    if ddp_epsilon is not None:
        from secagg.fl import ddp

        distributed = ddp.calibrate(
            mechanism="gaussian",
            epsilon=ddp_epsilon,
            delta=dp_delta,
            dim=sum(int(np.prod(p.shape)) for p in initial_parameters(seed)),
            clip=1.0,
            n_min=silos,
            rounds=rounds,
            modulus=1 << 32,
        )
    if dp_noise_multiplier is not None:
        from secagg.fl.digits_dp import initial_parameters_torch

        init = initial_parameters_torch(seed)  # the DP trainers use torch's Linear layout
    else:
        init = initial_parameters(seed)
    dim = sum(int(np.prod(p.shape)) for p in init)

    # 1. a throwaway PKI and configs: CA, server and silo certificates, identity keys, roster
    layout = init_pki(out / "pki", silos, port=_free_port(), dim=dim, mode=mode.value, force=True)
    cfg = load_server_config(layout.server_config)
    proto = dataclasses.replace(cfg.protocol, max_weight=1024, clip=1.0, bits=16)
    cfg = dataclasses.replace(
        cfg, protocol=proto, rounds=2 * rounds, output_dir=out / "server", audit_log=out / "audit.jsonl"
    )
    write_server_config(cfg, layout.server_config)
    cfg = load_server_config(layout.server_config)
    for f in layout.silos:  # training rounds carry the model, evaluation rounds two metrics: no fixed dim
        silo_cfg = load_silo_config(f.config)
        policy = dataclasses.replace(silo_cfg.policy, expected_dim=None)
        write_silo_config(dataclasses.replace(silo_cfg, policy=policy), f.config)
    echo(f"secagg demo: {silos} hospitals, {rounds} rounds, SecAgg+ {mode.value}, mutual TLS on 127.0.0.1")
    echo(f"  silo data (train examples): {[len(s.y_train) for s in shards]} (non-IID label skew)")

    # 2. the aggregation server in this process, each hospital its own process
    audit = AuditLog(cfg.audit_log)

    def record(ev: Audit, r: int) -> None:
        audit.append(ev.event, client=ev.client, stage=ev.stage or None, detail={"round": r, "detail": ev.detail})

    server = AggregationServer(cfg, rng=SystemRandom(), audit=record)
    server.start()
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        for f in layout.silos:
            cmd = [
                sys.executable, "-m", "secagg", "silo", "--config", str(f.config),
                "--digits-shard", f"{f.id}/{silos}", "--data-seed", str(seed), "--rounds", str(2 * rounds),
            ]  # fmt: skip
            if dp_noise_multiplier is not None:
                cmd += ["--dp-noise-multiplier", str(dp_noise_multiplier), "--dp-delta", str(dp_delta),
                        "--dp-rounds", str(rounds)]  # fmt: skip
            with open(logs / f"silo-{f.id}.log", "wb") as logf:
                procs.append(subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env))  # noqa: S603
        echo(f"  started {silos} silo processes; waiting for them to connect...")

        # 3. secure federated training through SecAgg+
        strategy = SecureFedAvg(initial_parameters=init, fit=fit, clip=1.0)
        federation = GrpcFederation(server)

        def progress(rep: RoundReport) -> None:
            echo(
                f"  secure round {rep.round + 1:>3}/{rounds} {_bar(rep.round + 1, rounds)} "
                f"accuracy {rep.accuracy:.3f}  loss {rep.loss:.3f}  "
                f"fit {rep.fit_seconds:.2f}s  evaluate {rep.evaluate_seconds:.2f}s  ({rep.survivors} silos)"
            )

        secure = run_federated(strategy, federation, rounds, on_round=progress, distributed_dp=distributed)
    finally:
        server.stop()
        audit.close()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    audit_records = verify_audit_log(cfg.audit_log)

    # 4. the same rounds as plain FedAvg (the server would see every update), and centralised training
    plain_fed = InProcessFederation({i + 1: DigitsTrainer(s, seed=i) for i, s in enumerate(shards)})
    plain_init = initial_parameters(seed)  # plain FedAvg without DP, on the numpy model
    plain = run_federated(FedAvg(initial_parameters=plain_init, fit=fit, clip=1.0), plain_fed, rounds)
    epsilon = _epsilon_spent(layout) if dp_noise_multiplier is not None else None
    if distributed is not None:  # central (epsilon, delta) of the aggregate, assuming all silos survive
        epsilon = {"aggregate": distributed.epsilon(rounds, dp_delta)}
    x_tr = np.concatenate([s.x_train for s in shards])
    y_tr = np.concatenate([s.y_train for s in shards])
    x_te = np.concatenate([s.x_test for s in shards])
    y_te = np.concatenate([s.y_test for s in shards])
    flat = np.concatenate([p.ravel() for p in plain_init]).astype(np.float32)
    central: list[float] = []
    for r in range(rounds):
        flat = sgd(flat, x_tr, y_tr, epochs=local_epochs, learning_rate=learning_rate, batch_size=32, seed=seed + r)
        central.append(loss_and_accuracy(flat, x_te, y_te)[1])

    wall = time.perf_counter() - t_start
    secure_times = [r.fit_seconds + r.evaluate_seconds for r in secure]
    report: dict[str, Any] = {
        "silos": silos,
        "rounds": rounds,
        "mode": mode.value,
        "model_parameters": dim,
        "train_examples": [len(s.y_train) for s in shards],
        "accuracy": {
            "secure_fedavg": [r.accuracy for r in secure],
            "plain_fedavg": [r.accuracy for r in plain],
            "centralised": central,
        },
        "loss": {"secure_fedavg": [r.loss for r in secure], "plain_fedavg": [r.loss for r in plain]},
        "final_accuracy": {
            "secure_fedavg": secure[-1].accuracy,
            "plain_fedavg": plain[-1].accuracy,
            "centralised": central[-1],
        },
        "max_accuracy_gap_secure_vs_plain": float(
            max(abs(a.accuracy - b.accuracy) for a, b in zip(secure, plain, strict=True))
        ),
        "secure_round_seconds": {"median": float(np.median(secure_times)), "max": float(np.max(secure_times))},
        "dp": (
            {"kind": "dp-sgd", "noise_multiplier": dp_noise_multiplier, "delta": dp_delta}
            if dp_noise_multiplier is not None
            else {"kind": "distributed-discrete-gaussian", "target_epsilon": ddp_epsilon, "delta": dp_delta}
            if ddp_epsilon is not None
            else None
        ),
        "epsilon": epsilon,
        "audit_records": audit_records,
        "wall_seconds": wall,
    }  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if plot:
        _plot(report, out / "accuracy.png")
    echo("")
    echo(f"  {'':<28}{'final accuracy':>16}")
    label = "secure FedAvg (SecAgg+)"
    if dp_noise_multiplier is not None:
        label = "secure FedAvg (+ DP-SGD)"
    elif ddp_epsilon is not None:
        label = "secure FedAvg (+ dist. DP)"
    echo(f"  {label:<28}{secure[-1].accuracy:>16.3f}")
    echo(f"  {'plain FedAvg':<28}{plain[-1].accuracy:>16.3f}")
    echo(f"  {'centralised (pooled data)':<28}{central[-1]:>16.3f}")
    if epsilon is None:
        eps_text = "none (no DP in this run; --dp adds DP-SGD on every silo, --ddp distributed DP)"
    else:
        eps_text = ", ".join(f"{'silo ' if k.isdigit() else ''}{k}: {v:.2f}" for k, v in epsilon.items())
        eps_text += f" (delta {dp_delta:g})"
    echo(f"  secure round (fit + evaluate): median {report['secure_round_seconds']['median']:.3f} s")
    echo(f"  epsilon spent: {eps_text}")
    echo(f"  audit records: {audit_records} (hash chain verified)")
    echo(f"  report: {out / 'report.json'}" + (f"  plot: {out / 'accuracy.png'}" if plot else ""))
    echo(f"  total {wall:.1f} s")
    return report


def _epsilon_spent(layout: Any) -> dict[str, float]:
    """Each silo's cumulative epsilon, from the privacy ledger it keeps in its state directory."""
    spent: dict[str, float] = {}
    for f in layout.silos:
        path = f.state_dir / "privacy.json"
        if path.exists():
            rounds = json.loads(path.read_text()).get("rounds", [])
            spent[str(f.id)] = float(rounds[-1]["epsilon"]) if rounds else 0.0
    return spent


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = report["accuracy"]
    xs = range(1, report["rounds"] + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(xs, acc["centralised"], "--", color="grey", label="centralised (pooled data)")
    ax.plot(xs, acc["plain_fedavg"], "-", color="tab:blue", label="plain FedAvg")
    kind = (report["dp"] or {}).get("kind")
    secure_label = {
        "dp-sgd": "secure FedAvg + DP-SGD",
        "distributed-discrete-gaussian": "secure FedAvg + distributed DP",
    }
    secure_label_text = secure_label.get(str(kind), "secure FedAvg (SecAgg+)")
    ax.plot(xs, acc["secure_fedavg"], "o", color="tab:red", markersize=4, label=secure_label_text)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{report['silos']} hospitals, digits, non-IID: secure vs plain federated training")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
