"""secagg's adapter for protocols/vectors/run_round.py (the protocol is in ROUND_RUNNER.md).

Run as `python protocols/vectors/adapter_secagg.py`: it reads one JSON request per line on stdin and writes one
JSON response per line on stdout. Each `new_client` builds a `ClientSession` whose random source is scripted
with the recorded secrets (the test seam: `ScriptedRandom` hands out the values in the order this
implementation draws them), each `new_server` a `ServerSession`; `deliver`, `start` and `timeout` feed them.

The draw order is this implementation's own business (SPEC §6.5-§6.7 make it informative): at setup the enc
then the mask X25519 private key (32 bytes each); in the keys stage the self-mask seed b_u (32 bytes), then the
Shamir coefficients of both secrets in one draw (`random_field_elements`: little-endian u32 words, secret b_u
then mask_sk, limb 0..15, degree 1..t-1), then one 12-byte AES-GCM nonce per share ciphertext, recipients
ascending; the stochastic-rounding words come from the separate `rounding_rng` (little-endian u32, one per
coordinate). Another implementation maps the same recorded values onto its own draws.

`generate_round.py` drives its rounds through `Adapter.handle` in process, so the vectors are exactly what
this adapter answers.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections import deque
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg.crypto.keys import IdentityKey
from secagg.protocol.client import ClientInput, ClientSession
from secagg.protocol.config import ClientPolicy, Mode, RoundConfig
from secagg.protocol.ledger import MemoryLedger
from secagg.protocol.messages import ClientAbort, decode_message, encode_message
from secagg.protocol.server import Audit, Send, ServerSession

PROTOCOL = 1
"""Version of the adapter protocol of ROUND_RUNNER.md."""

CLIENT_MESSAGES = (16, 17, 18, 19, 20, 21)


class ScriptedRandom:
    """A RandomSource that hands out recorded values in order, never anything else.

    Each entry is (meaning, bytes). A draw takes the next bytes of the head entry; a draw longer than what is
    left of it is an error (the code asked for something the script does not hold), so a change of this
    implementation's draw order shows up as an error naming the draw, not as silently different bytes.
    """

    def __init__(self, draws: list[tuple[str, bytes]]) -> None:
        self._draws = deque((label, memoryview(value)) for label, value in draws)
        self.taken: list[tuple[str, int]] = []

    def random_bytes(self, n: int) -> bytes:
        """The next n scripted bytes."""
        if not self._draws:
            raise RuntimeError(f"a draw of {n} bytes beyond the scripted values")
        label, value = self._draws[0]
        if n > len(value):
            raise RuntimeError(f"a draw of {n} bytes where the script holds {len(value)} bytes of {label}")
        out, rest = bytes(value[:n]), value[n:]
        if len(rest):
            self._draws[0] = (label, rest)
        else:
            self._draws.popleft()
        self.taken.append((label, n))
        return out

    @property
    def left(self) -> list[str]:
        """Meanings of the values not drawn (yet)."""
        return [label for label, _ in self._draws]


def client_draws(secrets: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The recorded secrets of one client in the order a secagg ClientSession draws them."""
    draws = [
        ("enc_private", bytes.fromhex(secrets["enc_private"])),
        ("mask_private", bytes.fromhex(secrets["mask_private"])),
        ("self_mask_seed", bytes.fromhex(secrets["self_mask_seed"])),
    ]
    coeffs = secrets["shamir_coefficients"]
    words = [a for name in ("self_mask_seed", "mask_private") for limb in coeffs[name] for a in limb]
    if words:
        draws.append(("shamir_coefficients", np.array(words, dtype="<u4").tobytes()))
    for item in sorted(secrets["share_nonces"], key=lambda i: i["recipient"]):
        draws.append((f"share_nonce[{item['recipient']}]", bytes.fromhex(item["nonce"])))
    return draws


