"""The property marker machinery (tests/conftest.py) and its report command (tests/property_report.py).

Each case runs pytest in a subprocess on a tiny synthetic test directory holding a copy of tests/conftest.py,
so what is checked is the plugin as a real run sees it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROPERTY_IDS
from tests.property_report import BEGIN, END, property_titles

REPO = Path(__file__).resolve().parent.parent

SYNTHETIC = """
import pytest

@pytest.mark.property("P6")
@pytest.mark.parametrize("x", [1, 2, 3])
def test_p6_parametrised(x):
    assert x

@pytest.mark.property("P2", "P6")
def test_p2_p6_fails():
    assert False

@pytest.mark.property("P2")
def test_p2_skips():
    pytest.skip("not here")

@pytest.mark.property("P9")
class TestP9:
    def test_one(self):
        pass

    def test_two(self):
        pass

def test_unmarked():
    pass
"""

THREAT_MODEL = """# Threat model

## 4. Security properties

### P2. Input privacy against a malicious server

### P6. Correct output | or a typed abort

### P9. Dropout tolerance

{markers}
## 5. Scenario coverage
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the synthetic runs need no plugin but ours: faster
    return env


def _synthetic(root: Path, source: str = SYNTHETIC) -> Path:
    d = root / "synthetic"
    d.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", d / "conftest.py")
    (d / "pytest.ini").write_text("[pytest]\n")  # its own rootdir: none of the repository's settings
    (d / "test_synthetic.py").write_text(source)
    return d


