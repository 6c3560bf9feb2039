"""Canonical, versioned byte encodings for everything that is hashed, signed, encrypted or derived.

One format for all of it: big-endian fixed-width integers and length-prefixed byte strings, written and
read by `Writer` and `Reader`. A `Reader` refuses truncated input, oversized lengths and trailing bytes, so
every byte string has exactly one decoding and every value exactly one encoding. No pickle, anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Iterable, Iterator

from secagg.errors import EncodingError

FORMAT_VERSION = 1
MAX_FIELD_BYTES = 1 << 30

# Decoding cost (protocols/SPEC.md 13.3). Every item a reader builds from a list (a pair, an advertisement) costs
# about a hundred bytes of Python objects whatever its encoded size, so the number of such items must be paid for
# by the input: one decoding builds at most ITEM_BUDGET_FREE + len(input) // ITEM_BUDGET_BYTES of them. Every
# item the protocol produces carries at least 64 bytes (signatures 64, Shamir shares 68, share ciphertexts 172,
# key advertisements 72), so no honest message, of any size, comes near the budget.
ITEM_BUDGET_FREE = 1024
ITEM_BUDGET_BYTES = 64

_U32 = struct.Struct(">I")
_U32_PAIR = struct.Struct(">II")


class Writer:
    """Append-only builder of a canonical encoding."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> Writer:
        self._parts.append(_pack(">B", v, 8))
        return self

    def u16(self, v: int) -> Writer:
        self._parts.append(_pack(">H", v, 16))
        return self

    def u32(self, v: int) -> Writer:
        self._parts.append(_pack(">I", v, 32))
        return self

    def u64(self, v: int) -> Writer:
        self._parts.append(_pack(">Q", v, 64))
        return self

    def boolean(self, v: bool) -> Writer:
        return self.u8(1 if v else 0)

    def raw(self, b: bytes) -> Writer:
        """Fixed-length bytes whose length the reader knows (no prefix)."""
        self._parts.append(bytes(b))
        return self

    def bytes_(self, b: bytes) -> Writer:
        """Length-prefixed (u32) bytes."""
        if len(b) > MAX_FIELD_BYTES:
            raise EncodingError("field too long")
        self._parts.append(struct.pack(">I", len(b)))
        self._parts.append(bytes(b))
        return self

    def text(self, s: str) -> Writer:
        return self.bytes_(s.encode("utf-8"))

    def u32_list(self, values: Iterable[int]) -> Writer:
        vals = list(values)
        try:
            self._parts.append(struct.pack(f">I{len(vals)}I", len(vals), *vals))
        except struct.error:
            raise EncodingError("value out of range for u32") from None
        if any(isinstance(v, bool) for v in vals):
            raise EncodingError("value out of range for u32")
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Strict reader of a canonical encoding: errors are EncodingError, trailing bytes are refused."""

    __slots__ = ("_buf", "_items", "_pos")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EncodingError("expected bytes")
        self._buf = bytes(data)
        self._pos = 0
        self._items = ITEM_BUDGET_FREE + len(self._buf) // ITEM_BUDGET_BYTES  # see ITEM_BUDGET_BYTES

    def _take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._buf):
            raise EncodingError("truncated input")
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        return int(self._take(1)[0])

    def u16(self) -> int:
        return int(struct.unpack(">H", self._take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self._take(8))[0])

    def boolean(self) -> bool:
        v = self.u8()
        if v not in (0, 1):
            raise EncodingError("invalid boolean")
        return v == 1

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def bytes_(self, max_len: int = MAX_FIELD_BYTES) -> bytes:
        n = self.u32()
        if n > max_len:
            raise EncodingError("field longer than allowed")
        return self._take(n)

    def text(self, max_len: int = 4096) -> str:
        try:
            return self.bytes_(max_len).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodingError("invalid utf-8") from exc

    def u32_list(self, max_items: int = 1 << 20) -> list[int]:
        return list(self.u32_tuple(max_items))

    def u32_tuple(self, max_items: int = 1 << 20) -> tuple[int, ...]:
        """A `u32_list` as a tuple, built in one step (no intermediate list)."""
        n = self.count(max_items, 4, too_many="list longer than allowed")
        out: tuple[int, ...] = struct.unpack_from(f">{n}I", self._buf, self._pos)
        self._pos += 4 * n
        return out

    def count(self, max_items: int, min_item_bytes: int, *, too_many: str = "too many items") -> int:
        """A u32 item count, checked before anything is built: at most max_items (else `too_many`), and at most
        what the remaining input can hold at min_item_bytes (>= 1) per item (else "truncated input")."""
        n = self.u32()
        if n > max_items:
            raise EncodingError(too_many)
        if n * min_item_bytes > len(self._buf) - self._pos:
            raise EncodingError("truncated input")
        return n

    def spend_items(self, n: int) -> None:
        """Charge n built items (pairs, advertisements) to this reader's item budget (ITEM_BUDGET_BYTES)."""
        if n > self._items:
            raise EncodingError("too many items for the message size")
        self._items -= n

    def pairs(self, max_items: int, max_blob: int) -> tuple[tuple[int, bytes], ...]:
        """A pair list, `u32 count || count x (u32 id || bytes blob)`, each blob at most max_blob bytes. The count
        is checked against max_items, the remaining input (8 bytes a pair at least) and the item budget before
        any pair is built; the pairs are built straight into the result."""
        n = self.count(max_items, 8)
        self.spend_items(n)
        buf, end, unpack = self._buf, len(self._buf), _U32_PAIR.unpack_from

        def items() -> Iterator[tuple[int, bytes]]:
            pos = self._pos
            for _ in range(n):
                if pos + 8 > end:
                    raise EncodingError("truncated input")
                ident, length = unpack(buf, pos)
                if length > max_blob:
                    raise EncodingError("field longer than allowed")
                start, pos = pos + 8, pos + 8 + length
                if pos > end:
                    raise EncodingError("truncated input")
                yield ident, buf[start:pos]
            self._pos = pos

        return tuple(items())

    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def finish(self) -> None:
        """Require that every byte was consumed."""
        if self._pos != len(self._buf):
            raise EncodingError("trailing bytes")


def _pack(fmt: str, v: int, bits: int) -> bytes:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= (1 << bits):
        raise EncodingError(f"value out of range for u{bits}")
    return struct.pack(fmt, v)


@functools.lru_cache(maxsize=1024)
def domain(*labels: str) -> bytes:
    """A domain-separation label such as b'secagg/v1/kdf/pairwise-mask' (ASCII, no separators inside)."""
    for label in labels:
        if not label or "/" in label or not label.isascii():
            raise EncodingError("domain labels are non-empty ASCII without '/'")
    return (f"secagg/v{FORMAT_VERSION}/" + "/".join(labels)).encode("ascii")


def digest(tag: bytes, payload: bytes) -> bytes:
    """SHA-256 of a length-prefixed tag followed by the payload: a domain-separated hash."""
    return hashlib.sha256(Writer().bytes_(tag).raw(payload).getvalue()).digest()
