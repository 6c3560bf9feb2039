"""Generate protocols/vectors/round.json: whole rounds as known answers, and negative vectors (SPEC.md §15).

Run `python protocols/vectors/generate_round.py` to regenerate; tests/test_round_vectors.py checks that the file is
exactly what this script writes, replays it through protocols/vectors/run_round.py and recomputes a masked input
and the aggregate by hand from the recorded values.

Unlike transcript.json (hashes of seeded simulations), nothing here depends on our DeterministicRandom: every
value a party would draw at random is fixed in this script (SHA-256 of a label, `fixed`) and written to the file
with its meaning: each client's enc and mask X25519 private keys, its self-mask seed b_u, the coefficients of
its Shamir polynomials, the AES-GCM nonce of each share ciphertext, its stochastic-rounding words, and (hardened)
its Ed25519 identity key. The rounds are driven through `adapter_secagg.Adapter` in process (our ClientSession /
ServerSession, their random sources scripted with those values), in one fixed delivery order (below), and every
message is recorded as its canonical encoding. The values derived from the secrets (shares, share keys, pairwise
seeds, quantised and masked vectors, the masks the server removes, the aggregate) are recomputed here with the
library's primitives and checked against the transcript before they are written.

Delivery order (the order a runner replays): the server's sends are queued in the order it emits them; each is
delivered to its client, whose replies are delivered to the server at once, in order; a send to a client that
has dropped is not delivered. When nothing is queued and the round is not over, the current stage's deadline
passes (`timeout`). A client "dropped at stage S" receives the request that asks for its S reply and never
answers; nothing is delivered to it afterwards.

Negative vectors replay a round up to a point (`after_step`: every step of the party with a smaller index), then
deliver messages a client or the server must refuse, with the outcome this implementation gives; the outcome each
vector is meant to show (`code` / `event`) is written here and checked against it, so a protocol change that
alters an outcome fails the generator instead of silently changing the file.

Bytes are hex; ring elements and other integers that may exceed 2^53 are decimal strings; float32 values are
their IEEE-754 bit patterns as 8 hex digits (big-endian u32 of the bits); floats of the configuration are
canonical text (SPEC §3.2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from secagg.native.quantise import quantise  # type: ignore[import-not-found, unused-ignore]

from secagg.crypto import aead, shamir
from secagg.crypto.keys import IdentityKey, X25519KeyPair
from secagg.crypto.prg import MaskExpander
from secagg.crypto.secret import SecretBytes
from secagg.protocol import recipes
from secagg.protocol.config import Mode, RoundConfig
from secagg.protocol.messages import (
    AdvertiseKeys,
    ClientAbort,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    KeysBroadcast,
    MaskedInputChunk,
    Message,
    RoundComplete,
    ServerAbort,
    SetupRequest,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from secagg.ring import Ring

HERE = Path(__file__).resolve().parent
P = shamir.P


def _load(name: str) -> ModuleType:
    """A sibling module of this directory (the generators run as scripts, not as a package)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ADAPTER = _load("adapter_secagg")
make_config: Callable[[dict[str, Any]], RoundConfig] = _load("generate_protocol").make_config
"""The RoundConfig a config vector describes (the same fields as protocol.json's `configs`)."""
logging.getLogger("secagg").setLevel(logging.CRITICAL + 1)  # the negative vectors make clients abort on purpose


def fixed(label: str, n: int = 32) -> bytes:
    """A fixed byte string named by label: SHA-256("secagg/v1/vectors/round/<label>/<counter>"), counter 0, 1, ..."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"secagg/v1/vectors/round/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


def fixed_u32(label: str) -> int:
    """A fixed u32: the first 4 bytes of fixed(label), little-endian."""
    return int.from_bytes(fixed(label, 4), "little")


def f32_bits(values: list[float]) -> list[str]:
    """float32 bit patterns (8 hex digits) of the values rounded to float32."""
    return [f"{int(b):08x}" for b in np.array(values, dtype=np.float32).view(np.uint32)]


def f32_text(values: list[float]) -> list[str]:
    """The values as float32, written as their shortest decimal text (informative)."""
    return [repr(float(v)) for v in np.array(values, dtype=np.float32)]


INF = float("inf")

# ---------------------------------------------------------------------------------------------- the rounds

ROUNDS: list[dict[str, Any]] = [
    {
        "name": "semi-honest",
        "description": (
            "Semi-honest, n = 5 (ids 3, 5, 8, 13, 21), complete graph (k = 4), t = 2, D = 6, M = 2^32, masked inputs "
            "in chunks of 4 elements. Client 8 drops after advertising keys (in U1, not in U2: it never shares, "
            "so it is in nobody's masked vector); client 13 drops after sharing keys, before its masked input "
            "(in U2, not in U3: the server reconstructs its mask key and removes its pairwise masks)."
        ),
        "config": {
            "run_id": "round-vectors",
            "round": 1,
            "participants": [3, 5, 8, 13, 21],
            "mode": "semi-honest",
            "k": 4,
            "t": 2,
            "graph_seed": fixed("semi-honest/graph-seed").hex(),
            "dim": 6,
            "modulus": str(1 << 32),
            "clip": "1.0",
            "bits": 16,
            "max_weight": 4,
            "min_aggregate": 3,
            "model_hash": fixed("semi-honest/model-hash").hex(),
            "dp_noise_multiplier": "0.0",
            "input_encoding": "quantised",
        },
        "chunk_elems": 4,
        "inputs": {
            3: ([0.5, -0.25, 1.5, -1.0, 0.0, 0.75], 2),
            5: ([-0.125, 0.3, -2.0, 1.0, -0.0, 0.999], 1),
            8: ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3),
            13: ([-0.9, 0.9, -0.5, 0.5, 0.01, -0.01], 4),
            21: ([INF, -INF, 0.333, -0.666, 1e-8, 0.0625], 3),
        },
        "drops": {8: "share-keys", 13: "masked-input"},
        "rounding_extremes": 3,
    },
    {
        "name": "hardened",
        "description": (
            "Hardened, n = 7 (ids 2, 3, 5, 7, 11, 13, 17), complete graph (k = 6), t = 4, D = 6, M = 2^64, one chunk "
            "per masked input, identities pinned in every client's roster. Client 5 drops after advertising keys "
            "(in U1 only); client 13 after sharing keys, before its masked input (in U2 only: its mask key is "
            "reconstructed); client 11 during the consistency check (its input is in the sum, U3, but it never "
            "signs, so it is not in U4 and is not asked to unmask). The signature quorum is "
            "floor(|U1| / 2) + 1 = 4 = |U4|."
        ),
        "config": {
            "run_id": "round-vectors",
            "round": 2,
            "participants": [2, 3, 5, 7, 11, 13, 17],
            "mode": "hardened",
            "k": 6,
            "t": 4,
            "graph_seed": fixed("hardened/graph-seed").hex(),
            "dim": 6,
            "modulus": str(1 << 64),
            "clip": "0.5",
            "bits": 20,
            "max_weight": 4,
            "min_aggregate": 3,
            "model_hash": fixed("hardened/model-hash").hex(),
            "dp_noise_multiplier": "1.0",
            "input_encoding": "quantised",
        },
        "chunk_elems": None,
        "inputs": {
            2: ([0.25, -0.125, 0.0, 0.5, -0.5, 0.0001], 1),
            3: ([-0.3, 0.3, 0.7, -0.7, 0.05, -0.05], 2),
            5: ([0.1, 0.1, 0.1, 0.1, 0.1, 0.1], 4),
            7: ([0.49, -0.49, 0.2, -0.2, 0.125, 0.375], 3),
            11: ([-0.01, 0.02, -0.03, 0.04, -0.05, 0.06], 4),
            13: ([0.4, 0.3, 0.2, 0.1, 0.0, -0.1], 2),
            17: ([0.0, -0.0, 0.4999, -0.4999, 0.25, -0.25], 1),
        },
        "drops": {5: "share-keys", 13: "masked-input", 11: "consistency-check"},
        "rounding_extremes": 17,
    },
]

REPLY_STAGE = {
    "SetupRequest": "advertise-keys",
    "KeysBroadcast": "share-keys",
    "SharesDelivery": "masked-input",
    "ConsistencyRequest": "consistency-check",
    "UnmaskRequest": "unmask",
    "RoundComplete": "end",
    "ServerAbort": "end",
}
"""The stage whose reply a server message asks for (a client dropped at that stage never answers it)."""

MESSAGE_STAGE = {
    "AdvertiseKeys": "advertise-keys",
    "ShareKeys": "share-keys",
    "MaskedInputChunk": "masked-input",
    "ConsistencySignature": "consistency-check",
    "UnmaskResponse": "unmask",
    "ClientAbort": "any",
}

SERVER_STAGE = {
    "COLLECT_KEYS": "advertise-keys",
    "COLLECT_SHARES": "share-keys",
    "COLLECT_MASKED": "masked-input",
    "COLLECT_SIGNATURES": "consistency-check",
    "COLLECT_UNMASK": "unmask",
}

DROP_MEANING = {
    "share-keys": "receives KeysBroadcast and never sends ShareKeys (dropped after advertising keys)",
    "masked-input": "receives SharesDelivery and never sends its masked input (dropped after sharing keys)",
    "consistency-check": "receives ConsistencyRequest and never signs (dropped during the consistency check)",
    "unmask": "receives UnmaskRequest and never answers (dropped during unmasking)",
}


def client_secrets(name: str, cid: int, cfg: RoundConfig, extremes: bool) -> dict[str, Any]:
    """Every value client `cid` draws at random in round `name`, fixed by labels, with its meaning as its key.

    Values a client never reaches (a client that drops before sharing never draws its seed) are listed too; the
    positive round records which ones went unused."""
    base = f"{name}/client-{cid}"
    coefficients: dict[str, list[list[int]]] = {}
    for secret in ("self_mask_seed", "mask_private"):
        rows = []
        for limb in range(shamir.LIMBS):
            row = []
            for degree in range(1, cfg.t):
                value = fixed_u32(f"{base}/shamir/{secret}/limb-{limb}/degree-{degree}") & 0x7FFFFFFF
                assert value != P
                row.append(value)
            rows.append(row)
        coefficients[secret] = rows
    recipients = [p for p in cfg.participants if p != cid]  # complete graph: every other client (if it has keys)
    words = [fixed_u32(f"{base}/rounding/{i}") for i in range(cfg.dim)]
    if extremes:  # both ends of the rounding range (SPEC 6.7): r = 0 rounds down, r = 2^32 - 1 almost always up
        words[0], words[1] = 0, 0xFFFFFFFF
    return {
        "enc_private": fixed(f"{base}/enc-private").hex(),
        "mask_private": fixed(f"{base}/mask-private").hex(),
        "self_mask_seed": fixed(f"{base}/self-mask-seed").hex(),
        "shamir_coefficients": coefficients,
        "share_nonces": [{"recipient": v, "nonce": fixed(f"{base}/share-nonce/{v}", 12).hex()} for v in recipients],
        "rounding_words": words,
        "identity_private": fixed(f"{base}/identity-private").hex() if cfg.mode is Mode.HARDENED else None,
    }


def identity_public(private_hex: str) -> bytes:
    return IdentityKey(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex))).public_bytes


def x25519_public(private_hex: str) -> bytes:
    return X25519KeyPair(SecretBytes(bytes.fromhex(private_hex))).public_bytes


def policy_json(roster: dict[int, bytes] | None) -> dict[str, Any]:
    """Every client's policy (SPEC §10.1 fields): both modes, the complete graph derived with no corrupt or dropped
    fraction assumed, floors at the defaults."""
    return {
        "modes": ["semi-honest", "hardened"],
        "min_clients": 2,
        "min_threshold": 2,
        "min_aggregate": 2,
        "min_modulus_bits": 32,
        "max_clip": None,
        "min_dp_noise_multiplier": 0.0,
        "corrupt_fraction": 0.0,
        "dropout_fraction": 0.0,
        "require_derived_degree": True,
        "expected_dim": None,
        "roster": None if roster is None else {str(c): k.hex() for c, k in sorted(roster.items())},
    }


def config_json(cfg: RoundConfig, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        **spec,
        "encoding": cfg.encode().hex(),
        "config_hash": cfg.config_hash().hex(),
        "round_tag": cfg.round_tag().hex(),
    }


def type_name(message_hex: str) -> str:
    return type(decode_message(bytes.fromhex(message_hex))).__name__


def split_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Adapter events as a step records them: the sends (bytes) and the audits (event and client)."""
    return {
        "sends": [
            {"to": e["to"], "type": type_name(e["message"]), "message": e["message"]}
            for e in events
            if e["kind"] == "send"
        ],
        "audits": [{"event": e["event"], "client": e["client"]} for e in events if e["kind"] == "audit"],
    }


