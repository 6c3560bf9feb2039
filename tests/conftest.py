"""The ``property`` marker: which security property of threat_model.md §4 a test checks.

A test that checks a property of threat_model.md §4 carries its id (several if it checks several)::

    @pytest.mark.property("P2", "P4")
    def test_A9_different_models_to_different_clients_abort_without_aggregate(...): ...

    TestRoundMachine = pytest.mark.property("P1", "P3")(RoundMachine.TestCase)  # a hypothesis state machine

Selecting:

- ``pytest -m property``: every test that carries a property (``-m`` selects by marker name);
- ``pytest --property P6`` (repeatable, or ``--property P6,P9``): only the tests of these properties, the
  others deselected (combine with ``-m``, ``-k`` and paths as usual);
- ``pytest --property-report PATH``: after the run, write PATH (JSON): every test run, its properties and its
  outcome. ``python -m tests.property_report`` runs ``pytest -m property --property-report ...`` and writes
  the property -> tests -> result table into threat_model.md.

An id outside P1..P16, a ``property`` marker without ids or with keyword arguments is a collection error
of the module (or class) that carries it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

import pytest

#: The properties of threat_model.md §4 (its ``### Pn. Title`` headings).
PROPERTY_IDS: tuple[str, ...] = tuple(f"P{i}" for i in range(1, 17))
MARKER = "property"
MARKER_HELP = (
    "property(*ids): the test checks these security properties of threat_model.md §4 (P1..P16); "
    "select all with -m property, one with --property Pn"
)
REPORT_VERSION = 1
_ID_ORDER = {pid: i for i, pid in enumerate(PROPERTY_IDS)}


def property_sort_key(pid: str) -> tuple[int, str]:
    return (_ID_ORDER.get(pid, len(_ID_ORDER)), pid)


def mark_problem(mark: pytest.Mark) -> str | None:
    """Why a ``property`` mark is invalid, or None if it is fine."""
    if mark.kwargs:
        return f"@pytest.mark.property takes property ids only, not keyword arguments {sorted(mark.kwargs)}"
    if not mark.args:
        return "@pytest.mark.property needs at least one property id (P1..P16)"
    bad = [a for a in mark.args if a not in _ID_ORDER]
    if bad:
        return f"unknown property id(s) {', '.join(repr(b) for b in bad)}: threat_model.md §4 has P1..P16"
    return None


def item_properties(item: pytest.Item) -> list[str]:
    """The property ids an item carries (its own marks, its class's and its module's), sorted, unique."""
    ids = {a for mark in item.iter_markers(MARKER) for a in mark.args if isinstance(a, str)}
    return sorted(ids, key=property_sort_key)


def _split_ids(values: Iterable[str]) -> list[str]:
    return [p for v in values for p in re.split(r"[\s,]+", v.strip()) if p]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("property", "security properties of threat_model.md §4")
    group.addoption(
        "--property",
        action="append",
        default=[],
        dest="property_ids",
        metavar="PN",
        help="run only the tests marked with this property (repeatable, or comma-separated: --property P6,P9); "
        "the others are deselected. All marked tests: -m property",
    )
    group.addoption(
        "--property-report",
        default=None,
        dest="property_report",
        metavar="PATH",
        help="write PATH (JSON): every test run, its properties and its outcome "
        "(read by python -m tests.property_report)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    wanted = _split_ids(config.getoption("property_ids") or [])
    bad = [p for p in wanted if p not in _ID_ORDER]
    if bad:
        raise pytest.UsageError(f"--property: unknown property id(s) {', '.join(bad)} (threat_model.md has P1..P16)")
    path = config.getoption("property_report")
    if path and not hasattr(config, "workerinput"):  # under xdist only the controller writes
        config.pluginmanager.register(PropertyRecorder(Path(path), config), "property-recorder")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A bad ``property`` mark fails the collection of the module or class that carries it."""
    report = yield
    if report.passed:
        problems: dict[str, None] = {}
        for node in report.result:
            if isinstance(node, pytest.Item):
                for mark in node.iter_markers(MARKER):
                    problem = mark_problem(mark)
                    if problem:
                        problems[f"{node.nodeid}: {problem}"] = None
        if problems:
            report.outcome = "failed"
            report.longrepr = "\n".join(problems)
            report.result = []
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = set(_split_ids(config.getoption("property_ids") or []))
    if not wanted:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if wanted & set(item_properties(item)) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def folded_name(item: pytest.Item) -> str:
    """The item's node id without its parametrisation (``file.py::test_x[a-1]`` -> ``file.py::test_x``); a
    unittest class that runs as one test (a hypothesis state machine's ``runTest``) is named by its class."""
    original = getattr(item, "originalname", None) or item.name
    base = item.nodeid[: len(item.nodeid) - len(item.name)] + original
    if base.endswith("::runTest"):
        base = base[: -len("::runTest")]
    return base


class PropertyRecorder:
    """Records every collected test's properties and its outcome; writes them as JSON at the session's end."""

    def __init__(self, path: Path, config: pytest.Config) -> None:
        self.path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
        self.config = config
        self.tests: dict[str, dict[str, Any]] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            self.tests[item.nodeid] = {
                "nodeid": item.nodeid,
                "test": folded_name(item),
                "properties": item_properties(item),
                "outcome": None,  # not run (yet)
                "when": None,
            }

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.setdefault(
            report.nodeid,
            {"nodeid": report.nodeid, "test": report.nodeid, "properties": [], "outcome": None, "when": None},
        )
        if report.failed:
            if entry["outcome"] != "failed":
                entry["outcome"], entry["when"] = "failed", report.when
        elif report.skipped:  # skipped at setup or call; xfail counts as skipped (it checked nothing)
            if entry["outcome"] != "failed":
                entry["outcome"], entry["when"] = "skipped", report.when
        elif report.when == "call" and entry["outcome"] is None:
            entry["outcome"], entry["when"] = "passed", report.when

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        data = {
            "version": REPORT_VERSION,
            "exitstatus": int(exitstatus),
            "rootdir": str(session.config.rootpath),
            "property_ids": list(PROPERTY_IDS),
            "tests": list(self.tests.values()),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
