"""Whole-round known answers: protocols/vectors/round.json, its generator, its runner and its adapter.

- The committed file is exactly what generate_round.py writes.
- run_round.py passes with secagg's adapter (a subprocess, as any implementation would run), and fails, naming the
  vector, with adapters broken on purpose: a flipped byte in one client reply, a client that accepts a forged
  share, a server that does not reject a client, a wrong aggregate.
- The file is self-sufficient: one masked input per survivor, the share ciphertexts, the dropped client's mask key
  (by Lagrange interpolation of the revealed shares), the final sum and the decoded mean are recomputed here from
  the recorded values with hashlib, pyca/cryptography and numpy only, from the formulas of SPEC.md (§2 digest,
  §6.5 Shamir, §6.6 PRG, §6.7 quantisation, §7 key schedule, §8 layouts), without any secagg function.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.vectors import VECTORS, load_vectors, regenerate

pytestmark = pytest.mark.property("P12")  # threat_model.md: interoperability and reproducibility (E1, E2)

V = load_vectors("round")
ROUNDS = {r["name"]: r for r in V["rounds"]}
RUNNER = VECTORS / "run_round.py"
ADAPTER = VECTORS / "adapter_secagg.py"
P = (1 << 31) - 1
H = bytes.fromhex


CLIENT_CODES = (
    "NOT_INVITED",
    "MODE",
    "TOO_FEW_CLIENTS",
    "THRESHOLD",
    "MIN_AGGREGATE",
    "MODULUS",
    "CLIP",
    "DP_NOISE",
    "DIMENSION",
    "PARAMETERS",
    "GRAPH_DEGREE",
    "NO_ROSTER",
    "UNKNOWN_IDENTITY",
    "ALREADY_CONTRIBUTED",
    "NO_IDENTITY",
    "ROUND_MISMATCH",
    "BAD_KEY_LIST",
    "KEY_SUBSTITUTED",
    "SESSION_ID_MISMATCH",
    "INVALID_PEER_KEY",
    "KEY_REUSE",
    "BAD_KEY_SIGNATURE",
    "TOO_FEW_NEIGHBOURS",
    "BAD_SHARE_LIST",
    "NOT_A_NEIGHBOUR",
    "AUTHENTICATION_FAILED",
    "BAD_ENCODING",
    "SHARE_RELABELLED",
    "BAD_INPUT",
    "BAD_SURVIVORS",
    "BAD_PARTITION",
    "OVERLAPPING_PARTITION",
    "TOO_FEW_SURVIVORS",
    "INCONSISTENT_SURVIVORS",
    "BAD_SIGNATURES",
    "TOO_FEW_SIGNATURES",
    "SECOND_UNMASK",
    "UNEXPECTED_MESSAGE",
    "SERVER_ABORT",
)
"""One per row of SPEC §10's tables that the rounds reach (DOUBLE_REVEAL is defensive only), and SERVER_ABORT."""


def test_vector_file_is_what_the_generator_writes() -> None:
    assert (VECTORS / "round.json").read_text() == regenerate("round")


def test_vectors_cover_both_modes_dropouts_and_the_refusal_tables() -> None:
    assert {r["config"]["mode"] for r in V["rounds"]} == {"semi-honest", "hardened"}
    for rnd in V["rounds"]:
        stages = {d["stage"] for d in rnd["dropouts"]}
        assert {"share-keys", "masked-input"} <= stages  # after advertising, and after sharing
        assert rnd["server"]["dropped"] and rnd["server"]["result"]["dropped"]
    assert {"consistency-check"} <= {d["stage"] for d in ROUNDS["hardened"]["dropouts"]}
    codes = {v["declared"].get("code") for v in V["negative"] if v["party"] == "client"}
    for code in CLIENT_CODES:
        assert code in codes, code
    scenarios = {v["scenario"] for v in V["negative"] if v["party"] == "server"}
    assert {"B1", "B3", "B4", "B5", "B6", "B7", "B8", "A12"} <= scenarios
    events = {v["declared"]["event"] for v in V["negative"] if v["party"] == "server"}
    assert {"client-rejected", "message-rejected", "duplicate-ignored", "conflicting-duplicate-rejected"} <= events


# ---------------------------------------------------------------------------------------------- the runner


def run(*args: str, adapter: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(RUNNER), *args]
    if adapter is not None:
        argv += ["--", *adapter]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_runner_help_explains_usage() -> None:
    out = run("--help")
    assert out.returncode == 0
    for word in ("adapter", "ROUND_RUNNER.md", "--side", "--only", "exit status"):
        assert word in out.stdout


def test_runner_passes_with_our_adapter() -> None:
    out = run(adapter=[sys.executable, str(ADAPTER)])
    assert out.returncode == 0, out.stdout + out.stderr
    total = len(V["rounds"]) + len(V["negative"])
    assert f"{total}/{total} vectors passed" in out.stdout