def call(adapter: Any, request: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = adapter.handle(request)
    if not response.get("ok"):
        raise RuntimeError(f"adapter refused {request.get('op')}: {response.get('error')}")
    return response


# ---------------------------------------------------------------------------------------------- one round


class Record:
    """A positive round as driven: its inputs, every step, and what the library made of it. (A plain class: the
    tests load this script without registering it as a module, which dataclasses need.)"""

    def __init__(
        self, spec: dict[str, Any], config: RoundConfig, policy: dict[str, Any], clients: dict[int, dict[str, Any]]
    ) -> None:
        self.spec = spec
        self.config = config
        self.policy = policy
        self.clients = clients  # id -> new_client parameters (secrets, input, policy, chunk_elems, contributed)
        self.steps: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {}
        self.final: dict[int, dict[str, Any]] = {}

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def find(self, op: str, party: int | None, kind: str, nth: int = 0) -> int:
        """Index of the nth step `op` to or from `party` carrying a message of type `kind`."""
        hits = [
            s["index"]
            for s in self.steps
            if s["op"] == op
            and (party is None or s.get("to" if op == "to_client" else "from") == party)
            and s.get("type") == kind
        ]
        return int(hits[nth])

    def message(self, index: int) -> Any:
        return decode_message(bytes.fromhex(self.steps[index]["message"]))

    def sent(self, kind: str, to: int) -> Any:
        """The first message of type `kind` the server sent to `to` (delivered or not)."""
        for s in self.steps:
            for send in s.get("sends", []):
                if send["to"] == to and send["type"] == kind:
                    return decode_message(bytes.fromhex(send["message"]))
        raise KeyError((kind, to))

    def new_client(self, cid: int, handle: str, **overrides: Any) -> dict[str, Any]:
        params = {"op": "new_client", "handle": handle, "client_id": cid, **self.clients[cid]}
        params.update(overrides)
        return params

    def new_server(self, handle: str) -> dict[str, Any]:
        roster = self.policy["roster"]
        return {"op": "new_server", "handle": handle, "config": self.config.encode().hex(), "roster": roster}


def drive(spec: dict[str, Any]) -> Record:
    """Run one round through the in-process adapter in the delivery order of the module docstring."""
    cfg = make_config(spec["config"])
    hardened = cfg.mode is Mode.HARDENED
    secrets = {c: client_secrets(spec["name"], c, cfg, c == spec["rounding_extremes"]) for c in cfg.participants}
    roster = {c: identity_public(s["identity_private"]) for c, s in secrets.items()} if hardened else None
    policy = policy_json(roster)
    clients: dict[int, dict[str, Any]] = {}
    for c in cfg.participants:
        values, weight = spec["inputs"][c]
        clients[c] = {
            "secrets": secrets[c],
            "input": {"vector_f32": f32_bits(values), "weight": weight},
            "policy": policy,
            "chunk_elems": spec["chunk_elems"],
            "contributed": [],
        }
    adapter = ADAPTER.Adapter()
    record = Record(spec, cfg, policy, clients)
    call(adapter, record.new_server("server"))
    for c in cfg.participants:
        call(adapter, record.new_client(c, f"client-{c}"))
    steps = record.steps

    def add(step: dict[str, Any]) -> None:
        step["index"] = len(steps)
        steps.append(step)

    events = call(adapter, {"op": "start", "handle": "server"})["events"]
    add({"op": "start", **split_events(events)})
    queue = deque(e for e in events if e["kind"] == "send")
    gone: set[int] = set()
    drops: dict[int, str] = spec["drops"]
    while True:
        while queue:
            send = queue.popleft()
            to, message = send["to"], send["message"]
            kind = type_name(message)
            if to in gone:
                continue
            if drops.get(to) == REPLY_STAGE[kind]:
                gone.add(to)
                continue
            reply = call(adapter, {"op": "deliver", "to": "client", "handle": f"client-{to}", "message": message})
            add(
                {
                    "op": "to_client",
                    "to": to,
                    "stage": REPLY_STAGE[kind],
                    "type": kind,
                    "message": message,
                    "replies": [{"type": type_name(r), "message": r} for r in reply["replies"]],
                    "state_after": reply["state"],
                }
            )
            for r in reply["replies"]:
                out = call(adapter, {"op": "deliver", "to": "server", "handle": "server", "from": to, "message": r})
                rkind = type_name(r)
                add(
                    {
                        "op": "to_server",
                        "from": to,
                        "stage": MESSAGE_STAGE[rkind],
                        "type": rkind,
                        "message": r,
                        **split_events(out["events"]),
                    }
                )
                queue.extend(e for e in out["events"] if e["kind"] == "send")
        status = call(adapter, {"op": "result", "handle": "server"})
        if status["state"] in ("DONE", "ABORTED"):
            break
        out = call(adapter, {"op": "timeout", "handle": "server"})
        add({"op": "timeout", "closes": SERVER_STAGE[status["state"]], **split_events(out["events"])})
        queue.extend(e for e in out["events"] if e["kind"] == "send")
    if status["state"] != "DONE":
        raise RuntimeError(f"round {spec['name']} did not complete: {status}")
    record.result = {"state": "DONE", "error_code": None, "result": status["result"]}
    for c in cfg.participants:
        record.final[c] = call(adapter, {"op": "client_state", "handle": f"client-{c}"})
    return record


# ---------------------------------------------------------------------------------------------- derived values


def ring_list(values: Any) -> list[str]:
    return [str(int(v)) for v in values]


def derive(record: Record) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The server's side and every client's derived values, computed with the library's primitives from the
    recorded secrets and checked against the transcript."""
    cfg = record.config
    ring = Ring(cfg.modulus)
    expander = MaskExpander(ring)
    m, dim, t = cfg.modulus, cfg.dim, cfg.t
    hood = recipes.neighbourhoods(cfg.participants, cfg.k, cfg.graph_seed)
    steps = record.steps
    sec = {c: v["secrets"] for c, v in record.clients.items()}
    enc = {c: X25519KeyPair(SecretBytes(bytes.fromhex(s["enc_private"]))) for c, s in sec.items()}
    mask = {c: X25519KeyPair(SecretBytes(bytes.fromhex(s["mask_private"]))) for c, s in sec.items()}
    kb = next(record.message(s["index"]) for s in steps if s.get("type") == "KeysBroadcast")
    sid = kb.session_id
    u1 = [a.client_id for a in kb.advertisements]
    share_keys_msgs = {s["from"]: record.message(s["index"]) for s in steps if s.get("type") == "ShareKeys"}
    deliveries = {s["to"]: record.message(s["index"]) for s in steps if s.get("type") == "SharesDelivery"}
    chunks: dict[int, list[MaskedInputChunk]] = {}
    for s in steps:
        if s["op"] == "to_server" and s["type"] == "MaskedInputChunk":
            chunks.setdefault(s["from"], []).append(record.message(s["index"]))
    u2 = sorted(share_keys_msgs)
    unmask_requests = {
        send["to"]: decode_message(bytes.fromhex(send["message"]))
        for s in steps
        for send in s.get("sends", [])
        if send["type"] == "UnmaskRequest"
    }
    if cfg.mode is Mode.HARDENED:
        u3 = sorted(record.sent("ConsistencyRequest", u2[0]).survivors)
        u4: list[int] | None = sorted(unmask_requests)
    else:
        u3, u4 = sorted(unmask_requests), None
    responses = {s["from"]: record.message(s["index"]) for s in steps if s.get("type") == "UnmaskResponse"}
    dropped = [c for c in u2 if c not in u3]

    def seed_of(c: int) -> SecretBytes:
        return SecretBytes(bytes.fromhex(sec[c]["self_mask_seed"]))

    clients_out: list[dict[str, Any]] = []
    plain: dict[int, list[int]] = {}
    masked: dict[int, list[int]] = {}
    for c in cfg.participants:
        spec = record.clients[c]
        derived: dict[str, Any] = {
            "enc_public": enc[c].public_bytes.hex(),
            "mask_public": mask[c].public_bytes.hex(),
        }
        if sec[c]["identity_private"] is not None:
            derived["identity_public"] = identity_public(sec[c]["identity_private"]).hex()
        if c in share_keys_msgs:
            sent = share_keys_msgs[c]
            peers = sorted(hood.of(c) & set(u1))
            xs = sorted([*peers, c])
            derived["neighbours_with_keys"] = peers
            shares: dict[str, list[dict[str, Any]]] = {}
            for secret, value in (("self_mask_seed", seed_of(c)), ("mask_private", mask[c].private)):
                limbs = [int.from_bytes(value.expose_secret()[2 * j : 2 * j + 2], "big") for j in range(16)]
                rows = []
                for x in xs:
                    ys = []
                    for j in range(16):
                        coeffs = [limbs[j], *sec[c]["shamir_coefficients"][secret][j]]
                        ys.append(sum(a * pow(x, d, P) for d, a in enumerate(coeffs)) % P)
                    rows.append({"x": x, "share": shamir.Share(x, tuple(ys)).to_bytes().hex()})
                shares[secret] = rows
            derived["shares"] = shares
            by_x = {secret: {r["x"]: bytes.fromhex(r["share"]) for r in rows} for secret, rows in shares.items()}
            cts = dict(sent.ciphertexts)
            per_peer = []
            for v in peers:
                key = recipes.share_key(enc[c], enc[v].public_bytes, sid, c, v)
                ad = recipes.share_associated_data(sid, c, v)
                plaintext = recipes.encode_share_plaintext(c, v, by_x["self_mask_seed"][v], by_x["mask_private"][v])
                nonce = next(n["nonce"] for n in sec[c]["share_nonces"] if n["recipient"] == v)
                assert cts[v][:12].hex() == nonce
                assert aead.open_sealed(key, cts[v], associated_data=ad) == plaintext
                per_peer.append(
                    {
                        "recipient": v,
                        "share_key": key.expose_secret().hex(),
                        "associated_data": ad.hex(),
                        "plaintext": plaintext.hex(),
                        "ciphertext": cts[v].hex(),
                    }
                )
            derived["share_ciphertexts"] = per_peer
            commitment = recipes.seed_commitment(sid, c, seed_of(c))
            assert commitment == sent.seed_commitment
            derived["seed_commitment"] = commitment.hex()
        if c in chunks:
            live = sorted(s for s, _ in deliveries[c].ciphertexts)
            derived["live_neighbours"] = live
            vector = np.array([int(b, 16) for b in spec["input"]["vector_f32"]], dtype=np.uint32).view(np.float32)
            words = np.array(sec[c]["rounding_words"], dtype=np.uint32)
            weight = spec["input"]["weight"]
            q = quantise(vector, cfg.clip, cfg.bits, weight, words, m)
            plain[c] = [int(v) for v in q] + [weight]
            self_mask = expander.expand(seed_of(c), 0, dim + 1)
            y = [(a + int(b)) % m for a, b in zip(plain[c], self_mask, strict=True)]
            pairwise = []
            for v in live:
                seed = recipes.pairwise_seed(mask[c].agree(mask[v].public_bytes), sid, c, v)
                sign = recipes.pairwise_sign(c, v)
                prg = expander.expand(seed, 0, dim + 1)
                y = [(a + sign * int(b)) % m for a, b in zip(y, prg, strict=True)]
                pairwise.append({"peer": v, "seed": seed.expose_secret().hex(), "sign": sign, "mask": ring_list(prg)})
            sent_y = [int(v) for ch in chunks[c] for v in ch.data]
            assert sent_y == y, f"client {c}: masked input differs from the recomputation"
            masked[c] = y
            derived["quantised"] = ring_list(plain[c][:dim])
            derived["plain_vector"] = ring_list(plain[c])
            derived["self_mask"] = ring_list(self_mask)
            derived["pairwise_masks"] = pairwise
            derived["masked_input"] = ring_list(y)
        values, _ = record.spec["inputs"][c]
        final = record.final[c]
        clients_out.append(
            {
                "id": c,
                "input": {**spec["input"], "vector_text": f32_text(values)},
                "secrets": sec[c],
                "derived": derived,
                "dropout": None
                if c not in record.spec["drops"]
                else {"stage": record.spec["drops"][c], "meaning": DROP_MEANING[record.spec["drops"][c]]},
                "final_state": final["state"],
                "unused_secrets": final["unused_secrets"],
            }
        )

    # the server's unmasking, from the shares revealed in the UnmaskResponses
    revealed_seed: dict[int, list[tuple[int, bytes]]] = {}
    revealed_key: dict[int, list[tuple[int, bytes]]] = {}
    for r in sorted(responses):
        for owner, blob in responses[r].seed_shares:
            revealed_seed.setdefault(owner, []).append((r, blob))
        for owner, blob in responses[r].key_shares:
            revealed_key.setdefault(owner, []).append((r, blob))
    reconstructed_seeds, reconstructed_keys = [], []
    for owner in u3:
        used = revealed_seed[owner][:t]
        recovered = shamir.reconstruct([shamir.Share.from_bytes(b) for _, b in used], t)
        assert recovered.expose_secret() == seed_of(owner).expose_secret()
        reconstructed_seeds.append(
            {"owner": owner, "xs": [x for x, _ in used], "self_mask_seed": recovered.expose_secret().hex()}
        )
    for owner in dropped:
        used = revealed_key[owner][:t]
        recovered = shamir.reconstruct([shamir.Share.from_bytes(b) for _, b in used], t)
        assert recovered.expose_secret() == mask[owner].private.expose_secret()
        reconstructed_keys.append(
            {"owner": owner, "xs": [x for x, _ in used], "mask_private": recovered.expose_secret().hex()}
        )
    masked_sum = [sum(masked[c][i] for c in u3) % m for i in range(dim + 1)]
    removed = []
    total = [0] * (dim + 1)
    for owner in u3:
        prg = expander.expand(seed_of(owner), 0, dim + 1)
        removed.append({"kind": "self-mask", "owner": owner, "sign": -1, "vector": ring_list(prg)})
        total = [(a - int(b)) % m for a, b in zip(total, prg, strict=True)]
    for gone in dropped:
        for peer in sorted(hood.of(gone) & set(u3)):
            seed = recipes.pairwise_seed(mask[gone].agree(mask[peer].public_bytes), sid, peer, gone)
            sign = -recipes.pairwise_sign(peer, gone)
            prg = expander.expand(seed, 0, dim + 1)
            removed.append(
                {
                    "kind": "pairwise",
                    "survivor": peer,
                    "dropped": gone,
                    "seed": seed.expose_secret().hex(),
                    "sign": sign,
                    "vector": ring_list(prg),
                }
            )
            total = [(a + sign * int(b)) % m for a, b in zip(total, prg, strict=True)]
    unmasked = [(a + b) % m for a, b in zip(masked_sum, total, strict=True)]
    plain_sum = [sum(plain[c][i] for c in u3) % m for i in range(dim + 1)]
    assert unmasked == plain_sum, "unmasking does not give the plaintext sum"
    result = record.result["result"]
    assert ring_list(unmasked[:dim]) == result["sum"] and unmasked[dim] == result["total_weight"]
    assert result["survivors"] == u3 and result["dropped"] == dropped
    qmax = (1 << cfg.bits) - 1
    mean = [(np.float64(s) / np.float64(unmasked[dim])) * (2.0 * cfg.clip / qmax) - cfg.clip for s in unmasked[:dim]]
    assert f32_bits([float(v) for v in mean]) == result["mean_f32"]
    server = {
        "session_id": sid.hex(),
        "U1": u1,
        "U2": u2,
        "U3": u3,
        "U4": u4,
        "responders": sorted(responses),
        "dropped": dropped,
        "reconstructed_seeds": reconstructed_seeds,
        "reconstructed_mask_keys": reconstructed_keys,
        "masked_sum": ring_list(masked_sum),
        "removed": removed,
        "removed_total": ring_list(total),
        "unmasked": ring_list(unmasked),
        "plain_sum": ring_list(plain_sum),
        "result": result,
    }
    return server, clients_out


# ---------------------------------------------------------------------------------------------- negatives


def enc(message: Message) -> str:
    return encode_message(message).hex()


def flip(data: bytes, position: int = 0) -> bytes:
    """data with one byte flipped (all 8 bits)."""
    out = bytearray(data)
    out[position] ^= 0xFF
    return bytes(out)


def u_coordinate(u: int) -> bytes:
    """An X25519 public key from its u-coordinate (little-endian, RFC 7748)."""
    return u.to_bytes(32, "little")


SMALL_ORDER = u_coordinate(1)
SMALL_ORDER_BIG = u_coordinate(325606250916557431795983626356110631294008115727848805560023387167927233504)


def fresh_public(label: str) -> bytes:
    return X25519KeyPair(SecretBytes(fixed(f"negative/{label}"))).public_bytes


def with_sid(kb: KeysBroadcast, ads: list[KeyAdvertisement]) -> KeysBroadcast:
    """A broadcast of these advertisements with the session id recomputed (so only the intended check fails)."""
    return KeysBroadcast(kb.round_tag, recipes.session_id(kb.round_tag, ads), tuple(ads))


def replace_ad(ads: tuple[KeyAdvertisement, ...], cid: int, **fields: Any) -> list[KeyAdvertisement]:
    return [dataclasses.replace(a, **fields) if a.client_id == cid else a for a in ads]


class Negatives:
    """The negative vectors of both rounds; each method returns one vector (before its outcome is recorded)."""

    def __init__(self, records: dict[str, Record]) -> None:
        self.s = records["semi-honest"]
        self.h = records["hardened"]

    def share_key(self, record: Record, a: int, b: int) -> SecretBytes:
        sec = record.clients
        own = X25519KeyPair(SecretBytes(bytes.fromhex(sec[a]["secrets"]["enc_private"])))
        peer = X25519KeyPair(SecretBytes(bytes.fromhex(sec[b]["secrets"]["enc_private"])))
        return recipes.share_key(own, peer.public_bytes, self.sid(record), a, b)

    @staticmethod
    def sid(record: Record) -> bytes:
        return bytes(
            next(record.message(s["index"]) for s in record.steps if s.get("type") == "KeysBroadcast").session_id
        )

    def genuine_plaintext(self, record: Record, sender: int, recipient: int) -> tuple[bytes, SecretBytes]:
        sd = record.sent("SharesDelivery", recipient)
        ct = dict(sd.ciphertexts)[sender]
        key = self.share_key(record, sender, recipient)
        ad = recipes.share_associated_data(self.sid(record), sender, recipient)
        return aead.open_sealed(key, ct, associated_data=ad), key

    def forged_ct(self, record: Record, sender: int, recipient: int, plaintext: bytes, label: str) -> bytes:
        """A ciphertext that authenticates from sender to recipient (the key and AD are right) over `plaintext`."""
        key = self.share_key(record, sender, recipient)
        ad = recipes.share_associated_data(self.sid(record), sender, recipient)
        nonce = fixed(f"negative/{label}/nonce", 12)
        return aead.seal(key, plaintext, associated_data=ad, rng=ADAPTER.ScriptedRandom([("nonce", nonce)]))

    # -- client side ------------------------------------------------------------------------------------

    def client(
        self,
        name: str,
        record: Record,
        cid: int,
        after: int,
        message: Message,
        what: str,
        code: str | None,
        kind: str,
        spec: str,
        scenario: str | None = None,
        overrides: dict[str, Any] | None = None,
        state: str | None = None,
    ) -> dict[str, Any]:
        return {
            "name": name,
            "round": record.name,
            "party": "client",
            "client": cid,
            "after_step": after,
            "deliveries": [{"op": "deliver", "type": type(message).__name__, "message": enc(message), "what": what}],
            "overrides": overrides or {},
            "declared": {"code": code, "kind": kind, "state": state},
            "spec": spec,
            "scenario": scenario,
        }

    def client_vectors(self) -> list[dict[str, Any]]:
        s, h = self.s, self.h
        out: list[dict[str, Any]] = []
        cfg = s.config
        setup = s.find("to_client", 3, "SetupRequest")
        genuine_setup = s.message(setup)
        pol = s.policy

        def refuse_setup(name: str, what: str, code: str, kind: str = "REFUSE", **policy: Any) -> None:
            out.append(
                self.client(
                    name,
                    s,
                    3,
                    setup,
                    genuine_setup,
                    what,
                    code,
                    kind,
                    "10.1",
                    "A7",
                    overrides={"policy": {**pol, **policy}},
                )
            )

        def setup_with(
            name: str, what: str, code: str, kind: str = "REFUSE", record: Record = s, cid: int = 3, **fields: Any
        ) -> None:
            at = record.find("to_client", cid, "SetupRequest")
            msg = SetupRequest(dataclasses.replace(record.config, **fields))
            out.append(self.client(name, record, cid, at, msg, what, code, kind, "10.1", "A7"))

        # 10.1 setup
        setup_with(
            "setup-not-invited",
            "a configuration whose participants omit client 3",
            "NOT_INVITED",
            participants=(5, 8, 13, 21),
            k=3,
        )
        refuse_setup("setup-mode", "policy accepts only hardened rounds", "MODE", modes=["hardened"])
        refuse_setup(
            "setup-too-few-clients", "policy needs at least 6 clients (n = 5)", "TOO_FEW_CLIENTS", min_clients=6
        )
        refuse_setup("setup-threshold", "policy needs t >= 3 (t = 2)", "THRESHOLD", min_threshold=3)
        refuse_setup(
            "setup-min-aggregate", "policy needs min_aggregate >= 4 (3 proposed)", "MIN_AGGREGATE", min_aggregate=4
        )
        refuse_setup("setup-modulus", "policy needs M >= 2^33 (M = 2^32)", "MODULUS", min_modulus_bits=33)
        refuse_setup("setup-clip", "policy allows clip <= 0.5 (clip = 1.0)", "CLIP", max_clip=0.5)
        refuse_setup(
            "setup-dp-noise", "policy needs noise multiplier >= 0.5 (0.0)", "DP_NOISE", min_dp_noise_multiplier=0.5
        )
        refuse_setup("setup-dimension", "policy expects D = 7 (D = 6)", "DIMENSION", expected_dim=7)
        refuse_setup(
            "setup-parameters",
            "policy assumes 3 of 5 clients may drop: t = 2 cannot be met by the 1 live neighbour left (SPEC 4)",
            "PARAMETERS",
            dropout_fraction=0.6,
        )
        refuse_setup(
            "setup-min-aggregate-corrupt",
            "policy assumes 2 corrupt clients: an aggregate of 3 could hold one honest input (needs C + 2 = 4)",
            "MIN_AGGREGATE",
            corrupt_fraction=0.4,
        )
        setup_with(
            "setup-graph-degree",
            "a sparse graph (k = 2) where the policy derives the complete graph (k = 4)",
            "GRAPH_DEGREE",
            k=2,
        )
        setup_with(
            "setup-no-roster",
            "a hardened configuration (t = 3) to a client whose policy has no roster",
            "NO_ROSTER",
            mode=Mode.HARDENED,
            t=3,
        )
        setup_with(
            "setup-unknown-identity",
            "participant 17 replaced by 19, which is not in the roster",
            "UNKNOWN_IDENTITY",
            "ABORT",
            record=h,
            cid=2,
            participants=(2, 3, 5, 7, 11, 13, 19),
        )
        out.append(
            self.client(
                "setup-already-contributed",
                s,
                3,
                setup,
                genuine_setup,
                "the client's ledger already holds a contribution to (run_id, round)",
                "ALREADY_CONTRIBUTED",
                "REFUSE",
                "10.1",
                "A10",
                overrides={"contributed": [[cfg.run_id, cfg.round]]},
            )
        )
        h_setup = h.find("to_client", 2, "SetupRequest")
        out.append(
            self.client(
                "setup-no-identity",
                h,
                2,
                h_setup,
                h.message(h_setup),
                "a hardened round to a client without an identity key",
                "NO_IDENTITY",
                "REFUSE",
                "10.1",
                overrides={"secrets": {**h.clients[2]["secrets"], "identity_private": None}},
            )
        )
        keys = s.find("to_client", 3, "KeysBroadcast")
        kb: KeysBroadcast = s.message(keys)
        out.append(
            self.client(
                "idle-unexpected-keys",
                s,
                3,
                setup,
                kb,
                "a KeysBroadcast before any SetupRequest",
                "UNEXPECTED_MESSAGE",
                "ABORT",
                "9.1",
            )
        )

        # 10.2 keys
        ads = kb.advertisements

        def keys_vector(name: str, msg: KeysBroadcast, what: str, code: str, scenario: str | None = None) -> None:
            out.append(self.client(name, s, 3, keys, msg, what, code, "ABORT", "10.2", scenario))

        keys_vector(
            "keys-round-mismatch",
            dataclasses.replace(kb, round_tag=flip(kb.round_tag)),
            "round tag with its first byte flipped",
            "ROUND_MISMATCH",
            "A9",
        )
        keys_vector(
            "keys-bad-key-list",
            dataclasses.replace(kb, advertisements=(ads[0], ads[2], ads[1], *ads[3:])),
            "advertisements of 5 and 8 swapped (not ascending)",
            "BAD_KEY_LIST",
        )
        stranger = KeyAdvertisement(4, fresh_public("stranger-enc"), fresh_public("stranger-mask"), b"")
        keys_vector(
            "keys-unknown-identity",
            with_sid(kb, [ads[0], stranger, *ads[1:]]),
            "an extra advertisement from 4, not a participant (session id recomputed)",
            "UNKNOWN_IDENTITY",
            "A6",
        )
        keys_vector(
            "keys-own-key-substituted",
            with_sid(kb, replace_ad(ads, 3, enc_public=fresh_public("substitute"))),
            "client 3's enc key replaced (session id recomputed)",
            "KEY_SUBSTITUTED",
            "A8",
        )
        keys_vector(
            "keys-own-advertisement-missing",
            with_sid(kb, list(ads[1:])),
            "client 3's advertisement left out (session id recomputed)",
            "KEY_SUBSTITUTED",
            "A8",
        )
        keys_vector(
            "keys-session-id-mismatch",
            dataclasses.replace(kb, session_id=flip(kb.session_id)),
            "session id with its first byte flipped",
            "SESSION_ID_MISMATCH",
            "A8",
        )
        keys_vector(
            "keys-small-order-key",
            with_sid(kb, replace_ad(ads, 5, mask_public=SMALL_ORDER)),
            "client 5's mask key replaced by the small-order point u = 1 (session id recomputed)",
            "INVALID_PEER_KEY",
            "A12",
        )
        keys_vector(
            "keys-small-order-key-2",
            with_sid(kb, replace_ad(ads, 21, enc_public=SMALL_ORDER_BIG)),
            "client 21's enc key replaced by a point of order 8 (session id recomputed)",
            "INVALID_PEER_KEY",
            "A12",
        )
        keys_vector(
            "keys-key-reuse",
            with_sid(kb, replace_ad(ads, 8, enc_public=ads[1].mask_public)),
            "client 8 advertises client 5's mask key as its enc key (session id recomputed)",
            "KEY_REUSE",
        )
        keys_vector(
            "keys-too-few-neighbours",
            with_sid(kb, [ads[0]]),
            "only client 3's own advertisement (session id recomputed): no neighbour, t = 2",
            "TOO_FEW_NEIGHBOURS",
            "C5",
        )
        h_keys = h.find("to_client", 2, "KeysBroadcast")
        hkb: KeysBroadcast = h.message(h_keys)
        hads = hkb.advertisements
        bad_sig = replace_ad(hads, 3, signature=flip(hads[1].signature, 10))
        out.append(
            self.client(
                "keys-bad-key-signature",
                h,
                2,
                h_keys,
                dataclasses.replace(hkb, advertisements=tuple(bad_sig)),
                "client 3's advertisement signature with byte 10 flipped",
                "BAD_KEY_SIGNATURE",
                "ABORT",
                "10.2",
                "A5",
            )
        )
        unsigned = replace_ad(hads, 7, signature=b"")
        out.append(
            self.client(
                "keys-unsigned-key",
                h,
                2,
                h_keys,
                dataclasses.replace(hkb, advertisements=tuple(unsigned)),
                "client 7's advertisement without its signature",
                "BAD_KEY_SIGNATURE",
                "ABORT",
                "10.2",
                "A5",
            )
        )
        out.append(
            self.client(
                "keys-too-few-neighbours-hardened",
                h,
                2,
                h_keys,
                with_sid(hkb, list(hads[:3])),
                "advertisements of 2, 3 and 5 only (session id recomputed): 2 neighbours + 1 < t = 4",
                "TOO_FEW_NEIGHBOURS",
                "ABORT",
                "10.2",
                "C5",
            )
        )

        # 10.3 shares
        shares = s.find("to_client", 3, "SharesDelivery")
        sd: SharesDelivery = s.message(shares)
        cts = dict(sd.ciphertexts)

        def shares_vector(
            name: str,
            pairs: list[tuple[int, bytes]],
            what: str,
            code: str,
            scenario: str | None = None,
            sid: bytes | None = None,
        ) -> None:
            msg = SharesDelivery(sid or sd.session_id, tuple(pairs))
            out.append(self.client(name, s, 3, shares, msg, what, code, "ABORT", "10.3", scenario))

        shares_vector(
            "shares-session-id-mismatch",
            list(sd.ciphertexts),
            "session id with its first byte flipped",
            "SESSION_ID_MISMATCH",
            "A8",
            sid=flip(sd.session_id),
        )
        shares_vector(
            "shares-bad-share-list",
            [(13, cts[13]), (5, cts[5]), (21, cts[21])],
            "senders 13, 5, 21 (not ascending)",
            "BAD_SHARE_LIST",
        )
        shares_vector(
            "shares-not-a-neighbour",
            [(4, cts[5]), *sd.ciphertexts],
            "an extra ciphertext from 4, not a participant",
            "NOT_A_NEIGHBOUR",
        )
        shares_vector(
            "shares-authentication-failed",
            [(5, flip(cts[5], 40)), (13, cts[13]), (21, cts[21])],
            "byte 40 of the ciphertext from 5 flipped",
            "AUTHENTICATION_FAILED",
            "A11",
        )
        own_ct = dict(s.message(s.find("to_server", 3, "ShareKeys")).ciphertexts)[5]
        shares_vector(
            "shares-reflected",
            [(5, own_ct), (13, cts[13]), (21, cts[21])],
            "client 3's own ciphertext for 5, reflected back as if from 5",
            "AUTHENTICATION_FAILED",
            "A11",
        )
        plaintext, _ = self.genuine_plaintext(s, 5, 3)
        bad_x = plaintext[:8] + (21).to_bytes(4, "big") + plaintext[12:]
        shares_vector(
            "shares-bad-share-x",
            [(5, self.forged_ct(s, 5, 3, bad_x, "bad-x")), (13, cts[13]), (21, cts[21])],
            "an authenticated plaintext from 5 whose seed share has x = 21, not the recipient",
            "BAD_ENCODING",
        )
        at = 8 + 68 + 4  # first y of the key share
        bad_y = plaintext[:at] + P.to_bytes(4, "big") + plaintext[at + 4 :]
        shares_vector(
            "shares-share-out-of-field",
            [(5, self.forged_ct(s, 5, 3, bad_y, "bad-y")), (13, cts[13]), (21, cts[21])],
            "an authenticated plaintext from 5 whose key share has y_0 = p",
            "BAD_ENCODING",
        )
        shares_vector(
            "shares-short-plaintext",
            [(5, self.forged_ct(s, 5, 3, plaintext[:-1], "short")), (13, cts[13]), (21, cts[21])],
            "an authenticated plaintext from 5 of 143 bytes",
            "BAD_ENCODING",
        )
        relabelled = (13).to_bytes(4, "big") + plaintext[4:]
        shares_vector(
            "shares-relabelled",
            [(5, self.forged_ct(s, 5, 3, relabelled, "relabelled")), (13, cts[13]), (21, cts[21])],
            "an authenticated plaintext from 5 naming sender 13",
            "SHARE_RELABELLED",
            "A11",
        )
        shares_vector(
            "shares-too-few-neighbours",
            [],
            "no ciphertext at all: no live neighbour, t = 2",
            "TOO_FEW_NEIGHBOURS",
            "C5",
        )
        nan_input = {**s.clients[3]["input"], "vector_f32": ["7fc00000", *s.clients[3]["input"]["vector_f32"][1:]]}
        out.append(
            self.client(
                "shares-bad-input-nan",
                s,
                3,
                shares,
                sd,
                "the genuine delivery; the client's own input has a NaN (it aborts its own round before masking)",
                "BAD_INPUT",
                "ABORT",
                "10.3",
                overrides={"input": nan_input},
            )
        )
        heavy = {**s.clients[3]["input"], "weight": 5}
        out.append(
            self.client(
                "shares-bad-input-weight",
                s,
                3,
                shares,
                sd,
                "the genuine delivery; the client's own weight is 5 > max_weight = 4",
                "BAD_INPUT",
                "ABORT",
                "10.3",
                overrides={"input": heavy},
            )
        )
        unmask = s.find("to_client", 3, "UnmaskRequest")
        ur: UnmaskRequest = s.message(unmask)
        out.append(
            self.client(
                "shared-unexpected-unmask",
                s,
                3,
                shares,
                ur,
                "an UnmaskRequest before SharesDelivery",
                "UNEXPECTED_MESSAGE",
                "ABORT",
                "9.1",
            )
        )

        # 10.4 consistency (hardened)
        cons = h.find("to_client", 2, "ConsistencyRequest")
        cr: ConsistencyRequest = h.message(cons)

        def cons_vector(name: str, survivors: tuple[int, ...], what: str, code: str, sid: bytes | None = None) -> None:
            msg = ConsistencyRequest(sid or cr.session_id, survivors)
            out.append(self.client(name, h, 2, cons, msg, what, code, "ABORT", "10.4", "A4"))

        cons_vector(
            "consistency-session-id-mismatch",
            cr.survivors,
            "session id with its first byte flipped",
            "SESSION_ID_MISMATCH",
            sid=flip(cr.session_id),
        )
        cons_vector(
            "consistency-unsorted", (3, 2, 7, 11, 17), "survivors 3, 2, 7, 11, 17 (not ascending)", "BAD_SURVIVORS"
        )
        cons_vector("consistency-omits-self", (3, 7, 11, 17), "survivors without client 2", "BAD_SURVIVORS")
        cons_vector(
            "consistency-unknown-identity",
            (2, 3, 7, 11, 17, 19),
            "survivor 19 is not a participant",
            "UNKNOWN_IDENTITY",
        )
        cons_vector(
            "consistency-ghost-survivor",
            (2, 3, 5, 7, 11, 17),
            "survivor 5 advertised keys but never shared with client 2",
            "BAD_SURVIVORS",
        )
        cons_vector("consistency-min-aggregate", (2, 3), "2 survivors, below min_aggregate = 3", "MIN_AGGREGATE")
        cons_vector(
            "consistency-below-quorum",
            (2, 3, 7),
            "3 survivors, below the signature quorum floor(7/2) + 1 = 4 (a set that can never be released)",
            "TOO_FEW_SURVIVORS",
        )
        s_cons = ConsistencyRequest(ur.session_id, (3, 5, 21))
        out.append(
            self.client(
                "semi-honest-unexpected-consistency",
                s,
                3,
                unmask,
                s_cons,
                "a ConsistencyRequest in a semi-honest round",
                "UNEXPECTED_MESSAGE",
                "ABORT",
                "9.1",
            )
        )

        # 10.5 unmask, semi-honest (client 3: live neighbours 5, 13, 21; alive 5, 21; dropped 13)
        def unmask_vector(
            name: str,
            msg: UnmaskRequest,
            what: str,
            code: str,
            kind: str = "ABORT",
            scenario: str | None = None,
            after: int = unmask,
        ) -> None:
            out.append(self.client(name, s, 3, after, msg, what, code, kind, "10.5", scenario))

        def partition(alive: tuple[int, ...], dropped: tuple[int, ...]) -> UnmaskRequest:
            return dataclasses.replace(ur, alive=alive, dropped=dropped)

        unmask_vector(
            "unmask-session-id-mismatch",
            dataclasses.replace(ur, session_id=flip(ur.session_id)),
            "session id with its first byte flipped",
            "SESSION_ID_MISMATCH",
            scenario="A8",
        )
        unmask_vector("unmask-unsorted", partition((21, 5), (13,)), "alive 21, 5 (not ascending)", "BAD_PARTITION")
        unmask_vector("unmask-names-self", partition((3, 5, 21), (13,)), "alive names client 3 itself", "BAD_PARTITION")
        unmask_vector(
            "unmask-overlapping",
            partition((5, 13, 21), (13,)),
            "13 both alive and dropped (its seed share and its key share would both leave)",
            "OVERLAPPING_PARTITION",
            scenario="A1",
        )
        unmask_vector(
            "unmask-dropped-before-sharing",
            partition((5, 21), (8, 13)),
            "dropped names 8, which never shared keys with client 3",
            "BAD_PARTITION",
            scenario="A3",
        )
        unmask_vector(
            "unmask-missing-peer",
            partition((5,), (13,)),
            "live neighbour 21 missing from both lists",
            "BAD_PARTITION",
            scenario="A3",
        )
        unmask_vector(
            "unmask-too-few-survivors",
            partition((), (5, 13, 21)),
            "every neighbour dropped: 0 + 1 < t = 2",
            "TOO_FEW_SURVIVORS",
            scenario="C5",
        )
        unmask_vector(
            "unmask-min-aggregate",
            partition((5,), (13, 21)),
            "21 claimed dropped: 1 + 1 survivors >= t = 2 but below min_aggregate = 3",
            "MIN_AGGREGATE",
            scenario="C6",
        )
        answered = unmask + 1
        unmask_vector(
            "unmask-second-unmask",
            partition((5,), (13, 21)),
            "after answering, a second request claiming 21 dropped (its key share would leave too)",
            "SECOND_UNMASK",
            "REFUSE",
            scenario="A2",
            after=answered,
        )
        out.append(
            self.client(
                "unmask-identical-retry",
                s,
                3,
                answered,
                ur,
                "after answering, the identical request again: the identical answer",
                None,
                "REPEATED",
                "10.5",
                "A2",
                state="UNMASKED",
            )
        )

        # 10.5 unmask, hardened (client 2: live 3, 7, 11, 13, 17; signed survivors 2, 3, 7, 11, 17)
        h_unmask = h.find("to_client", 2, "UnmaskRequest")
        hur: UnmaskRequest = h.message(h_unmask)
        sigs = hur.signatures

        def h_unmask_vector(name: str, msg: UnmaskRequest, what: str, code: str, scenario: str | None = "A4") -> None:
            out.append(self.client(name, h, 2, h_unmask, msg, what, code, "ABORT", "10.5", scenario))

        h_unmask_vector(
            "unmask-inconsistent-survivors",
            dataclasses.replace(hur, alive=(3, 7, 17), dropped=(11, 13), survivors=(2, 3, 7, 17)),
            "a survivor set without 11 (not the one client 2 signed), 11 claimed dropped",
            "INCONSISTENT_SURVIVORS",
        )
        h_unmask_vector(
            "unmask-alive-not-survivors",
            dataclasses.replace(hur, alive=(3, 7, 17), dropped=(11, 13)),
            "the signed survivor set, but 11 (a survivor) claimed dropped",
            "INCONSISTENT_SURVIVORS",
        )
        h_unmask_vector(
            "unmask-signers-unsorted",
            dataclasses.replace(hur, signatures=tuple(reversed(sigs))),
            "signatures in descending signer order",
            "BAD_SIGNATURES",
        )
        ident13 = IdentityKey(
            Ed25519PrivateKey.from_private_bytes(bytes.fromhex(h.clients[13]["secrets"]["identity_private"]))
        )
        sig13 = ident13.sign(
            recipes.consistency_payload(hur.session_id, hur.survivors), context=recipes.SIG_CONSISTENCY
        )
        h_unmask_vector(
            "unmask-signer-not-survivor",
            dataclasses.replace(hur, signatures=tuple(sorted([*sigs, (13, sig13)]))),
            "a valid signature by 13, which is not a survivor, among the signatures",
            "BAD_SIGNATURES",
        )
        forged = tuple((c, flip(sig, 5) if c == 3 else sig) for c, sig in sigs)
        h_unmask_vector(
            "unmask-bad-signature",
            dataclasses.replace(hur, signatures=forged),
            "client 3's consistency signature with byte 5 flipped",
            "BAD_SIGNATURES",
        )
        h_unmask_vector(
            "unmask-too-few-signatures",
            dataclasses.replace(hur, signatures=sigs[:3]),
            "3 signatures, below the quorum of 4",
            "TOO_FEW_SIGNATURES",
        )
        h_masked = h.find("to_client", 2, "ConsistencyRequest")
        out.append(
            self.client(
                "hardened-unmask-before-consistency",
                h,
                2,
                h_masked,
                hur,
                "an UnmaskRequest before the consistency check",
                "UNEXPECTED_MESSAGE",
                "ABORT",
                "9.1",
                "A4",
            )
        )

        # 10.6 end
        done = s.find("to_client", 3, "RoundComplete")
        rc: RoundComplete = s.message(done)
        out.append(
            self.client(
                "complete-session-id-mismatch",
                s,
                3,
                done,
                dataclasses.replace(rc, session_id=flip(rc.session_id)),
                "RoundComplete with the session id's first byte flipped",
                "SESSION_ID_MISMATCH",
                "ABORT",
                "10.6",
            )
        )
        out.append(
            self.client(
                "complete-omits-self",
                s,
                3,
                done,
                dataclasses.replace(rc, survivors=(5, 21)),
                "RoundComplete whose survivors omit client 3",
                "BAD_SURVIVORS",
                "ABORT",
                "10.6",
            )
        )
        h_done = h.find("to_client", 2, "RoundComplete")
        hrc: RoundComplete = h.message(h_done)
        out.append(
            self.client(
                "complete-inconsistent-survivors",
                h,
                2,
                h_done,
                dataclasses.replace(hrc, survivors=(2, 3, 7, 17)),
                "RoundComplete naming a survivor set other than the one client 2 signed",
                "INCONSISTENT_SURVIVORS",
                "ABORT",
                "10.6",
                "A4",
            )
        )
        out.append(
            self.client(
                "done-ignores-messages",
                s,
                3,
                done + 1,
                ur,
                "after RoundComplete, the unmask request again: ignored, no reply",
                None,
                "IGNORED",
                "9.1",
                "B6",
                state="DONE",
            )
        )
        five_shares = s.find("to_client", 5, "SharesDelivery")
        abort = ServerAbort(cfg.round_tag(), "OPERATOR", "stopped by the operator")
        out.append(
            self.client(
                "server-abort",
                s,
                5,
                five_shares,
                abort,
                "ServerAbort in SHARED: the client ends ABORTED (local code SERVER_ABORT), no reply",
                "SERVER_ABORT",
                "SERVER_ABORT",
                "10.6",
                state="ABORTED",
            )
        )
        return out

    # -- server side ------------------------------------------------------------------------------------

    def server(
        self,
        name: str,
        record: Record,
        after: int,
        sender: int,
        message: Message,
        what: str,
        event: str,
        rejected: bool,
        spec: str,
        scenario: str | None = None,
        probe: bool = False,
        resume: int | None = None,
        extra: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A server vector: after the prefix, `message` from `sender`; with probe, the genuine message of the step it
        replaced is delivered next (a rejected sender's is then refused too); resume replays the positive steps from
        that index and checks the round's result."""
        deliveries = [
            {"op": "deliver", "from": sender, "type": type(message).__name__, "message": enc(message), "what": what}
        ]
        if probe:
            genuine = record.steps[after]
            deliveries.append(
                {
                    "op": "deliver",
                    "from": sender,
                    "type": genuine["type"],
                    "message": genuine["message"],
                    "what": "the genuine message of the replaced step",
                }
            )
        deliveries += extra or []
        return {
            "name": name,
            "round": record.name,
            "party": "server",
            "after_step": after,
            "deliveries": deliveries,
            "resume_step": resume,
            "declared": {"event": event, "client": sender, "rejected": rejected},
            "spec": spec,
            "scenario": scenario,
        }

    def server_vectors(self) -> list[dict[str, Any]]:
        s, h = self.s, self.h
        out: list[dict[str, Any]] = []
        # 11.2 advertise keys (the first advertisement is client 3's)
        adv = s.find("to_server", 3, "AdvertiseKeys")
        ak: AdvertiseKeys = s.message(adv)
        a = ak.advertisement

        def adv_vector(
            name: str,
            msg: AdvertiseKeys,
            what: str,
            scenario: str | None = None,
            after: int = adv,
            sender: int = 3,
            record: Record = s,
        ) -> None:
            out.append(
                self.server(
                    name, record, after, sender, msg, what, "client-rejected", True, "11.2", scenario, probe=True
                )
            )

        adv_vector(
            "advertise-round-mismatch",
            dataclasses.replace(ak, round_tag=flip(ak.round_tag)),
            "round tag with its first byte flipped",
            "B6",
        )
        adv_vector(
            "advertise-claims-other-id",
            dataclasses.replace(ak, advertisement=dataclasses.replace(a, client_id=5)),
            "client 3's keys advertised under id 5",
            "B8",
        )
        adv_vector(
            "advertise-small-order-key",
            dataclasses.replace(ak, advertisement=dataclasses.replace(a, mask_public=SMALL_ORDER)),
            "mask key u = 1 (small order)",
            "A12",
        )
        adv_vector(
            "advertise-all-zero-key",
            dataclasses.replace(ak, advertisement=dataclasses.replace(a, enc_public=bytes(32))),
            "an all-zero enc key",
            "A12",
        )
        adv_vector(
            "advertise-enc-equals-mask",
            dataclasses.replace(ak, advertisement=dataclasses.replace(a, mask_public=a.enc_public)),
            "enc key = mask key",
        )
        adv5 = s.find("to_server", 5, "AdvertiseKeys")
        ak5: AdvertiseKeys = s.message(adv5)
        adv_vector(
            "advertise-reused-key",
            dataclasses.replace(ak5, advertisement=dataclasses.replace(ak5.advertisement, enc_public=a.enc_public)),
            "client 5 advertises client 3's (accepted) enc key",
            after=adv5,
            sender=5,
        )
        hadv = h.find("to_server", 2, "AdvertiseKeys")
        hak: AdvertiseKeys = h.message(hadv)
        adv_vector(
            "advertise-bad-signature",
            dataclasses.replace(
                hak,
                advertisement=dataclasses.replace(hak.advertisement, signature=flip(hak.advertisement.signature, 7)),
            ),
            "client 2's signature with byte 7 flipped (hardened)",
            "A5",
            after=hadv,
            sender=2,
            record=h,
        )
        out.append(
            self.server(
                "advertise-not-a-participant",
                s,
                adv,
                4,
                ak,
                "client 3's advertisement sent by 4, not a participant",
                "message-rejected",
                False,
                "11.1",
                "B8",
                resume=adv,
            )
        )
        out.append(
            self.server(
                "advertise-duplicate-identical",
                s,
                adv + 1,
                3,
                ak,
                "client 3's advertisement again",
                "duplicate-ignored",
                False,
                "11.1",
                "B5",
                resume=adv + 1,
            )
        )
        other = dataclasses.replace(
            a, enc_public=fresh_public("conflict-enc"), mask_public=fresh_public("conflict-mask")
        )
        out.append(
            self.server(
                "advertise-duplicate-conflicting",
                s,
                adv + 1,
                3,
                dataclasses.replace(ak, advertisement=other),
                "client 3 advertises other keys after its first advertisement: the first stands",
                "conflicting-duplicate-rejected",
                False,
                "11.1",
                "B5",
                resume=adv + 1,
            )
        )
        out.append(
            self.server(
                "advertise-client-abort",
                s,
                adv,
                3,
                ClientAbort("MODE", "refused by policy"),
                "client 3 aborts instead of advertising: it leaves the expected set",
                "client-aborted",
                False,
                "11.1",
                probe=True,
            )
        )

        # 11.3 share keys (the first ShareKeys is client 3's; its recipients are 5, 8, 13, 21)
        shk = s.find("to_server", 3, "ShareKeys")
        sk: ShareKeys = s.message(shk)
        cts = sk.ciphertexts

        def shk_vector(name: str, msg: ShareKeys, what: str, scenario: str | None = None) -> None:
            out.append(self.server(name, s, shk, 3, msg, what, "client-rejected", True, "11.3", scenario, probe=True))

        shk_vector(
            "share-keys-session-mismatch",
            dataclasses.replace(sk, session_id=flip(sk.session_id)),
            "session id with its first byte flipped",
            "B6",
        )
        shk_vector(
            "share-keys-missing-recipient", dataclasses.replace(sk, ciphertexts=cts[:-1]), "no ciphertext for 21", "B7"
        )
        shk_vector(
            "share-keys-to-itself",
            dataclasses.replace(sk, ciphertexts=((3, cts[0][1]), *cts)),
            "an extra ciphertext addressed to 3 itself",
            "B7",
        )
        shk_vector(
            "share-keys-unsorted",
            dataclasses.replace(sk, ciphertexts=(cts[1], cts[0], *cts[2:])),
            "recipients 8, 5, 13, 21 (not ascending)",
            "B7",
        )
        shk_vector(
            "share-keys-short-ciphertext",
            dataclasses.replace(sk, ciphertexts=((cts[0][0], cts[0][1][:-1]), *cts[1:])),
            "the ciphertext for 5 is 171 bytes",
            "B7",
        )
        out.append(
            self.server(
                "share-keys-earlier-stage",
                s,
                shk,
                3,
                ak,
                "client 3's advertisement during share-keys",
                "message-rejected",
                False,
                "11.1",
                "B6",
                resume=shk,
            )
        )
        out.append(
            self.server(
                "share-keys-duplicate-identical",
                s,
                shk + 1,
                3,
                sk,
                "client 3's ShareKeys again",
                "duplicate-ignored",
                False,
                "11.1",
                "B5",
                resume=shk + 1,
            )
        )

        # 11.4 masked input (client 3's input comes first, in 2 chunks of 4 and 3 elements)
        ch0 = s.find("to_server", 3, "MaskedInputChunk", 0)
        ch1 = s.find("to_server", 3, "MaskedInputChunk", 1)
        c0: MaskedInputChunk = s.message(ch0)
        c1: MaskedInputChunk = s.message(ch1)

        def chunk_vector(name: str, msg: MaskedInputChunk, what: str, scenario: str | None = "B1") -> None:
            out.append(self.server(name, s, ch0, 3, msg, what, "client-rejected", True, "11.4", scenario, probe=True))

        chunk_vector(
            "chunk-session-mismatch",
            dataclasses.replace(c0, session_id=flip(c0.session_id)),
            "session id with its first byte flipped",
            "B6",
        )
        chunk_vector(
            "chunk-wrong-width",
            dataclasses.replace(c0, data=c0.data.astype("<u8")),
            "the first chunk with 8-byte elements in a 2^32 ring",
        )
        chunk_vector("chunk-bad-count", dataclasses.replace(c0, count=8), "count = 8 > D + 1 = 7")
        chunk_vector("chunk-out-of-order", c1, "the second chunk (index 1, offset 4) first")
        whole = np.concatenate([c0.data, c1.data])
        chunk_vector(
            "chunk-too-long",
            MaskedInputChunk(c0.session_id, 0, 1, 0, np.concatenate([whole, whole[:1]])),
            "a single chunk of 8 elements (D + 1 = 7)",
        )
        chunk_vector(
            "chunk-too-short",
            MaskedInputChunk(c0.session_id, 0, 1, 0, whole[:-1].copy()),
            "a single chunk of 6 elements, ending before D + 1 = 7",
        )
        out.append(
            self.server(
                "chunk-duplicate-identical",
                s,
                ch0 + 1,
                3,
                c0,
                "the first chunk again",
                "duplicate-ignored",
                False,
                "11.4",
                "B5",
                resume=ch0 + 1,
            )
        )
        changed = c0.data.copy()
        changed[0] ^= 1
        out.append(
            self.server(
                "chunk-duplicate-conflicting",
                s,
                ch0 + 1,
                3,
                dataclasses.replace(c0, data=changed),
                "the first chunk again with element 0 changed: the first stands, the sum is unchanged",
                "conflicting-duplicate-rejected",
                False,
                "11.4",
                "B5",
                resume=ch0 + 1,
            )
        )
        out.append(
            self.server(
                "chunk-after-complete",
                s,
                ch1 + 1,
                3,
                c1,
                "the last chunk again after the input is complete",
                "late-chunk-ignored",
                False,
                "11.4",
                "B5",
                resume=ch1 + 1,
            )
        )
        rest = [
            {"op": "deliver", "from": st["from"], "type": st["type"], "message": st["message"], "what": "genuine"}
            for st in s.steps[ch1 + 1 :]
            if st["op"] == "to_server" and st["type"] == "MaskedInputChunk"
        ]
        # the audit trail of this close holds only round-aborted: the rejection of 3 made in the same close is not
        # reported (the abort replaces the close's events), so the vector declares the abort
        cut = self.server("chunk-stream-cut-short", s, ch1, 3, c0, "", "round-aborted", True, "11.4", "B1")
        # SPEC 11.4 / 11.7 call for client-rejected (3) and round-aborted; this implementation reports only the
        # abort (the close's own events are replaced by the abort's), so only the abort is required here
        timeout = {
            "op": "timeout",
            "what": "the masked-input deadline passes",
            "audits_match": "subset",
            "_keep": [("round-aborted", None)],
        }
        cut["deliveries"] = [*rest, timeout]
        cut["declared"].update(at="timeout", client=None)
        cut["what"] = (
            "client 3 sends only its first chunk; 5 and 21 complete theirs; at the deadline 3 is rejected "
            "(incomplete stream, staged data discarded) and 2 survivors < max(t, min_aggregate) = 3 abort "
            "the round with TOO_FEW_CLIENTS"
        )
        out.append(cut)

        # 11.5 consistency (hardened; client 2 signs first)
        sig = h.find("to_server", 2, "ConsistencySignature")
        cs: ConsistencySignature = h.message(sig)
        out.append(
            self.server(
                "signature-invalid",
                h,
                sig,
                2,
                dataclasses.replace(cs, signature=flip(cs.signature, 3)),
                "client 2's consistency signature with byte 3 flipped",
                "client-rejected",
                True,
                "11.5",
                "A4",
                probe=True,
            )
        )
        out.append(
            self.server(
                "signature-session-mismatch",
                h,
                sig,
                2,
                dataclasses.replace(cs, session_id=flip(cs.session_id)),
                "session id with its first byte flipped",
                "client-rejected",
                True,
                "11.5",
                "B6",
                probe=True,
            )
        )

        # 11.6 unmask (client 3 answers first: seed shares of 3, 5, 21, key share of 13)
        um = s.find("to_server", 3, "UnmaskResponse")
        resp: UnmaskResponse = s.message(um)
        seeds, keys = resp.seed_shares, resp.key_shares

        def um_vector(name: str, msg: UnmaskResponse, what: str, scenario: str | None = "B3") -> None:
            out.append(
                self.server(
                    name, s, um, 3, msg, what, "client-rejected", True, "11.6", scenario, probe=True, resume=um + 1
                )
            )

        um_vector(
            "unmask-missing-own-seed-share",
            dataclasses.replace(resp, seed_shares=seeds[1:]),
            "seed shares for 5 and 21 only (its own missing); t = 2 shares from 5 and 21 still unmask",
        )
        um_vector("unmask-missing-key-share", dataclasses.replace(resp, key_shares=()), "no key share of 13")
        um_vector(
            "unmask-extra-key-share",
            dataclasses.replace(resp, key_shares=(*keys, (21, seeds[2][1]))),
            "a key share of 21, a survivor (would unmask its input)",
            "A1",
        )

        def reshare(blob: bytes, x: int | None = None, y0: int | None = None, cut: bool = False) -> bytes:
            out_b = bytearray(blob)
            if x is not None:
                out_b[0:4] = x.to_bytes(4, "big")
            if y0 is not None:
                out_b[4:8] = y0.to_bytes(4, "big")
            return bytes(out_b[:-1] if cut else out_b)

        um_vector(
            "unmask-share-wrong-x",
            dataclasses.replace(resp, seed_shares=((3, reshare(seeds[0][1], x=5)), *seeds[1:])),
            "its own seed share with x = 5 instead of 3",
        )
        um_vector(
            "unmask-share-short",
            dataclasses.replace(resp, seed_shares=((3, reshare(seeds[0][1], cut=True)), *seeds[1:])),
            "a seed share of 67 bytes",
        )
        um_vector(
            "unmask-share-out-of-field",
            dataclasses.replace(resp, seed_shares=((3, reshare(seeds[0][1], y0=P)), *seeds[1:])),
            "a seed share with y_0 = p",
        )
        y0 = int.from_bytes(seeds[0][1][4:8], "big")
        corrupt = dataclasses.replace(resp, seed_shares=((3, reshare(seeds[0][1], y0=(y0 + 1) % P)), *seeds[1:]))
        rest_um = [
            {"op": "deliver", "from": st["from"], "type": st["type"], "message": st["message"], "what": "genuine"}
            for st in s.steps[um + 1 :]
            if st["op"] == "to_server"
        ]
        out.append(
            self.server(
                "unmask-corrupted-share",
                s,
                um,
                3,
                corrupt,
                "its own seed share with y_0 + 1 (in the field): accepted now, set aside at "
                "reconstruction (the seed commitment fails), the sum is unchanged",
                "shares-corrected",
                False,
                "11.6",
                "B4",
                extra=rest_um,
            )
        )
        out[-1]["declared"]["at"] = "last"
        out[-1]["check_result"] = True
        # SPEC 11.6: shares-corrected for the owner whose share was set aside (3). This implementation also reports
        # 5 and 21, whose shares were fine (their batch was retried with 3's), so only 3's is required here.
        out[-1]["deliveries"][-1].update(
            audits_match="subset", _keep=[("stage-closed", None), ("shares-corrected", 3), ("round-completed", None)]
        )
        hum = h.find("to_server", None, "UnmaskResponse")
        out.append(
            self.server(
                "unmask-not-asked",
                h,
                hum,
                11,
                UnmaskResponse(h.message(hum).session_id, (), ()),
                "an UnmaskResponse from 11, a survivor that did not sign and was not asked",
                "message-rejected",
                False,
                "11.1",
                "B6",
                resume=hum,
            )
        )
        end = len(s.steps)
        out.append(
            self.server(
                "after-completion",
                s,
                end,
                3,
                resp,
                "client 3's unmask response after the round completed",
                "message-rejected",
                False,
                "11.1",
                "B6",
            )
        )
        out[-1]["check_result"] = True
        return out


def outcome_client(record: Record, vector: dict[str, Any]) -> None:
    """Replay a client vector through the in-process adapter and record the outcome of each delivery."""
    adapter = ADAPTER.Adapter()
    cid = vector["client"]
    call(adapter, record.new_client(cid, "c", **vector["overrides"]))
    for step in record.steps[: vector["after_step"]]:
        if step["op"] == "to_client" and step["to"] == cid:
            got = call(adapter, {"op": "deliver", "to": "client", "handle": "c", "message": step["message"]})
            assert [r["message"] for r in step["replies"]] == got["replies"], f"{vector['name']}: prefix diverged"
    for d in vector["deliveries"]:
        got = call(adapter, {"op": "deliver", "to": "client", "handle": "c", "message": d["message"]})
        replies = []
        for r in got["replies"]:
            code = ADAPTER.abort_code(r)
            replies.append(
                {"type": "ClientAbort", "code": code} if code is not None else {"type": type_name(r), "message": r}
            )
        d["expect"] = {"replies": replies, "state": got["state"], "error_code": got["error_code"]}
    declared = vector["declared"]
    last = vector["deliveries"][-1]["expect"]
    kind = declared["kind"]
    if kind in ("ABORT", "REFUSE"):
        ok = last["replies"] == [{"type": "ClientAbort", "code": declared["code"]}] and last["state"] == "ABORTED"
    elif kind == "REPEATED":
        answered = record.steps[vector["after_step"] - 1]
        ok = [r.get("message") for r in last["replies"]] == [r["message"] for r in answered["replies"]]
    else:  # IGNORED, SERVER_ABORT: no reply
        ok = last["replies"] == []
    ok = ok and last["error_code"] == declared["code"] and (declared["state"] in (None, last["state"]))
    if not ok:
        raise RuntimeError(f"negative vector {vector['name']}: declared {declared}, got {last}")


def outcome_server(record: Record, vector: dict[str, Any]) -> None:
    """Replay a server vector through the in-process adapter and record the outcome of each delivery."""
    adapter = ADAPTER.Adapter()
    call(adapter, record.new_server("s"))

    def server_step(step: dict[str, Any]) -> dict[str, Any] | None:
        if step["op"] == "start":
            return call(adapter, {"op": "start", "handle": "s"})
        if step["op"] == "to_server":
            return call(
                adapter,
                {"op": "deliver", "to": "server", "handle": "s", "from": step["from"], "message": step["message"]},
            )
        if step["op"] == "timeout":
            return call(adapter, {"op": "timeout", "handle": "s"})
        return None

    for step in record.steps[: vector["after_step"]]:
        got = server_step(step)
        if got is not None:
            assert split_events(got["events"]) == {"sends": step["sends"], "audits": step["audits"]}, vector["name"]
    for d in vector["deliveries"]:
        got = server_step({**d, "op": "to_server"} if d["op"] == "deliver" else d)
        assert got is not None
        d["expect"] = split_events(got["events"])
        keep = d.pop("_keep", None)
        if keep is not None:  # only these audits are required (audits_match: subset)
            wanted = [{"event": e, "client": c} for e, c in keep]
            assert all(w in d["expect"]["audits"] for w in wanted), f"{vector['name']}: {d['expect']['audits']}"
            d["expect"]["audits"] = wanted
    resume = vector["resume_step"]
    if resume is not None:
        for step in record.steps[resume:]:
            got = server_step(step)
            if got is not None:
                recorded = {"sends": step["sends"], "audits": step["audits"]}
                assert split_events(got["events"]) == recorded, (
                    f"{vector['name']}: resumed step {step['index']} differs"
                )
    status = call(adapter, {"op": "result", "handle": "s"})
    if resume is not None or vector.get("check_result") or vector["declared"].get("at") == "timeout":
        vector["result"] = {k: status[k] for k in ("state", "error_code", "result")}
    vector.pop("check_result", None)
    declared = vector["declared"]
    at = declared.pop("at", "first")
    index = {"first": 0, "last": -1, "timeout": -1}[at]
    audits = vector["deliveries"][index]["expect"]["audits"]
    if {"event": declared["event"], "client": declared["client"]} not in audits:
        raise RuntimeError(f"negative vector {vector['name']}: declared {declared}, got audits {audits}")
    if (
        declared["rejected"]
        and len(vector["deliveries"]) > 1
        and vector["deliveries"][1].get("what", "").startswith("the genuine")
    ):
        probe = vector["deliveries"][1]["expect"]["audits"]
        if {"event": "message-rejected", "client": declared["client"]} not in probe:
            raise RuntimeError(f"negative vector {vector['name']}: the rejected sender's genuine message was accepted")


# ---------------------------------------------------------------------------------------------- build


def build() -> dict[str, Any]:
    """Every vector (the entry point tests/vectors.py calls)."""
    records = {spec["name"]: drive(spec) for spec in ROUNDS}
    rounds = []
    for spec in ROUNDS:
        record = records[spec["name"]]
        server, clients = derive(record)
        rounds.append(
            {
                "name": spec["name"],
                "description": spec["description"],
                "config": config_json(record.config, spec["config"]),
                "policy": record.policy,
                "chunk_elems": spec["chunk_elems"],
                "dropouts": [
                    {"client": c, "stage": st, "meaning": DROP_MEANING[st]} for c, st in sorted(spec["drops"].items())
                ],
                "clients": clients,
                "server": server,
                "steps": record.steps,
            }
        )
    negatives = Negatives(records)
    vectors = negatives.client_vectors() + negatives.server_vectors()
    for vector in vectors:
        record = records[vector["round"]]
        if vector["party"] == "client":
            outcome_client(record, vector)
        else:
            outcome_server(record, vector)
    for vector in vectors:
        vector.setdefault("what", vector["deliveries"][0]["what"])
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names)), "negative vector names must be distinct"
    return {"format": 1, "rounds": rounds, "negative": vectors}


def main() -> None:
    """Write the vectors next to this script."""
    path = Path(__file__).with_name("round.json")
    path.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
