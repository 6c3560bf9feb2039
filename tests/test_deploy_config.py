"""Deployment configuration: generated files round-trip, every validation error names file and key,
and the contribution ledger survives restarts (scenario A10) and refuses corrupt files."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from secagg.crypto.keys import IdentityKey
from secagg.crypto.rng import DeterministicRandom
from secagg.deploy.config import (
    FileLedger,
    Roster,
    RosterEntry,
    SiloData,
    load_roster,
    load_server_config,
    load_silo_config,
    parse_address,
    write_roster,
    write_server_config,
    write_silo_config,
)
from secagg.deploy.pki import PkiLayout, init_pki
from secagg.errors import ConfigurationError
from secagg.protocol.config import MAX_CLIENT_ID, ClientPolicy, Mode
from secagg.protocol.ledger import ContributionLedger
from secagg.simulation import build, make_config, run

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"), 3, dim=500, mode="hardened", rng=DeterministicRandom(7), now=NOW)


def variant(pki: PkiLayout, source: Path, text: str, name: str) -> Path:
    """Write a modified config next to the generated ones (so relative paths still resolve)."""
    path = pki.directory / f"test-{name}.toml"
    path.write_text(text)
    return path


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def expect_error(path: Path, key: str, what: str, loader: Callable[[Path], object] = load_server_config) -> None:
    with pytest.raises(ConfigurationError) as info:
        loader(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert re.search(rf"(^|\W){re.escape(key)}:", msg), msg
    assert what.lower() in msg.lower(), msg


# -- round trips -------------------------------------------------------------------------------------------


def test_server_config_round_trip(pki: PkiLayout, tmp_path: Path) -> None:
    cfg = load_server_config(pki.server_config)
    assert cfg.listen == "127.0.0.1:50051" and cfg.listen_host_port == ("127.0.0.1", 50051)
    assert cfg.tls.cert == pki.server_cert and cfg.tls.key == pki.server_key and cfg.tls.client_ca == pki.ca_cert
    assert not cfg.tls.insecure
    assert cfg.roster.ids == (1, 2, 3) and cfg.min_silos == 3
    assert cfg.protocol.mode is Mode.HARDENED and cfg.protocol.dim == 500
    assert cfg.protocol.modulus == 1 << 32 and cfg.protocol.chunk_elems == 262_144
    assert cfg.deadlines.masked_input == 120.0 and cfg.deadlines.connect == 60.0
    assert cfg.output_dir == pki.output_dir and cfg.audit_log == pki.output_dir / "audit.jsonl"
    assert cfg.max_message_bytes == 8 << 20 and cfg.staging_budget_bytes == 256 << 20 and cfg.seed is None
    # The writer is the loader's inverse, also with every optional field set.
    changed = dataclasses.replace(
        cfg,
        protocol=dataclasses.replace(cfg.protocol, k=2, t=2, mode=Mode.SEMI_HONEST, clip=0.25),
        seed=12,
        rounds=5,
    )
    out = pki.directory / "test-written-server.toml"
    write_server_config(changed, out)
    assert load_server_config(out) == changed


def test_silo_config_round_trip(pki: PkiLayout) -> None:
    silo = pki.silos[1]
    cfg = load_silo_config(silo.config)
    assert cfg.silo_id == 2 and cfg.server == "127.0.0.1:50051" and cfg.server_name == "localhost"
    assert (cfg.tls.ca, cfg.tls.cert, cfg.tls.key) == (pki.ca_cert, silo.cert, silo.key)
    assert cfg.identity_key == silo.identity_key and cfg.state_dir == silo.state_dir
    assert cfg.roster is not None and cfg.roster.ids == (1, 2, 3)
    assert cfg.policy.modes == frozenset({Mode.HARDENED}) and cfg.policy.expected_dim == 500
    assert cfg.data.kind == "random" and cfg.data.seed is not None and cfg.data.weight == 1
    assert cfg.reconnect.initial_backoff == 0.5 and cfg.reconnect.max_backoff == 10.0
    # Each silo has its own data seed and its own state directory.
    others = [load_silo_config(s.config) for s in pki.silos]
    assert len({o.data.seed for o in others}) == 3 and len({o.state_dir for o in others}) == 3
    out = pki.directory / "test-written-silo.toml"
    changed = dataclasses.replace(
        cfg,
        seed=3,
        identity_key_password_env="SILO_PW",
        policy=dataclasses.replace(cfg.policy, min_ddp_local_noise_multiplier=0.75),
    )
    write_silo_config(changed, out)
    assert load_silo_config(out) == changed
    assert changed.to_client_policy().min_ddp_local_noise_multiplier == 0.75


def test_roster_round_trip_and_lookups(pki: PkiLayout) -> None:
    roster = load_roster(pki.roster)
    assert roster.ids == (1, 2, 3) and len(roster) == 3
    entry = roster.by_certificate_identity("silo-2")
    assert entry is not None and entry.id == 2 and roster.by_id(2) == entry
    assert roster.by_id(4) is None and roster.by_certificate_identity("silo-4") is None
    keys = roster.identity_keys()
    for silo in pki.silos:
        assert keys[silo.id] == IdentityKey.from_pem(silo.identity_key.read_bytes()).public_bytes
    assert keys[1].hex()[:16] in repr(roster.by_id(1)) and keys[1].hex() not in repr(roster.by_id(1))
    out = pki.directory / "test-written-roster.toml"
    write_roster(roster, out)
    assert load_roster(out) == roster


def test_to_client_policy_and_identity(pki: PkiLayout) -> None:
    cfg = load_silo_config(pki.silos[0].config)
    policy = cfg.to_client_policy(cfg.roster)
    assert isinstance(policy, ClientPolicy)
    assert policy.modes == frozenset({Mode.HARDENED}) and policy.expected_dim == 500
    assert cfg.roster is not None and policy.roster == cfg.roster.identity_keys()
    assert math.isinf(policy.max_clip) and policy.require_derived_degree
    identity = cfg.load_identity()
    assert identity.public_bytes == policy.roster[1]
    # A key the roster does not pin for this silo is refused.
    wrong = dataclasses.replace(cfg, identity_key=pki.silos[1].identity_key)
    with pytest.raises(ConfigurationError, match="not the key the roster pins for silo 1"):
        wrong.load_identity()
    no_roster = dataclasses.replace(cfg, roster=None)
    with pytest.raises(ConfigurationError, match="no roster"):
        no_roster.to_client_policy()


def test_encrypted_identity_key_password_from_env(pki: PkiLayout, tmp_path: Path) -> None:
    cfg = load_silo_config(pki.silos[0].config)
    key = IdentityKey.from_pem(pki.silos[0].identity_key.read_bytes())
    encrypted = tmp_path / "id.pem"
    encrypted.write_bytes(key.to_pem(b"correct horse"))
    locked = dataclasses.replace(cfg, identity_key=encrypted, identity_key_password_env="SILO_PW")
    assert locked.load_identity({"SILO_PW": "correct horse"}).public_bytes == key.public_bytes
    with pytest.raises(ConfigurationError, match="SILO_PW is not set"):
        locked.load_identity({})
    with pytest.raises(ConfigurationError, match="cannot load identity key") as info:
        locked.load_identity({"SILO_PW": "wrong"})
    assert "wrong" not in str(info.value).replace(str(encrypted), "")


def test_round_config_from_server_config(pki: PkiLayout) -> None:
    cfg = load_server_config(pki.server_config)
    rc = cfg.round_config(4, [3, 1, 2], bytes(range(32)))
    assert rc.participants == (1, 2, 3) and rc.round == 4 and rc.run_id == "run"
    assert rc.mode is Mode.HARDENED and rc.dim == 500 and rc.modulus == 1 << 32
    assert (rc.k, rc.t) == (cfg.protocol.params(3).k, cfg.protocol.params(3).t) and rc.k == 2
    with pytest.raises(ConfigurationError, match="not in the roster"):
        cfg.round_config(0, [1, 2, 9], bytes(32))
    with pytest.raises(ConfigurationError, match="min_silos"):
        cfg.round_config(0, [1, 2], bytes(32))
    assert cfg.deadlines.stage_timeouts().masked_input == 120.0


@pytest.mark.property("P13")
def test_insecure_plaintext_must_be_explicit(pki: PkiLayout) -> None:
    text = pki.server_config.read_text()
    tls = '[tls]\ncert = "server.pem"\nkey = "server.key"\nclient_ca = "ca.pem"\n'
    path = variant(pki, pki.server_config, edit(text, tls, "[tls]\ninsecure = true\n"), "insecure")
    cfg = load_server_config(path)
    assert cfg.tls.insecure and cfg.tls.cert is None and cfg.tls.client_ca is None
    # No [tls] at all is not plaintext: it is mutual TLS with nothing configured, refused.
    path = variant(pki, pki.server_config, edit(text, tls, ""), "no-tls")
    expect_error(path, "tls.client_ca", "mutual TLS")


# -- server validation -------------------------------------------------------------------------------------

SERVER_CASES = [
    ("unknown-top", ("rounds = 1", "rounds = 1\nrunds = 2"), "runds", "unknown key"),
    ("unknown-nested", ("dim = 500", "dim = 500\ndimm = 3"), "protocol.dimm", "unknown key"),
    ("missing-dim", ("dim = 500\n", ""), "protocol.dim", "missing required key"),
    ("missing-mode", ('mode = "hardened"\n', ""), "protocol.mode", "missing required key"),
    ("missing-roster", ('roster = "roster.toml"\n', ""), "roster", "missing required key"),
    ("type-dim", ("dim = 500", 'dim = "500"'), "protocol.dim", "expected an integer"),
    ("type-bool-as-int", ("rounds = 1", "rounds = true"), "rounds", "expected an integer"),
    ("type-insecure", ("[tls]\n", '[tls]\ninsecure = "yes"\n'), "tls.insecure", "expected true or false"),
    ("type-clip", ("clip = 1.0", 'clip = "1"'), "protocol.clip", "expected a number"),
    (
        "range-corrupt",
        ("corrupt_fraction = 0.1", "corrupt_fraction = 1.5"),
        "protocol.corrupt_fraction",
        "out of range",
    ),
    ("type-modulus", ("modulus_bits = 32", "modulus_bits = 32.0"), "protocol.modulus_bits", "must be one of"),
    ("range-modulus", ("modulus_bits = 32", "modulus_bits = 48"), "protocol.modulus_bits", "must be one of"),
    ("range-deadline", ("unmask = 30.0", "unmask = 0"), "deadlines.unmask", "out of range"),
    ("range-deadline-nan", ("unmask = 30.0", "unmask = nan"), "deadlines.unmask", "finite"),
    ("range-rounds", ("rounds = 1", "rounds = 0"), "rounds", "out of range"),
    ("range-min-silos", ("min_silos = 3", "min_silos = 4"), "min_silos", "out of range 2..3"),
    ("range-t", ("dim = 500", "dim = 500\nt = 1"), "protocol.t", "out of range"),
    ("range-message", ("max_message_bytes = 8388608", "max_message_bytes = 100"), "max_message_bytes", "out of range"),
    ("bad-k", ("dim = 500", "dim = 500\nk = 7"), "protocol", "k (neighbour count)"),
    ("bad-listen", ('listen = "127.0.0.1:50051"', 'listen = "localhost"'), "listen", "expected host:port"),
    ("bad-port", ('listen = "127.0.0.1:50051"', 'listen = "127.0.0.1:70000"'), "listen", "out of range"),
    ("ring-capacity", ("bits = 16", "bits = 31"), "protocol.bits", "ring capacity"),
    ("chunk-too-big", ("chunk_elems = 262144", "chunk_elems = 4000000"), "protocol.chunk_elems", "max_message_bytes"),
    ("missing-cert-file", ('cert = "server.pem"', 'cert = "nope.pem"'), "tls.cert", "file not found"),
    ("missing-roster-file", ('roster = "roster.toml"', 'roster = "gone.toml"'), "roster", "file not found"),
    ("d3-no-client-ca", ('client_ca = "ca.pem"\n', ""), "tls.client_ca", "mutual TLS"),
    ("insecure-and-cert", ("[tls]\n", "[tls]\ninsecure = true\n"), "tls.cert", "insecure = true"),
    ("key-mismatch", ('key = "server.key"', 'key = "silo-1.key"'), "tls.key", "does not match"),
    ("cert-not-pem", ('cert = "server.pem"', 'cert = "roster.toml"'), "tls.cert", "not a PEM certificate"),
]


@pytest.mark.property("P13")
@pytest.mark.parametrize(("name", "change", "key", "what"), SERVER_CASES, ids=[c[0] for c in SERVER_CASES])
def test_server_config_errors(pki: PkiLayout, name: str, change: tuple[str, str], key: str, what: str) -> None:
    path = variant(pki, pki.server_config, edit(pki.server_config.read_text(), *change), f"server-{name}")
    expect_error(path, key, what)


def test_table_of_wrong_type(pki: PkiLayout) -> None:
    text = pki.server_config.read_text()
    block = text[text.index("[deadlines]") :]
    text = "deadlines = 3\n" + text.replace(block, "")
    expect_error(variant(pki, pki.server_config, text, "table-type"), "deadlines", "expected a table")


def test_min_aggregate_above_min_silos(pki: PkiLayout) -> None:
    text = edit(pki.server_config.read_text(), "min_silos = 3", "min_silos = 2")
    text = edit(text, "min_aggregate = 2", "min_aggregate = 3")
    expect_error(variant(pki, pki.server_config, text, "min-agg"), "protocol.min_aggregate", "exceeds min_silos")


def test_unreadable_or_invalid_files(pki: PkiLayout, tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigurationError, match="configuration file not found") as info:
        load_server_config(missing)
    assert str(missing) in str(info.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("listen = \n")
    with pytest.raises(ConfigurationError, match="invalid TOML"):
        load_server_config(bad)
    with pytest.raises(ConfigurationError, match="not a TOML file"):
        load_silo_config(tmp_path)


def test_relative_paths_resolve_against_the_file(pki: PkiLayout, tmp_path: Path) -> None:
    # The same file read from another working directory gives the same absolute paths.
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        cfg = load_server_config(os.path.relpath(pki.server_config, tmp_path))
    finally:
        os.chdir(cwd)
    assert cfg.tls.cert == pki.server_cert and cfg.roster.path == pki.roster


# -- silo validation ---------------------------------------------------------------------------------------

SILO_CASES = [
    ("unknown-policy", ("min_clients = 2", "min_clients = 2\nmin_clientz = 3"), "policy.min_clientz", "unknown key"),
    ("unknown-data", ('kind = "random"', 'kind = "random"\nshape = 3'), "data.shape", "unknown key"),
    ("missing-silo-id", ("silo_id = 1\n", ""), "silo_id", "missing required key"),
    ("missing-identity", ('identity_key = "silo-1.identity.pem"\n', ""), "identity_key", "missing required key"),
    ("missing-state-dir", ('state_dir = "state/silo-1"\n', ""), "state_dir", "missing required key"),
    ("missing-seed", ("seed = ", "sead = "), "data.seed", "missing required key"),
    ("type-silo-id", ("silo_id = 1", 'silo_id = "1"'), "silo_id", "expected an integer"),
    ("type-modes", ('modes = ["hardened"]', 'modes = "hardened"'), "policy.modes", "non-empty array"),
    ("bad-mode", ('modes = ["hardened"]', 'modes = ["paranoid"]'), "policy.modes", "non-empty array"),
    ("range-silo-id", ("silo_id = 1", f"silo_id = {MAX_CLIENT_ID + 1}"), "silo_id", "out of range"),
    (
        "range-fraction",
        ("dropout_fraction = 0.1", "dropout_fraction = -0.1"),
        "policy.dropout_fraction",
        "out of range",
    ),
    ("range-backoff", ("max_backoff = 10.0", "max_backoff = 0.1"), "reconnect.max_backoff", "below"),
    (
        "range-min-modulus",
        ("min_modulus_bits = 32", "min_modulus_bits = 65"),
        "policy.min_modulus_bits",
        "out of range",
    ),
    ("kind", ('kind = "random"', 'kind = "csv"'), "data.kind", "must be one of"),
    ("no-data", ("[data]\n", "[unused]\n"), "data.kind", "missing required key"),
    ("not-in-roster", ("silo_id = 1", "silo_id = 9"), "silo_id", "not in the roster"),
    ("hardened-no-roster", ('roster = "roster.toml"\n', ""), "roster", "required when policy.modes"),
    ("missing-ca", ('ca = "ca.pem"', 'ca = "nope.pem"'), "tls.ca", "file not found"),
    (
        "missing-identity-file",
        ('identity_key = "silo-1.identity.pem"', 'identity_key = "x.pem"'),
        "identity_key",
        "file not found",
    ),
    (
        "env-name",
        ("silo_id = 1", 'silo_id = 1\nidentity_key_password_env = "A-B"'),
        "identity_key_password_env",
        "not a valid",
    ),
    ("server-address", ('server = "127.0.0.1:50051"', 'server = "::1:50051"'), "server", "brackets"),
    ("insecure-with-ca", ("[tls]\n", "[tls]\ninsecure = true\n"), "tls.ca", "insecure = true"),
]


@pytest.mark.parametrize(("name", "change", "key", "what"), SILO_CASES, ids=[c[0] for c in SILO_CASES])
def test_silo_config_errors(pki: PkiLayout, name: str, change: tuple[str, str], key: str, what: str) -> None:
    path = variant(pki, pki.silos[0].config, edit(pki.silos[0].config.read_text(), *change), f"silo-{name}")
    expect_error(path, key, what, loader=load_silo_config)


def test_silo_semi_honest_without_roster_and_defaults(pki: PkiLayout) -> None:
    text = pki.silos[0].config.read_text()
    text = edit(text, 'roster = "roster.toml"\n', "")
    text = edit(text, 'modes = ["hardened"]', 'modes = ["semi-honest"]')
    text = edit(text, 'server_name = "localhost"\n', "")
    text = edit(text, 'server = "127.0.0.1:50051"', 'server = "[::1]:6000"')
    cfg = load_silo_config(variant(pki, pki.silos[0].config, text, "silo-semi"))
    assert cfg.roster is None and cfg.server_name == "::1"  # server_name defaults to the host
    assert cfg.to_client_policy().roster is None


def test_silo_npy_data(pki: PkiLayout, tmp_path: Path) -> None:
    vec = np.linspace(-1, 1, 500, dtype=np.float32)
    np.save(pki.directory / "update.npy", vec)
    np.save(pki.directory / "update64.npy", vec.astype(np.float64))
    np.save(pki.directory / "update2d.npy", vec.reshape(20, 25))
    base = pki.silos[0].config.read_text()
    seed_line = next(line for line in base.splitlines() if line.startswith("seed = "))
    npy = edit(edit(base, 'kind = "random"', 'kind = "npy"'), seed_line, 'path = "update.npy"')
    cfg = load_silo_config(variant(pki, pki.silos[0].config, npy, "silo-npy"))
    assert cfg.data.kind == "npy" and cfg.data.path == pki.directory / "update.npy"
    rc = make_config(3, 500)
    assert np.array_equal(cfg.data.client_input(rc).vector, vec)
    with pytest.raises(ConfigurationError, match="the round's dim is 400"):
        cfg.data.client_input(make_config(3, 400))
    for bad in ("update64.npy", "update2d.npy"):
        path = variant(pki, pki.silos[0].config, edit(npy, "update.npy", bad), "silo-npy-bad")
        expect_error(path, "data.path", "1-D float32", loader=load_silo_config)
    path = variant(pki, pki.silos[0].config, edit(npy, "update.npy", "roster.toml"), "silo-npy-bad")
    expect_error(path, "data.path", "not a .npy file", loader=load_silo_config)


def test_random_data_is_seeded_per_round() -> None:
    data = SiloData("random", weight=1, seed=5)
    r0, r1 = make_config(3, 300, round_=0), make_config(3, 300, round_=1)
    a, b, c = data.client_input(r0), data.client_input(r0), data.client_input(r1)
    assert np.array_equal(a.vector, b.vector) and not np.array_equal(a.vector, c.vector)
    assert a.vector.dtype == np.float32 and a.vector.shape == (300,)
    assert np.abs(a.vector).max() <= r0.clip and a.weight == 1
    assert not np.array_equal(a.vector, SiloData("random", seed=6).client_input(r0).vector)
    with pytest.raises(ConfigurationError, match="max_weight"):
        SiloData("random", weight=9, seed=5).client_input(r0)


# -- roster validation -------------------------------------------------------------------------------------


def roster_text(pki: PkiLayout) -> str:
    return pki.roster.read_text()


def test_roster_errors(pki: PkiLayout) -> None:
    text = roster_text(pki)
    key1 = load_roster(pki.roster).identity_keys()[1].hex()
    cases = [
        ("dup-id", edit(text, "id = 2", "id = 1"), "silo[1].id", "duplicate id"),
        (
            "dup-cn",
            edit(text, 'certificate_identity = "silo-2"', 'certificate_identity = "silo-1"'),
            "silo[1].certificate_identity",
            "duplicate",
        ),
        (
            "dup-key",
            re.sub(
                r'(\[\[silo\]\]\nid = 2\n(?:.*\n){2})identity_public_key = "[0-9a-f]+"',
                rf'\1identity_public_key = "{key1}"',
                text,
            ),
            "silo[1].identity_public_key",
            "same identity key",
        ),
        ("id-zero", edit(text, "id = 2", "id = 0"), "silo[1].id", "out of range"),
        ("id-too-big", edit(text, "id = 2", f"id = {MAX_CLIENT_ID + 1}"), "silo[1].id", "out of range"),
        ("unknown", edit(text, "id = 3", "id = 3\nrole = 1"), "silo[2].role", "unknown key"),
        ("missing-name", edit(text, 'name = "silo-3"\n', ""), "silo[2].name", "missing required key"),
        ("bad-key", edit(text, key1, key1[:-2]), "silo[0].identity_public_key", "neither 64 hex digits"),
        ("one-silo", text.split("\n[[silo]]\nid = 2")[0], "silo", "at least two"),
        ("not-array", "silo = 3\n", "silo", "array of [[silo]]"),
        ("extra-top", "version = 2\n" + text, "version", "unknown key"),
    ]
    for name, body, key, what in cases:
        path = pki.directory / f"test-roster-{name}.toml"
        path.write_text(body)
        expect_error(path, key, what, loader=load_roster)


def test_roster_key_from_pem_file(pki: PkiLayout) -> None:
    identity = IdentityKey.from_pem(pki.silos[0].identity_key.read_bytes())
    (pki.directory / "silo-1.pub.pem").write_bytes(identity.public_pem())
    text = edit(roster_text(pki), identity.public_bytes.hex(), "silo-1.pub.pem")
    path = pki.directory / "test-roster-pem.toml"
    path.write_text(text)
    assert load_roster(path).identity_keys()[1] == identity.public_bytes
    (pki.directory / "not-ed25519.pem").write_bytes(pki.ca_cert.read_bytes())
    path.write_text(edit(roster_text(pki), identity.public_bytes.hex(), "not-ed25519.pem"))
    expect_error(path, "silo[0].identity_public_key", "public key", loader=load_roster)


def test_roster_object_refuses_duplicates() -> None:
    a = RosterEntry(1, "a", "cn-a", bytes([1]) * 32)
    with pytest.raises(ConfigurationError, match="duplicate silo id"):
        Roster((a, RosterEntry(1, "b", "cn-b", bytes([2]) * 32)))
    with pytest.raises(ConfigurationError, match="duplicate certificate_identity"):
        Roster((a, RosterEntry(2, "b", "cn-a", bytes([2]) * 32)))


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1:1", ("127.0.0.1", 1)), ("[::]:50051", ("::", 50051)), ("grpc.example:443", ("grpc.example", 443))],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["", ":80", "host:", "host:0", "host:x", "[zz]:1", "a b:1", "::1:80"])
def test_parse_address_refuses(address: str) -> None:
    with pytest.raises(ValueError):
        parse_address(address)


# -- contribution ledger -----------------------------------------------------------------------------------


@pytest.mark.property("P5")
def test_file_ledger_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "contributions.json"
    ledger = FileLedger(path)
    assert not path.exists() and not ledger.has_contributed("run", 0)
    assert ledger.reserve("run", 0)
    assert ledger.reserve("run", 7)
    assert not ledger.reserve("run", 7)  # claimed once only
    assert ledger.reserve("other", 0)
    assert ledger.has_contributed("run", 7) and not ledger.has_contributed("run", 1)
    reopened = FileLedger(path)
    assert reopened.contributions() == [("other", 0), ("run", 0), ("run", 7)]
    assert reopened.has_contributed("other", 0) and not reopened.has_contributed("other", 7)
    assert json.loads(path.read_text())["version"] == 1
    # no temp file left behind (the lock file stays: it is what reservations lock)
    assert sorted(os.listdir(path.parent)) == ["contributions.json", "contributions.json.lock"]
    checker: ContributionLedger = reopened  # structural type of the protocol's ledger
    assert checker.has_contributed("run", 0)


@pytest.mark.property("P5")
@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"version": 1}',
        b'{"version": 2, "contributions": []}',
        b'{"version": 1, "contributions": {}}',
        b'{"version": 1, "contributions": [{"run_id": "r"}]}',
        b'{"version": 1, "contributions": [{"run_id": "r", "round": -1}]}',
        b'{"version": 1, "contributions": [{"run_id": "r", "round": true}]}',
        b'{"version": 1, "contributions": [{"run_id": 3, "round": 1}]}',
    ],
)
def test_file_ledger_refuses_corrupt_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "contributions.json"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match="contribution ledger") as info:
        FileLedger(path)
    assert str(path) in str(info.value)


def test_file_ledger_refuses_bad_records(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path / "l.json")
    for run_id, round_ in (("r", -1), ("r", True), (b"r", 0)):
        with pytest.raises(ConfigurationError):
            ledger.reserve(run_id, round_)  # type: ignore[arg-type]
    assert ledger.contributions() == []


@pytest.mark.property("P5")
def test_file_ledger_refuses_second_contribution_after_restart(tmp_path: Path) -> None:
    """Scenario A10 across a silo restart: the reopened ledger makes the new session refuse."""
    cfg = make_config(4, 40)
    first = build(cfg, seed=0)
    for c, session in first.clients.items():
        session._ledger = FileLedger(tmp_path / f"{c}.json")
    assert run(first).server.result is not None
    assert FileLedger(tmp_path / "1.json").contributions() == [(cfg.run_id, cfg.round)]
    again = build(cfg, seed=1)  # the silo process restarted: new session, same state directory
    again.clients[1]._ledger = FileLedger(tmp_path / "1.json")
    run(again)
    error = again.clients[1].error
    assert error is not None and error.code == "ALREADY_CONTRIBUTED"


def test_silo_config_opens_its_ledger(pki: PkiLayout) -> None:
    cfg = load_silo_config(pki.silos[2].config)
    ledger = cfg.open_ledger()
    assert ledger.path == pki.silos[2].state_dir / "contributions.json"
    assert ledger.reserve("run", 0)
    assert cfg.open_ledger().has_contributed("run", 0)


def test_npy_data_with_a_nan_in_a_later_block_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finiteness check goes block by block (no model-sized mask) and still sees every element."""
    import secagg.deploy.config as config_module

    monkeypatch.setattr(config_module, "_FINITE_BLOCK", 4)
    good = np.linspace(-1, 1, 10, dtype=np.float32)
    np.save(tmp_path / "good.npy", good)
    assert np.array_equal(SiloData("npy", path=tmp_path / "good.npy").load_array(), good)
    for bad_value in (np.nan, np.inf):
        bad = good.copy()
        bad[9] = bad_value  # in the third block
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(ConfigurationError, match="NaN or infinity"):
            SiloData("npy", path=tmp_path / "bad.npy").load_array()
