"""Decoding cost per message type: peak memory and time per MiB of the worst messages a silo can send.

    python -m bench.decode_cost                     # this working tree
    python -m bench.decode_cost --baseline 49dd12d  # and, side by side, the decoders of another commit

For each case (the canonical `decode_message`, and the gRPC path `wire.decode_client` with protobuf under it) a
message of --size bytes is built and decoded: `peak` is tracemalloc's peak during the decode over the message
size (Python objects, the result included), `pb arena` what protobuf's C arena held after its parse (glibc's
mallinfo2; tracemalloc cannot see it; 0 when the envelope was refused before protobuf), `s/MiB` the best of
three untraced decodes. Numbers, never assertions (tests/test_decode_cost.py asserts the memory bound).
The baseline runs this same script in a subprocess on `git archive <rev> secagg`.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MiB = 1 << 20
SID = bytes(range(32))
BASE_ID = 1 << 30  # the largest Python ints (32 bytes): the worst case for memory


# ------------------------------------------------------------------------------------------- messages


def _pairs(n: int, blob_len: int, base: int = BASE_ID) -> bytes:
    rec = np.zeros((n, 8 + blob_len), np.uint8)
    rec[:, :4] = np.arange(base, base + n, dtype=">u4").view(np.uint8).reshape(n, 4)
    rec[:, 4:8] = np.frombuffer(struct.pack(">I", blob_len), np.uint8)
    rec[:, 8:] = (np.arange(blob_len, dtype=np.uint8) * 7 + 1) if blob_len else 0
    return struct.pack(">I", n) + rec.tobytes()


def _head(type_code: int) -> bytes:
    return struct.pack(">HB", 1, type_code)


def _share_keys(size: int, blob_len: int) -> bytes:
    n = (size - 71) // (8 + blob_len)
    return _head(17) + SID + _pairs(n, blob_len) + bytes(32)


def _unmask_response(size: int, blob_len: int) -> bytes:
    n = (size - 43) // (8 + blob_len) // 2
    return _head(20) + SID + _pairs(n, blob_len) + _pairs(n, blob_len, BASE_ID + n)


def _keys_broadcast(size: int) -> bytes:
    n = (size - 71) // 72
    rec = np.zeros((n, 72), np.uint8)
    rec[:, :4] = np.arange(BASE_ID, BASE_ID + n, dtype=">u4").view(np.uint8).reshape(n, 4)
    rec[:, 4:68] = np.random.default_rng(0).integers(0, 256, (n, 64), dtype=np.uint8)
    return _head(2) + SID + SID + struct.pack(">I", n) + rec.tobytes()


def _u32_list(size: int) -> bytes:
    n = min((size - 39) // 4, 1 << 20)
    return _head(7) + SID + struct.pack(">I", n) + np.arange(BASE_ID, BASE_ID + n, dtype=">u4").tobytes()


def _chunk(size: int) -> bytes:
    n = (size - 64) // 4
    body = SID + struct.pack(">IIQB", 0, 1, 0, 4) + struct.pack(">I", 4 * n) + bytes(4 * n)
    return _head(18) + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _ld(field: int, body: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(body)) + body


def _envelope(field: int, body: bytes) -> bytes:
    return b"\x78\x01" + _ld(field, body)


def _wire_items(size: int, blob_len: int, fields: tuple[int, ...]) -> bytes:
    """A share_keys (17) or unmask_response (20) body of as many items of blob_len bytes as fit."""
    one = len(_ld(2, b"\x08" + _varint(BASE_ID) + (_ld(2, bytes(blob_len)) if blob_len else b"")))
    n = (size - 80) // one // len(fields)
    blob = _ld(2, bytes(range(1, blob_len + 1))) if blob_len else b""
    return b"".join(
        _ld(f, b"\x08" + _varint(BASE_ID + i + j * n) + blob) for j, f in enumerate(fields) for i in range(n)
    )


def _wire_share_keys(size: int, blob_len: int) -> bytes:
    return _envelope(17, _ld(1, SID) + _wire_items(size, blob_len, (2,)) + _ld(3, bytes(32)))


def _wire_unmask(size: int, blob_len: int) -> bytes:
    return _envelope(20, _ld(1, SID) + _wire_items(size, blob_len, (2, 3)))


def _wire_empty_items(size: int) -> bytes:
    return _envelope(17, _ld(1, SID) + b"\x12\x00" * ((size - 80) // 2) + _ld(3, bytes(32)))


def _wire_chunk(size: int) -> bytes:
    n = (size - 64) // 4
    body = _ld(1, SID) + b"\x18\x01\x28\x04" + _ld(6, bytes(4 * n))
    return b"\x78\x01" + _ld(18, body)


CANONICAL: dict[str, Callable[[int], bytes]] = {
    "ShareKeys, 8-byte pairs (empty blobs)": lambda s: _share_keys(s, 0),
    "ShareKeys, 10-byte pairs": lambda s: _share_keys(s, 2),
    "ShareKeys, 64-byte pairs (the budget)": lambda s: _share_keys(s, 56),
    "ShareKeys, 180-byte pairs (honest)": lambda s: _share_keys(s, 172),
    "UnmaskResponse, 10-byte pairs": lambda s: _unmask_response(s, 2),
    "UnmaskResponse, 64-byte pairs": lambda s: _unmask_response(s, 56),
    "UnmaskResponse, 76-byte pairs (honest)": lambda s: _unmask_response(s, 68),
    "KeysBroadcast, 72-byte ads (S->C)": _keys_broadcast,
    "RoundComplete, u32 list (S->C)": _u32_list,
    "MaskedInputChunk": _chunk,
}
WIRE: dict[str, Callable[[int], bytes]] = {
    "ShareKeys, 2-byte empty items": _wire_empty_items,
    "ShareKeys, 8-byte items (peer only)": lambda s: _wire_share_keys(s, 0),
    "ShareKeys, 64-byte items (the budget)": lambda s: _wire_share_keys(s, 54),
    "ShareKeys, 182-byte items (honest)": lambda s: _wire_share_keys(s, 172),
    "UnmaskResponse, 12-byte items": lambda s: _wire_unmask(s, 2),
    "UnmaskResponse, 78-byte items (honest)": lambda s: _wire_unmask(s, 68),
    "oneof switching (16/17 x 3 bytes)": lambda s: b"\x78\x01" + b"\x82\x01\x00\x8a\x01\x00" * (s // 6),
    "MaskedInputChunk (read in place)": _wire_chunk,
    "MaskedInputChunk, another form": lambda s: b"\xf8\x07\x01" + _wire_chunk(s),
}


# ------------------------------------------------------------------------------------------- measuring


_MALLINFO2 = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"  # glibc's struct


class _MallInfo(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in _MALLINFO2.split(" ")]


def _malloc_in_use() -> Callable[[], int] | None:
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo

    def used() -> int:
        m = fn()
        return int(m.uordblks + m.hblkhd)

    return used


def _watch_protobuf(wire: Any, arena: list[int]) -> None:
    """Route wire's protobuf parse through a wrapper that records what the parse left allocated."""
    real, used = wire.pb, _malloc_in_use()

    class Envelope:
        @staticmethod
        def FromString(raw: bytes) -> Any:  # noqa: N802 - protobuf's name
            before = used() if used else 0
            env = real.ClientEnvelope.FromString(raw)
            arena.append((used() - before) if used else -1)
            return env

    class Proxy:
        def __getattr__(self, name: str) -> Any:
            return Envelope if name == "ClientEnvelope" else getattr(real, name)

    wire.pb = Proxy()


