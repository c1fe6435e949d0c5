"""The SSH wire encoding (RFC 4251 section 5) that certificates and keys are made of.

`Reader` refuses to read past the end of its buffer and bounds every string it
returns, so a length field of 4 GiB in a hostile certificate costs nothing. Every
problem is a `FormatError` naming what was being read.
"""

from __future__ import annotations

import struct

from nixwarden.errors import FormatError

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Reader:
    """Reads the fields of `data` in order; `what` prefixes every error message."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._view = memoryview(data)
        self._offset = 0
        self.what = what

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset

    def fail(self, problem: str) -> FormatError:
        return FormatError(f"{self.what}: {problem}")

    def _take(self, size: int, field: str) -> bytes:
        if size > self.remaining:
            raise self.fail(f"truncated in {field}")
        start = self._offset
        self._offset += size
        return bytes(self._view[start : self._offset])

    def u32(self, field: str) -> int:
        value: int = _U32.unpack(self._take(4, field))[0]
        return value

    def u64(self, field: str) -> int:
        value: int = _U64.unpack(self._take(8, field))[0]
        return value

    def string(self, field: str, *, limit: int) -> bytes:
        size = self.u32(field)
        if size > limit:
            raise self.fail(f"{field} of {size} bytes is longer than the {limit} allowed")
        return self._take(size, field)

    def text(self, field: str, *, limit: int) -> str:
        """A string that must be UTF-8 without NUL (OpenSSH reads these as C strings)."""
        raw = self.string(field, limit=limit)
        if b"\0" in raw:
            raise self.fail(f"{field} contains NUL")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{field} is not UTF-8") from None

    def end(self, field: str = "") -> None:
        if self.remaining:
            plural = "s" if self.remaining != 1 else ""
            where = f" after {field}" if field else ""
            raise self.fail(f"{self.remaining} trailing byte{plural}{where}")


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def string(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _U32.pack(len(raw)) + raw