def rounding_draws(secrets: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The stochastic-rounding words as the little-endian bytes `random_uint32` reads."""
    return [("rounding_words", np.array(secrets["rounding_words"], dtype="<u4").tobytes())]


def make_policy(spec: dict[str, Any]) -> ClientPolicy:
    """A ClientPolicy from its JSON form (ROUND_RUNNER.md, `policy`)."""
    roster = spec.get("roster")
    max_clip = spec.get("max_clip")
    return ClientPolicy(
        modes=frozenset(Mode(m) for m in spec["modes"]),
        min_clients=spec["min_clients"],
        min_threshold=spec["min_threshold"],
        min_aggregate=spec["min_aggregate"],
        min_modulus_bits=spec["min_modulus_bits"],
        max_clip=math.inf if max_clip is None else float(max_clip),
        min_dp_noise_multiplier=float(spec["min_dp_noise_multiplier"]),
        corrupt_fraction=float(spec["corrupt_fraction"]),
        dropout_fraction=float(spec["dropout_fraction"]),
        require_derived_degree=bool(spec["require_derived_degree"]),
        expected_dim=spec.get("expected_dim"),
        roster=None if roster is None else {int(c): bytes.fromhex(k) for c, k in roster.items()},
    )


def make_input(spec: dict[str, Any]) -> ClientInput:
    """A ClientInput from float32 bit patterns (8 hex digits each, the IEEE-754 binary32 bits) and a weight."""
    bits = np.array([int(b, 16) for b in spec["vector_f32"]], dtype=np.uint32)
    return ClientInput(bits.view(np.float32), int(spec["weight"]))


def spec_state(value: str) -> str:
    """A session state as SPEC §9 names it (IDLE, COLLECT_KEYS, ...)."""
    return value.upper().replace("-", "_")


class Adapter:
    """The sessions of one runner, by handle; `handle` answers one request of the adapter protocol."""

    def __init__(self) -> None:
        self.clients: dict[str, ClientSession] = {}
        self.rngs: dict[str, tuple[ScriptedRandom, ScriptedRandom]] = {}
        self.servers: dict[str, ServerSession] = {}
        self.clocks: dict[str, float] = {}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """The response to one request; an exception becomes {"ok": false, "error": ...}."""
        op = request.get("op")
        method = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if method is None:
            return {"ok": False, "error": f"unknown op {op!r}"}
        try:
            return {"ok": True, **method(request)}
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    # ------------------------------------------------------------------ ops

    def op_hello(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"implementation": "secagg (Python reference)", "protocol": PROTOCOL, "sides": ["client", "server"]}

    def op_reset(self, _: dict[str, Any]) -> dict[str, Any]:
        self.__init__()  # type: ignore[misc]
        return {}

    def op_new_client(self, req: dict[str, Any]) -> dict[str, Any]:
        secrets = req["secrets"]
        rng, rounding = ScriptedRandom(client_draws(secrets)), ScriptedRandom(rounding_draws(secrets))
        identity = secrets.get("identity_private")
        ledger = MemoryLedger()
        for run_id, round_ in req.get("contributed", []):
            ledger.reserve(run_id, round_)
        session = ClientSession(
            int(req["client_id"]),
            rng=rng,
            policy=make_policy(req["policy"]),
            identity=None
            if identity is None
            else IdentityKey(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(identity))),
            ledger=ledger,
            input=make_input(req["input"]),
            chunk_elems=req.get("chunk_elems"),
            rounding_rng=rounding,
        )
        self.clients[req["handle"]] = session
        self.rngs[req["handle"]] = (rng, rounding)
        return {}

    def op_new_server(self, req: dict[str, Any]) -> dict[str, Any]:
        config = RoundConfig.decode(bytes.fromhex(req["config"]))
        roster = req.get("roster")
        server = ServerSession(
            config,
            roster=None if roster is None else {int(c): bytes.fromhex(k) for c, k in roster.items()},
            staging_budget_bytes=req.get("staging_budget_bytes"),
        )
        self.servers[req["handle"]] = server
        self.clocks[req["handle"]] = 0.0
        return {}

    def op_deliver(self, req: dict[str, Any]) -> dict[str, Any]:
        message = decode_message(bytes.fromhex(req["message"]))
        if req["to"] == "client":
            session = self.clients[req["handle"]]
            replies = session.receive(message)  # type: ignore[arg-type]
            return {
                "replies": [encode_message(r).hex() for r in replies],
                "state": spec_state(session.state.value),
                "error_code": None if session.error is None else session.error.code,
            }
        if req["to"] == "server":
            if message.TYPE not in CLIENT_MESSAGES:
                raise ValueError("a server message delivered to the server")
            handle = req["handle"]
            events = self.servers[handle].receive(int(req["from"]), message, self.clocks[handle])  # type: ignore[arg-type]
            return {"events": _events(events)}
        raise ValueError(f"unknown recipient {req['to']!r}")

    def op_start(self, req: dict[str, Any]) -> dict[str, Any]:
        handle = req["handle"]
        return {"events": _events(self.servers[handle].start(self.clocks[handle]))}

    def op_timeout(self, req: dict[str, Any]) -> dict[str, Any]:
        """The current stage's deadline passes: the server closes the stage with whoever answered."""
        handle = req["handle"]
        server = self.servers[handle]
        if math.isfinite(server.deadline):
            self.clocks[handle] = max(self.clocks[handle], server.deadline)
        return {"events": _events(server.poll(self.clocks[handle]))}

    def op_client_state(self, req: dict[str, Any]) -> dict[str, Any]:
        session = self.clients[req["handle"]]
        return {
            "state": spec_state(session.state.value),
            "error_code": None if session.error is None else session.error.code,
            "unused_secrets": [label for rng in self.rngs[req["handle"]] for label in rng.left],
        }

    def op_result(self, req: dict[str, Any]) -> dict[str, Any]:
        server = self.servers[req["handle"]]
        out: dict[str, Any] = {
            "state": spec_state(server.state.value),
            "error_code": None if server.error is None else server.error.code,
            "result": None,
        }
        res = server.result
        if res is not None:
            mean = res.mean
            out["result"] = {
                "session_id": res.session_id.hex(),
                "survivors": list(res.survivors),
                "dropped": list(res.dropped),
                "sum": [str(int(v)) for v in res.sum],
                "total_weight": int(res.total_weight),
                "mean_f32": None if mean is None else [f"{int(b):08x}" for b in mean.view(np.uint32)],
            }
        return out

    def op_quit(self, _: dict[str, Any]) -> dict[str, Any]:
        return {}


def _events(events: list[Send | Audit]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ev in events:
        if isinstance(ev, Send):
            out.append({"kind": "send", "to": ev.to, "message": encode_message(ev.message).hex()})
        else:
            out.append({"kind": "audit", "event": ev.event, "client": ev.client, "detail": ev.detail})
    return out


def abort_code(message_hex: str) -> str | None:
    """The code of a ClientAbort (None for any other message)."""
    msg = decode_message(bytes.fromhex(message_hex))
    return msg.code if isinstance(msg, ClientAbort) else None


def main() -> None:
    """Serve the adapter protocol on stdin / stdout until `quit` or end of input."""
    logging.getLogger("secagg").setLevel(logging.CRITICAL + 1)  # aborts are expected here; stdout is the protocol
    adapter = Adapter()
    for line in sys.stdin:
        if not line.strip():
            continue
        request: Any = None
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            response: dict[str, Any] = {"ok": False, "error": f"not JSON: {exc}"}
        else:
            response = adapter.handle(request) if isinstance(request, dict) else {"ok": False, "error": "not an object"}
        sys.stdout.write(json.dumps(response, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        if isinstance(request, dict) and request.get("op") == "quit":
            break


if __name__ == "__main__":
    main()
