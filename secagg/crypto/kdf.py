"""HKDF-SHA256 with domain-separated info strings.

Every derived key names, in its info string, the protocol version, its purpose, the session it belongs to
and (for pairwise keys) both party ids in canonical order, so no key can be reused in another context.
"""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.crypto.secret import SecretBytes
from secagg.encoding import Writer, domain
from secagg.errors import ConfigurationError


def hkdf_sha256(ikm: bytes, *, info: bytes, length: int = 32, salt: bytes = b"") -> bytes:
    """Plain HKDF-SHA256 (RFC 5869); salt empty means the all-zero salt of the RFC."""
    if not 1 <= length <= 255 * 32:
        raise ConfigurationError("HKDF output length out of range")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)


def kdf_info(purpose: str, session_id: bytes, *parties: int) -> bytes:
    """The canonical info string: domain label, session id, then party ids sorted ascending."""
    return _info_prefix(purpose, session_id) + Writer().u32_list(sorted(parties)).getvalue()


@functools.lru_cache(maxsize=256)
def _info_prefix(purpose: str, session_id: bytes) -> bytes:
    return Writer().bytes_(domain("kdf", purpose)).bytes_(session_id).getvalue()


def derive_key(
    secret: SecretBytes, *, purpose: str, session_id: bytes, parties: tuple[int, ...] = (), length: int = 32
) -> SecretBytes:
    """Derive a purpose-bound key from a secret (for example an X25519 shared secret or a seed)."""
    info = kdf_info(purpose, session_id, *parties)
    return SecretBytes(hkdf_sha256(secret.expose_secret(), info=info, length=length), label=purpose)
