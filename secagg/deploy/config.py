"""Deployment configuration: strict TOML loaders for the server, the silos and the shared roster.

Every problem (unknown key, wrong type, missing required key, value out of range, missing file) raises a
`ConfigurationError` naming the file, the dotted key and what is wrong, before any socket is opened.
Relative paths resolve against the directory of the TOML file that names them. The `write_*` functions are
the loaders' inverses (used by the developer PKI), so a generated file round-trips to an equal object.
`FileLedger` (the silo's contribution ledger) lives in `secagg.deploy.ledger` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from numpy.typing import NDArray

from secagg.crypto.keys import KEY_BYTES, IdentityKey, load_public_pem
from secagg.crypto.rng import DeterministicRandom, random_uint32
from secagg.deploy._files import atomic_write
from secagg.deploy.ledger import FileLedger
from secagg.errors import ConfigurationError
from secagg.protocol import params as _params
from secagg.protocol.client import ClientInput
from secagg.protocol.config import MAX_CLIENT_ID, ClientPolicy, Mode, RoundConfig, StageTimeouts, propose_round

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_CHUNK_ELEMS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Deadlines",
    "FileLedger",
    "ProtocolSettings",
    "ReconnectSettings",
    "Roster",
    "RosterEntry",
    "ServerConfig",
    "ServerTls",
    "SiloConfig",
    "SiloData",
    "SiloPolicy",
    "SiloTls",
    "load_roster",
    "load_server_config",
    "load_silo_config",
    "parse_address",
    "write_roster",
    "write_server_config",
    "write_silo_config",
]

DEFAULT_ADDRESS: Final = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES: Final = 8 << 20
DEFAULT_CHUNK_ELEMS: Final = 262_144  # 1 MiB of uint32 per masked-input chunk
DEFAULT_STAGING_BUDGET_BYTES: Final = 256 << 20
"""Chunked inputs staged (so a silo failing mid-stream is simply dropped) up to this many bytes at once; past
it they stream straight into the sum and a failing stream aborts the round (memory stays bounded)."""
MIN_MESSAGE_BYTES: Final = 64 << 10
MAX_MESSAGE_BYTES: Final = (1 << 31) - 1  # gRPC message limits are signed 32-bit
MESSAGE_OVERHEAD_BYTES: Final = 64 << 10  # envelope, ids and tags around a chunk's ring elements
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")

T = TypeVar("T")
_REQUIRED: Final = object()


# -- strict TOML reading -----------------------------------------------------------------------------------


class _Table:
    """One TOML table being read: remembers the file, the dotted prefix and the keys consumed."""

    def __init__(self, data: Mapping[str, Any], file: Path, prefix: str = "") -> None:
        self.data = data
        self.file = file
        self.prefix = prefix
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def error(self, key: str, what: str) -> ConfigurationError:
        return ConfigurationError(f"{self.file}: {self.where(key)}: {what}")

    def has(self, key: str) -> bool:
        return key in self.data

    def _raw(self, key: str, default: object, kind: str) -> object:
        self.used.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise self.error(key, f"missing required key ({kind})")
        return default

    def str_(self, key: str, default: object = _REQUIRED, *, max_len: int = 4096) -> Any:
        v = self._raw(key, default, "a string")
        if v is default and default is not _REQUIRED:
            return v
        if not isinstance(v, str):
            raise self.error(key, f"expected a string, got {_type_name(v)}")
        if not v or len(v) > max_len:
            raise self.error(key, f"must be 1..{max_len} characters")
        return v

    def int_(self, key: str, default: object = _REQUIRED, *, lo: int | None = None, hi: int | None = None) -> Any:
        v = self._raw(key, default, "an integer")
        if v is default and default is not _REQUIRED:
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"expected an integer, got {_type_name(v)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.error(key, f"{v} is out of range {_range(lo, hi)}")
        return v

    def float_(
        self,
        key: str,
        default: object = _REQUIRED,
        *,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
        hi_open: bool = False,
        allow_inf: bool = False,
    ) -> Any:
        v = self._raw(key, default, "a number")
        if v is default and default is not _REQUIRED:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(key, f"expected a number, got {_type_name(v)}")
        f = float(v)
        if math.isnan(f) or (math.isinf(f) and not allow_inf):
            raise self.error(key, "must be a finite number")
        bad_lo = lo is not None and (f <= lo if lo_open else f < lo)
        bad_hi = hi is not None and (f >= hi if hi_open else f > hi)
        if bad_lo or bad_hi:
            lo_s = "-inf" if lo is None else repr(lo)
            hi_s = "inf" if hi is None else repr(hi)
            interval = f"{'(' if lo_open else '['}{lo_s}, {hi_s}{')' if hi_open else ']'}"
            raise self.error(key, f"{f!r} is out of range {interval}")
        return f

    def bool_(self, key: str, default: object = _REQUIRED) -> Any:
        v = self._raw(key, default, "true or false")
        if v is default and default is not _REQUIRED:
            return v
        if not isinstance(v, bool):
            raise self.error(key, f"expected true or false, got {_type_name(v)}")
        return v

    def choice(self, key: str, choices: Iterable[T], default: object = _REQUIRED) -> Any:
        options = list(choices)
        v = self._raw(key, default, f"one of {options}")
        if v is default and default is not _REQUIRED:
            return v
        if not any(type(v) is type(o) and v == o for o in options):  # 32.0 or true is not 32
            raise self.error(key, f"must be one of {options}, got {v!r}"[:300])
        return v

    def path(self, key: str, default: object = _REQUIRED, *, must_exist: str | None = "file") -> Any:
        """A path resolved against the TOML file's directory; must_exist is "file", "dir" or None."""
        v = self.str_(key, default)
        if v is default and default is not _REQUIRED:
            return v
        p = _resolve(self.file, v)
        if must_exist == "file" and not p.is_file():
            raise self.error(key, f"file not found: {p}")
        if must_exist == "dir" and not p.is_dir():
            raise self.error(key, f"directory not found: {p}")
        return p

    def address(self, key: str, default: object = _REQUIRED) -> Any:
        v = self.str_(key, default, max_len=300)
        if v is default and default is not _REQUIRED:
            return v
        try:
            parse_address(v)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        return v

    def table(self, key: str) -> _Table:
        """A sub-table (empty when absent)."""
        v = self._raw(key, {}, "a table")
        if not isinstance(v, dict):
            raise self.error(key, f"expected a table [{self.where(key)}], got {_type_name(v)}")
        return _Table(v, self.file, f"{self.where(key)}.")

    def finish(self) -> None:
        """Refuse keys nobody asked for (typos must not silently fall back to defaults)."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key" + (f" (also: {', '.join(unknown[1:])})" if unknown[1:] else ""))


def _type_name(v: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}
    if isinstance(v, dict):
        return "a table"
    return names.get(type(v), type(v).__name__)


def _range(lo: int | None, hi: int | None) -> str:
    if hi is None:
        return f">= {lo}"
    if lo is None:
        return f"<= {hi}"
    return f"{lo}..{hi}"


def _resolve(file: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        p = file.parent / p
    return Path(os.path.abspath(p))


def _read_toml(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    file = Path(os.path.abspath(os.fspath(path)))
    try:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigurationError(f"{file}: configuration file not found") from None
    except IsADirectoryError:
        raise ConfigurationError(f"{file}: is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigurationError(f"{file}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{file}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{file}: invalid TOML: not UTF-8") from None
    return file, data


def parse_address(address: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:port") into host and port; ValueError when malformed."""
    host, sep, port_s = address.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"expected host:port, got {address!r}"[:300])
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1..65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"bad IPv6 address {host!r}"[:300]) from None
        return host[1:-1], port
    if ":" in host or any(c.isspace() for c in host):
        raise ValueError(f"bad host {host!r} (write IPv6 addresses in brackets)"[:300])
    return host, port


