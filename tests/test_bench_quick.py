"""The benchmark suite never rots: `python -m bench --quick --no-flower` runs and its JSON holds exact aggregates.

Timings are not checked (tests do not depend on timing); the structure and the exactness of every round are.
W6/W7 (gRPC, bench/grpc_bench.py) are left out here to keep this under a minute; they have their own runner.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-flower", "--workloads", "W1,W2,W3,W4,W5,curves",
         "--results-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "bench-quick.json").read_text()), out


def test_every_workload_ran_exactly(quick_result: tuple[dict, Path]) -> None:
    result, _ = quick_result
    assert result["quick"] is True
    assert [r["workload"] for r in result["workloads"]] == ["W1", "W2", "W3", "W4", "W5"]
    keys = {"n", "dim", "k", "t", "ours_s", "floor_s", "ratio_to_floor", "exact", "expansions", "target", "target_met"}
    for row in result["workloads"]:
        assert keys <= row.keys(), row["workload"]
        assert row["exact"] is True, row["workload"]
        assert row["ours_s"] > 0 and row["floor_s"] > 0 and row["expansions"] > 0
        assert "flower_s" not in row  # --no-flower


def test_workload_shapes_match_the_design(quick_result: tuple[dict, Path]) -> None:
    rows = {r["workload"]: r for r in quick_result[0]["workloads"]}
    assert rows["W1"]["k"] == 22 and rows["W1"]["dropped"] == []
    assert rows["W2"]["complete_graph"] and rows["W2"]["dropout_stage"] == "unmask"
    # dropped after sending its masked input: still in the sum (its self mask is reconstructed)
    assert len(rows["W2"]["dropped"]) == 1 and rows["W2"]["survivors"] == 10
    assert not rows["W3"]["complete_graph"] and rows["W3"]["dropout_stage"] == "masked-input"
    assert rows["W3"]["survivors"] == 90  # dropped before masked input: out of the sum
    assert rows["W4"]["complete_graph"] and rows["W4"]["k"] == rows["W4"]["n"] - 1
    assert len(rows["W5"]["dropped"]) == rows["W5"]["n"] // 10


def test_curves_and_slopes(quick_result: tuple[dict, Path]) -> None:
    result, _ = quick_result
    assert [p["x"] for p in result["curves"]["n"]] == [10, 30, 100]
    assert [p["x"] for p in result["curves"]["d"]] == [1_000, 10_000, 100_000]
    for points in result["curves"].values():
        assert all(p["exact"] is True for p in points)
    for name in ("n", "d"):
        assert isinstance(result["slopes"][name]["ours"], float)
        assert result["slopes"][name]["Flower 1.42"] is None  # not run


def test_docs_written_outside_docs(quick_result: tuple[dict, Path]) -> None:
    _, out = quick_result
    md = (out / "quick" / "benchmarks.md").read_text()
    assert "| W5 |" in md and "quick run" in md
    for png in ("time_vs_n.png", "time_vs_d.png"):
        assert (out / "quick" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_slope_recovers_a_power_law() -> None:
    from bench.report import fit_slope

    xs = [10.0, 100.0, 1000.0]
    assert fit_slope(xs, [3 * x**2 for x in xs]) == pytest.approx(2.0)
    assert fit_slope(xs, [0.5 * x for x in xs]) == pytest.approx(1.0)
    assert fit_slope([10.0], [1.0]) is None


def test_flower_parameter_mapping() -> None:
    from bench.flower import flower_params
    from secagg.protocol.rules import Stage

    p = flower_params(100, 1000, 22, 11, 1.0, 16, 1 << 32, {3: Stage.MASKED_INPUT, 7: Stage.UNMASK})
    assert (p.num_shares, p.threshold, p.target_range) == (23, 11, 65535)  # k neighbours + the client itself
    assert p.drop == {3: "collect_masked_vectors", 7: "unmask"}
    assert flower_params(10, 1000, 9, 2, 1.0, 16, 1 << 32, {}).num_shares == 10  # complete graph: n
