"""The `secagg` command line: simulate a round in process, make a local PKI, run the server and silos."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from secagg.errors import SecAggError
from secagg.protocol.config import Mode
from secagg.protocol.rules import Stage

if TYPE_CHECKING:
    from secagg.fl.task import LocalTrainer
    from secagg.protocol.server import Audit

STAGES = {s.value: s for s in Stage if s is not Stage.SETUP}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="secagg",
        description="Secure cross-silo aggregation for federated learning (SecAgg+).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "simulate",
        help="run one SecAgg+ round in process on random inputs and check it against the plaintext sum",
        description=(
            "Run N client sessions and the server in one process on random inputs, drop a fraction of the "
            "clients at a chosen stage, and check that the aggregate equals the plaintext sum of the "
            "survivors exactly. Prints per-stage timings; exits 1 if the sum is wrong or the round aborted."
        ),
    )
    s.add_argument("--clients", "-n", type=int, default=10, help="number of clients N (default 10)")
    s.add_argument("--dim", "-d", type=int, default=10_000, help="vector length D (default 10000)")
    s.add_argument("--dropout", type=float, default=0.0, help="fraction of clients that drop (default 0)")
    s.add_argument(
        "--stage",
        choices=sorted(STAGES),
        default="masked-input",
        help="stage at which the dropped clients stop answering (default masked-input)",
    )
    s.add_argument("--mode", choices=[m.value for m in Mode], default="semi-honest", help="threat model")
    s.add_argument("--seed", type=int, default=0, help="seed of all randomness (same seed, same round)")
    s.add_argument("--k", type=int, default=None, help="neighbours per client (default: SecAgg+ rule)")
    s.add_argument("--t", type=int, default=None, help="Shamir threshold (default: SecAgg+ rule)")
    s.add_argument("--bits", type=int, default=16, help="quantisation bits (default 16)")
    s.add_argument("--modulus-bits", type=int, choices=[32, 64], default=32, help="ring 2^32 or 2^64")
    s.add_argument("--chunk", type=int, default=None, help="elements per masked-input chunk (default: one)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")

    pki = sub.add_parser("pki", help="developer PKI: a local CA, server and silo certificates, configs")
    pki_sub = pki.add_subparsers(dest="pki_command", required=True, metavar="PKI_COMMAND")
    init = pki_sub.add_parser(
        "init",
        help="create a CA, a server certificate, N silo certificates, identity keys, roster and configs",
        description=(
            "Create, in DIR, a throwaway certificate authority, a server certificate for localhost, one "
            "client certificate and one Ed25519 identity key per silo, the roster, and server.toml and "
            "silo-<i>.toml ready to run on 127.0.0.1. For local runs and tests, not for production keys."
        ),
    )
    init.add_argument("directory", type=Path, help="where to write (must be empty unless --force)")
    init.add_argument("--silos", type=int, required=True, help="number of silos")
    init.add_argument("--port", type=int, default=50051, help="server port written into the configs")
    init.add_argument("--dim", type=int, default=1000, help="vector length in server.toml")
    init.add_argument("--mode", choices=[m.value for m in Mode], default="semi-honest", help="threat model")
    init.add_argument("--days", type=int, default=365, help="certificate validity")
    init.add_argument("--force", action="store_true", help="overwrite files in a non-empty directory")

    demo = sub.add_parser(
        "demo",
        help="hospitals train a digit classifier over gRPC with mutual TLS and SecAgg+ (about a minute)",
        description=(
            "Make a throwaway PKI, start the aggregation server and one process per hospital (each holding a "
            "non-IID shard of scikit-learn's bundled digits), train with secure FedAvg through SecAgg+, and "
            "compare with plain FedAvg and centralised training. Writes report.json and accuracy.png."
        ),
    )
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory (demo-output)")
    demo.add_argument("--silos", type=int, default=5, help="number of hospitals (default 5)")
    demo.add_argument("--rounds", type=int, default=20, help="federated rounds (default 20)")
    demo.add_argument("--mode", choices=[m.value for m in Mode], default="semi-honest", help="threat model")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data split and the initial model")
    demo.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    demo.add_argument(
        "--dp",
        type=float,
        metavar="NOISE_MULTIPLIER",
        help="train with DP-SGD (Opacus, extra 'dp') on every silo at this noise multiplier, e.g. 1.0",
    )
    demo.add_argument(
        "--ddp",
        type=float,
        metavar="EPSILON",
        help="distributed DP: each silo adds discrete Gaussian noise so the aggregate meets this epsilon",
    )

    srv = sub.add_parser(
        "server",
        help="run the aggregation server (gRPC, mutual TLS)",
        description=(
            "Run the aggregation server of server.toml: silos dial in over mutual TLS, the server runs the "
            "configured rounds and writes each aggregate, a JSON summary and a hash-chained audit log to its "
            "output directory. SIGTERM drains: the round in progress is aborted and silos erase its secrets."
        ),
    )
    srv.add_argument("--config", type=Path, required=True, help="server.toml")
    srv.add_argument("--insecure", action="store_true", help="REQUIRED to run a config with tls.insecure = true")
    srv.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines on stderr")
    srv.add_argument("--port-file", type=Path, help="write the bound port here once listening")

    silo = sub.add_parser(
        "silo",
        help="run a silo: dial out to the server and take part in its rounds",
        description=(
            "Run the silo of silo.toml: connect to the server over mutual TLS (reconnecting with backoff), "
            "check every round against the silo's policy, and contribute its data to each round."
        ),
    )
    silo.add_argument("--config", type=Path, required=True, help="silo.toml")
    silo.add_argument("--rounds", type=int, default=None, help="stop after this many rounds ended")
    silo.add_argument("--insecure", action="store_true", help="REQUIRED to run a config with tls.insecure = true")
    silo.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines on stderr")
    silo.add_argument(
        "--digits-shard",
        metavar="I/N",
        help="federated learning: train the built-in digits model on shard I of N (instead of [data])",
    )
    silo.add_argument("--data-seed", type=int, default=0, help="seed of the digits split (same on every silo)")
    silo.add_argument(
        "--dp-noise-multiplier",
        type=float,
        help="with --digits-shard: train with DP-SGD (Opacus, extra 'dp') at this noise multiplier",
    )
    silo.add_argument("--dp-max-grad-norm", type=float, default=1.0, help="DP-SGD per-example clipping norm")
    silo.add_argument("--dp-delta", type=float, default=1e-5, help="DP delta")
    silo.add_argument("--dp-rounds", type=int, default=20, help="training rounds the privacy budget covers")

    exc = sub.add_parser(
        "exclusions",
        help="show the silos the server benched, or reinstate one",
        description=(
            "The aggregation server benches a silo once it was named as the cause of a failed or damaged round "
            "exclusion_strikes times (server.toml; named only on evidence other silos cannot forge, see "
            "threat_model.md P7). Without options, list the strikes and the benched silos of server.toml's "
            "output directory; with --reinstate, let a silo take part again from the next round, with --bench, "
            "bench one by hand (a running server reads the list before every round, so no restart is needed)."
        ),
    )
    exc.add_argument("--config", type=Path, required=True, help="server.toml")
    what = exc.add_mutually_exclusive_group()
    what.add_argument("--reinstate", type=int, metavar="SILO", help="the silo id to let back in")
    what.add_argument(
        "--bench",
        type=int,
        metavar="SILO",
        help="bench a silo by hand (e.g. one suspected of failures that cannot be attributed, BAD_AGGREGATE)",
    )
    exc.add_argument("--json", action="store_true", help="print the list as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `secagg` command; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        return _simulate(args)
    try:
        if args.command == "pki":
            return _pki_init(args)
        if args.command == "demo":
            from secagg.demo import run_demo

            logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
            run_demo(
                args.out,
                silos=args.silos,
                rounds=args.rounds,
                mode=Mode(args.mode),
                seed=args.seed,
                plot=not args.no_plot,
                dp_noise_multiplier=args.dp,
                ddp_epsilon=args.ddp,
            )
            return 0
        if args.command == "server":
            return _server(args)
        if args.command == "silo":
            return _silo(args)
        if args.command == "exclusions":
            return _exclusions(args)
    except SecAggError as exc:
        print(f"secagg {args.command}: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover


class _JsonFormatter(logging.Formatter):
    """One JSON object per log line (structured logs for operators)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def _setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        _JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _pki_init(args: argparse.Namespace) -> int:
    from secagg.deploy.pki import init_pki

    layout = init_pki(
        args.directory, args.silos, port=args.port, dim=args.dim, mode=args.mode, days=args.days, force=args.force
    )
    print(f"wrote a local PKI and configs for {len(layout.silos)} silos in {layout.directory}")
    print(f"  server: secagg server --config {layout.server_config}")
    for f in layout.silos:
        print(f"  silo {f.id}: secagg silo --config {f.config}")
    return 0


