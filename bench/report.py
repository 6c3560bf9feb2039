"""Turn the suite's result into docs: a Markdown page with the tables, and log-log PNG charts with fitted slopes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

NOTES = Path(__file__).resolve().parent / "NOTES.md"
SERIES = (("ours", "ours_s", "o-", "tab:blue"), ("floor", "floor_s", "s--", "tab:gray"),
          ("Flower 1.42", "flower_s", "^-", "tab:orange"))  # fmt: skip


def _points(curve: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs = [float(p["x"]) for p in curve if key in p]
    ys = [float(p[key]) for p in curve if key in p]
    return xs, ys


def fit_slope(xs: list[float], ys: list[float]) -> float | None:
    """Slope of log10(y) against log10(x) (numpy polyfit, degree 1); None with fewer than two points."""
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log10(xs), np.log10(ys), 1)[0])


def slopes(curves: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Fitted log-log slope of each series of each curve."""
    return {
        name: {label: fit_slope(*_points(curve, key)) for label, key, _, _ in SERIES} for name, curve in curves.items()
    }


def chart(curve: list[dict[str, Any]], xlabel: str, title: str, path: Path) -> None:
    """One log-log chart: ours, the floor and Flower (where measured), each with its fitted slope."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=110)
    for label, key, style, color in SERIES:
        xs, ys = _points(curve, key)
        if not xs:
            continue
        s = fit_slope(xs, ys)
        name = f"{label} (slope {s:.2f})" if s is not None else label
        ax.plot(xs, ys, style, color=color, label=name, markersize=6)
        if s is not None and len(xs) > 2:
            c = np.polyfit(np.log10(xs), np.log10(ys), 1)
            fx = np.array([min(xs), max(xs)])
            ax.plot(fx, 10 ** np.polyval(c, np.log10(fx)), ":", color=color, linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("round time, s (wall, one process)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _f(v: Any, fmt: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return "-"
    return format(v, fmt)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def _dim(d: int) -> str:
    e = round(math.log10(d))
    return f"1e{e}" if 10**e == d else f"{d:,}"


def workload_table(result: dict[str, Any]) -> str:
    """The headline table: per workload, ours, the floor, Flower (in this run), the ratios and the target."""
    lines = [
        "| id | N | D | k | t | dropped | ours (s) | floor (s) | ours / floor | Flower 1.42 (s) | Flower / ours "
        "| target | met | exact | same aggregate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["workloads"]:
        if "skipped" in r:
            lines.append(f"| {r['workload']} | {r['n']} | {_dim(r['dim'])} | skipped ({r['skipped']}) |" + " |" * 11)
            continue
        met = r.get("target_met")
        lines.append(
            f"| {r['workload']} | {r['n']} | {_dim(r['dim'])} | {r['k']} | {r['t']} | {len(r['dropped'])}"
            f"{' @ ' + r['dropout_stage'] if r['dropped'] else ''} | {_f(r['metric_ours_s'])} | "
            f"{_f(r['metric_floor_s'])} | {_f(r['metric_ratio_to_floor'], '.2f')} | {_f(r.get('metric_flower_s'))} | "
            f"{_f(r.get('speedup_vs_flower'), '.1f')} | {r['target']} | {'-' if met is None else _f(met)} | "
            f"{_f(r['exact'])} | {_f(r.get('aggregates_agree'))} |"
        )
    return "\n".join(lines)


def _split_table(result: dict[str, Any]) -> str:
    lines = [
        "| id | ours: clients (s) | ours: server (s) | Flower: clients (s) | Flower: server (s) | Flower stages (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["workloads"]:
        if "skipped" in r:
            continue
        stages = r.get("flower_stage_s")
        st = ", ".join(f"{k} {v:.2f}" for k, v in stages.items()) if stages else "-"
        lines.append(
            f"| {r['workload']} | {_f(r['ours_client_s'])} | {_f(r['ours_server_s'])} | "
            f"{_f(r.get('flower_client_s'))} | {_f(r.get('flower_server_s'))} | {st} |"
        )
    return "\n".join(lines)


def _agreement_table(result: dict[str, Any]) -> str:
    lines = [
        "| configuration | same survivors | max abs diff ours vs Flower | tolerance (2 steps) | ours vs true mean "
        "| Flower vs true mean |",
        "|---|---|---|---|---|---|",
    ]
    seen = set()
    every = list(result["workloads"]) + [p for c in result["curves"].values() for p in c]
    for r in every:
        if "aggregate_max_abs_diff" not in r or r["config"] in seen:
            continue
        seen.add(r["config"])
        lines.append(
            f"| {r['config']} | {_f(r['same_survivors'])} | {r['aggregate_max_abs_diff']:.2e} | "
            f"{r['aggregate_tolerance']:.2e} | {r['ours_max_abs_error']:.2e} | {r['flower_max_abs_error']:.2e} |"
        )
    return "\n".join(lines)


def _curve_table(curve: list[dict[str, Any]], xname: str) -> str:
    lines = [
        f"| {xname} | k | t | ours (s) | floor (s) | ours / floor | Flower 1.42 (s) | Flower / ours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in curve:
        x = _dim(p["x"]) if xname == "D" else str(p["x"])
        if "skipped" in p:
            lines.append(f"| {x} | - | - | skipped: {p['skipped']} | | | | |")
            continue
        fl = p.get("flower_s")
        fl_cell = _f(fl) if fl or "flower_skipped" not in p else f"not run ({p['flower_skipped']})"
        lines.append(
            f"| {x} | {p['k']} | {p['t']} | {_f(p['ours_s'])} | {_f(p['floor_s'])} | {_f(p['ratio_to_floor'], '.2f')} "
            f"| {fl_cell} | {_f(fl / p['ours_s'] if fl else None, '.1f')} |"
        )
    return "\n".join(lines)


def _profile_section(result: dict[str, Any]) -> str:
    profiled = [r for r in result["workloads"] if r.get("profile")]
    if not profiled:
        return "_Not profiled in this run (add `--profile`)._"
    names = list(profiled[0]["profile"]["buckets"])
    parts = [
        "cProfile of one more round of ours per workload: share of the profiled time by kind of work (own time; "
        "cProfile inflates the Python parts, so the shares lean towards them), and in brackets that share of "
        "the unprofiled median round time.",
        "",
        "| kind of work | " + " | ".join(r["workload"] for r in profiled) + " |",
        "|---|" + "---|" * len(profiled),
    ]
    for name in names:
        cells = []
        for r in profiled:
            share = r["profile"]["buckets"][name]["share"]
            ours = r["metric_ours_s"] if "metric_ours_s" in r else r["ours_s"]
            cells.append(f"{share:.0%} ({share * ours:.3f} s)")
        parts.append(f"| {name} | " + " | ".join(cells) + " |")
    parts.append("")
    for r in profiled:
        parts.append(f"<details><summary>{r['workload']}: top functions by own time</summary>\n")
        parts.append("| function | calls | own (s) | share | cumulative (s) |\n|---|---|---|---|---|")
        for p in r["profile"]["top"][:12]:
            fn = p["function"].replace("|", "\\|")
            parts.append(f"| `{fn}` | {p['calls']} | {p['own_s']:.3f} | {p['own_share']:.0%} | {p['cum_s']:.3f} |")
        parts.append("\n</details>\n")
    return "\n".join(parts)


def _grpc_section(result: dict[str, Any]) -> str:
    g = result.get("grpc")
    if g is None:
        return "_Not run in this invocation (bench/grpc_bench.py was not there, or W6/W7 were not selected)._"
    out = [
        f"Measured by bench/grpc_bench.py (its own module; see its docstring for the method), run by the suite as "
        f"`{g['command']}` (exit {g['exit']}, {g['elapsed_s']:.0f} s):",
        "",
    ]
    out += [line for line in g.get("tables", []) if line.startswith("|") or not line]
    if g.get("stderr_tail"):
        out += ["", "```", *g["stderr_tail"], "```"]
    return "\n".join(out).strip()


FA_HEADING = "## FA: the Flower example app, SecAgg+ inside Flower three ways"


def _fa_cell(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def fa_section(fa: dict[str, Any] | None) -> str:
    """The FA section (heading included): ours, Flower's SecAgg+ and plain FedAvg on the example app."""
    if not fa:
        return f"{FA_HEADING}\n\n_Not run in this invocation (add FA to --workloads)._\n"
    if "skipped" in fa:
        return f"{FA_HEADING}\n\n_Not run: {fa['skipped']}._\n"
    names = (("ours", "ours: SecureFedAvg + secagg_mod"), ("flower", f"Flower {fa['flwr_version']}: "
             "SecAggPlusWorkflow + secaggplus_mod"), ("plain", "plain FedAvg (no secure aggregation)"))  # fmt: skip
    runs = {k: fa[k] for k, _ in names}
    rounds = fa["rounds"]
    steps = {"ours": fa["quant_step_ours"], "flower": fa["quant_step_flower"], "plain": None}
    secure_rounds = {"ours": "3 (update, train metrics, evaluate metrics)", "flower": "1 (fit; evaluation is plain)",
                     "plain": "0"}  # fmt: skip

    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    def diff(k: str) -> str:
        d = runs[k]["max_abs_diff_vs_plain"]
        return f"{d:.1e} ({d / steps[k]:.1f} steps)" if steps[k] else "-"

    secagg = runs["ours"].get("secagg_s_by_purpose") or {}
    fp = fa["flower_params"]
    m = fa.get("machine") or {}
    when = f" Measured {m['when']} at commit {m.get('commit')}." if m.get("when") else ""
    lines = [
        FA_HEADING,
        "",
        f"_From `{fa.get('command', 'python -m bench --workloads FA')}`.{when} Written by bench/flower_app.py; see its "
        "docstring for the method._",
        "",
        f"The app in examples/flower-secagg (a 64-64-10 tanh MLP, D={fa['dim']:,} parameters, on scikit-learn's "
        f"digits split across the nodes), {fa['nodes']} nodes, {rounds} rounds, every node sampled for train and "
        "evaluate. The same training, data and in-process grid (`secagg.flower.local.LocalGrid`: each message "
        "and each node's Context cross Flower's protobuf serde) for all three; only the aggregation differs. "
        "Round = the strategy's configure-train to the end of its aggregate-evaluate: local training, "
        "aggregation, the server's central evaluation and the nodes' evaluation. `nodes' train + evaluate` is the "
        "time spent inside the example's train/test functions (the same work in all three); the rest is "
        "aggregation, protocol and messaging. Median over the rounds.",
        "",
        "| | " + " | ".join(n for _, n in names) + " |",
        "|---|---|---|---|",
        row("round (s), median", [_fa_cell(runs[k]["median_round_s"]) for k, _ in names]),
        row("each round (s)", [", ".join(f"{x:.3f}" for x in runs[k]["round_s"]) for k, _ in names]),
        row("nodes' train + evaluate (s)", [_fa_cell(runs[k]["median_local_s"]) for k, _ in names]),
        row("rest of the round (s)", [_fa_cell(runs[k]["median_overhead_s"]) for k, _ in names]),
        row(
            "round / plain round",
            [f"{runs[k]['median_round_s'] / runs['plain']['median_round_s']:.2f}" for k, _ in names],
        ),
        row("secure aggregations per round", [secure_rounds[k] for k, _ in names]),
        row(f"server test accuracy after round {rounds}", [f"{runs[k]['final_accuracy']:.4f}" for k, _ in names]),
        row("max abs diff of the final model from plain FedAvg's", [diff(k) for k, _ in names]),
        "",
        f"Flower / ours per round: **{fa['flower_over_ours']:.2f} x** (rest of the round, without the nodes' own "
        f"work: {fa['overhead_flower_over_ours']:.2f} x). Ours costs {fa['ours_over_plain']:.2f} x a plain FedAvg "
        f"round, Flower's {fa['flower_over_plain']:.2f} x."
        + (
            " Of ours, per round: SecAgg+ on the update and the train metrics (one set of exchanges, two sessions) "
            f"{secagg.get('train/arrays+metrics', 0):.3f} s, on the evaluate metrics "
            f"{secagg.get('evaluate/metrics', 0):.3f} s (server and all nodes, this process)."
            if secagg
            else ""
        ),
        "",
        f"Parameters. Ours: SecureFedAvg's defaults, k={fa['k']}, t={fa['t']} by the SecAgg+ rule, the update "
        f"(new - sent weights) clipped to [-1, 1] and quantised to 16 bits (step {fa['quant_step_ours']:.1e}); "
        f"metrics in 2^-20 fixed point. Flower: num_shares={fp['num_shares']} (our k + 1), "
        f"reconstruction_threshold={fp['reconstruction_threshold']} (our t), clipping_range="
        f"{fp['clipping_range']:g} and quantization_range=2^{int(fp['quantization_range']).bit_length() - 1} "
        f"(its defaults: it aggregates whole weights, so its range must cover them; step "
        f"{fa['quant_step_flower']:.1e}), modulus_range=2^{int(fp['modulus_range']).bit_length() - 1}; its "
        "metrics and its evaluation travel in the clear.",
        "",
    ]
    return "\n".join(lines)