def _check_certificates(t: _Table, key: str, path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise t.error(key, f"not a PEM certificate file: {path} ({type(exc).__name__})") from None
    return certs


def _check_private_key(t: _Table, key: str, path: Path, cert: x509.Certificate | None) -> None:
    """The TLS key must load without a password and, when a certificate is given, match it."""
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise t.error(key, f"not an unencrypted PEM private key: {path} ({type(exc).__name__})") from None
    if cert is not None:
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if private.public_key().public_bytes(*fmt) != cert.public_key().public_bytes(*fmt):
            raise t.error(key, f"private key {path} does not match the certificate")


# -- roster ------------------------------------------------------------------------------------------------


_FINITE_BLOCK = 1 << 20
"""Elements checked for NaN/infinity at a time when a silo loads its vector."""


@dataclass(frozen=True)
class RosterEntry:
    """One silo: protocol id, display name, TLS certificate common name, pinned Ed25519 public key."""

    id: int
    name: str
    certificate_identity: str
    identity_public_key: bytes = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"RosterEntry(id={self.id}, name={self.name!r}, certificate_identity="
            f"{self.certificate_identity!r}, key={self.identity_public_key.hex()[:16]}...)"
        )


@dataclass(frozen=True)
class Roster:
    """The silos taking part in a run, shared by the server and the silos (identity keys are public)."""

    silos: tuple[RosterEntry, ...]
    path: Path | None = field(default=None, compare=False)
    _by_id: dict[int, RosterEntry] = field(init=False, repr=False, compare=False)
    _by_cn: dict[str, RosterEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {s.id: s for s in self.silos}
        by_cn = {s.certificate_identity: s for s in self.silos}
        if len(by_id) != len(self.silos):
            raise ConfigurationError("roster: duplicate silo id")
        if len(by_cn) != len(self.silos):
            raise ConfigurationError("roster: duplicate certificate_identity")
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_by_cn", by_cn)

    def by_id(self, silo_id: int) -> RosterEntry | None:
        """The entry of a silo id, or None when the id is not in the roster."""
        return self._by_id.get(silo_id)

    def by_certificate_identity(self, common_name: str) -> RosterEntry | None:
        """The entry whose TLS client certificate carries common_name, or None (scenario B8)."""
        return self._by_cn.get(common_name)

    def identity_keys(self) -> dict[int, bytes]:
        """Pinned raw Ed25519 public keys by silo id (what ServerSession and ClientPolicy take)."""
        return {s.id: s.identity_public_key for s in self.silos}

    @property
    def ids(self) -> tuple[int, ...]:
        """Silo ids in increasing order."""
        return tuple(sorted(s.id for s in self.silos))

    def __len__(self) -> int:
        return len(self.silos)


def load_roster(path: str | os.PathLike[str]) -> Roster:
    """Read a roster: [[silo]] tables with id, name, certificate_identity and identity_public_key."""
    file, data = _read_toml(path)
    top = _Table(data, file)
    raw = top._raw("silo", _REQUIRED, "an array of [[silo]] tables")
    top.finish()
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise top.error("silo", "expected an array of [[silo]] tables")
    if len(raw) < 2:
        raise top.error("silo", f"a roster needs at least two silos, got {len(raw)}")
    entries: list[RosterEntry] = []
    seen: dict[str, dict[object, int]] = {"id": {}, "name": {}, "certificate_identity": {}, "key": {}}
    for i, item in enumerate(raw):
        t = _Table(item, file, f"silo[{i}].")
        silo_id = t.int_("id", lo=1, hi=MAX_CLIENT_ID)
        name = t.str_("name", max_len=256)
        cn = t.str_("certificate_identity", max_len=64)
        key = _roster_key(t, "identity_public_key")
        t.finish()
        for what, value in (("id", silo_id), ("name", name), ("certificate_identity", cn)):
            prior = seen[what].setdefault(value, i)
            if prior != i:
                raise t.error(what, f"duplicate {what} {value!r} (also silo[{prior}])"[:300])
        prior = seen["key"].setdefault(key, i)
        if prior != i:
            raise t.error("identity_public_key", f"same identity key as silo[{prior}]")
        entries.append(RosterEntry(silo_id, name, cn, key))
    return Roster(tuple(entries), path=file)


def _roster_key(t: _Table, key: str) -> bytes:
    value = t.str_(key, max_len=4096)
    if _HEX_KEY.fullmatch(value):
        raw = bytes.fromhex(value)
    else:
        p = _resolve(t.file, value)
        if not p.is_file():
            raise t.error(key, f"neither 64 hex digits nor an existing PEM file: {p}")
        try:
            raw = load_public_pem(p.read_bytes())
        except ConfigurationError as exc:
            raise t.error(key, f"{p}: {exc}") from None
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:  # pragma: no cover - pyca accepts every 32-byte string
        raise t.error(key, "not a valid Ed25519 public key") from None
    if len(raw) != KEY_BYTES or raw == bytes(KEY_BYTES):
        raise t.error(key, "not a valid Ed25519 public key")
    return raw


def write_roster(roster: Roster, path: str | os.PathLike[str]) -> None:
    """Write roster as TOML (keys in hex) so that load_roster reads back an equal Roster."""
    lines = ["# Silos of this run: ids, TLS certificate names and pinned Ed25519 identity keys.", ""]
    for s in roster.silos:
        lines += [
            "[[silo]]",
            f"id = {s.id}",
            f"name = {_toml_str(s.name)}",
            f"certificate_identity = {_toml_str(s.certificate_identity)}",
            f"identity_public_key = {_toml_str(s.identity_public_key.hex())}",
            "",
        ]
    _write_text(Path(path), "\n".join(lines))


# -- server ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerTls:
    """The server's TLS material; insecure=True (plaintext, local experiments only) has none."""

    cert: Path | None
    key: Path | None
    client_ca: Path | None
    insecure: bool = False


@dataclass(frozen=True)
class ProtocolSettings:
    """The protocol parameters the server proposes each round (k and t derived unless overridden)."""

    mode: Mode
    dim: int
    k: int | None = None
    t: int | None = None
    corrupt_fraction: float = 0.1
    dropout_fraction: float = 0.1
    modulus_bits: int = 32
    bits: int = 16
    clip: float = 1.0
    max_weight: int = 1
    min_aggregate: int = 2
    dp_noise_multiplier: float = 0.0
    chunk_elems: int = DEFAULT_CHUNK_ELEMS

    @property
    def modulus(self) -> int:
        """The ring modulus, 2^modulus_bits."""
        return 1 << self.modulus_bits

    def params(self, n: int) -> _params.SecAggParams:
        """k and t for a round with n participants (derived by the SecAgg+ rule unless overridden)."""
        return _params.derive_params(
            n, self.corrupt_fraction, self.dropout_fraction, self.mode.value, k=self.k, t=self.t
        )


@dataclass(frozen=True)
class Deadlines:
    """Seconds allowed for each stage, and for silos to connect before a round starts."""

    advertise_keys: float = 30.0
    share_keys: float = 30.0
    masked_input: float = 120.0
    consistency_check: float = 30.0
    unmask: float = 30.0
    connect: float = 60.0

    def stage_timeouts(self) -> StageTimeouts:
        """The stage deadlines as ServerSession takes them."""
        return StageTimeouts(
            self.advertise_keys,
            self.share_keys,
            self.masked_input,
            self.consistency_check,
            self.unmask,
        )


@dataclass(frozen=True)
class ServerConfig:
    """Everything the aggregation server process needs (see load_server_config)."""

    listen: str
    tls: ServerTls
    roster: Roster
    protocol: ProtocolSettings
    deadlines: Deadlines
    rounds: int
    min_silos: int
    run_id: str
    output_dir: Path
    audit_log: Path
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    staging_budget_bytes: int = DEFAULT_STAGING_BUDGET_BYTES
    seed: int | None = None
    exclusion_strikes: int = 1
    """Rounds a silo may be named as the cause of a failure before it is benched (0: never bench)."""
    path: Path | None = field(default=None, compare=False)

    @property
    def exclusion_path(self) -> Path:
        """Where the server keeps its exclusion list (benched silos; `secagg exclusions --reinstate` edits it)."""
        return self.output_dir / "exclusions.json"

    @property
    def listen_host_port(self) -> tuple[str, int]:
        """The listen address split into host and port."""
        return parse_address(self.listen)

    def round_config(
        self,
        round_: int,
        participants: Iterable[int],
        graph_seed: bytes,
        model_hash: bytes = bytes(32),
        benched: int = 0,
    ) -> RoundConfig:
        """The RoundConfig to propose for one round over the given (connected, rostered) silos; with `benched`
        silos excluded, min_silos counts at most the silos that are not."""
        parts = tuple(sorted(participants))
        unknown = [p for p in parts if self.roster.by_id(p) is None]
        if unknown:
            raise ConfigurationError(f"participants not in the roster: {unknown[:5]}")
        need = min(self.min_silos, len(self.roster) - benched)
        if len(parts) < need:
            raise ConfigurationError(f"{len(parts)} participants, fewer than min_silos = {need}")
        p = self.protocol
        return propose_round(
            run_id=self.run_id,
            round_=round_,
            participants=parts,
            mode=p.mode,
            graph_seed=graph_seed,
            dim=p.dim,
            corrupt_fraction=p.corrupt_fraction,
            dropout_fraction=p.dropout_fraction,
            k=p.k,
            t=p.t,
            modulus=p.modulus,
            clip=p.clip,
            bits=p.bits,
            max_weight=p.max_weight,
            min_aggregate=p.min_aggregate,
            model_hash=model_hash,
            dp_noise_multiplier=p.dp_noise_multiplier,
        )


def load_server_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read and validate the server's TOML file (and the roster it names)."""
    file, data = _read_toml(path)
    top = _Table(data, file)
    listen = top.address("listen", DEFAULT_ADDRESS)
    tls = _server_tls(top.table("tls"))
    roster_path = top.path("roster")
    roster = load_roster(roster_path)
    proto = _protocol(top.table("protocol"))
    deadlines = _deadlines(top.table("deadlines"))
    rounds = top.int_("rounds", 1, lo=1, hi=2**32 - 1)
    n = len(roster)
    min_silos = top.int_("min_silos", n, lo=2, hi=n)
    run_id = top.str_("run_id", "run", max_len=128)
    output_dir = top.path("output_dir", None, must_exist=None)
    if output_dir is None:
        output_dir = _resolve(file, "output")
    audit_log = top.path("audit_log", None, must_exist=None)
    if audit_log is None:
        audit_log = output_dir / "audit.jsonl"
    max_msg = top.int_("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES, lo=MIN_MESSAGE_BYTES, hi=MAX_MESSAGE_BYTES)
    budget = top.int_("staging_budget_bytes", DEFAULT_STAGING_BUDGET_BYTES, lo=0)
    seed = top.int_("seed", None, lo=0, hi=2**128 - 1)
    strikes = top.int_("exclusion_strikes", 1, lo=0, hi=1_000_000)
    top.finish()

    # Cross-field checks: refuse now what would otherwise abort the first round.
    if proto.min_aggregate > min_silos:
        raise top.error("protocol.min_aggregate", f"{proto.min_aggregate} exceeds min_silos = {min_silos}")
    elem_bytes = proto.modulus_bits // 8
    if proto.chunk_elems * elem_bytes + MESSAGE_OVERHEAD_BYTES > max_msg:
        raise top.error(
            "protocol.chunk_elems",
            f"{proto.chunk_elems} elements of {elem_bytes} bytes do not fit max_message_bytes = {max_msg}",
        )
    if n * proto.max_weight * (1 << proto.bits) >= proto.modulus:
        raise top.error(
            "protocol.bits",
            f"ring capacity exceeded: {n} silos * max_weight {proto.max_weight} * 2^{proto.bits} >= "
            f"2^{proto.modulus_bits}; use fewer bits, a smaller max_weight or modulus_bits = 64",
        )
    for size in sorted({min_silos, n}):
        try:
            proto.params(size)
        except ConfigurationError as exc:
            raise top.error("protocol", f"with {size} silos: {exc}") from None
    return ServerConfig(
        listen=listen,
        tls=tls,
        roster=roster,
        protocol=proto,
        deadlines=deadlines,
        rounds=rounds,
        min_silos=min_silos,
        run_id=run_id,
        output_dir=output_dir,
        audit_log=audit_log,
        max_message_bytes=max_msg,
        staging_budget_bytes=budget,
        seed=seed,
        exclusion_strikes=strikes,
        path=file,
    )


def _plaintext(t: _Table, tls_keys: tuple[str, ...]) -> bool:
    """Whether a [tls] table asks for plaintext (insecure = true); then it may name no TLS file at all."""
    if not t.bool_("insecure", False):
        return False
    for key in tls_keys:
        if t.has(key):
            raise t.error(key, "given although tls.insecure = true (plaintext); remove one of the two")
    t.finish()
    return True


def _server_tls(t: _Table) -> ServerTls:
    if _plaintext(t, ("cert", "key", "client_ca")):
        return ServerTls(None, None, None, insecure=True)
    # Scenario D3: mutual TLS without a client CA would accept any client; refuse to start.
    if not t.has("client_ca"):
        raise t.error(
            "client_ca",
            "missing: mutual TLS needs the CA that signs the silos' client certificates "
            "(set tls.insecure = true only for a local plaintext experiment)",
        )
    cert = t.path("cert")
    key = t.path("key")
    client_ca = t.path("client_ca")
    t.finish()
    certs = _check_certificates(t, "cert", cert)
    _check_private_key(t, "key", key, certs[0])
    _check_certificates(t, "client_ca", client_ca)
    return ServerTls(cert, key, client_ca, insecure=False)


def _protocol(t: _Table) -> ProtocolSettings:
    mode = Mode(t.choice("mode", [m.value for m in Mode]))
    dim = t.int_("dim", lo=1, hi=2**40)
    k = t.int_("k", None, lo=1, hi=MAX_CLIENT_ID)
    thr = t.int_("t", None, lo=2, hi=MAX_CLIENT_ID)
    corrupt = t.float_("corrupt_fraction", 0.1, lo=0.0, hi=1.0, hi_open=True)
    dropout = t.float_("dropout_fraction", 0.1, lo=0.0, hi=1.0, hi_open=True)
    modulus_bits = t.choice("modulus_bits", [32, 64], 32)
    bits = t.int_("bits", 16, lo=1, hi=62)
    clip = t.float_("clip", 1.0, lo=0.0, lo_open=True)
    max_weight = t.int_("max_weight", 1, lo=1, hi=2**62)
    min_aggregate = t.int_("min_aggregate", 2, lo=2)
    dp = t.float_("dp_noise_multiplier", 0.0, lo=0.0)
    chunk = t.int_("chunk_elems", DEFAULT_CHUNK_ELEMS, lo=1, hi=2**40)
    t.finish()
    return ProtocolSettings(
        mode=mode,
        dim=dim,
        k=k,
        t=thr,
        corrupt_fraction=corrupt,
        dropout_fraction=dropout,
        modulus_bits=modulus_bits,
        bits=bits,
        clip=clip,
        max_weight=max_weight,
        min_aggregate=min_aggregate,
        dp_noise_multiplier=dp,
        chunk_elems=chunk,
    )


def _deadlines(t: _Table) -> Deadlines:
    d = Deadlines()
    values = {
        name: t.float_(name, getattr(d, name), lo=0.0, lo_open=True, hi=86_400.0)
        for name in ("advertise_keys", "share_keys", "masked_input", "consistency_check", "unmask", "connect")
    }
    t.finish()
    return Deadlines(**values)


def write_server_config(config: ServerConfig, path: str | os.PathLike[str]) -> None:
    """Write config as TOML (paths relative to the file when below its directory); loads back equal."""
    out = Path(os.path.abspath(os.fspath(path)))
    base = out.parent
    rel = _relative_to(base)
    if config.roster.path is None:
        raise ConfigurationError("write_server_config: the roster has no file; write it with write_roster first")
    p = config.protocol
    d = config.deadlines
    lines = [
        "# secagg aggregation server.",
        f"listen = {_toml_str(config.listen)}",
        f"roster = {_toml_str(rel(config.roster.path))}",
        f"run_id = {_toml_str(config.run_id)}",
        f"rounds = {config.rounds}",
        f"min_silos = {config.min_silos}",
        f"output_dir = {_toml_str(rel(config.output_dir))}",
        f"audit_log = {_toml_str(rel(config.audit_log))}",
        f"max_message_bytes = {config.max_message_bytes}",
        f"staging_budget_bytes = {config.staging_budget_bytes}",
        f"exclusion_strikes = {config.exclusion_strikes}  # rounds named as a culprit before a silo is benched",
    ]
    if config.seed is not None:
        lines.append(f"seed = {config.seed}  # deterministic randomness: tests only, never in production")
    lines += ["", "[tls]"]
    if config.tls.insecure:
        lines.append("insecure = true  # plaintext: local experiments only")
    else:
        assert config.tls.cert and config.tls.key and config.tls.client_ca
        lines += [
            f"cert = {_toml_str(rel(config.tls.cert))}",
            f"key = {_toml_str(rel(config.tls.key))}",
            f"client_ca = {_toml_str(rel(config.tls.client_ca))}",
        ]
    lines += [
        "",
        "[protocol]",
        f"mode = {_toml_str(p.mode.value)}",
        f"dim = {p.dim}",
        *([f"k = {p.k}"] if p.k is not None else []),
        *([f"t = {p.t}"] if p.t is not None else []),
        f"corrupt_fraction = {_toml_float(p.corrupt_fraction)}",
        f"dropout_fraction = {_toml_float(p.dropout_fraction)}",
        f"modulus_bits = {p.modulus_bits}",
        f"bits = {p.bits}",
        f"clip = {_toml_float(p.clip)}",
        f"max_weight = {p.max_weight}",
        f"min_aggregate = {p.min_aggregate}",
        f"dp_noise_multiplier = {_toml_float(p.dp_noise_multiplier)}",
        f"chunk_elems = {p.chunk_elems}",
        "",
        "[deadlines]  # seconds",
        f"advertise_keys = {_toml_float(d.advertise_keys)}",
        f"share_keys = {_toml_float(d.share_keys)}",
        f"masked_input = {_toml_float(d.masked_input)}",
        f"consistency_check = {_toml_float(d.consistency_check)}",
        f"unmask = {_toml_float(d.unmask)}",
        f"connect = {_toml_float(d.connect)}",
        "",
    ]
    _write_text(out, "\n".join(lines))


# -- silo --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiloTls:
    """The silo's TLS material: the CA that signs the server, and its own client certificate."""

    ca: Path | None
    cert: Path | None
    key: Path | None
    insecure: bool = False


SiloPolicy = ClientPolicy
"""The [policy] table is a ClientPolicy without its roster (the roster comes from silo.toml's roster file)."""


@dataclass(frozen=True)
class SiloData:
    """What the silo aggregates: "random" (seeded, for tests and demos) or "npy" (a 1-D float32 file)."""

    kind: str
    weight: int = 1
    seed: int | None = None
    path: Path | None = None

    def client_input(self, config: RoundConfig) -> ClientInput:
        """The silo's input for one round; ConfigurationError if it does not fit the round."""
        if self.weight > config.max_weight:
            raise ConfigurationError(f"data.weight {self.weight} exceeds the round's max_weight {config.max_weight}")
        if self.kind == "random":
            assert self.seed is not None
            rng = DeterministicRandom(self.seed).fork(f"round-{config.round}".encode())
            words = random_uint32(rng, config.dim).astype(np.float64)
            vec = ((words / 2.0**32) * 2.0 - 1.0) * config.clip
            return ClientInput(vec.astype(np.float32), self.weight)
        assert self.path is not None
        arr = self.load_array()
        if arr.shape != (config.dim,):
            raise ConfigurationError(f"{self.path}: {arr.shape[0]} elements, the round's dim is {config.dim}")
        return ClientInput(arr, self.weight)

    def load_array(self) -> NDArray[np.float32]:
        """The npy file's vector (no pickle), checked to be 1-D float32 and finite."""
        assert self.path is not None
        try:
            arr = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{self.path}: cannot read .npy ({type(exc).__name__})") from None
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 1:
            raise ConfigurationError(f"{self.path}: expected a 1-D float32 array")
        for lo in range(0, arr.shape[0], _FINITE_BLOCK):  # block by block: no model-sized boolean mask
            if not np.isfinite(arr[lo : lo + _FINITE_BLOCK]).all():
                raise ConfigurationError(f"{self.path}: contains NaN or infinity")
        return arr


@dataclass(frozen=True)
class ReconnectSettings:
    """Exponential backoff between reconnection attempts, in seconds."""

    initial_backoff: float = 0.5
    max_backoff: float = 10.0


@dataclass(frozen=True)
class SiloConfig:
    """Everything a silo process needs (see load_silo_config)."""

    server: str
    server_name: str
    tls: SiloTls
    silo_id: int
    identity_key: Path
    identity_key_password_env: str | None
    roster: Roster | None
    policy: ClientPolicy
    data: SiloData
    state_dir: Path
    reconnect: ReconnectSettings = ReconnectSettings()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    seed: int | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def ledger_path(self) -> Path:
        """Where this silo's contribution ledger lives."""
        return self.state_dir / "contributions.json"

    def open_ledger(self) -> FileLedger:
        """The silo's persistent contribution ledger (created on first use)."""
        return FileLedger(self.ledger_path)

    def load_identity(self, environ: Mapping[str, str] | None = None) -> IdentityKey:
        """Load the Ed25519 identity key (password from the named environment variable) and check it
        against the roster's pinned key for silo_id when a roster is configured."""
        env = os.environ if environ is None else environ
        password: bytes | None = None
        if self.identity_key_password_env is not None:
            value = env.get(self.identity_key_password_env)
            if value is None:
                raise ConfigurationError(
                    f"{self.path}: identity_key_password_env: environment variable "
                    f"{self.identity_key_password_env} is not set"
                )
            password = value.encode()
        try:
            data = self.identity_key.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"{self.identity_key}: cannot read ({type(exc).__name__})") from None
        try:
            key = IdentityKey.from_pem(data, password)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self.path}: identity_key: {self.identity_key}: {exc}") from None
        if self.roster is not None:
            entry = self.roster.by_id(self.silo_id)
            if entry is None or entry.identity_public_key != key.public_bytes:
                raise ConfigurationError(
                    f"{self.path}: identity_key: {self.identity_key} is not the key the roster pins "
                    f"for silo {self.silo_id}"
                )
        return key

    def to_client_policy(self, roster: Roster | None = None) -> ClientPolicy:
        """The ClientPolicy this silo enforces; roster defaults to the configured one."""
        r = roster if roster is not None else self.roster
        if Mode.HARDENED in self.policy.modes and r is None:
            raise ConfigurationError("policy accepts the hardened mode but no roster is given")
        return dataclasses.replace(self.policy, roster=r.identity_keys() if r is not None else None)


