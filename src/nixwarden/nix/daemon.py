"""Asking the Nix daemon which paths are valid, over its socket: no program to start.

The receive service asks this at every push. The store database is read directly when
it can be (nix/db.py), but a read-only reader of a WAL database cannot open it while
no writer holds it open (SQLite needs the `-shm` file, which only the daemon's user
may create), which is the usual state of an idle machine; starting `nix-store` costs
tens of milliseconds. One connection per question, as an untrusted client: the
worker protocol handshake (WORKER_MAGIC_1, our version 1.34, no CPU affinity, no
reserved space; the daemon's magic, version, Nix version and log messages up to
STDERR_LAST), then `QueryValidPaths` (op 31: the paths, substitute = false), log
messages up to STDERR_LAST, and the valid paths. Integers are 64-bit little-endian,
strings a length, the bytes and zero padding to 8 (Nix: worker-protocol.hh,
remote-store.cc, daemon.cc).

Anything unexpected raises `DaemonUnavailable`, and the caller asks `nix-store`.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Mapping, Sequence

from nixwarden.errors import NixwardenError

WORKER_MAGIC_1 = 0x6E697863
WORKER_MAGIC_2 = 0x6478696F
STDERR_NEXT = 0x6F6C6D67
STDERR_LAST = 0x616C7473
CLIENT_VERSION = 1 << 8 | 34
OP_QUERY_VALID_PATHS = 31
DEFAULT_SOCKET = "/nix/var/nix/daemon-socket/socket"
SOCKET_ENV = "NIX_DAEMON_SOCKET_PATH"
MAX_STRING = 64 << 10
MAX_MESSAGES = 1024
TIMEOUT = 30.0


class DaemonUnavailable(NixwardenError):
    """The daemon could not be asked, or answered what this does not understand."""


def socket_path(environ: Mapping[str, str]) -> str:
    """The daemon's socket, as Nix finds it: NIX_REMOTE=unix://PATH, else (daemon, auto,
    unset) NIX_DAEMON_SOCKET_PATH or the default; another store is not a daemon here."""
    remote = environ.get("NIX_REMOTE", "")
    if remote.startswith("unix://"):
        return remote.removeprefix("unix://")
    if remote not in ("", "daemon", "auto"):
        raise DaemonUnavailable(f"NIX_REMOTE={remote!r} is not the daemon")
    return environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def _string(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8)


def worker_hello() -> bytes:
    """Everything the client sends before the daemon's version string: the daemon reads it
    in order, so it may all go at once (version 1.34, no CPU affinity, no reserved space)."""
    return struct.pack("<QQQQ", WORKER_MAGIC_1, CLIENT_VERSION, 0, 0)


def query_valid_paths_request(paths: Sequence[str]) -> bytes:
    """Op 31 with `paths` and substitute = false."""
    parts = [struct.pack("<QQ", OP_QUERY_VALID_PATHS, len(paths))]
    parts += [_string(path.encode()) for path in paths]
    parts.append(struct.pack("<Q", 0))
    return b"".join(parts)


class _Reader:
    def __init__(self, connection: socket.socket) -> None:
        self.file = connection.makefile("rb")

    def exactly(self, size: int) -> bytes:
        data = self.file.read(size)
        if data is None or len(data) != size:
            raise DaemonUnavailable("the daemon closed the connection")
        return data

    def integer(self) -> int:
        (value,) = struct.unpack("<Q", self.exactly(8))
        return int(value)

    def string(self, limit: int = MAX_STRING) -> bytes:
        length = self.integer()
        if length > limit:
            raise DaemonUnavailable(f"the daemon sent a string of {length} bytes")
        data = self.exactly(length + (-length % 8))
        return data[:length]

    def until_last(self) -> None:
        """Log messages (ignored) up to STDERR_LAST; anything else (an error) raises."""
        for _ in range(MAX_MESSAGES):
            kind = self.integer()
            if kind == STDERR_LAST:
                return
            if kind != STDERR_NEXT:
                raise DaemonUnavailable(f"the daemon answered with message {kind:#x}")
            self.string()
        raise DaemonUnavailable("the daemon sent too many log messages")


def valid_paths(
    paths: Sequence[str], *, environ: Mapping[str, str] | None = None, timeout: float = TIMEOUT
) -> frozenset[str]:
    """Those of `paths` the daemon says are valid."""
    path = socket_path(os.environ if environ is None else environ)
    if not paths:
        return frozenset()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        connection.settimeout(timeout)
        connection.connect(path)
        connection.sendall(worker_hello())
        reader = _Reader(connection)
        if reader.integer() != WORKER_MAGIC_2:
            raise DaemonUnavailable(f"{path}: not a Nix daemon (wrong magic)")
        server = reader.integer()
        if server >> 8 != 1 or server & 0xFF < 27:
            raise DaemonUnavailable(f"{path}: daemon protocol {server >> 8}.{server & 0xFF}")
        if min(server, CLIENT_VERSION) & 0xFF >= 33:
            reader.string()  # its Nix version
        reader.until_last()
        connection.sendall(query_valid_paths_request(paths))
        reader.until_last()
        count = reader.integer()
        if count > len(paths):
            raise DaemonUnavailable(f"the daemon named {count} valid paths of {len(paths)}")
        asked = set(paths)
        valid = frozenset(reader.string().decode("utf-8", "replace") for _ in range(count))
        if not valid <= asked:
            raise DaemonUnavailable("the daemon named a valid path that was not asked about")
        return valid
    except OSError as error:
        raise DaemonUnavailable(f"{path}: {error.strerror or error}") from None
    finally:
        connection.close()
