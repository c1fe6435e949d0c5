"""NAR, the Nix archive: serialize a file tree, parse and validate a stream, hash, list.

The format (Nix manual, "Nix Archive"; libutil/archive.cc) is a sequence of strings,
each a little-endian u64 length, the bytes, and zero padding to a multiple of 8:

    nar       = "nix-archive-1" node
    node      = "(" "type" ( regular | symlink | directory ) ")"
    regular   = "regular" [ "executable" "" ] "contents" BYTES
    symlink   = "symlink" "target" TARGET
    directory = "directory" { "entry" "(" "name" NAME "node" node ")" }

Only the canonical form that Nix writes is accepted: anything this parser accepts,
`dump` of its restored tree reproduces byte for byte. Nothing here holds a whole
archive or a whole file in memory; contents move in chunks of at most `CHUNK` bytes.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from nixwarden.errors import FormatError
from nixwarden.trust.hashes import Hash, HashAlgorithm

MAGIC = b"nix-archive-1"
# Contents move in chunks this large: big enough that per-call overhead vanishes, small
# enough that a chunk read from the page cache is still in the CPU's L2 cache when it
# is hashed (measured here: 256 KiB chunks hash about 1.4 times as fast as 1 MiB ones).
CHUNK = 256 << 10
# Limits Nix applies (archive.cc, and the kernel's NAME_MAX / PATH_MAX - 1).
MAX_NAME = 255
MAX_TARGET = 4095
# Deep enough for any real tree, shallow enough that a hostile archive cannot make
# restore hold thousands of directory descriptors.
MAX_DEPTH = 128
# Lengths at or beyond this are not a file size anyone has; refusing them early
# keeps arithmetic on padding and totals obviously safe.
MAX_LENGTH = 1 << 62
# No token of the grammar is longer than this; longer "tokens" are refused unread.
MAX_TOKEN = 16
# Nix's macOS case hack appends this on restore; a name carrying it would not dump back.
CASE_HACK_SUFFIX = b"~nix~case~hack~"

Write = Callable[[bytes | bytearray | memoryview], object]
Path = tuple[bytes, ...]  # names from the archive's root; () is the root itself


def _string(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8)


_OPEN = _string(b"(")
_CLOSE = _string(b")")
_HEADER = _string(MAGIC)
_TYPE_REGULAR = _OPEN + _string(b"type") + _string(b"regular")
_EXECUTABLE = _string(b"executable") + _string(b"")
_CONTENTS = _string(b"contents")
_TYPE_SYMLINK = _OPEN + _string(b"type") + _string(b"symlink") + _string(b"target")
_TYPE_DIRECTORY = _OPEN + _string(b"type") + _string(b"directory")
_ENTRY = _string(b"entry") + _OPEN + _string(b"name")
_NODE = _string(b"node")


# --- serializing -----------------------------------------------------------------------


class TreeError(FormatError):
    """A file tree that has no NAR form (a device, a socket, a file that changed meanwhile)."""


def dump(path: str | os.PathLike[str], write: Write) -> int:
    """Write the NAR of the tree at `path` to `write`; returns the archive's size.

    `write` is called with views of a reused buffer: it must consume the data before
    returning (hash it, write it out, compress it), never keep the view.
    """
    dumper = _Dumper(write)
    dumper.out(_HEADER)
    dumper.node(os.fsencode(path), 0)
    dumper.flush()
    return dumper.size


def dump_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole NAR of a (small) tree; for tests and small files."""
    parts: list[bytes] = []
    dump(path, lambda data: parts.append(bytes(data)))
    return b"".join(parts)


@dataclass(frozen=True)
class NarDigest:
    """What Nix records about an archive: its SHA-256 and its size."""

    hash: Hash
    size: int


def hash_path(path: str | os.PathLike[str]) -> NarDigest:
    """The NAR hash and size of the tree at `path`, as `nix-store -q --hash` reports them."""
    hasher = hashlib.sha256()
    size = dump(path, hasher.update)
    return NarDigest(Hash(HashAlgorithm.SHA256, hasher.digest()), size)


