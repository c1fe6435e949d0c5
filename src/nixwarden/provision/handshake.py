"""The first bytes of Nix's remote protocols, to learn what a builder's store speaks (pure).

`nix-daemon --stdio` (ssh-ng://): the client sends WORKER_MAGIC_1 and its version, the
daemon WORKER_MAGIC_2 and its own; from protocol 1.14 the client sends a CPU affinity
flag, from 1.11 a reserve-space flag; from 1.33 the daemon sends its Nix version, then
log messages until STDERR_LAST. `nix-store --serve` (ssh://): SERVE_MAGIC_1 and a version
one way, SERVE_MAGIC_2 and the server's version back. Integers are 64-bit little-endian,
strings are a length, the bytes and zero padding to 8. (Nix: worker-protocol.hh,
serve-protocol.hh, daemon.cc.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from nixwarden.display import escape_bytes
from nixwarden.errors import FormatError
from nixwarden.nix.daemon import CLIENT_VERSION as CLIENT_WORKER_VERSION
from nixwarden.nix.daemon import STDERR_LAST, STDERR_NEXT, WORKER_MAGIC_2

SERVE_MAGIC_1 = 0x390C9DEB
SERVE_MAGIC_2 = 0x5452EECB
CLIENT_SERVE_VERSION = 2 << 8 | 5
MAX_STRING = 4096
MAX_MESSAGES = 64


@dataclass(frozen=True)
class Greeting:
    protocol: str  # "1.34"
    nix_version: str | None  # the daemon's, from protocol 1.33


def _version(number: int) -> str:
    return f"{number >> 8}.{number & 0xFF}"


def serve_hello() -> bytes:
    return struct.pack("<QQ", SERVE_MAGIC_1, CLIENT_SERVE_VERSION)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def integer(self) -> int:
        if len(self.data) < self.offset + 8:
            raise FormatError("the store's greeting is cut short")
        (value,) = struct.unpack_from("<Q", self.data, self.offset)
        self.offset += 8
        return int(value)

    def string(self) -> bytes:
        length = self.integer()
        if length > MAX_STRING:
            raise FormatError(f"the store's greeting has a string of {length} bytes")
        padded = (length + 7) & ~7
        if len(self.data) < self.offset + padded:
            raise FormatError("the store's greeting is cut short")
        value = self.data[self.offset : self.offset + length]
        self.offset += padded
        return value


def parse_worker(data: bytes) -> Greeting:
    reader = _Reader(data)
    if reader.integer() != WORKER_MAGIC_2:
        raise FormatError("not a Nix daemon's greeting (wrong magic)")
    server = reader.integer()
    if server >> 8 != 1:
        raise FormatError(f"a daemon protocol {_version(server)} this does not know")
    minor = min(server, CLIENT_WORKER_VERSION) & 0xFF
    version = None
    if minor >= 33:
        version = escape_bytes(reader.string())
    for _message in range(MAX_MESSAGES):
        kind = reader.integer()
        if kind == STDERR_LAST:
            return Greeting(_version(server), version)
        if kind != STDERR_NEXT:
            raise FormatError(f"the daemon answered the greeting with message {kind:#x}")
        reader.string()
    raise FormatError("the daemon sent too many messages after its greeting")


def complete(data: bytes, parse: Callable[[bytes], Greeting]) -> bool:
    """Whether `data` holds a whole greeting (or is already wrong): no need to read more."""
    try:
        parse(data)
    except FormatError as error:
        return "cut short" not in str(error)
    return True


def parse_serve(data: bytes) -> Greeting:
    reader = _Reader(data)
    if reader.integer() != SERVE_MAGIC_2:
        raise FormatError("not a nix-store --serve greeting (wrong magic)")
    return Greeting(_version(reader.integer()), None)
