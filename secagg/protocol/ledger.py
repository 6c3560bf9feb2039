"""The contribution ledger: one masked input per (run, round), whatever host drives the sessions (P5, A10).

A client session asks the ledger twice. At setup, `has_contributed` refuses a (run, round) that already has a
contribution (an early, cheap refusal). When the session commits to contributing (its input is ready and its
first masked chunk is about to be made), `reserve` claims the (run, round) atomically: exactly one of any
number of sessions of one (run, round) gets True, so two sessions set up before either masked cannot both emit
a masked input (the difference of two such sums would be the client's input). A reservation is never given
back: a session that reserved and then failed has still, as far as the ledger knows, contributed.

`MemoryLedger` serves one process (thread-safe); `secagg.deploy.ledger.FileLedger` persists across restarts
and processes; the Flower mod keeps one in the node's Context.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

__all__ = ["ContributionLedger", "MemoryLedger"]


@runtime_checkable
class ContributionLedger(Protocol):
    """Remembers which (run, round) this silo already contributed to (scenario A10)."""

    def has_contributed(self, run_id: str, round_: int) -> bool:
        """True if (run_id, round_) was already reserved by some session of this silo."""
        ...

    def reserve(self, run_id: str, round_: int) -> bool:
        """Claim (run_id, round_) for one masked input, atomically: True if this call claimed it, False if it
        was claimed before (by any session, in any process sharing this ledger). Durable when it returns True."""
        ...


class MemoryLedger:
    """An in-memory ContributionLedger for one process (simulation, tests). Deployments use a persistent one."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def has_contributed(self, run_id: str, round_: int) -> bool:
        """See ContributionLedger."""
        with self._lock:
            return (run_id, round_) in self._seen

    def reserve(self, run_id: str, round_: int) -> bool:
        """See ContributionLedger."""
        with self._lock:
            if (run_id, round_) in self._seen:
                return False
            self._seen.add((run_id, round_))
            return True

    def __repr__(self) -> str:
        return f"MemoryLedger({len(self._seen)} records)"
