"""Developer PKI: certificates chain to the CA with the right names, SANs, usages and validity; private keys
are 0600; the rogue-CA, expired and rogue-server helpers produce what they say (scenario D1), also in a
real mutual-TLS handshake over gRPC."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from secagg.crypto.keys import IdentityKey
from secagg.crypto.rng import DeterministicRandom
from secagg.deploy.config import load_roster, load_server_config, load_silo_config
from secagg.deploy.pki import (
    CA_COMMON_NAME,
    IssuedCertificate,
    PkiLayout,
    init_pki,
    issue_certificate,
)
from secagg.errors import ConfigurationError
from secagg.protocol.config import Mode
from secagg.testing.pki import make_expired_silo, make_rogue_ca_silo, make_rogue_server

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(c: x509.Certificate) -> str:
    value = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def client_verifier(ca: Path, at: dt.datetime) -> object:
    return PolicyBuilder().store(Store([cert(ca)])).time(at).build_client_verifier()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki") / "dev", 3, days=30, rng=DeterministicRandom(1), now=NOW)


def test_layout_and_configs(pki: PkiLayout) -> None:
    names = {p.name for p in pki.directory.iterdir()}
    expected = {"ca.pem", "ca.key", "server.pem", "server.key", "roster.toml", "server.toml"}
    for i in (1, 2, 3):
        expected |= {f"silo-{i}.pem", f"silo-{i}.key", f"silo-{i}.identity.pem", f"silo-{i}.toml"}
    assert expected <= names
    server = load_server_config(pki.server_config)
    assert server.protocol.mode is Mode.SEMI_HONEST and server.protocol.dim == 1000
    assert server.listen == "127.0.0.1:50051" and server.roster.ids == (1, 2, 3)
    roster = load_roster(pki.roster)
    for silo in pki.silos:
        cfg = load_silo_config(silo.config)
        assert cfg.silo_id == silo.id and cfg.server == server.listen and cfg.server_name == "localhost"
        assert cfg.policy.modes == frozenset({Mode.SEMI_HONEST}) and cfg.data.kind == "random"
        identity = cfg.load_identity()
        entry = roster.by_id(silo.id)
        assert entry is not None and entry.identity_public_key == identity.public_bytes
        assert entry.certificate_identity == common_name(cert(silo.cert)) == f"silo-{silo.id}"


def test_private_keys_are_0600(pki: PkiLayout) -> None:
    private = [pki.ca_key, pki.server_key] + [p for s in pki.silos for p in (s.key, s.identity_key)]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in [pki.ca_cert, pki.server_cert, pki.roster, pki.server_config]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE(pki.directory.stat().st_mode) == 0o700


def test_ca_certificate(pki: PkiLayout) -> None:
    ca = cert(pki.ca_cert)
    assert ca.subject == ca.issuer and common_name(ca) == CA_COMMON_NAME
    ca.verify_directly_issued_by(ca)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == dt.timedelta(days=30, minutes=5)
    assert ca.not_valid_before_utc < NOW < ca.not_valid_after_utc


def test_server_certificate_chains_with_hosts(pki: PkiLayout) -> None:
    server = cert(pki.server_cert)
    server.verify_directly_issued_by(cert(pki.ca_cert))
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    store = Store([cert(pki.ca_cert)])
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = PolicyBuilder().store(store).time(NOW).build_server_verifier(name).verify(server, [])
        assert chain[-1] == cert(pki.ca_cert)
    with pytest.raises(VerificationError):  # a host the certificate does not name
        PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName("evil.example")).verify(server, [])


def test_silo_certificates_chain_with_names(pki: PkiLayout) -> None:
    verifier = client_verifier(pki.ca_cert, NOW)
    for silo in pki.silos:
        c = cert(silo.cert)
        verified = verifier.verify(c, [])  # type: ignore[attr-defined]
        assert verified.subjects == [x509.DNSName(f"silo-{silo.id}")]
        assert common_name(c) == f"silo-{silo.id}"
        eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert c.not_valid_after_utc == cert(pki.ca_cert).not_valid_after_utc
    # Not valid after expiry, nor before issue.
    for at in (NOW + dt.timedelta(days=31), NOW - dt.timedelta(hours=1)):
        with pytest.raises(VerificationError):
            client_verifier(pki.ca_cert, at).verify(cert(pki.silos[0].cert), [])  # type: ignore[attr-defined]
    serials = {cert(p).serial_number for p in [pki.ca_cert, pki.server_cert, *(s.cert for s in pki.silos)]}
    assert len(serials) == 5


@pytest.mark.property("P13")
def test_rogue_ca_silo(pki: PkiLayout) -> None:
    rogue = make_rogue_ca_silo(pki.directory, "rogue", silo_id=2, rng=DeterministicRandom(2), now=NOW)
    rc, rca = cert(rogue.cert), cert(rogue.ca_cert)
    assert rca.subject == cert(pki.ca_cert).subject and rca.public_key() != cert(pki.ca_cert).public_key()
    assert common_name(rc) == "silo-2" and rc.issuer == cert(pki.ca_cert).subject
    with pytest.raises(VerificationError):
        client_verifier(pki.ca_cert, NOW).verify(rc, [])  # type: ignore[attr-defined]
    assert client_verifier(rogue.ca_cert, NOW).verify(rc, []).subjects == [x509.DNSName("silo-2")]  # type: ignore[attr-defined]
    assert stat.S_IMODE(rogue.key.stat().st_mode) == 0o600
    assert rogue.config is not None
    cfg = load_silo_config(rogue.config)
    assert cfg.silo_id == 2 and cfg.tls.cert == rogue.cert and cfg.tls.key == rogue.key
    assert cfg.tls.ca == pki.ca_cert and cfg.state_dir != load_silo_config(pki.silos[1].config).state_dir


@pytest.mark.property("P13")
def test_expired_silo(pki: PkiLayout) -> None:
    expired = make_expired_silo(pki.directory, "expired", silo_id=3, rng=DeterministicRandom(3), now=NOW)
    c = cert(expired.cert)
    assert expired.ca_cert == pki.ca_cert and common_name(c) == "silo-3"
    assert c.not_valid_after_utc < NOW
    with pytest.raises(VerificationError):
        client_verifier(pki.ca_cert, NOW).verify(c, [])  # type: ignore[attr-defined]
    # Otherwise sound: it chains to the real CA while it was valid.
    c.verify_directly_issued_by(cert(pki.ca_cert))
    assert expired.config is not None and load_silo_config(expired.config).tls.cert == expired.cert


@pytest.mark.property("P13")
def test_rogue_server(pki: PkiLayout) -> None:
    rogue = make_rogue_server(pki.directory, "rogue-server", rng=DeterministicRandom(4), now=NOW)
    server = cert(rogue.cert)
    store = Store([cert(pki.ca_cert)])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName("localhost")).verify(server, [])
    assert rogue.config is not None
    cfg = load_server_config(rogue.config)
    assert cfg.tls.cert == rogue.cert and cfg.tls.client_ca == pki.ca_cert
    assert cfg.output_dir != load_server_config(pki.server_config).output_dir


def test_issue_certificate_for_other_host(pki: PkiLayout, tmp_path: Path) -> None:
    issued = issue_certificate(
        pki.ca_cert,
        pki.ca_key,
        tmp_path,
        "other",
        common_name="evil.example",
        hosts=("evil.example", "10.0.0.1"),
        client=False,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=1),
    )
    store = Store([cert(pki.ca_cert)])
    other = cert(issued.cert)
    PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName("evil.example")).verify(other, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName("localhost")).verify(other, [])


def test_deterministic_with_seeded_rng(tmp_path: Path) -> None:
    a = init_pki(tmp_path / "a", 2, rng=DeterministicRandom(9), now=NOW)
    b = init_pki(tmp_path / "b", 2, rng=DeterministicRandom(9), now=NOW)
    files = sorted(p.relative_to(a.directory) for p in a.directory.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(b.directory) for p in b.directory.rglob("*") if p.is_file())
    for rel in files:
        assert (a.directory / rel).read_bytes() == (b.directory / rel).read_bytes(), rel
    c = init_pki(tmp_path / "c", 2, rng=DeterministicRandom(10), now=NOW)
    assert c.ca_cert.read_bytes() != a.ca_cert.read_bytes()


def test_refuses_non_empty_directory_unless_forced(tmp_path: Path) -> None:
    first = init_pki(tmp_path / "p", 2, rng=DeterministicRandom(1), now=NOW)
    with pytest.raises(ConfigurationError, match="not empty"):
        init_pki(tmp_path / "p", 2)
    assert cert(first.ca_cert) == x509.load_pem_x509_certificate(first.ca_cert.read_bytes())
    before = first.ca_cert.read_bytes()
    again = init_pki(tmp_path / "p", 4, force=True, port=6000, mode="hardened", dim=10)
    assert again.ca_cert.read_bytes() != before and len(again.silos) == 4
    cfg = load_server_config(again.server_config)
    assert cfg.listen == "127.0.0.1:6000" and cfg.protocol.mode is Mode.HARDENED and cfg.protocol.dim == 10
    assert load_silo_config(again.silos[3].config).server == "127.0.0.1:6000"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="not a directory"):
        init_pki(tmp_path / "file", 2)


@pytest.mark.parametrize(
    "kwargs",
    [{"silos": 1}, {"silos": True}, {"days": 0}, {"port": 0}, {"mode": "paranoid"}, {"server_hosts": ()}],
)
def test_refuses_bad_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"silos": 2, **kwargs}
    silos = args.pop("silos")
    with pytest.raises(ConfigurationError):
        init_pki(tmp_path / "x", silos, **args)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_identity_keys_are_ed25519(pki: PkiLayout) -> None:
    keys = {IdentityKey.from_pem(s.identity_key.read_bytes()).public_bytes for s in pki.silos}
    assert len(keys) == 3


# -- a real mutual-TLS handshake over gRPC -----------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PkiLayout, int]]:
    """A gRPC server with the generated server certificate, requiring client certificates from the CA."""
    layout = init_pki(tmp_path_factory.mktemp("live") / "pki", 2)  # real clock: expiry is checked now

    def who(request: bytes, context: grpc.ServicerContext) -> bytes:
        names = context.auth_context().get("x509_common_name") or [b""]
        return bytes(names[0])

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler("t.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)})
    server.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials(
        [(layout.server_key.read_bytes(), layout.server_cert.read_bytes())],
        root_certificates=layout.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        yield layout, port
    finally:
        server.stop(None)


def call(port: int, ca: Path, certificate: Path | None, key: Path | None, target_port: int | None = None) -> bytes:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=certificate.read_bytes() if certificate else None,
    )
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"127.0.0.1:{target_port or port}", creds, options=options) as channel:
        result = channel.unary_unary("/t.Echo/Who")(b"", timeout=20)
        assert isinstance(result, bytes)
        return result


@pytest.mark.property("P13")
def test_mtls_handshake_names_the_silo(live: tuple[PkiLayout, int]) -> None:
    layout, port = live
    for silo in layout.silos:
        assert call(port, layout.ca_cert, silo.cert, silo.key) == f"silo-{silo.id}".encode()


@pytest.mark.property("P13")
@pytest.mark.parametrize("which", ["rogue-ca", "expired", "missing"])
def test_mtls_refuses_bad_client_certificates(live: tuple[PkiLayout, int], which: str) -> None:
    """Scenario D1 at the transport: wrong CA, expired, or no client certificate -> no RPC gets through."""
    layout, port = live
    issued: IssuedCertificate | None = None
    if which == "rogue-ca":
        issued = make_rogue_ca_silo(layout.directory, "rogue-live")
    elif which == "expired":
        issued = make_expired_silo(layout.directory, "expired-live")
    with pytest.raises(grpc.RpcError) as info:
        call(port, layout.ca_cert, issued.cert if issued else None, issued.key if issued else None)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


@pytest.mark.property("P13")
def test_silo_refuses_rogue_server(live: tuple[PkiLayout, int]) -> None:
    layout, _ = live
    rogue = make_rogue_server(layout.directory, "rogue-server-live")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    handler = grpc.method_handlers_generic_handler(
        "t.Echo", {"Who": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"served")}
    )
    server.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials([(rogue.key.read_bytes(), rogue.cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        silo = layout.silos[0]
        with pytest.raises(grpc.RpcError) as info:
            call(port, layout.ca_cert, silo.cert, silo.key)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        # The same server is reachable for a client that trusts the rogue CA: only the trust differs.
        assert call(port, rogue.ca_cert, None, None) == b"served"
    finally:
        server.stop(None)
