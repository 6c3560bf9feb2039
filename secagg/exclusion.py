"""Benching silos named as the cause of failed or damaged rounds (threat_model.md P7, "exclusion").

A `ServerSession` names a client only on evidence colluders cannot forge against an honest one
(`ServerSession.blamed`, SPEC §11.8). A coordinator (the gRPC server, the Flower strategy) keeps an
`ExclusionList`: each round, every named silo gets a strike; at `strikes` strikes it is benched, and benched
silos are not invited to later rounds until an operator reinstates them. This module holds the rule and its
JSON form; hosts persist it where their operators expect it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from secagg.errors import ConfigurationError

__all__ = ["Benched", "ExclusionList"]

_VERSION = 1


@dataclass(frozen=True)
class Benched:
    """Why and when a silo was benched."""

    round: int
    reason: str


@dataclass
class ExclusionList:
    """Strikes per silo and the silos benched; `strikes = 0` never benches anyone (strikes are still counted)."""

    strikes: int = 1
    counts: dict[int, int] = field(default_factory=dict)
    benched: dict[int, Benched] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.strikes, bool) or not isinstance(self.strikes, int) or self.strikes < 0:
            raise ConfigurationError("exclusion strikes must be an integer >= 0 (0: never bench)")

    def eligible(self, silos: Iterable[int]) -> list[int]:
        """The silos that may be invited (those not benched), in the order given."""
        return [s for s in silos if s not in self.benched]

    def record(self, round_: int, blamed: Mapping[int, str]) -> list[int]:
        """Give every silo named in this round a strike; returns the silos benched by it, ascending."""
        newly = []
        for silo, reason in sorted(blamed.items()):
            self.counts[silo] = self.counts.get(silo, 0) + 1
            if self.strikes and silo not in self.benched and self.counts[silo] >= self.strikes:
                self.benched[silo] = Benched(round_, reason)
                newly.append(silo)
        return newly

    def bench(self, silo: int, round_: int, reason: str) -> bool:
        """Bench a silo by hand (an operator's decision); False if it was already benched."""
        if silo in self.benched:
            return False
        self.benched[silo] = Benched(round_, reason)
        return True

    def reinstate(self, silo: int) -> bool:
        """Let a benched silo take part again (its strikes start from zero); False if it was not benched."""
        self.counts.pop(silo, None)
        return self.benched.pop(silo, None) is not None

    def to_json(self) -> str:
        """Canonical JSON (what `from_json` reads back)."""
        doc = {
            "version": _VERSION,
            "strikes": {str(s): n for s, n in sorted(self.counts.items())},
            "benched": {str(s): {"round": b.round, "reason": b.reason} for s, b in sorted(self.benched.items())},
        }
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, strikes: int) -> ExclusionList:
        """Read `to_json` output (ConfigurationError naming what is wrong otherwise)."""
        try:
            doc: Any = json.loads(text)
        except ValueError:
            raise ConfigurationError("exclusion list: not JSON") from None
        if not isinstance(doc, dict) or set(doc) != {"version", "strikes", "benched"} or doc["version"] != _VERSION:
            raise ConfigurationError("exclusion list: unexpected structure or version")
        try:
            counts = {int(s): int(n) for s, n in doc["strikes"].items()}
            benched = {int(s): Benched(int(b["round"]), str(b["reason"])) for s, b in doc["benched"].items()}
        except (AttributeError, KeyError, TypeError, ValueError):
            raise ConfigurationError("exclusion list: malformed entry") from None
        return cls(strikes=strikes, counts=counts, benched=benched)
