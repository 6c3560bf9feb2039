"""A developer PKI for local runs and transport tests, on the `cryptography` x509 API.

`init_pki` writes a CA, a server certificate, one TLS client certificate and one Ed25519 identity key per
silo, the roster, and server / silo TOML files ready for a run on 127.0.0.1. Private keys are written with
mode 0600. The `make_*` helpers issue the wrong certificates scenario D1 needs: a silo certificate from a
different CA (same CA name, different key), an expired one, and a server certificate the silos must not
trust. Keys come from an injected RandomSource, so a DeterministicRandom and a fixed `now` give the same
files every time (ECDSA signatures are deterministic, RFC 6979). This is a development PKI: production
deployments use the organisation's own CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from secagg.crypto.keys import IdentityKey
from secagg.crypto.rng import RandomSource, SystemRandom
from secagg.deploy._files import atomic_write
from secagg.deploy.config import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Deadlines,
    ProtocolSettings,
    ReconnectSettings,
    Roster,
    RosterEntry,
    ServerConfig,
    ServerTls,
    SiloConfig,
    SiloData,
    SiloTls,
    write_roster,
    write_server_config,
    write_silo_config,
)
from secagg.errors import ConfigurationError
from secagg.protocol.config import ClientPolicy, Mode

__all__ = [
    "CA_COMMON_NAME",
    "IssuedCertificate",
    "PkiLayout",
    "SiloFiles",
    "init_pki",
    "issue_certificate",
    "issue_from_new_ca",
    "silo_common_name",
]

CA_COMMON_NAME: Final = "secagg development CA"
_ORGANISATION: Final = "secagg development"
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_CLOCK_SKEW: Final = dt.timedelta(minutes=5)


def silo_common_name(silo_id: int) -> str:
    """The common name (and DNS SAN) of silo silo_id's TLS client certificate: "silo-<id>"."""
    return f"silo-{silo_id}"


@dataclass(frozen=True)
class SiloFiles:
    """The files init_pki wrote for one silo."""

    id: int
    name: str
    cert: Path
    key: Path
    identity_key: Path
    config: Path
    state_dir: Path


@dataclass(frozen=True)
class PkiLayout:
    """Where init_pki put everything (absolute paths)."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    roster: Path
    server_config: Path
    output_dir: Path
    silos: tuple[SiloFiles, ...]


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate, its private key, the CA certificate that signed it, and a config using it (if any)."""

    cert: Path
    key: Path
    ca_cert: Path
    config: Path | None = None


# -- keys and certificates ---------------------------------------------------------------------------------


def _ec_key(rng: RandomSource) -> ec.EllipticCurvePrivateKey:
    """A P-256 key whose scalar comes from rng (48 bytes reduced: bias below 2^-128)."""
    d = int.from_bytes(rng.random_bytes(48), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(d, ec.SECP256R1())


def _serial(rng: RandomSource) -> int:
    return (int.from_bytes(rng.random_bytes(20), "big") >> 1) or 1  # positive, at most 159 bits


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    try:
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    except TypeError:  # pragma: no cover - cryptography < 44 has no deterministic ECDSA for x509
        return builder.sign(key, hashes.SHA256())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o600)


def _write_public(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o644)


def _now(now: dt.datetime | None) -> dt.datetime:
    t = now if now is not None else dt.datetime.now(dt.UTC)
    if t.tzinfo is None:
        raise ConfigurationError("now must be timezone-aware (UTC)")
    return t.astimezone(dt.UTC).replace(microsecond=0)


def _make_ca(
    rng: RandomSource, not_before: dt.datetime, not_after: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _ec_key(rng)
    name = _name(CA_COMMON_NAME)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial(rng))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _sign(builder, key), key


def _make_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    rng: RandomSource,
    *,
    common_name: str,
    hosts: Sequence[str],
    client: bool,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _ec_key(rng)
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(_serial(rng))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _sign(builder, ca_key), key


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot load the CA {cert_path} / {key_path}: {type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"{key_path}: the CA key must be an EC key")
    return cert, key


def issue_certificate(
    ca_cert: str | os.PathLike[str],
    ca_key: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    name: str,
    *,
    common_name: str,
    hosts: Sequence[str] = (),
    client: bool = True,
    not_before: dt.datetime,
    not_after: dt.datetime,
    rng: RandomSource | None = None,
) -> IssuedCertificate:
    """Issue <name>.pem / <name>.key in directory, signed by the CA in ca_cert / ca_key.

    client=True gives a TLS client certificate (clientAuth), False a server one (serverAuth); hosts become
    DNS or IP subject alternative names.
    """
    out = Path(os.path.abspath(os.fspath(directory)))
    ca_cert_path = Path(os.path.abspath(os.fspath(ca_cert)))
    ca, ca_private = _load_ca(ca_cert_path, Path(os.path.abspath(os.fspath(ca_key))))
    cert, key = _make_leaf(
        ca,
        ca_private,
        rng if rng is not None else SystemRandom(),
        common_name=common_name,
        hosts=hosts,
        client=client,
        not_before=not_before,
        not_after=not_after,
    )
    cert_path, key_path = out / f"{name}.pem", out / f"{name}.key"
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return IssuedCertificate(cert_path, key_path, ca_cert_path)


# -- the development PKI -----------------------------------------------------------------------------------