def _server(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from secagg.crypto.rng import DeterministicRandom, RandomSource, SystemRandom
    from secagg.deploy.audit import AuditLog
    from secagg.deploy.config import load_server_config
    from secagg.transport.grpc_server import AggregationServer

    _setup_logging(args.log_format)
    cfg = load_server_config(args.config)
    if cfg.tls.insecure and not args.insecure:
        print("secagg server: the config has tls.insecure = true; pass --insecure to confirm", file=sys.stderr)
        return 2
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    state = cfg.output_dir / "state.json"
    first = json.loads(state.read_text())["next_round"] if state.exists() else 0
    rng: RandomSource = DeterministicRandom(cfg.seed) if cfg.seed is not None else SystemRandom()
    audit = AuditLog(cfg.audit_log)

    def record(ev: Audit, r: int) -> None:
        audit.append(ev.event, client=ev.client, stage=ev.stage or None, detail={"round": r, "detail": ev.detail})

    def on_round(r: int) -> None:  # persisted before the round starts: a restart never reuses a round
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"next_round": r + 1}))
        tmp.replace(state)

    fault = os.environ.get("SECAGG_FAULT_SERVER_EXIT_AT")  # test hook: die by SIGKILL as this stage opens
    server = AggregationServer(
        cfg,
        rng=rng,
        audit=record,
        first_round=first,
        on_round_start=on_round,
        fault_exit_at=STAGES[fault] if fault else None,
    )
    port = server.start()
    if args.port_file:
        args.port_file.write_text(str(port))

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        outcomes = server.run()
    finally:
        server.stop()
        audit.close()
    ok = sum(1 for o in outcomes if o.result is not None)
    print(f"{ok} of {len(outcomes)} rounds produced an aggregate; outputs in {cfg.output_dir}")
    return 0 if outcomes and ok == len(outcomes) else 1


