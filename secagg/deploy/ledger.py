"""`FileLedger`: a silo's persistent contribution ledger (SPEC §10.1, §10.3; threat_model.md P5).

The (run, round) pairs this silo reserved for a masked input, in a JSON file. `reserve` is one atomic
test-and-set across threads and processes: it takes an exclusive `flock` on a lock file beside the ledger,
re-reads the ledger from disk, and, if the pair is new, rewrites the file atomically (temp file, fsync,
rename, directory fsync) before it returns True. So two silo processes started on one state directory, or
two sessions of one (run, round) in one process, can never both contribute, and a crash never loses a
reservation that was reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from secagg.deploy._files import atomic_write
from secagg.errors import ConfigurationError

__all__ = ["FileLedger"]


class FileLedger:
    """A persistent, multi-process ContributionLedger (see the module docstring)."""

    VERSION: Final = 1

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock = threading.Lock()
        self._load()  # refuse a corrupt ledger when the silo starts, not at its first round

    def _load(self) -> set[tuple[str, int]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise ConfigurationError(f"{self.path}: cannot read contribution ledger ({type(exc).__name__})") from None
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ConfigurationError(f"{self.path}: corrupt contribution ledger (not JSON)") from None
        if not isinstance(doc, dict) or set(doc) != {"version", "contributions"}:
            raise ConfigurationError(f"{self.path}: corrupt contribution ledger (unexpected structure)")
        if doc["version"] != self.VERSION:
            raise ConfigurationError(f"{self.path}: unsupported contribution ledger version")
        entries = doc["contributions"]
        if not isinstance(entries, list):
            raise ConfigurationError(f"{self.path}: corrupt contribution ledger (contributions is not a list)")
        seen: set[tuple[str, int]] = set()
        for i, e in enumerate(entries):
            if not (
                isinstance(e, dict)
                and set(e) == {"run_id", "round"}
                and isinstance(e["run_id"], str)
                and isinstance(e["round"], int)
                and not isinstance(e["round"], bool)
                and e["round"] >= 0
            ):
                raise ConfigurationError(f"{self.path}: corrupt contribution ledger (entry {i})")
            seen.add((e["run_id"], e["round"]))
        return seen

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread, and then this process, alone on the ledger (the flock is released on any exit)."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor drops the lock

    def has_contributed(self, run_id: str, round_: int) -> bool:
        """True if (run_id, round_) is reserved, as the file on disk says now."""
        return (run_id, round_) in self._load()

    def reserve(self, run_id: str, round_: int) -> bool:
        """Claim (run_id, round_) atomically across threads and processes; True once it is on disk, False if it
        was already claimed."""
        if not isinstance(run_id, str) or isinstance(round_, bool) or not isinstance(round_, int) or round_ < 0:
            raise ConfigurationError("ledger records a run id (str) and a round number (int >= 0)")
        with self._exclusive():
            seen = self._load()
            if (run_id, round_) in seen:
                return False
            seen.add((run_id, round_))
            doc = {
                "version": self.VERSION,
                "contributions": [{"run_id": r, "round": n} for r, n in sorted(seen)],
            }
            atomic_write(self.path, json.dumps(doc, indent=1).encode() + b"\n", mode=0o600)
            return True

    def contributions(self) -> list[tuple[str, int]]:
        """Every recorded (run_id, round), sorted."""
        return sorted(self._load())

    def __repr__(self) -> str:
        return f"FileLedger({str(self.path)!r})"