def init_pki(
    directory: str | os.PathLike[str],
    silos: int,
    *,
    server_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 365,
    port: int = 50051,
    dim: int = 1000,
    mode: str | Mode = "semi-honest",
    force: bool = False,
    rng: RandomSource | None = None,
    now: dt.datetime | None = None,
) -> PkiLayout:
    """Create a CA, server and silo certificates, identity keys, roster and configs for a local run.

    Refuses a non-empty directory unless force=True (then the files it writes are replaced, others kept).
    """
    if isinstance(silos, bool) or not isinstance(silos, int) or not 2 <= silos <= 10_000:
        raise ConfigurationError("silos must be an integer in 2..10000")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 36_500:
        raise ConfigurationError("days must be an integer in 1..36500")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigurationError("port must be in 1..65535")
    if not server_hosts or any(not isinstance(h, str) or not h for h in server_hosts):
        raise ConfigurationError("server_hosts must be non-empty host names or IP addresses")
    try:
        the_mode = Mode(mode)
    except ValueError:
        raise ConfigurationError(f"mode must be one of {[m.value for m in Mode]}") from None
    out = Path(os.path.abspath(os.fspath(directory)))
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigurationError(f"{out}: directory is not empty (use force=True to overwrite)")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    rng = rng if rng is not None else SystemRandom()
    start = _now(now)
    not_before, not_after = start - _CLOCK_SKEW, start + dt.timedelta(days=days)

    ca_cert, ca_key = _make_ca(rng, not_before, not_after)
    ca_cert_path, ca_key_path = out / "ca.pem", out / "ca.key"
    _write_private(ca_key_path, _key_pem(ca_key))
    _write_public(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))

    server_cert, server_key = _make_leaf(
        ca_cert,
        ca_key,
        rng,
        common_name=server_hosts[0],
        hosts=server_hosts,
        client=False,
        not_before=not_before,
        not_after=not_after,
    )
    server_cert_path, server_key_path = out / "server.pem", out / "server.key"
    _write_private(server_key_path, _key_pem(server_key))
    _write_public(server_cert_path, server_cert.public_bytes(serialization.Encoding.PEM))

    entries: list[RosterEntry] = []
    files: list[SiloFiles] = []
    for i in range(1, silos + 1):
        cn = silo_common_name(i)
        cert, key = _make_leaf(
            ca_cert,
            ca_key,
            rng,
            common_name=cn,
            hosts=(cn,),
            client=True,
            not_before=not_before,
            not_after=not_after,
        )
        identity = IdentityKey.generate(rng)
        paths = SiloFiles(
            id=i,
            name=cn,
            cert=out / f"{cn}.pem",
            key=out / f"{cn}.key",
            identity_key=out / f"{cn}.identity.pem",
            config=out / f"{cn}.toml",
            state_dir=out / "state" / cn,
        )
        _write_private(paths.key, _key_pem(key))
        _write_public(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
        _write_private(paths.identity_key, identity.to_pem())
        entries.append(RosterEntry(i, cn, cn, identity.public_bytes))
        files.append(paths)

    roster_path = out / "roster.toml"
    roster = Roster(tuple(entries), path=roster_path)
    write_roster(roster, roster_path)

    output_dir = out / "output"
    server = ServerConfig(
        listen=f"127.0.0.1:{port}",
        tls=ServerTls(server_cert_path, server_key_path, ca_cert_path),
        roster=roster,
        protocol=ProtocolSettings(mode=the_mode, dim=dim),
        deadlines=Deadlines(),
        rounds=1,
        min_silos=silos,
        run_id="run",
        output_dir=output_dir,
        audit_log=output_dir / "audit.jsonl",
    )
    server_config = out / "server.toml"
    write_server_config(server, server_config)

    server_name = next((h for h in server_hosts if not _is_ip(h)), server_hosts[0])
    for paths in files:
        seed = int.from_bytes(rng.random_bytes(4), "big")
        silo = SiloConfig(
            server=f"127.0.0.1:{port}",
            server_name=server_name,
            tls=SiloTls(ca_cert_path, paths.cert, paths.key),
            silo_id=paths.id,
            identity_key=paths.identity_key,
            identity_key_password_env=None,
            roster=roster,
            policy=ClientPolicy(modes=frozenset({the_mode}), expected_dim=dim),
            data=SiloData("random", weight=1, seed=seed),
            state_dir=paths.state_dir,
            reconnect=ReconnectSettings(),
            max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES,
        )
        write_silo_config(silo, paths.config)

    return PkiLayout(
        directory=out,
        ca_cert=ca_cert_path,
        ca_key=ca_key_path,
        server_cert=server_cert_path,
        server_key=server_key_path,
        roster=roster_path,
        server_config=server_config,
        output_dir=output_dir,
        silos=tuple(files),
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def issue_from_new_ca(
    directory: str | os.PathLike[str],
    name: str,
    *,
    common_name: str,
    hosts: Sequence[str],
    client: bool,
    days: int = 365,
    rng: RandomSource | None = None,
    now: dt.datetime | None = None,
) -> IssuedCertificate:
    """A new CA (<name>-ca.pem/.key, the same name as the real one's, another key) and a certificate it issues
    (<name>.pem/.key): what the D1 tests present as a certificate from the wrong CA."""
    out = Path(os.path.abspath(os.fspath(directory)))
    rng = rng if rng is not None else SystemRandom()
    start = _now(now)
    ca_cert, ca_key = _make_ca(rng, start - _CLOCK_SKEW, start + dt.timedelta(days=days))
    ca_cert_path, ca_key_path = out / f"{name}-ca.pem", out / f"{name}-ca.key"
    _write_private(ca_key_path, _key_pem(ca_key))
    _write_public(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    return issue_certificate(
        ca_cert_path,
        ca_key_path,
        out,
        name,
        common_name=common_name,
        hosts=hosts,
        client=client,
        not_before=start - _CLOCK_SKEW,
        not_after=start + dt.timedelta(days=days),
        rng=rng,
    )