def _exclusions(args: argparse.Namespace) -> int:
    from secagg.deploy._files import atomic_write
    from secagg.deploy.config import load_server_config
    from secagg.exclusion import ExclusionList

    cfg = load_server_config(args.config)
    path = cfg.exclusion_path
    lst = (
        ExclusionList.from_json(path.read_text(), strikes=cfg.exclusion_strikes)
        if path.exists()
        else ExclusionList(strikes=cfg.exclusion_strikes)
    )
    if args.bench is not None:
        if cfg.roster.by_id(args.bench) is None:
            print(f"secagg exclusions: silo {args.bench} is not in the roster", file=sys.stderr)
            return 2
        if not lst.bench(args.bench, -1, "benched by the operator"):
            print(f"silo {args.bench} was already benched")
            return 0
        atomic_write(path, lst.to_json().encode(), mode=0o644)
        print(f"silo {args.bench} benched: it is not invited from the next round")
        return 0
    if args.reinstate is not None:
        if not lst.reinstate(args.reinstate):
            print(f"secagg exclusions: silo {args.reinstate} is not benched ({path})", file=sys.stderr)
            return 1
        atomic_write(path, lst.to_json().encode(), mode=0o644)
        print(f"silo {args.reinstate} reinstated: it is invited again from the next round")
        return 0
    if args.json:
        print(lst.to_json(), end="")
        return 0
    print(f"benched after {cfg.exclusion_strikes} strike(s) ({path}):" if cfg.exclusion_strikes else "benching off:")
    if not lst.benched:
        print("  no silo is benched")
    for silo, b in sorted(lst.benched.items()):
        print(
            f"  silo {silo}: benched in round {b.round}: {b.reason}" if b.round >= 0 else f"  silo {silo}: {b.reason}"
        )
    for silo, n in sorted(lst.counts.items()):
        if silo not in lst.benched:
            print(f"  silo {silo}: {n} strike(s)")
    return 0


