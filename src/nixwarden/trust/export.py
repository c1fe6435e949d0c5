"""The `nix-store --export` stream (libstore/export-import.cc), read and written.

Per path: u64 1, the NAR, u64 0x4558494e ("NIXE"), the path, its references
(u64 count, then each path), the deriver or "", and u64 0 (no legacy signature);
after the last path, u64 0. Strings are framed as in a NAR. The stream carries no
signatures: whoever imports it must trust the sender or check them another way.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from nixwarden.errors import FormatError
from nixwarden.nix.storepath import STORE_DIR, StorePath
from nixwarden.trust import nar

EXPORT_MAGIC = 0x4558494E
MAX_REFERENCES = 1 << 20
MAX_PATH_LENGTH = 4096
# NAR bodies above this spill from memory to a temporary file while a stream is read.
SPOOL_IN_MEMORY = 8 << 20


@dataclass(frozen=True)
class ExportedPath:
    """One path of an export stream; `nar` is positioned at the start of its validated NAR."""

    path: StorePath
    references: tuple[StorePath, ...]
    deriver: StorePath | None
    nar_digest: nar.NarDigest
    nar: IO[bytes] = field(repr=False, compare=False)


class _Stream:
    def __init__(self, stream: nar.Readable) -> None:
        self.stream = stream

    def exact(self, size: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < size:
            data = self.stream.read(size - got)
            if not data:
                raise FormatError("export stream is truncated")
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def number(self) -> int:
        return int(struct.unpack("<Q", self.exact(8))[0])

    def string(self, limit: int, what: str) -> bytes:
        size = self.number()
        if size > limit:
            raise FormatError(f"export stream: {what} is {size} bytes, more than {limit}")
        data = self.exact(size)
        pad = -size % 8
        if pad and self.exact(pad) != b"\0" * pad:
            raise FormatError(f"export stream: non-zero padding after {what}")
        return data

    def store_path(self, what: str, store_dir: str) -> StorePath:
        raw = self.string(MAX_PATH_LENGTH, what)
        try:
            return StorePath.parse(raw.decode("ascii"), store_dir)
        except UnicodeDecodeError:
            raise FormatError(f"export stream: {what} is not ASCII") from None


class _Tee:
    """Reads through to the stream while copying every byte read into `copy`."""

    def __init__(self, stream: nar.Readable, copy: IO[bytes]) -> None:
        self.stream = stream
        self.copy = copy

    def read(self, size: int = -1, /) -> bytes:
        data = self.stream.read(size)
        self.copy.write(data)
        return data


def read(stream: nar.Readable, *, store_dir: str = STORE_DIR) -> Iterator[ExportedPath]:
    """The paths of an export stream, each NAR validated and hashed as it is read.

    Each entry's `nar` is a temporary file (in memory while small) that is only valid
    until the next entry is requested.
    """
    source = _Stream(stream)
    while True:
        marker = source.number()
        if marker == 0:
            break
        if marker != 1:
            raise FormatError(f"export stream: expected 1 or 0 before a path, got {marker}")
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            digest = nar.validate(_Tee(stream, spool), whole=False)
            if source.number() != EXPORT_MAGIC:
                raise FormatError("export stream: missing NIXE marker after a NAR")
            path = source.store_path("path", store_dir)
            count = source.number()
            if count > MAX_REFERENCES:
                raise FormatError(f"export stream: {count} references is absurd")
            references = tuple(source.store_path("reference", store_dir) for _ in range(count))
            deriver_raw = source.string(MAX_PATH_LENGTH, "deriver")
            deriver = None if not deriver_raw else _decode_path(deriver_raw, "deriver", store_dir)
            legacy_signature = source.number()
            if legacy_signature == 1:
                # Nix's import reads and discards this; so do we (it is not verifiable).
                source.string(MAX_PATH_LENGTH, "legacy signature")
            elif legacy_signature != 0:
                raise FormatError("export stream: bad legacy-signature flag")
            spool.seek(0)
            yield ExportedPath(path, references, deriver, digest, spool)
        finally:
            spool.close()


def _decode_path(raw: bytes, what: str, store_dir: str) -> StorePath:
    try:
        return StorePath.parse(raw.decode("ascii"), store_dir)
    except UnicodeDecodeError:
        raise FormatError(f"export stream: {what} is not ASCII") from None


def _string(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8)


@dataclass(frozen=True)
class ExportItem:
    """A path to write into an export stream: its metadata and where its tree is."""

    path: StorePath
    references: tuple[StorePath, ...]
    deriver: StorePath | None
    tree: str  # the file system path whose NAR is exported (normally the store path)


def write(items: Iterable[ExportItem], out: nar.Write, *, store_dir: str = STORE_DIR) -> None:
    """Write an export stream of `items`, in the given (dependency-first) order."""
    for item in items:
        out(struct.pack("<Q", 1))
        nar.dump(item.tree, out)
        trailer = struct.pack("<Q", EXPORT_MAGIC) + _string(item.path.absolute(store_dir).encode())
        references = sorted(ref.absolute(store_dir) for ref in item.references)
        trailer += struct.pack("<Q", len(references))
        trailer += b"".join(_string(ref.encode()) for ref in references)
        deriver = b"" if item.deriver is None else item.deriver.absolute(store_dir).encode()
        trailer += _string(deriver) + struct.pack("<Q", 0)
        out(trailer)
    out(struct.pack("<Q", 0))


def topological(items: Iterable[ExportItem]) -> list[ExportItem]:
    """Dependencies before dependents, as `nix-store --import` needs; ties by path."""
    by_path = {item.path: item for item in items}
    done: set[StorePath] = set()
    order: list[ExportItem] = []
    visiting: set[StorePath] = set()
    for start in sorted(by_path):
        stack: list[tuple[StorePath, Iterator[StorePath]]] = []
        if start in done:
            continue
        stack.append((start, iter(sorted(by_path[start].references))))
        visiting.add(start)
        while stack:
            current, refs = stack[-1]
            advanced = False
            for ref in refs:
                if ref == current or ref in done or ref not in by_path:
                    continue
                if ref in visiting:
                    raise FormatError(f"reference cycle through {ref.base_name}")
                visiting.add(ref)
                stack.append((ref, iter(sorted(by_path[ref].references))))
                advanced = True
                break
            if not advanced:
                stack.pop()
                visiting.discard(current)
                done.add(current)
                order.append(by_path[current])
    return order
