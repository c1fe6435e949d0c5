"""The CA's ledger: one JSON line per issued certificate, append-only.

`ca issue --ledger FILE` opens the ledger with O_APPEND, takes an exclusive flock for
the whole issue (so two operators cannot hand out one serial at once), refuses a
serial the ledger already holds, appends the new record in one write and fsyncs it
before the certificate file is written: a serial is burned before it is used, never
used without being recorded. The file works under `chattr +a` too (nothing ever
rewrites it). A torn last line (an interrupted write) is refused until a person
looks at it, rather than guessed at.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from nixwarden.errors import FormatError, InvalidInput, Refused

MAX_LEDGER = 256 << 20


@dataclass(frozen=True)
class Record:
    serial: int
    key_id: str
    key: str  # SHA256 fingerprint of the certified key
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    ca: str  # SHA256 fingerprint of the CA key
    issued: int  # seconds since the epoch

    def render(self) -> bytes:
        values = asdict(self)
        values["principals"] = list(self.principals)
        return (json.dumps(values, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


def serials(data: bytes, what: str) -> frozenset[int]:
    """The serials a ledger holds; any line that is not a record is refused."""
    if data and not data.endswith(b"\n"):
        raise FormatError(f"{what}: the last line is incomplete (an interrupted write?)")
    found: set[int] = set()
    for number, line in enumerate(data.splitlines(), 1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise FormatError(f"{what}: line {number} is not JSON") from None
        serial = record.get("serial") if isinstance(record, dict) else None
        if not isinstance(serial, int) or isinstance(serial, bool) or not 0 < serial < 2**64:
            raise FormatError(f"{what}: line {number} has no valid serial")
        if serial in found:
            raise FormatError(f"{what}: line {number} repeats serial {serial}")
        found.add(serial)
    return frozenset(found)


class Ledger:
    """An open, locked ledger: `issued` holds the serials, `append` adds a record."""

    def __init__(self, fd: int, path: str, issued: frozenset[int]) -> None:
        self._fd = fd
        self.path = path
        self.issued = issued

    def refuse_reuse(self, serial: int) -> None:
        if serial in self.issued:
            raise Refused(f"serial {serial} was already issued (see {self.path})")

    def append(self, record: Record) -> None:
        self.refuse_reuse(record.serial)
        line = record.render()
        size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            os.fsync(self._fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)  # undo a torn line, where the file allows it
            raise InvalidInput(f"{self.path}: cannot append: {error}") from None
        self.issued = self.issued | {record.serial}


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
        if offset > MAX_LEDGER:
            raise InvalidInput(f"ledger larger than {MAX_LEDGER} bytes")
    return b"".join(chunks)


@contextlib.contextmanager
def opened(path: str) -> Iterator[Ledger]:
    """The ledger at `path` (created 0600 if missing), exclusively locked while open."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as error:
        raise InvalidInput(f"{path}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"{path}: not a regular file")
        if info.st_size > MAX_LEDGER:
            raise InvalidInput(f"{path}: larger than {MAX_LEDGER} bytes")
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield Ledger(fd, path, serials(_read_all(fd), path))
    finally:
        os.close(fd)  # releases the lock
