"""Wrong certificates for the D1 tests: a silo certificate from another CA, an expired one, a server
certificate from another CA, each with a config variant that uses it when the directory holds a `secagg pki
init` layout."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

from secagg.crypto.rng import RandomSource
from secagg.deploy.config import (
    ServerTls,
    SiloTls,
    load_server_config,
    load_silo_config,
    write_server_config,
    write_silo_config,
)
from secagg.deploy.pki import IssuedCertificate, issue_certificate, issue_from_new_ca, silo_common_name

__all__ = ["make_expired_silo", "make_rogue_ca_silo", "make_rogue_server"]


def make_rogue_ca_silo(
    directory: str | os.PathLike[str],
    name: str = "rogue",
    *,
    silo_id: int = 1,
    days: int = 365,
    rng: RandomSource | None = None,
    now: dt.datetime | None = None,
) -> IssuedCertificate:
    """A valid-looking client certificate for silo silo_id signed by a DIFFERENT CA (scenario D1).

    The rogue CA carries the same name as the real one, only its key differs. Writes <name>-ca.pem/.key and
    <name>.pem/.key; if <directory>/silo-<id>.toml exists, also <name>.toml, that silo's config with the
    rogue certificate (and its own state directory).
    """
    out = Path(os.path.abspath(os.fspath(directory)))
    cn = silo_common_name(silo_id)
    issued = issue_from_new_ca(out, name, common_name=cn, hosts=(cn,), client=True, days=days, rng=rng, now=now)
    return dataclasses.replace(issued, config=_silo_variant(out, name, silo_id, issued))


def make_expired_silo(
    directory: str | os.PathLike[str],
    name: str = "expired",
    *,
    silo_id: int = 1,
    rng: RandomSource | None = None,
    now: dt.datetime | None = None,
) -> IssuedCertificate:
    """A client certificate for silo silo_id from the directory's real CA that expired a day ago (D1).

    Writes <name>.pem/.key and, if <directory>/silo-<id>.toml exists, <name>.toml using them.
    """
    out = Path(os.path.abspath(os.fspath(directory)))
    start = (now if now is not None else dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    cn = silo_common_name(silo_id)
    issued = issue_certificate(
        out / "ca.pem",
        out / "ca.key",
        out,
        name,
        common_name=cn,
        hosts=(cn,),
        client=True,
        not_before=start - dt.timedelta(days=31),
        not_after=start - dt.timedelta(days=1),
        rng=rng,
    )
    return dataclasses.replace(issued, config=_silo_variant(out, name, silo_id, issued))


def make_rogue_server(
    directory: str | os.PathLike[str],
    name: str = "rogue-server",
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 365,
    rng: RandomSource | None = None,
    now: dt.datetime | None = None,
) -> IssuedCertificate:
    """A server certificate for the right host names from a DIFFERENT CA: silos must refuse it (D1).

    Writes <name>-ca.pem/.key and <name>.pem/.key; if <directory>/server.toml exists, also <name>.toml,
    the server config with this certificate (and its own output directory).
    """
    out = Path(os.path.abspath(os.fspath(directory)))
    issued = issue_from_new_ca(out, name, common_name=hosts[0], hosts=hosts, client=False, days=days, rng=rng, now=now)
    base = out / "server.toml"
    if not base.is_file():
        return issued
    server = load_server_config(base)
    assert server.tls.client_ca is not None
    variant = dataclasses.replace(
        server,
        tls=ServerTls(issued.cert, issued.key, server.tls.client_ca),
        output_dir=out / f"output-{name}",
        audit_log=out / f"output-{name}" / "audit.jsonl",
    )
    path = out / f"{name}.toml"
    write_server_config(variant, path)
    return dataclasses.replace(issued, config=path)


def _silo_variant(out: Path, name: str, silo_id: int, issued: IssuedCertificate) -> Path | None:
    """<name>.toml: silo-<id>.toml with the given certificate, or None when there is no such config."""
    base = out / f"{silo_common_name(silo_id)}.toml"
    if not base.is_file():
        return None
    silo = load_silo_config(base)
    assert silo.tls.ca is not None
    variant = dataclasses.replace(
        silo, tls=SiloTls(silo.tls.ca, issued.cert, issued.key), state_dir=out / "state" / name
    )
    path = out / f"{name}.toml"
    write_silo_config(variant, path)
    return path