def broken_adapter(tmp_path: Path, body: str) -> list[str]:
    """An adapter that runs secagg's, with `handle` wrapped by `body` (which may change the response)."""
    script = tmp_path / "broken_adapter.py"
    head = f"""import importlib.util

spec = importlib.util.spec_from_file_location("adapter_secagg", {str(ADAPTER)!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)


class Broken(mod.Adapter):
    def handle(self, req):
        resp = super().handle(req)
"""
    tail = """        return resp


mod.Adapter = Broken
mod.main()
"""
    script.write_text(head + textwrap.indent(textwrap.dedent(body).strip() + "\n", " " * 8) + tail)
    return [sys.executable, str(script)]


BROKEN: dict[str, tuple[str, str, list[str]]] = {
    # a flipped byte in client 5's last masked-input chunk
    "flipped-reply-byte": (
        """
        if req.get("handle") == "semi-honest/client-5" and resp.get("replies"):
            last = resp["replies"][-1]
            if last[4:6] == "12":
                resp["replies"][-1] = last[:-2] + format(int(last[-2:], 16) ^ 1, "02x")
        """,
        "round/semi-honest",
        ["FAIL round/semi-honest", "reply 1 differs, first difference at byte 67", "MaskedInputChunk"],
    ),
    # a client that accepts a share that does not authenticate (it goes on masking)
    "accepts-forged-share": (
        """
        if req.get("op") == "deliver" and resp.get("error_code") == "AUTHENTICATION_FAILED":
            resp.update(replies=[], state="MASKED", error_code=None)
        """,
        "negative/shares-authentication-failed",
        [
            "FAIL negative/shares-authentication-failed",
            "expected 1 replies, got 0",
            "ClientAbort(AUTHENTICATION_FAILED)",
        ],
    ),
    # a server that does not report (or enforce) the rejection of a client claiming another id
    "keeps-rejected-client": (
        """
        if "events" in resp:
            resp["events"] = [e for e in resp["events"] if e.get("event") != "client-rejected"]
        """,
        "negative/advertise-claims-other-id",
        ["FAIL negative/advertise-claims-other-id", "audit events differ", "client-rejected"],
    ),
    # a wrong aggregate
    "wrong-sum": (
        """
        if req.get("op") == "result" and resp.get("result"):
            resp["result"]["sum"][0] = str(int(resp["result"]["sum"][0]) + 1)
        """,
        "round/hardened",
        ["FAIL round/hardened", "result field sum differs"],
    ),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_runner_fails_with_a_broken_adapter(tmp_path: Path, kind: str) -> None:
    body, only, messages = BROKEN[kind]
    out = run("--only", only, adapter=broken_adapter(tmp_path, body))
    assert out.returncode == 1, out.stdout + out.stderr
    for text in messages:
        assert text in out.stdout, out.stdout
    assert "0/1 vectors passed; 1 FAILED" in out.stdout


def test_runner_reports_an_adapter_that_does_not_start() -> None:
    out = run(adapter=[str(VECTORS / "no-such-adapter")])
    assert out.returncode == 2 and "cannot start the adapter" in out.stderr


# ---------------------------------------------------------------------------------------------- by hand


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def blob(b: bytes) -> bytes:
    return u32(len(b)) + b


def u32_list(values: list[int]) -> bytes:
    return u32(len(values)) + b"".join(u32(v) for v in values)


def digest(tag: str, payload: bytes) -> bytes:
    """SPEC §2: SHA-256(u32(len(tag)) || tag || payload)."""
    return hashlib.sha256(blob(tag.encode()) + payload).digest()


def hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


def kdf_info(purpose: str, sid: bytes, a: int, b: int) -> bytes:
    """SPEC §6.1."""
    return blob(f"secagg/v1/kdf/{purpose}".encode()) + blob(sid) + u32_list(sorted([a, b]))


def x25519(private_hex: str, public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(H(private_hex)).exchange(X25519PublicKey.from_public_bytes(public))


def public_of(private_hex: str) -> bytes:
    return X25519PrivateKey.from_private_bytes(H(private_hex)).public_key().public_bytes_raw()


def prg(seed: bytes, count: int, modulus: int) -> list[int]:
    """SPEC §6.6 for M = 2^k: AES-256-CTR under HKDF(seed, "secagg/v1/prg/aes256ctr"), zero counter block, words
    of 4 bytes (M <= 2^32) or 8 bytes, little-endian, reduced mod M."""
    key = hkdf(seed, b"secagg/v1/prg/aes256ctr")
    width = 4 if modulus <= 1 << 32 else 8
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(width * count))
    return [int.from_bytes(stream[width * i : width * (i + 1)], "little") % modulus for i in range(count)]


def quantise(bits_hex: list[str], clip: float, bits: int, weight: int, words: list[int]) -> list[int]:
    """SPEC §6.7 in binary64."""
    x = np.array([int(b, 16) for b in bits_hex], dtype=np.uint32).view(np.float32).astype(np.float64)
    qmax = float((1 << bits) - 1)
    v = np.minimum(np.maximum(x, -clip), clip)
    q = np.floor((v + clip) * (qmax / (2 * clip)) + np.array(words, dtype=np.float64) / 2.0**32)
    q = np.minimum(np.maximum(q, 0.0), qmax)
    return [int(a) * weight for a in q]


def lagrange_at_zero(shares: list[tuple[int, list[int]]]) -> bytes:
    """SPEC §6.5: the 32-byte secret from t shares (x, y_0..y_15)."""
    xs = [x for x, _ in shares]
    out = b""
    for j in range(16):
        limb = 0
        for i, (xi, ys) in enumerate(shares):
            lam = 1
            for m, xm in enumerate(xs):
                if m != i:
                    lam = lam * xm * pow(xm - xi, -1, P) % P
            limb = (limb + lam * ys[j]) % P
        assert limb < 1 << 16
        out += limb.to_bytes(2, "big")
    return out


class Msg:
    """A reader over a canonical message (SPEC §2, §8): u16 version 1, u8 type, then the body."""

    def __init__(self, hex_: str, kind: int) -> None:
        self.data, self.pos = H(hex_), 3
        assert self.data[:3] == b"\x00\x01" + bytes([kind])

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def bytes_(self) -> bytes:
        return self.take(self.u32())

    def pairs(self) -> list[tuple[int, bytes]]:
        return [(self.u32(), self.bytes_()) for _ in range(self.u32())]

    def u32_list(self) -> list[int]:
        return [self.u32() for _ in range(self.u32())]


def steps(rnd: dict[str, Any], op: str, kind: str) -> list[dict[str, Any]]:
    return [s for s in rnd["steps"] if s["op"] == op and s["type"] == kind]


@pytest.mark.parametrize("name", list(ROUNDS))
def test_round_recomputed_by_hand_from_the_recorded_values(name: str) -> None:
    rnd = ROUNDS[name]
    cfg = rnd["config"]
    m, dim, t = int(cfg["modulus"]), cfg["dim"], cfg["t"]
    clip = float(cfg["clip"])
    clients = {c["id"]: c for c in rnd["clients"]}
    sec = {c: v["secrets"] for c, v in clients.items()}

    # configuration, round tag (SPEC §3.3), in the SetupRequest bytes
    config_hash = digest("secagg/v1/config", H(cfg["encoding"]))
    round_tag = digest("secagg/v1/round-tag", config_hash)
    assert (config_hash.hex(), round_tag.hex()) == (cfg["config_hash"], cfg["round_tag"])
    setup = steps(rnd, "to_client", "SetupRequest")[0]
    assert H(setup["message"]) == b"\x00\x01\x01" + blob(H(cfg["encoding"]))

    # session id (SPEC §7.1) over U1 = the clients whose AdvertiseKeys the server took
    u1 = sorted(s["from"] for s in steps(rnd, "to_server", "AdvertiseKeys"))
    enc_pk = {c: public_of(s["enc_private"]) for c, s in sec.items()}
    mask_pk = {c: public_of(s["mask_private"]) for c, s in sec.items()}
    preimage = round_tag + u32(len(u1)) + b"".join(u32(c) + enc_pk[c] + mask_pk[c] for c in u1)
    sid = digest("secagg/v1/session-id", preimage)
    assert sid.hex() == rnd["server"]["session_id"] == rnd["server"]["result"]["session_id"]
    kb = Msg(steps(rnd, "to_client", "KeysBroadcast")[0]["message"], 2)
    assert kb.take(32) == round_tag and kb.take(32) == sid

    # every share ciphertext (SPEC §6.5, §7.2, §7.3) from the coefficients and the nonce
    for share_step in steps(rnd, "to_server", "ShareKeys"):
        u = share_step["from"]
        msg = Msg(share_step["message"], 17)
        assert msg.take(32) == sid
        cts = msg.pairs()
        secrets = [H(sec[u]["self_mask_seed"]), H(sec[u]["mask_private"])]

        def share(which: int, x: int, u: int = u, secrets: list[bytes] = secrets) -> bytes:
            name = ("self_mask_seed", "mask_private")[which]
            ys = []
            for j in range(16):
                coeffs = [
                    int.from_bytes(secrets[which][2 * j : 2 * j + 2], "big"),
                    *sec[u]["shamir_coefficients"][name][j],
                ]
                ys.append(sum(a * pow(x, d, P) for d, a in enumerate(coeffs)) % P)
            return u32(x) + b"".join(u32(y) for y in ys)

        for v, ct in cts:
            key = hkdf(x25519(sec[u]["enc_private"], enc_pk[v]), kdf_info("share-encryption", sid, u, v))
            ad = blob(b"secagg/v1/ad/share-keys") + sid + u32(u) + u32(v)
            plaintext = u32(u) + u32(v) + share(0, v) + share(1, v)
            nonce = H(next(n["nonce"] for n in sec[u]["share_nonces"] if n["recipient"] == v))
            assert ct == nonce + AESGCM(key).encrypt(nonce, plaintext, ad)
        commitment = digest("secagg/v1/seed-commitment", sid + u32(u) + secrets[0])
        assert msg.take(32) == commitment

    # every masked input (SPEC §10.3): y = quantise(x) || w + PRG(b_u) + sum over live v of sign * PRG(s_uv)
    chunks: dict[int, list[int]] = {}
    width = 4 if m <= 1 << 32 else 8
    for chunk_step in steps(rnd, "to_server", "MaskedInputChunk"):
        msg = Msg(chunk_step["message"], 18)
        assert msg.take(32) == sid
        index, count, offset = msg.u32(), msg.u32(), int.from_bytes(msg.take(8), "big")
        assert msg.take(1) == bytes([width]) and 0 <= index < count
        data = msg.bytes_()
        got = chunks.setdefault(chunk_step["from"], [])
        assert offset == len(got)
        got += [int.from_bytes(data[i : i + width], "little") for i in range(0, len(data), width)]
    plain: dict[int, list[int]] = {}
    masked: dict[int, list[int]] = {}
    for u, y_sent in chunks.items():
        delivery = Msg(next(s for s in steps(rnd, "to_client", "SharesDelivery") if s["to"] == u)["message"], 3)
        assert delivery.take(32) == sid
        live = [s for s, _ in delivery.pairs()]
        inp = clients[u]["input"]
        plain[u] = [
            *quantise(inp["vector_f32"], clip, cfg["bits"], inp["weight"], sec[u]["rounding_words"]),
            inp["weight"],
        ]
        y = [(a + b) % m for a, b in zip(plain[u], prg(H(sec[u]["self_mask_seed"]), dim + 1, m), strict=True)]
        for v in live:
            seed = hkdf(x25519(sec[u]["mask_private"], mask_pk[v]), kdf_info("pairwise-mask", sid, u, v))
            sign = 1 if u < v else -1
            y = [(a + sign * b) % m for a, b in zip(y, prg(seed, dim + 1, m), strict=True)]
        assert y == y_sent, f"client {u}"
        assert [str(e) for e in y] == clients[u]["derived"]["masked_input"]
        masked[u] = y

    # the server's side: survivors, the dropped clients' mask keys from the revealed shares, the unmasked sum
    result = rnd["server"]["result"]
    survivors, dropped = result["survivors"], result["dropped"]
    assert sorted(masked) == survivors
    key_shares: dict[int, list[tuple[int, list[int]]]] = {}
    for resp_step in sorted(steps(rnd, "to_server", "UnmaskResponse"), key=lambda s: s["from"]):
        msg = Msg(resp_step["message"], 20)
        assert msg.take(32) == sid
        msg.pairs()  # seed shares
        for owner, share_bytes in msg.pairs():
            values = list(struct.unpack(">17I", share_bytes))
            assert values[0] == resp_step["from"]
            key_shares.setdefault(owner, []).append((values[0], values[1:]))
    assert sorted(key_shares) == dropped
    acc = [sum(masked[u][i] for u in survivors) % m for i in range(dim + 1)]
    for u in survivors:
        acc = [(a - b) % m for a, b in zip(acc, prg(H(sec[u]["self_mask_seed"]), dim + 1, m), strict=True)]
    for gone in dropped:
        mask_sk = lagrange_at_zero(key_shares[gone][:t])
        assert mask_sk.hex() == sec[gone]["mask_private"]
        for v in survivors:  # complete graph: every survivor neighboured the dropped client
            seed = hkdf(x25519(mask_sk.hex(), mask_pk[v]), kdf_info("pairwise-mask", sid, v, gone))
            sign = 1 if v < gone else -1  # v added sign(v, gone) * PRG(s_v,gone): remove exactly that
            acc = [(a - sign * b) % m for a, b in zip(acc, prg(seed, dim + 1, m), strict=True)]
    assert acc == [sum(plain[u][i] for u in survivors) % m for i in range(dim + 1)]
    assert [str(a) for a in acc[:dim]] == result["sum"] and acc[dim] == result["total_weight"]
    qmax = (1 << cfg["bits"]) - 1
    mean = (np.array(acc[:dim], dtype=np.float64) / acc[dim]) * (2 * clip / qmax) - clip
    assert [f"{int(b):08x}" for b in mean.astype(np.float32).view(np.uint32)] == result["mean_f32"]
