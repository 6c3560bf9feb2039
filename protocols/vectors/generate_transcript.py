"""Generate protocols/vectors/transcript.json: golden transcripts of whole rounds (scenario E2).

Run `python protocols/vectors/generate_transcript.py` to regenerate; tests check the file byte for byte and
check that a fresh in-process run reproduces it. Every round is seeded (DeterministicRandom inside
`secagg.simulation`), so the transcript never changes unless the protocol's bytes do.

The transcript of a round is every message in flight, in delivery order, as its canonical encoding
(`encode_message`). Its digest is SHA-256 over the entries, each framed as
`text(direction) || u32(client id) || bytes(encoding)` with the canonical `Writer` (direction is
"to-client" or "to-server"). The aggregate digest is SHA-256 over
`u32_list(survivors) || u32_list(dropped) || u64(total weight) || bytes(sum as little-endian u64 words)`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from secagg import simulation
from secagg.encoding import Writer
from secagg.protocol.config import Mode
from secagg.protocol.rules import Stage
from secagg.protocol.server import AggregateResult
from secagg.simulation import SimulationSetup

CASES: list[dict[str, Any]] = [
    {
        "name": "semi-honest-dropout-after-sharing-chunked",
        "mode": "semi-honest",
        "n": 5,
        "dim": 7,
        "t": 3,
        "seed": 2026,
        "modulus": 1 << 32,
        "chunk_elems": 3,
        "drop_at": {"5": "masked-input"},
    },
    {
        "name": "hardened-dropout-during-unmask",
        "mode": "hardened",
        "n": 5,
        "dim": 7,
        "t": 3,
        "seed": 2027,
        "modulus": 1 << 32,
        "chunk_elems": None,
        "drop_at": {"2": "unmask"},
    },
    {
        "name": "hardened-no-dropout-modulus-2^64",
        "mode": "hardened",
        "n": 4,
        "dim": 3,
        "t": 3,
        "seed": 2028,
        "modulus": 1 << 64,
        "chunk_elems": 2,
        "drop_at": {},
    },
]


def setup_case(case: dict[str, Any]) -> SimulationSetup:
    """The seeded round a case describes."""
    cfg = simulation.make_config(
        case["n"],
        case["dim"],
        mode=Mode(case["mode"]),
        seed=case["seed"],
        t=case["t"],
        modulus=case["modulus"],
        corrupt_fraction=0.0,
        dropout_fraction=0.0,
        run_id="golden-transcript",
    )
    drop_at = {int(c): Stage(s) for c, s in case["drop_at"].items()}
    return simulation.build(cfg, seed=case["seed"], drop_at=drop_at, chunk_elems=case["chunk_elems"])


def transcript_digest(transcript: list[tuple[str, int, bytes]]) -> str:
    """SHA-256 over the framed entries of a transcript (see the module docstring)."""
    h = hashlib.sha256()
    for direction, client, blob in transcript:
        h.update(Writer().text(direction).u32(client).bytes_(blob).getvalue())
    return h.hexdigest()


def aggregate_digest(result: AggregateResult) -> str:
    """SHA-256 over survivors, dropped, total weight and the exact ring sum (see the module docstring)."""
    w = Writer().u32_list(result.survivors).u32_list(result.dropped).u64(result.total_weight)
    w.bytes_(np.asarray(result.sum, dtype="<u8").tobytes())
    return hashlib.sha256(w.getvalue()).hexdigest()


def record(case: dict[str, Any]) -> tuple[SimulationSetup, list[tuple[str, int, bytes]]]:
    """Run a case in process with the transcript recorded."""
    setup = setup_case(case)
    rr = simulation.run(setup, record_transcript=True)
    return setup, rr.transcript


def build_vectors() -> dict[str, Any]:
    out = []
    for case in CASES:
        setup, transcript = record(case)
        res = setup.server.result
        if res is None:
            raise RuntimeError(f"golden case {case['name']} did not complete: {setup.server.error}")
        out.append(
            {
                **case,
                "modulus": str(case["modulus"]),
                "config_hash": setup.config.config_hash().hex(),
                "session_id": res.session_id.hex(),
                "messages": len(transcript),
                "to_client": sum(1 for d, _, _ in transcript if d == "to-client"),
                "to_server": sum(1 for d, _, _ in transcript if d == "to-server"),
                "transcript_bytes": sum(len(b) for _, _, b in transcript),
                "first_message_sha256": hashlib.sha256(transcript[0][2]).hexdigest(),
                "transcript_sha256": transcript_digest(transcript),
                "survivors": list(res.survivors),
                "dropped": list(res.dropped),
                "total_weight": res.total_weight,
                "sum": [str(int(v)) for v in res.sum],
                "aggregate_sha256": aggregate_digest(res),
            }
        )
    return {"format": 1, "cases": out}


def build() -> dict[str, Any]:
    """Every vector, computed from fixed seeds (the entry point tests/vectors.py calls)."""
    return build_vectors()


def main() -> None:
    """Write the vectors next to this script."""
    path = Path(__file__).with_name("transcript.json")
    path.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
