"""Round keys (X25519) and long-term identity keys (Ed25519), on pyca/cryptography.

Private keys are generated from an injected RandomSource so simulations are reproducible, and they refuse
pickling and printing. Key agreement rejects all-zero and low-order peer keys with a typed error.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secagg.crypto.rng import RandomSource
from secagg.crypto.secret import NoPickle, SecretBytes
from secagg.encoding import Writer, domain
from secagg.errors import AuthenticationError, ConfigurationError, InvalidPeerKeyError

KEY_BYTES = 32
SIGNATURE_BYTES = 64


class X25519KeyPair(NoPickle):
    """An X25519 key pair for one round and one purpose (mask agreement or share encryption)."""

    __slots__ = ("_key", "_private", "public_bytes")

    def __init__(self, private: SecretBytes) -> None:
        if len(private) != KEY_BYTES:
            raise ConfigurationError("an X25519 private key is 32 bytes")
        self._private = private
        self._key = X25519PrivateKey.from_private_bytes(private.expose_secret())
        self.public_bytes: bytes = self._key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, rng: RandomSource) -> X25519KeyPair:
        """A fresh key pair from rng."""
        return cls(SecretBytes(rng.random_bytes(KEY_BYTES), label="x25519-private"))

    @property
    def private(self) -> SecretBytes:
        """The private scalar (secret), e.g. to be Shamir-shared."""
        return self._private

    def agree(self, peer_public: bytes | X25519PublicKey) -> SecretBytes:
        """X25519 shared secret with a peer; InvalidPeerKeyError for malformed or low-order keys.

        The peer key is raw bytes, or an X25519PublicKey already checked by `load_peer_public`.
        """
        peer = peer_public if isinstance(peer_public, X25519PublicKey) else _load_x25519_public(peer_public)
        try:
            shared = self._key.exchange(peer)
        except ValueError:  # pyca refuses an all-zero shared secret (low-order point)
            raise InvalidPeerKeyError("peer public key has low order") from None
        if shared == bytes(KEY_BYTES):  # pragma: no cover - pyca already refuses this
            raise InvalidPeerKeyError("peer public key has low order")
        return SecretBytes(shared, label="x25519-shared")

    def __repr__(self) -> str:
        return f"X25519KeyPair(public={self.public_bytes.hex()[:16]}...)"


def x25519_public_from_private(private: SecretBytes) -> bytes:
    """The public key of a private scalar (used to check a reconstructed key against its advertisement)."""
    if len(private) != KEY_BYTES:
        raise ConfigurationError("an X25519 private key is 32 bytes")
    return X25519PrivateKey.from_private_bytes(private.expose_secret()).public_key().public_bytes_raw()


def check_x25519_public(public: bytes) -> None:
    """Raise InvalidPeerKeyError unless public is a 32-byte key that is not all-zero."""
    _load_x25519_public(public)


def load_peer_public(public: bytes) -> X25519PublicKey:
    """Check and load a peer's X25519 public key once, for repeated agreements."""
    return _load_x25519_public(public)


def _load_x25519_public(public: bytes) -> X25519PublicKey:
    if not isinstance(public, (bytes, bytearray)) or len(public) != KEY_BYTES:
        raise InvalidPeerKeyError("an X25519 public key is 32 bytes")
    if bytes(public) == bytes(KEY_BYTES):
        raise InvalidPeerKeyError("all-zero X25519 public key")
    try:
        return X25519PublicKey.from_public_bytes(bytes(public))
    except ValueError:  # pragma: no cover - every 32-byte string decodes
        raise InvalidPeerKeyError("invalid X25519 public key") from None


class IdentityKey(NoPickle):
    """A silo's long-term Ed25519 signing key, pinned by its public key in the server's roster."""

    __slots__ = ("_key", "public_bytes")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_bytes: bytes = key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, rng: RandomSource) -> IdentityKey:
        """A fresh identity key from rng."""
        return cls(Ed25519PrivateKey.from_private_bytes(rng.random_bytes(KEY_BYTES)))

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None) -> IdentityKey:
        """Load a PKCS#8 PEM private key (optionally encrypted); only Ed25519 keys are accepted."""
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"cannot load identity key: {type(exc).__name__}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError("identity key must be Ed25519")
        return cls(key)

    def to_pem(self, password: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with the best available scheme when a password is given."""
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM of the public key."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, message: bytes, *, context: str) -> bytes:
        """Sign message bound to a context label, so a signature for one purpose is useless for another."""
        return self._key.sign(_signed_payload(message, context))

    def __repr__(self) -> str:
        return f"IdentityKey(public={self.public_bytes.hex()[:16]}...)"


def verify_signature(public: bytes, signature: bytes, message: bytes, *, context: str) -> None:
    """Verify an Ed25519 signature made by IdentityKey.sign; AuthenticationError if it does not verify."""
    if len(public) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise AuthenticationError("malformed signature or key")
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public)).verify(signature, _signed_payload(message, context))
    except (InvalidSignature, ValueError):
        raise AuthenticationError(f"signature does not verify ({context})") from None


def load_public_pem(data: bytes) -> bytes:
    """Raw 32-byte Ed25519 public key from a SubjectPublicKeyInfo PEM."""
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigurationError("cannot load public key PEM") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError("public key must be Ed25519")
    return key.public_bytes_raw()


def _signed_payload(message: bytes, context: str) -> bytes:
    return Writer().bytes_(domain("sig", context)).bytes_(message).getvalue()
