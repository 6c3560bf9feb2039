"""A silo's persistent record of the privacy it has spent, round by round, refusing to overspend.

The ledger is a small JSON file (no pickle) rewritten atomically (temporary file, fsync, rename, fsync of the
directory), so a crash leaves either the old or the new ledger, never a torn one. It stores, per round, the
DP-SGD steps taken with their noise multiplier and sample rate (enough to rebuild an Opacus accountant's
history after a restart) and the cumulative epsilon reported after the round. Before a round trains, the
caller asks its accountant what epsilon would be after that round's steps and calls `check`, which raises
`PrivacyBudgetExceeded` if the budget would be exceeded.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secagg.errors import ConfigurationError, EncodingError, SecAggError

__all__ = ["BUDGET_SLACK", "LEDGER_FORMAT", "LedgerEntry", "PrivacyBudgetExceeded", "PrivacyLedger"]

LEDGER_FORMAT = "secagg-privacy-ledger"
LEDGER_VERSION = 1
_ACCOUNTANTS = ("rdp", "prv")
BUDGET_SLACK = 1e-9
"""Relative allowance in budget checks: composing the same steps grouped differently moves epsilon by ~1 ulp."""


class PrivacyBudgetExceeded(SecAggError):  # noqa: N818 - names an outcome, like PolicyRefusal
    """Training the next round would take this silo's epsilon past its budget; nothing was trained."""

    code = "DP_BUDGET_EXCEEDED"


@dataclass(frozen=True)
class LedgerEntry:
    """One trained round: DP-SGD steps at (noise_multiplier, sample_rate) and the cumulative epsilon after it."""

    round: int
    steps: int
    noise_multiplier: float
    sample_rate: float
    epsilon: float

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "steps": self.steps,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "epsilon": self.epsilon,
        }

    @classmethod
    def from_json(cls, obj: Any) -> LedgerEntry:
        if not isinstance(obj, dict) or set(obj) != {
            "round",
            "steps",
            "noise_multiplier",
            "sample_rate",
            "epsilon",
        }:
            raise EncodingError("privacy ledger entry has unexpected fields")
        rnd, steps = obj["round"], obj["steps"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (rnd, steps)):
            raise EncodingError("privacy ledger entry has a bad round or step count")
        floats = [obj["noise_multiplier"], obj["sample_rate"], obj["epsilon"]]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in floats):
            raise EncodingError("privacy ledger entry has a non-numeric value")
        noise, rate, eps = (float(v) for v in floats)
        if not (math.isfinite(noise) and noise > 0 and 0 < rate <= 1 and math.isfinite(eps) and eps >= 0):
            raise EncodingError("privacy ledger entry has an out-of-range value")
        return cls(rnd, steps, noise, rate, eps)


class PrivacyLedger:
    """The JSON ledger at `path` for one silo: created on first use, reopened (and checked) afterwards.

    `delta`, `epsilon_budget` and `accountant` are fixed when the ledger is created; reopening it with
    different values is refused (a budget is not silently changed by a restart).
    """

    def __init__(self, path: str | os.PathLike[str], *, delta: float, epsilon_budget: float, accountant: str = "rdp"):
        if not (isinstance(delta, float) and 0 < delta < 1):
            raise ConfigurationError("delta must be a float in (0, 1)")
        if not (isinstance(epsilon_budget, (int, float)) and math.isfinite(epsilon_budget) and epsilon_budget > 0):
            raise ConfigurationError("epsilon budget must be positive and finite")
        if accountant not in _ACCOUNTANTS:
            raise ConfigurationError(f"accountant must be one of {_ACCOUNTANTS}")
        self._path = Path(path)
        self._delta = float(delta)
        self._budget = float(epsilon_budget)
        self._accountant = accountant
        self._entries: list[LedgerEntry] = []
        if self._path.exists():
            self._load()
        else:
            self._save()

    # ------------------------------------------------------------------ reading

    @property
    def path(self) -> Path:
        return self._path

    @property
    def delta(self) -> float:
        return self._delta

    @property
    def epsilon_budget(self) -> float:
        return self._budget

    @property
    def accountant(self) -> str:
        return self._accountant

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    @property
    def epsilon_spent(self) -> float:
        """Cumulative epsilon after the last recorded round (0 before any)."""
        return self._entries[-1].epsilon if self._entries else 0.0

    @property
    def last_round(self) -> int | None:
        return self._entries[-1].round if self._entries else None

    def history(self) -> list[tuple[float, float, int]]:
        """(noise_multiplier, sample_rate, steps) per round: an Opacus accountant's `history`."""
        return [(e.noise_multiplier, e.sample_rate, e.steps) for e in self._entries if e.steps > 0]

    # ------------------------------------------------------------------ writing

    def check(self, projected_epsilon: float, round_number: int) -> None:
        """Raise PrivacyBudgetExceeded if training `round_number` would bring epsilon to above the budget."""
        if not (math.isfinite(projected_epsilon) and projected_epsilon <= self._budget * (1 + BUDGET_SLACK)):
            raise PrivacyBudgetExceeded(
                f"round {round_number} would bring epsilon to {projected_epsilon:.4f}, over the budget of "
                f"{self._budget:.4f} (delta={self._delta:g}; {self.epsilon_spent:.4f} spent in "
                f"{len(self._entries)} rounds)"
            )

    def record(self, entry: LedgerEntry) -> None:
        """Append a trained round and persist the ledger atomically. Rounds must increase."""
        if self._entries and entry.round <= self._entries[-1].round:
            raise ConfigurationError(f"round {entry.round} is not after the last recorded round")
        if entry.epsilon + 1e-12 < self.epsilon_spent:
            raise ConfigurationError("cumulative epsilon cannot decrease")
        self._entries.append(entry)
        try:
            self._save()
        except BaseException:
            self._entries.pop()
            raise

    # ------------------------------------------------------------------ persistence

    def _document(self) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "delta": self._delta,
            "epsilon_budget": self._budget,
            "accountant": self._accountant,
            "rounds": [e.to_json() for e in self._entries],
        }

    def _save(self) -> None:
        data = json.dumps(self._document(), indent=2, sort_keys=True, allow_nan=False).encode("utf-8") + b"\n"
        directory = self._path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        try:
            dir_fd = os.open(directory, os.O_RDONLY)
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _load(self) -> None:
        try:
            doc = json.loads(self._path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise EncodingError("privacy ledger is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != LEDGER_FORMAT:
            raise EncodingError("not a privacy ledger")
        if doc.get("version") != LEDGER_VERSION:
            raise EncodingError("unsupported privacy ledger version")
        if doc.get("delta") != self._delta or doc.get("accountant") != self._accountant:
            raise ConfigurationError("privacy ledger was created with another delta or accountant")
        if doc.get("epsilon_budget") != self._budget:
            raise ConfigurationError("privacy ledger was created with another epsilon budget")
        rounds = doc.get("rounds")
        if not isinstance(rounds, list):
            raise EncodingError("privacy ledger has no round list")
        entries = [LedgerEntry.from_json(r) for r in rounds]
        for a, b in itertools.pairwise(entries):
            if b.round <= a.round or b.epsilon + 1e-12 < a.epsilon:
                raise EncodingError("privacy ledger rounds are out of order")
        self._entries = entries

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(path={str(self._path)!r}, spent={self.epsilon_spent:.4f}, "
            f"budget={self._budget:.4f}, rounds={len(self._entries)})"
        )