def _pytest(d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=d,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.property_report", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _rows(block: str) -> dict[str, list[str]]:
    rows = {}
    for line in block.splitlines():
        m = re.match(r"^\| (P\d+) \| (.*) \|$", line)
        if m:
            rows[m[1]] = [c.strip() for c in re.split(r"(?<!\\)\|", m[2])]
    return rows


def test_unknown_property_id_is_a_collection_error(tmp_path: Path) -> None:
    d = _synthetic(
        tmp_path,
        """
import pytest

@pytest.mark.property("P6", "P99")
def test_unknown():
    pass

@pytest.mark.property()
def test_no_id():
    pass

@pytest.mark.property("P1")
def test_fine():
    pass
""",
    )
    (d / "test_on_a_class.py").write_text(
        """
import pytest

@pytest.mark.property("P17")
class TestOnAClass:
    def test_method(self):
        pass
"""
    )
    res = _pytest(d)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out  # interrupted: errors during collection
    assert "ERROR collecting test_synthetic.py" in out
    assert "test_unknown: unknown property id(s) 'P99'" in out
    assert "test_no_id: @pytest.mark.property needs at least one property id" in out
    assert "ERROR test_on_a_class.py::TestOnAClass" in out
    assert "TestOnAClass::test_method: unknown property id(s) 'P17'" in out
    assert "2 errors during collection" in out
    assert " passed" not in out  # nothing ran


def test_property_option_selects_only_that_property(tmp_path: Path) -> None:
    d = _synthetic(tmp_path)
    res = _pytest(d, "--property", "P9", "--property-report", "r.json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 passed, 6 deselected" in res.stdout
    report = json.loads((d / "r.json").read_text())
    assert [t["nodeid"] for t in report["tests"]] == [
        "test_synthetic.py::TestP9::test_one",
        "test_synthetic.py::TestP9::test_two",
    ]
    assert all(t["properties"] == ["P9"] and t["outcome"] == "passed" for t in report["tests"])

    res = _pytest(d, "--property", "P6", "--property-report", "r.json")
    assert res.returncode == 1  # test_p2_p6_fails
    assert "1 failed, 3 passed, 4 deselected" in res.stdout
    report = json.loads((d / "r.json").read_text())
    assert {t["test"] for t in report["tests"]} == {
        "test_synthetic.py::test_p6_parametrised",
        "test_synthetic.py::test_p2_p6_fails",
    }
    assert all("P6" in t["properties"] for t in report["tests"])

    res = _pytest(d, "--property", "P2,P9", "--collect-only", "-q")
    assert "4/8 tests collected (4 deselected)" in res.stdout
    res = _pytest(d, "-m", "property", "--collect-only", "-q")  # every marked test
    assert "7/8 tests collected (1 deselected)" in res.stdout
    res = _pytest(d, "-m", "not property", "--collect-only", "-q")
    assert "1/8 tests collected (7 deselected)" in res.stdout

    res = _pytest(d, "--property", "P0")
    assert res.returncode == 4  # usage error
    assert "--property: unknown property id(s) P0" in res.stderr


def test_the_real_suite_selects_by_property_including_the_state_machines(tmp_path: Path) -> None:
    """On the repository's own tests: --property P3 keeps only P3 tests, the hypothesis state machines among
    them (their mark sits on the TestCase class hypothesis generates)."""
    report_path = tmp_path / "r.json"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-q",
            "--property",
            "P3",
            f"--property-report={report_path}",
            "tests/test_properties.py",
            "tests/test_audit.py",
        ],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    tests = json.loads(report_path.read_text())["tests"]
    names = {t["test"] for t in tests}
    assert {"tests/test_properties.py::TestRoundMachine", "tests/test_properties.py::TestHardenedRoundMachine"} <= names
    assert all("P3" in t["properties"] for t in tests)
    assert not any(n.startswith("tests/test_audit.py") for n in names)  # the audit tests check P11 and P14


def test_report_counts_match_a_synthetic_run(tmp_path: Path) -> None:
    d = _synthetic(tmp_path)
    tm = tmp_path / "threat_model.md"
    tm.write_text(THREAT_MODEL.format(markers=f"{BEGIN}\nstale table\n{END}\n"))
    before, after = tm.read_text().split("stale table\n")
    res = _report("--threat-model", str(tm), "--json", str(tmp_path / "r.json"), "--", str(d))
    assert res.returncode == 1, res.stderr  # a marked test failed: the table is written all the same
    assert "1 marked test case(s) failed" in res.stderr
    text = tm.read_text()
    assert text.startswith(before) and text.endswith(after)  # only what is between the markers changed
    block = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    assert "stale table" not in block
    rows = _rows(block)
    assert list(rows) == list(PROPERTY_IDS)
    assert rows["P2"][0] == "Input privacy against a malicious server"
    assert rows["P6"][0] == "Correct output \\| or a typed abort"
    assert rows["P1"] == ["(no heading in threat_model.md)", "no marked test", "-"]
    assert rows["P2"][1:] == [
        "`test_synthetic.py::test_p2_p6_fails` **1 failed**<br>`test_synthetic.py::test_p2_skips` **1 skipped**",
        "0 passed, 1 failed, 1 skipped",
    ]
    assert rows["P6"][1:] == [
        "`test_synthetic.py::test_p6_parametrised` (3 cases)<br>`test_synthetic.py::test_p2_p6_fails` **1 failed**",
        "3 passed, 1 failed, 0 skipped",
    ]
    assert rows["P9"][1:] == [
        "`test_synthetic.py::TestP9::test_one`<br>`test_synthetic.py::TestP9::test_two`",
        "2 passed, 0 failed, 0 skipped",
    ]
    # the totals agree with pytest's own summary of the same run (the unmarked test was deselected)
    assert "1 failed, 5 passed, 1 skipped, 1 deselected" in res.stderr
    assert "5 marked tests, 7 cases (a case is counted once however many properties it carries): " in block
    assert "5 passed, 1 failed, 1 skipped." in block


def test_out_check_and_missing_markers(tmp_path: Path) -> None:
    passing = SYNTHETIC.replace("assert False", "assert True").replace('pytest.skip("not here")', "pass")
    d = _synthetic(tmp_path, passing)
    tm = tmp_path / "threat_model.md"
    tm.write_text(THREAT_MODEL.format(markers=""))
    out = tmp_path / "table.md"

    res = _report("--threat-model", str(tm), "--", str(d))  # no markers: the table goes to stdout
    assert res.returncode == 2
    assert BEGIN in res.stderr and END in res.stderr and "## 5. Scenario coverage" in res.stderr
    assert _rows(res.stdout)["P6"][2] == "4 passed, 0 failed, 0 skipped"
    assert tm.read_text() == THREAT_MODEL.format(markers="")

    res = _report("--threat-model", str(tm), "--out", str(out), "--", str(d))
    assert res.returncode == 0, res.stderr
    assert _rows(out.read_text())["P2"][2] == "2 passed, 0 failed, 0 skipped"
    assert tm.read_text() == THREAT_MODEL.format(markers="")

    res = _report("--threat-model", str(tm), "--out", str(out), "--check", "--", str(d))
    assert res.returncode == 0, res.stderr
    assert "the table is current" in res.stderr
    out.write_text(out.read_text().replace("2 passed, 0 failed, 0 skipped", "3 passed, 0 failed, 0 skipped"))
    res = _report("--threat-model", str(tm), "--out", str(out), "--check", "--", str(d))
    assert res.returncode == 1
    assert "differs from a fresh run" in res.stderr and "+| P2 |" in res.stderr

    tm.write_text(THREAT_MODEL.format(markers=f"{BEGIN}\n{END}\n"))
    res = _report("--threat-model", str(tm), "--check", "--", str(d))
    assert res.returncode == 1  # the committed (empty) table is not the fresh run's
    res = _report("--threat-model", str(tm), "--", str(d))
    assert res.returncode == 0, res.stderr
    res = _report("--threat-model", str(tm), "--check", "--", str(d))
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("args", [["--check", "--from-json", "x.json"], ["--no-such-option"]])
def test_report_refuses_bad_arguments(args: list[str]) -> None:
    res = _report(*args)
    assert res.returncode == 2
    assert "usage: python -m tests.property_report" in res.stderr


def test_conftest_knows_every_property_of_the_threat_model() -> None:
    titles = property_titles((REPO / "threat_model.md").read_text(encoding="utf-8"))
    assert list(titles) == list(PROPERTY_IDS)