def _silo(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from secagg.deploy.config import load_silo_config
    from secagg.transport.grpc_silo import SiloRunner

    _setup_logging(args.log_format)
    cfg = load_silo_config(args.config)
    if cfg.tls.insecure and not args.insecure:
        print("secagg silo: the config has tls.insecure = true; pass --insecure to confirm", file=sys.stderr)
        return 2
    fault = os.environ.get("SECAGG_FAULT_EXIT_AT")  # test hook: die by SIGKILL at this stage
    runner = SiloRunner(cfg, fault_exit_at=STAGES[fault] if fault else None)
    if args.digits_shard:
        from secagg.fl.digits import DigitsTrainer, make_shards
        from secagg.fl.task import task_inputs

        try:
            index, count = (int(v) for v in args.digits_shard.split("/"))
        except ValueError:
            print("secagg silo: --digits-shard takes I/N, e.g. 2/5", file=sys.stderr)
            return 2
        if not 1 <= index <= count:
            print("secagg silo: --digits-shard I/N needs 1 <= I <= N", file=sys.stderr)
            return 2
        shard = make_shards(count, seed=args.data_seed)[index - 1]
        trainer: LocalTrainer = DigitsTrainer(shard, seed=index - 1)
        if args.dp_noise_multiplier is not None:
            from secagg.fl.digits_dp import DigitsDPTrainer

            trainer = DigitsDPTrainer(
                shard,
                noise_multiplier=args.dp_noise_multiplier,
                max_grad_norm=args.dp_max_grad_norm,
                delta=args.dp_delta,
                rounds=args.dp_rounds,
                ledger_path=cfg.state_dir / "privacy.json",
                seed=index - 1,
            )
        runner.use_inputs(task_inputs(trainer, runner.fetch_task, policy=cfg.to_client_policy()))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    rounds = runner.run(args.rounds, stop)
    done = sum(1 for r in rounds if r.state == "done")
    print(f"silo {cfg.silo_id}: {done} of {len(rounds)} rounds completed")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from secagg.simulation import simulate

    try:
        report = simulate(
            args.clients,
            args.dim,
            dropout=args.dropout,
            stage=STAGES[args.stage],
            mode=Mode(args.mode),
            seed=args.seed,
            k=args.k,
            t=args.t,
            chunk_elems=args.chunk,
            bits=args.bits,
            modulus=1 << args.modulus_bits,
        )
    except SecAggError as exc:
        print(f"secagg simulate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return 0 if report.get("exact") else 1


def _print_report(r: dict[str, object]) -> None:
    print(
        f"SecAgg+ round: n={r['n']} dim={r['dim']} mode={r['mode']} k={r['k']} t={r['t']} "
        f"dropout={r['dropout']} at {r['dropout_stage']} (seed {r['seed']})"
    )
    if not r.get("ok"):
        print(f"round aborted: {r.get('error')}")
        return
    print(
        f"survivors: {r['survivors']}  total weight: {r['total_weight']}  "
        f"exact sum: {'yes' if r['exact'] else 'NO'}  max |mean error|: {r['max_abs_error']:.3g} "
        f"(quantisation step {r['quantisation_step']:.3g})"
    )
    print(f"round wall time: {r['round_seconds']:.3f} s ({r['messages']} messages)")
    print(f"{'stage':<22}{'clients (s)':>14}{'server (s)':>14}")
    client_s = r["client_seconds"]
    server_s = r["server_seconds"]
    assert isinstance(client_s, dict) and isinstance(server_s, dict)
    names = {"advertise-keys", "share-keys", "masked-input", "consistency-check", "unmask"}
    server_map = {
        "setup": "setup",
        "collect-keys": "advertise-keys",
        "collect-shares": "share-keys",
        "collect-masked": "masked-input",
        "collect-signatures": "consistency-check",
        "collect-unmask": "unmask",
    }
    rows: dict[str, list[float]] = {}
    for k, v in client_s.items():
        rows.setdefault(k if k in names else "other", [0.0, 0.0])[0] += v
    for k, v in server_s.items():
        rows.setdefault(server_map.get(k, "other"), [0.0, 0.0])[1] += v
    for name, (c, s) in rows.items():
        print(f"{name:<22}{c:>14.4f}{s:>14.4f}")
