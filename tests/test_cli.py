"""The `secagg` command line: help, a checked simulation, typed refusals of bad parameters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from secagg.cli import main


def test_help_explains_simulate() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "secagg", "simulate", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for word in ("--clients", "--dropout", "--stage", "--mode", "--seed", "plaintext"):
        assert word in out


@pytest.mark.parametrize("mode", ["semi-honest", "hardened"])
def test_simulate_json_report_is_exact(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "-n", "6", "-d", "300", "--dropout", "0.34", "--stage", "share-keys"]
    code = main([*args, "--mode", mode, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["ok"] and report["exact"]
    assert report["survivors"] == 4 and len(report["dropped_clients"]) == 2
    assert report["max_abs_error"] <= report["quantisation_step"]


def test_simulate_same_seed_same_report(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "-n", "5", "-d", "100", "--seed", "7", "--json"]
    main(args)
    a = json.loads(capsys.readouterr().out)
    main(args)
    b = json.loads(capsys.readouterr().out)
    assert (a["total_weight"], a["max_abs_error"]) == (b["total_weight"], b["max_abs_error"])


def test_simulate_abort_exits_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    """Too many dropouts before the masked input: a clean typed abort, exit code 1."""
    code = main(["simulate", "-n", "5", "-d", "100", "--dropout", "0.8", "--stage", "masked-input"])
    assert code == 1
    assert "round aborted" in capsys.readouterr().out


def test_simulate_refuses_bad_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "-n", "5", "-d", "100", "--t", "9"]) == 2
    assert "secagg simulate:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--stage", "nonsense"])
