"""Authenticated encryption (AES-256-GCM) with associated data as a required argument.

The ciphertext format is nonce (12 bytes) || GCM ciphertext || tag (16 bytes). Nonces come from the injected
RandomSource; each key is derived per (session, unordered pair), so it seals very few messages (one per direction).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secagg.crypto.rng import RandomSource
from secagg.crypto.secret import SecretBytes
from secagg.errors import AuthenticationError, ConfigurationError

NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES


def seal(key: SecretBytes, plaintext: bytes, *, associated_data: bytes, rng: RandomSource) -> bytes:
    """Encrypt and authenticate plaintext, binding associated_data (which is not encrypted)."""
    aead = _aead(key)
    if not isinstance(associated_data, (bytes, bytearray)) or not associated_data:
        raise ConfigurationError("associated data is required and must be non-empty bytes")
    nonce = rng.random_bytes(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, bytes(plaintext), bytes(associated_data))


def open_sealed(key: SecretBytes, ciphertext: bytes, *, associated_data: bytes) -> bytes:
    """Decrypt a ciphertext made by seal; AuthenticationError if it or its associated data was altered."""
    aead = _aead(key)
    if not isinstance(associated_data, (bytes, bytearray)) or not associated_data:
        raise ConfigurationError("associated data is required and must be non-empty bytes")
    if len(ciphertext) < OVERHEAD:
        raise AuthenticationError("ciphertext too short")
    try:
        return aead.decrypt(bytes(ciphertext[:NONCE_BYTES]), bytes(ciphertext[NONCE_BYTES:]), associated_data)
    except InvalidTag:
        raise AuthenticationError("ciphertext does not authenticate under this key and context") from None


def _aead(key: SecretBytes) -> AESGCM:
    if not isinstance(key, SecretBytes) or len(key) != 32:
        raise ConfigurationError("AEAD key must be a 32-byte SecretBytes")
    return AESGCM(key.expose_secret())
