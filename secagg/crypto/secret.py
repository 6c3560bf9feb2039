"""Containers for secret bytes that refuse to be printed, compared in variable time, or pickled.

Following Tink's habit: reading the secret out takes an explicitly named call (`expose_secret`), so every
place where secret bytes leave their container can be found with grep.
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn


class SecretBytes:
    """An immutable secret byte string: no repr, no str, no pickle, constant-time equality."""

    __slots__ = ("_label", "_value")

    def __init__(self, value: bytes, label: str = "secret") -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("SecretBytes takes bytes")
        self._value = bytes(value)
        self._label = label

    def expose_secret(self) -> bytes:
        """Return the raw secret bytes. Every call site is an audited export."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label} ({len(self._value)} bytes, redacted)>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretBytes):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        raise TypeError("secret values are not hashable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("secret values cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("secret values cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("secret values are not copied; pass the object itself")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError("secret values are not copied; pass the object itself")


class NoPickle:
    """Mixin for objects that hold secrets: pickling, copying and repr of internals are refused."""

    __slots__ = ()

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secrets and cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secrets and cannot be pickled")

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secrets and cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secrets and cannot be copied")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secrets and cannot be copied")
