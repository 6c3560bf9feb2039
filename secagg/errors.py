"""Typed errors. Every failure the library reports is a subclass of SecAggError.

Error messages never carry secret material: they name what failed, never the bytes involved.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Base class of every error secagg raises on purpose."""

    code: str = "SECAGG_ERROR"


class ConfigurationError(SecAggError, ValueError):
    """A parameter or configuration is invalid (refused before any protocol step runs)."""

    code = "BAD_CONFIG"


class EncodingError(SecAggError, ValueError):
    """Bytes could not be decoded as the expected canonical structure."""

    code = "BAD_ENCODING"


class CryptoError(SecAggError):
    """A cryptographic check failed (authentication, signature, key validity)."""

    code = "CRYPTO"


class InvalidPeerKeyError(CryptoError, ValueError):
    """A peer's public key is malformed, all-zero, or of low order (shared secret would be zero)."""

    code = "INVALID_PEER_KEY"


class AuthenticationError(CryptoError):
    """An AEAD ciphertext or a signature did not verify under the expected key and context."""

    code = "AUTHENTICATION_FAILED"


class ShamirError(SecAggError, ValueError):
    """Secret sharing was given bad shares or parameters (x = 0, duplicate x, too few shares...)."""

    code = "SHAMIR"