class _Dumper:
    def __init__(self, write: Write) -> None:
        self.write = write
        self.size = 0
        # Headers and small files gather here so the sink sees few, large writes.
        self.pending = bytearray()
        self.buffer = bytearray(CHUNK)
        self.view = memoryview(self.buffer)

    def out(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.size += len(self.pending)
            self.write(self.pending)
            self.pending = bytearray()

    def node(self, path: bytes, depth: int) -> None:
        info = os.lstat(path)
        mode = info.st_mode
        if stat.S_ISREG(mode):
            self.regular(path, info)
        elif stat.S_ISLNK(mode):
            target = os.readlink(path)
            if len(target) > MAX_TARGET:
                raise TreeError(f"{_show(path)}: symlink target longer than {MAX_TARGET} bytes")
            self.out(_TYPE_SYMLINK + _string(target) + _CLOSE)
        elif stat.S_ISDIR(mode):
            if depth >= MAX_DEPTH:
                raise TreeError(f"{_show(path)}: tree nests deeper than {MAX_DEPTH} directories")
            self.out(_TYPE_DIRECTORY)
            # Nix orders entries by their bytes (std::map<std::string>), as sorted() on bytes does.
            for name in sorted(os.listdir(path)):
                self.out(_ENTRY + _string(name) + _NODE)
                self.node(path + b"/" + name, depth + 1)
                self.out(_CLOSE)
            self.out(_CLOSE)
        else:
            raise TreeError(f"{_show(path)}: not a regular file, symlink or directory")

    def regular(self, path: bytes, info: os.stat_result) -> None:
        size = info.st_size
        header = _TYPE_REGULAR
        if info.st_mode & stat.S_IXUSR:
            header += _EXECUTABLE
        self.out(header + _CONTENTS + struct.pack("<Q", size))
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if size < CHUNK // 4:
                # Small files join the pending buffer: one read, no extra write.
                data = os.read(fd, size + 1)
                if len(data) != size:
                    raise TreeError(f"{_show(path)}: changed size while being archived")
                self.out(data + b"\0" * (-size % 8) + _CLOSE)
                return
            self.flush()
            remaining = size
            while remaining:
                got = os.readv(fd, [self.view[: min(remaining, CHUNK)]])
                if got == 0:
                    raise TreeError(f"{_show(path)}: shrank while being archived")
                self.write(self.view[:got])
                remaining -= got
            if os.read(fd, 1):
                raise TreeError(f"{_show(path)}: grew while being archived")
            self.size += size
        finally:
            os.close(fd)
        self.out(b"\0" * (-size % 8) + _CLOSE)


def _show(path: bytes) -> str:
    return repr(os.fsdecode(path))


# --- parsing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectoryStart:
    path: Path


@dataclass(frozen=True)
class DirectoryEnd:
    path: Path


@dataclass(frozen=True)
class FileStart:
    path: Path
    executable: bool
    size: int


@dataclass(frozen=True)
class FileChunk:
    data: bytes


@dataclass(frozen=True)
class FileEnd:
    path: Path


@dataclass(frozen=True)
class Symlink:
    path: Path
    target: bytes


Event = DirectoryStart | DirectoryEnd | FileStart | FileChunk | FileEnd | Symlink


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Updatable(Protocol):
    def update(self, data: bytes, /) -> None: ...


class _Reader:
    """Exact reads from a stream, counting and (optionally) hashing every byte consumed."""

    def __init__(self, stream: Readable, hasher: Updatable | None) -> None:
        self.stream = stream
        self.hasher = hasher
        self.offset = 0

    def fail(self, reason: str) -> FormatError:
        return FormatError(f"NAR: {reason} (at byte {self.offset})")

    def exact(self, size: int) -> bytes:
        data = self.stream.read(size)
        if len(data) != size:
            # Pipes may return less than asked; only an empty read means the end.
            parts = [data]
            got = len(data)
            while got < size and data:
                data = self.stream.read(size - got)
                parts.append(data)
                got += len(data)
            data = b"".join(parts)
            if got < size:
                self.offset += got
                raise self.fail("archive is truncated")
        if self.hasher is not None:
            self.hasher.update(data)
        self.offset += size
        return data

    def length(self, limit: int, what: str) -> int:
        (value,) = struct.unpack("<Q", self.exact(8))
        if value > limit:
            if value >= MAX_LENGTH:
                raise self.fail(f"absurd length {value} for {what}")
            raise self.fail(f"{what} is {value} bytes, more than the {limit} allowed")
        return int(value)

    def padding(self, size: int) -> None:
        pad = -size % 8
        if pad and self.exact(pad) != b"\0" * pad:
            raise self.fail("non-zero padding")

    def string(self, limit: int, what: str) -> bytes:
        size = self.length(limit, what)
        data = self.exact(size)
        self.padding(size)
        return data

    def token(self) -> bytes:
        return self.string(MAX_TOKEN, "a token")

    def expect(self, wanted: bytes) -> None:
        got = self.token()
        if got != wanted:
            raise self.fail(f"expected {wanted.decode()!r}, got unknown token {_token(got)}")

    def at_end(self) -> bool:
        return self.stream.read(1) == b""


def _token(data: bytes) -> str:
    return repr(data.decode("ascii", "backslashreplace"))


def _check_name(reader: _Reader, name: bytes) -> None:
    if not name:
        raise reader.fail("empty file name")
    if name in (b".", b".."):
        raise reader.fail(f"file name {_token(name)} is not allowed")
    if b"/" in name:
        raise reader.fail("file name contains '/'")
    if b"\0" in name:
        raise reader.fail("file name contains NUL")
    if CASE_HACK_SUFFIX in name:
        raise reader.fail("file name contains Nix's case-hack suffix")


@dataclass
class _OpenDirectory:
    path: Path
    previous: bytes | None = field(default=None)


def parse(
    stream: Readable,
    *,
    whole: bool = True,
    hasher: Updatable | None = None,
    max_depth: int = MAX_DEPTH,
) -> Iterator[Event]:
    """Events for the archive read from `stream`, validating as they are read.

    With `whole`, bytes after the archive are an error (a NAR file); without, reading
    stops exactly at its end (a NAR inside an export stream). `hasher`, when given,
    sees exactly the archive's bytes. Raises `FormatError` at the first flaw; a
    consumer that acts on events must be ready to undo them (see `restore`).
    """
    reader = _Reader(stream, hasher)
    magic = reader.string(MAX_TOKEN, "the magic")
    if magic != MAGIC:
        raise reader.fail(f"wrong magic {_token(magic)}, not a Nix archive")
    stack: list[_OpenDirectory] = []
    pending: Path | None = ()
    while True:
        if pending is not None:
            path, pending = pending, None
            reader.expect(b"(")
            reader.expect(b"type")
            kind = reader.token()
            if kind == b"directory":
                if len(path) >= max_depth:
                    raise reader.fail(f"directories nest deeper than {max_depth}")
                stack.append(_OpenDirectory(path))
                yield DirectoryStart(path)
            elif kind == b"regular":
                tag = reader.token()
                executable = tag == b"executable"
                if executable:
                    if reader.string(MAX_TOKEN, "the executable marker"):
                        raise reader.fail("non-empty executable marker")
                    tag = reader.token()
                if tag != b"contents":
                    raise reader.fail(f"expected 'contents', got unknown token {_token(tag)}")
                size = reader.length(MAX_LENGTH - 1, "file contents")
                yield FileStart(path, executable, size)
                remaining = size
                while remaining:
                    chunk = reader.exact(min(remaining, CHUNK))
                    remaining -= len(chunk)
                    yield FileChunk(chunk)
                reader.padding(size)
                reader.expect(b")")
                yield FileEnd(path)
                if _finish_node(reader, path):
                    break
            elif kind == b"symlink":
                reader.expect(b"target")
                target = reader.string(MAX_TARGET, "symlink target")
                if not target:
                    raise reader.fail("empty symlink target")
                if b"\0" in target:
                    raise reader.fail("symlink target contains NUL")
                reader.expect(b")")
                yield Symlink(path, target)
                if _finish_node(reader, path):
                    break
            else:
                raise reader.fail(f"unknown node type {_token(kind)}")
            continue
        directory = stack[-1]
        tag = reader.token()
        if tag == b")":
            stack.pop()
            yield DirectoryEnd(directory.path)
            if _finish_node(reader, directory.path):
                break
            continue
        if tag != b"entry":
            raise reader.fail(f"expected 'entry' or ')', got unknown token {_token(tag)}")
        reader.expect(b"(")
        reader.expect(b"name")
        name = reader.string(MAX_NAME, "file name")
        _check_name(reader, name)
        if directory.previous is not None and name <= directory.previous:
            if name == directory.previous:
                raise reader.fail(f"duplicate entry {_token(name)}")
            raise reader.fail(f"directory entries are not sorted at {_token(name)}")
        directory.previous = name
        reader.expect(b"node")
        pending = (*directory.path, name)
    if whole and not reader.at_end():
        raise reader.fail("trailing bytes after the archive")


def _finish_node(reader: _Reader, path: Path) -> bool:
    """Close the entry around a finished node; True when the root itself is finished."""
    if not path:
        return True
    reader.expect(b")")
    return False


def validate(stream: Readable, *, whole: bool = True) -> NarDigest:
    """Parse the archive to its end, returning its hash and size; raises on any flaw."""
    counter = CountingHasher()
    for _event in parse(stream, whole=whole, hasher=counter):
        pass
    return counter.digest()


class CountingHasher:
    """A SHA-256 that also counts what it saw: the NAR hash and size in one pass."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self.hasher.update(data)
        self.size += len(data)

    def digest(self) -> NarDigest:
        return NarDigest(Hash(HashAlgorithm.SHA256, self.hasher.digest()), self.size)


# --- listing ---------------------------------------------------------------------------


def escape_name(data: bytes) -> bytes:
    """Control bytes and backslashes as `\\xNN`, so an archive's names cannot forge lines."""
    out = bytearray()
    for byte in data:
        if byte < 0x20 or byte in (0x5C, 0x7F):
            out += b"\\x%02x" % byte
        else:
            out.append(byte)
    return bytes(out)


def list_lines(stream: Readable) -> Iterator[bytes]:
    """`nix nar ls -lR`-style lines for every node, the root shown as `.`."""
    for event in parse(stream):
        match event:
            case DirectoryStart(path):
                yield b"dr-xr-xr-x %20d %s" % (0, _display(path))
            case FileStart(path, executable, size):
                mode = b"-r-xr-xr-x" if executable else b"-r--r--r--"
                yield b"%s %20d %s" % (mode, size, _display(path))
            case Symlink(path, target):
                shown = escape_name(target)
                yield b"lrwxrwxrwx %20d %s -> %s" % (0, _display(path), shown)
            case _:
                pass


def _display(path: Path) -> bytes:
    return b"/".join((b".", *(escape_name(name) for name in path)))


# --- writing from events ---------------------------------------------------------------


def write_events(events: Iterable[Event], write: Write) -> None:
    """Serialize a stream of events (as `parse` yields them) back into NAR bytes.

    With `parse`, this gives copy-through-validation: what comes out is exactly the
    canonical archive of the tree the events describe.
    """
    write(_HEADER)
    file_size = 0
    for event in events:
        match event:
            case DirectoryStart(path):
                write(_entry_open(path) + _TYPE_DIRECTORY)
            case DirectoryEnd(path):
                write(_CLOSE + _entry_close(path))
            case FileStart(path, executable, size):
                header = _TYPE_REGULAR + (_EXECUTABLE if executable else b"")
                write(_entry_open(path) + header + _CONTENTS + struct.pack("<Q", size))
                file_size = size
            case FileChunk(data):
                write(data)
            case FileEnd(path):
                write(b"\0" * (-file_size % 8) + _CLOSE + _entry_close(path))
            case Symlink(path, target):
                write(_entry_open(path) + _TYPE_SYMLINK + _string(target) + _CLOSE)
                write(_entry_close(path))


def _entry_open(path: Path) -> bytes:
    return _ENTRY + _string(path[-1]) + _NODE if path else b""


def _entry_close(path: Path) -> bytes:
    return _CLOSE if path else b""
