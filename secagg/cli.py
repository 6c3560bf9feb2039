"""The `secagg` command line: `simulate` runs one SecAgg+ round in process and checks it exactly."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from secagg.errors import SecAggError
from secagg.protocol.config import Mode
from secagg.protocol.rules import Stage

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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `secagg` command; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        return _simulate(args)
    return 2  # pragma: no cover


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
