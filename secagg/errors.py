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


class ProtocolError(SecAggError):
    """A protocol rule was broken. The session that raises it moves to a terminal ABORTED state."""

    code = "PROTOCOL"


class LocalProtocolError(ProtocolError):
    """This endpoint was driven wrongly (an event fed in a state where it is not legal)."""

    code = "LOCAL_PROTOCOL"


class RemoteProtocolError(ProtocolError):
    """The other side sent something illegal, inconsistent or unauthenticated."""

    code = "REMOTE_PROTOCOL"


class RoundAborted(ProtocolError):  # noqa: N818 - names an outcome, as the spec does
    """The round stopped with a typed reason; no aggregate is produced and no further share leaves."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reason = message


class PolicyRefusal(ProtocolError):  # noqa: N818 - names an outcome, as the spec does
    """A client declines a request that its policy or its reveal rules forbid (REFUSE)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reason = message