def load_silo_config(path: str | os.PathLike[str]) -> SiloConfig:
    """Read and validate a silo's TOML file (and the roster it names, if any)."""
    file, data = _read_toml(path)
    top = _Table(data, file)
    server = top.address("server", DEFAULT_ADDRESS)
    server_name = top.str_("server_name", None, max_len=253)
    if server_name is None:
        server_name = parse_address(server)[0]
    tls = _silo_tls(top.table("tls"))
    silo_id = top.int_("silo_id", lo=1, hi=MAX_CLIENT_ID)
    identity_key = top.path("identity_key")
    password_env = top.str_("identity_key_password_env", None, max_len=256)
    if password_env is not None and not _ENV_NAME.fullmatch(password_env):
        raise top.error("identity_key_password_env", "not a valid environment variable name")
    roster_path = top.path("roster", None)
    policy = _policy(top.table("policy"))
    data_spec = _data(top.table("data"))
    state_dir = top.path("state_dir", must_exist=None)
    rc = top.table("reconnect")
    initial = rc.float_("initial_backoff", 0.5, lo=0.0, lo_open=True, hi=3600.0)
    max_backoff = rc.float_("max_backoff", 10.0, lo=0.0, lo_open=True, hi=86_400.0)
    rc.finish()
    if max_backoff < initial:
        raise rc.error("max_backoff", f"{max_backoff!r} is below reconnect.initial_backoff = {initial!r}")
    max_msg = top.int_("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES, lo=MIN_MESSAGE_BYTES, hi=MAX_MESSAGE_BYTES)
    seed = top.int_("seed", None, lo=0, hi=2**128 - 1)
    top.finish()

    roster = load_roster(roster_path) if roster_path is not None else None
    if roster is None and Mode.HARDENED in policy.modes:
        raise top.error("roster", 'missing: required when policy.modes accepts "hardened"')
    if roster is not None and roster.by_id(silo_id) is None:
        raise top.error("silo_id", f"silo {silo_id} is not in the roster {roster.path}")
    if state_dir.exists() and not state_dir.is_dir():
        raise top.error("state_dir", f"not a directory: {state_dir}")
    return SiloConfig(
        server=server,
        server_name=server_name,
        tls=tls,
        silo_id=silo_id,
        identity_key=identity_key,
        identity_key_password_env=password_env,
        roster=roster,
        policy=policy,
        data=data_spec,
        state_dir=state_dir,
        reconnect=ReconnectSettings(initial, max_backoff),
        max_message_bytes=max_msg,
        seed=seed,
        path=file,
    )


def _silo_tls(t: _Table) -> SiloTls:
    if _plaintext(t, ("ca", "cert", "key")):
        return SiloTls(None, None, None, insecure=True)
    ca = t.path("ca")
    cert = t.path("cert")
    key = t.path("key")
    t.finish()
    _check_certificates(t, "ca", ca)
    certs = _check_certificates(t, "cert", cert)
    _check_private_key(t, "key", key, certs[0])
    return SiloTls(ca, cert, key, insecure=False)


def _policy(t: _Table) -> ClientPolicy:
    d = ClientPolicy()
    raw_modes = t._raw("modes", None, "an array of modes")
    if raw_modes is None:
        modes = d.modes
    else:
        valid = [m.value for m in Mode]
        if not isinstance(raw_modes, list) or not raw_modes or not all(m in valid for m in raw_modes):
            raise t.error("modes", f"expected a non-empty array of {valid}")
        modes = frozenset(Mode(m) for m in raw_modes)
    policy = ClientPolicy(
        modes=modes,
        min_clients=t.int_("min_clients", d.min_clients, lo=2, hi=MAX_CLIENT_ID),
        min_threshold=t.int_("min_threshold", d.min_threshold, lo=2, hi=MAX_CLIENT_ID),
        min_aggregate=t.int_("min_aggregate", d.min_aggregate, lo=2, hi=MAX_CLIENT_ID),
        min_modulus_bits=t.int_("min_modulus_bits", d.min_modulus_bits, lo=1, hi=64),
        max_clip=t.float_("max_clip", d.max_clip, lo=0.0, lo_open=True, allow_inf=True),
        min_dp_noise_multiplier=t.float_("min_dp_noise_multiplier", d.min_dp_noise_multiplier, lo=0.0),
        corrupt_fraction=t.float_("corrupt_fraction", d.corrupt_fraction, lo=0.0, hi=1.0, hi_open=True),
        dropout_fraction=t.float_("dropout_fraction", d.dropout_fraction, lo=0.0, hi=1.0, hi_open=True),
        require_derived_degree=t.bool_("require_derived_degree", d.require_derived_degree),
        expected_dim=t.int_("expected_dim", None, lo=1, hi=2**40),
        min_ddp_local_noise_multiplier=t.float_(
            "min_ddp_local_noise_multiplier", d.min_ddp_local_noise_multiplier, lo=0.0
        ),
    )
    t.finish()
    return policy


def _data(t: _Table) -> SiloData:
    if not t.data:
        raise t.error("kind", 'missing required key: the [data] table needs kind = "random" or "npy"')
    kind = t.choice("kind", ["random", "npy"])
    weight = t.int_("weight", 1, lo=1, hi=2**62)
    if kind == "random":
        seed = t.int_("seed", lo=0, hi=2**128 - 1)
        t.finish()
        return SiloData("random", weight, seed=seed)
    path = t.path("path")
    t.finish()
    _check_npy_header(t, "path", path)
    return SiloData("npy", weight, path=path)


def _check_npy_header(t: _Table, key: str, path: Path) -> None:
    """Check the .npy header only (1-D float32), without reading the data."""
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            reader: Callable[..., tuple[tuple[int, ...], bool, np.dtype[Any]]] = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = reader(fh)
    except (OSError, ValueError) as exc:
        raise t.error(key, f"not a .npy file: {path} ({type(exc).__name__})") from None
    if len(shape) != 1 or dtype != np.dtype(np.float32):
        raise t.error(key, f"{path}: expected a 1-D float32 array, got shape {shape} dtype {dtype}")


def write_silo_config(config: SiloConfig, path: str | os.PathLike[str]) -> None:
    """Write config as TOML (paths relative to the file when below its directory); loads back equal."""
    out = Path(os.path.abspath(os.fspath(path)))
    rel = _relative_to(out.parent)
    p = config.policy
    lines = [
        f"# secagg silo {config.silo_id}.",
        f"server = {_toml_str(config.server)}",
        f"server_name = {_toml_str(config.server_name)}",
        f"silo_id = {config.silo_id}",
        f"identity_key = {_toml_str(rel(config.identity_key))}",
    ]
    if config.identity_key_password_env is not None:
        lines.append(f"identity_key_password_env = {_toml_str(config.identity_key_password_env)}")
    if config.roster is not None:
        if config.roster.path is None:
            raise ConfigurationError("write_silo_config: the roster has no file; write it with write_roster first")
        lines.append(f"roster = {_toml_str(rel(config.roster.path))}")
    lines += [
        f"state_dir = {_toml_str(rel(config.state_dir))}",
        f"max_message_bytes = {config.max_message_bytes}",
    ]
    if config.seed is not None:
        lines.append(f"seed = {config.seed}  # deterministic randomness: tests only, never in production")
    lines += ["", "[tls]"]
    if config.tls.insecure:
        lines.append("insecure = true  # plaintext: local experiments only")
    else:
        assert config.tls.ca and config.tls.cert and config.tls.key
        lines += [
            f"ca = {_toml_str(rel(config.tls.ca))}",
            f"cert = {_toml_str(rel(config.tls.cert))}",
            f"key = {_toml_str(rel(config.tls.key))}",
        ]
    modes = ", ".join(_toml_str(m.value) for m in sorted(p.modes, key=lambda m: m.value))
    lines += [
        "",
        "[policy]",
        f"modes = [{modes}]",
        f"min_clients = {p.min_clients}",
        f"min_threshold = {p.min_threshold}",
        f"min_aggregate = {p.min_aggregate}",
        f"min_modulus_bits = {p.min_modulus_bits}",
        f"max_clip = {_toml_float(p.max_clip)}",
        f"min_dp_noise_multiplier = {_toml_float(p.min_dp_noise_multiplier)}",
        f"corrupt_fraction = {_toml_float(p.corrupt_fraction)}",
        f"dropout_fraction = {_toml_float(p.dropout_fraction)}",
        f"require_derived_degree = {'true' if p.require_derived_degree else 'false'}",
        *([f"expected_dim = {p.expected_dim}"] if p.expected_dim is not None else []),
        f"min_ddp_local_noise_multiplier = {_toml_float(p.min_ddp_local_noise_multiplier)}",
        "",
        "[data]",
        f"kind = {_toml_str(config.data.kind)}",
        f"weight = {config.data.weight}",
    ]
    if config.data.kind == "random":
        lines.append(f"seed = {config.data.seed}")
    else:
        assert config.data.path is not None
        lines.append(f"path = {_toml_str(rel(config.data.path))}")
    lines += [
        "",
        "[reconnect]  # seconds",
        f"initial_backoff = {_toml_float(config.reconnect.initial_backoff)}",
        f"max_backoff = {_toml_float(config.reconnect.max_backoff)}",
        "",
    ]
    _write_text(out, "\n".join(lines))


# -- TOML writing ------------------------------------------------------------------------------------------


def _toml_str(s: str) -> str:
    """A TOML basic string (JSON's escaping with ensure_ascii is a subset of TOML's)."""
    return json.dumps(s, ensure_ascii=True)


def _toml_float(f: float) -> str:
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(float(f))


def _relative_to(base: Path) -> Callable[[Path], str]:
    """A function writing a path relative to base when it lies below base, absolute otherwise."""

    def rel(p: Path) -> str:
        try:
            return Path(p).relative_to(base).as_posix()
        except ValueError:
            return str(p)

    return rel


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode(), mode=0o644)