def _measure(decode: Callable[[bytes], Any], data: bytes, arena: list[int]) -> dict[str, Any]:
    from secagg.errors import EncodingError

    def run() -> str:
        try:
            decode(data)
            return "ok"
        except EncodingError as exc:
            return f"refused: {exc}"

    gc.collect()
    arena.clear()
    tracemalloc.start()
    outcome = run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    pb_arena = max(arena, default=0)
    best = float("inf")
    for _ in range(3):
        gc.collect()
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return {
        "bytes": len(data),
        "peak": peak / len(data),
        "pb_arena": pb_arena / len(data),
        "s_per_mib": best / (len(data) / MiB),
        "outcome": outcome,
    }


def measure_all(size: int) -> dict[str, Any]:
    import secagg
    from secagg.protocol.messages import decode_message
    from secagg.transport import wire

    arena: list[int] = []
    _watch_protobuf(wire, arena)
    out: dict[str, Any] = {"secagg": str(Path(secagg.__file__).parent), "canonical": {}, "wire": {}}
    for name, make in CANONICAL.items():
        out["canonical"][name] = _measure(decode_message, make(size), arena)
    for name, make in WIRE.items():
        out["wire"][name] = _measure(wire.decode_client, make(size), arena)
    return out


def _baseline(rev: str, size: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="decode-cost-") as tmp:
        archive = subprocess.run(["git", "archive", rev, "secagg"], cwd=root, capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        env = {**os.environ, "PYTHONPATH": tmp}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--size", str(size), "--json"]
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=True)
        result: dict[str, Any] = json.loads(done.stdout)
        assert result["secagg"].startswith(tmp), result["secagg"]  # really the baseline's code
        return result


def _row(r: dict[str, Any] | None) -> str:
    if r is None:
        return f"{'':>34}"
    verdict = "ok" if r["outcome"] == "ok" else "refused"
    return f"{r['peak']:6.2f} x {r['pb_arena']:6.2f} x {r['s_per_mib']:8.4f} {verdict:>8}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4 * MiB, help="message size in bytes (default 4 MiB)")
    ap.add_argument("--baseline", metavar="REV", help="also measure the decoders of this git revision")
    ap.add_argument("--json", action="store_true", help="print the measurements as JSON (used for --baseline)")
    args = ap.parse_args(argv)
    now = measure_all(args.size)
    if args.json:
        print(json.dumps(now))
        return 0
    before = _baseline(args.baseline, args.size) if args.baseline else None
    cols = "  peak    pb arena     s/MiB  outcome"
    print(f"message size {args.size / MiB:g} MiB; peak and pb arena per byte of message, time per MiB")
    print(f"{'case':44}{'  before: ' + cols if before else ''}    after:{cols}")
    for path in ("canonical", "wire"):
        print(f"-- {'decode_message' if path == 'canonical' else 'wire.decode_client'}")
        for name, r in now[path].items():
            b = _row(before[path].get(name)) + "   " if before else ""
            print(f"{name:44}{b}  {_row(r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