def update_fa_section(md_path: Path, fa: dict[str, Any]) -> None:
    """Replace (or add) only the FA section of an existing benchmarks.md, leaving every other section as it is."""
    text = md_path.read_text() if md_path.exists() else "# Benchmarks\n\n"
    section = fa_section(fa).rstrip("\n") + "\n\n"
    start = text.find(FA_HEADING)
    if start >= 0:
        nxt = text.find("\n## ", start + len(FA_HEADING))
        end = nxt + 1 if nxt >= 0 else len(text)
        text = text[:start] + section + text[end:]
    else:
        anchor = next((a for a in ("## Profile of ours", "## Analysis", "## Reproduce") if a in text), None)
        pos = text.find(anchor) if anchor else len(text)
        text = text[:pos] + section + text[pos:]
    md_path.write_text(text)


def write_docs(result: dict[str, Any], docs_dir: Path) -> Path:
    """Write benchmarks.md and the two charts into `docs_dir`; returns the Markdown path."""
    m = result["machine"]
    curves = result["curves"]
    charts = []
    if curves.get("n"):
        dim = curves["n"][0]["dim"]
        chart(curves["n"], "clients N", f"SecAgg+ round time vs N (D={_dim(dim)}, k,t by the rule, 10% drop "
              "before masked input)", docs_dir / "time_vs_n.png")  # fmt: skip
        charts.append(("n", "N", "time_vs_n.png"))
    if curves.get("d"):
        chart(curves["d"], "model size D (coordinates)", "SecAgg+ round time vs D (N=10, complete graph, 10% drop "
              "after masked input)", docs_dir / "time_vs_d.png")  # fmt: skip
        charts.append(("d", "D", "time_vs_d.png"))
    commit = f" at commit {m['commit']}" if m.get("commit") else ""
    flower = result["flower"]
    fl_line = (
        f"Flower {flower['version']} (from PyPI, in its own venv)"
        if flower["python"]
        else f"Flower not run ({flower['error'] or '--no-flower'})"
    )
    md = [
        "# Benchmarks" + (" (quick run: small sizes, not the published figures)" if result["quick"] else ""),
        "",
        "_Generated by `" + result["command"].strip() + "`; do not edit by hand (the analysis below comes from "
        "bench/NOTES.md)._",
        "",
        f"Measured {m['when']}{commit} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python "
        f"{m['python']}, NumPy {m['numpy']}; {fl_line}. The machine is shared, so every figure is a ratio taken "
        f"side by side in one invocation ({_duration(result['elapsed_s'])}), single threaded, median of the "
        "repeats listed in the JSON (bench/results/).",
        "",
        "## Workloads W1-W5 (in process: every party's work of one round, one process, wall time)",
        "",
        workload_table(result),
        "",
        "W1 is per client (one client's share of a round with N=23 on the complete graph, i.e. k=22 neighbours; "
        "its floor is 23 expansions); the others are whole rounds. `floor` = AES-256-CTR keystream + one "
        "vector add for every mask expansion the round cannot avoid (each masking client: its self mask and "
        "one per live neighbour; the server: every survivor's self mask and, for each client dropped after "
        "sharing keys, one per surviving neighbour), timed in the same process at the same D. `exact`: our "
        "ring sum equals the plaintext sum of the survivors' quantised inputs, bit for bit. `same aggregate`: "
        "Flower's and our aggregate (same inputs, same survivors) differ by less than two quantisation steps.",
        "",
        "Where the time goes (medians):",
        "",
        _split_table(result),
        "",
        "## Scaling",
        "",
    ]
    sl = result["slopes"]
    for name, xname, png in charts:
        s = sl.get(name, {})
        md += [
            f"![round time vs {xname}]({png})",
            "",
            "Fitted log-log slopes: " + ", ".join(f"{k} {_f(v, '.2f')}" for k, v in s.items() if v is not None) + ".",
            "",
            _curve_table(curves[name], xname),
            "",
        ]
    md += [
        "## Ours and Flower compute the same aggregate",
        "",
        "Same float32 inputs, same dropout set, clipping range 1.0 and the same quantisation grid "
        f"({(1 << result['parameters']['bits']) - 1} steps over [-1, 1]), modulus 2^32, every weight 1.",
        "",
        _agreement_table(result),
        "",
        "## How Flower is run",
        "",
        "bench/flower_driver.py runs in Flower's own venv (flwr 1.42.0 pins an older protobuf). It calls, "
        "unchanged, the server workflow's four stage methods `SecAggPlusWorkflow.setup_stage`, "
        "`share_keys_stage`, `collect_masked_vectors_stage` and `unmask_stage` in order (as its `__call__` "
        "does, with its own `WorkflowState`, a `LegacyContext`, `SimpleClientManager` and `GridClientProxy`s) "
        "against an in-memory `Grid` whose `send_and_receive` hands each message (records copied, as the wire "
        "would) to that node's `secaggplus_mod`, which runs Flower's client-side stage handlers and keeps its "
        "state in the node's `Context`. No simulation engine, no Ray, no gRPC. Nothing of Flower's server "
        "orchestration is reimplemented. Our additions are only the message pump, the node's training "
        "callable (it returns the given update; its time is subtracted) and a FedAvg whose `aggregate_fit` "
        "keeps the secure aggregate instead of re-averaging N identical copies of it. A dropped node receives "
        "the stage's message and never answers. Parameters: Flower's `num_shares` = our k + 1 (it counts the "
        "client itself; n on the complete graph), `reconstruction_threshold` = our t, `quantization_range` = "
        "2^16 - 1, `clipping_range` = 1.0, `modulus_range` = 2^32, `max_weight` = 1, every `num_examples` = 1. "
        "Flower's neighbourhood is a ring of ±num_shares/2 over shuffled ids, ours a Harary graph H(n, k) over "
        "permuted ids: the same shape.",
        "",
        "## W6 and W7 (gRPC)",
        "",
        _grpc_section(result),
        "",
        fa_section(result.get("flower_app")).rstrip("\n"),
        "",
        "## Profile of ours",
        "",
        _profile_section(result),
        "",
    ]
    if NOTES.exists():
        md += ["## Analysis", "", NOTES.read_text().strip(), ""]
    md += [
        "## Reproduce",
        "",
        "```",
        "python -m bench                      # everything: about 15-20 minutes, Flower's W4 and W5 are the long part",
        "python -m bench --quick              # small sizes, a small Flower round: < 2 minutes",
        "python -m bench --quick --no-flower  # ours and the floor only (what CI runs in tests/test_bench_quick.py)",
        "python -m bench --workloads W2,W3 --flower-venv PATH --profile",
        "python -m bench --workloads FA         # the Flower example app only; rewrites only its section here",
        "```",
        "",
    ]
    path = docs_dir / "benchmarks.md"
    path.write_text("\n".join(md))
    return path
