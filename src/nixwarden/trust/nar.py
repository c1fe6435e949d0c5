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

import enum
import errno
import io
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from nixwarden import display
from nixwarden.errors import FormatError
from nixwarden.trust import nardump, pipeline
from nixwarden.trust.nardump import (
    BLOCK,
    CASE_HACK_SUFFIX,
    CHUNK,
    MAGIC,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_NAME,
    MAX_TARGET,
    MAX_TOKEN,
    TreeError,
    dump,
    dump_bytes,
)

# Not imported when the module is: `nar restore` and `nar ls` need neither hashes nor
# typing (with re), which cost more than a small archive takes to unpack.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from nixwarden.trust.hashes import Hash
    from nixwarden.trust.nardump import Write

    class Readable(Protocol):
        def read(self, size: int = -1, /) -> bytes: ...

    class Updatable(Protocol):
        def update(self, data: bytes, /) -> None: ...


# Contents the kernel copies from the archive's file to the new file's (see
# `FileExtent`): at least this much; smaller ones are read with the next block.
DIRECT_MIN = 64 << 10
# Errors that mean "this pair of descriptors cannot be copied between this way" (a
# file system without the operation, an output opened O_APPEND, two file systems):
# nothing was moved, and the next way down is tried.
_UNSUPPORTED = frozenset((errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EOPNOTSUPP, errno.EBADF))


# Writing a tree lives in `nardump` (see there); this module re-exports it.
__all__ = [
    "BLOCK",
    "CASE_HACK_SUFFIX",
    "CHUNK",
    "DIRECT_MIN",
    "MAGIC",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NAME",
    "MAX_TARGET",
    "MAX_TOKEN",
    "CountingHasher",
    "DirectoryEnd",
    "DirectoryStart",
    "Event",
    "File",
    "FileChunk",
    "FileEnd",
    "FileExtent",
    "FileStart",
    "NarDigest",
    "Path",
    "Readable",
    "Symlink",
    "TreeError",
    "Updatable",
    "Write",
    "dump",
    "dump_bytes",
    "hash_path",
    "list_lines",
    "parse",
    "validate",
    "write_events",
]

Path = tuple[bytes, ...]  # names from the archive's root; () is the root itself


@dataclass(frozen=True)
class NarDigest:
    """What Nix records about an archive: its SHA-256 and its size."""

    hash: Hash
    size: int

    @classmethod
    def sha256(cls, digest: bytes, size: int) -> NarDigest:
        from nixwarden.trust.hashes import Hash, HashAlgorithm  # noqa: PLC0415 - see the top

        return cls(Hash(HashAlgorithm.SHA256, digest), size)


def hash_path(path: str | os.PathLike[str]) -> NarDigest:
    """The NAR hash and size of the tree at `path`, as `nix-store -q --hash` reports them."""
    return NarDigest.sha256(*nardump.sha256(path))


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


@dataclass(frozen=True)
class File:
    """A whole regular file in one event: what `parse(..., files=True)` gives instead of
    `FileStart`, `FileChunk`, `FileEnd` for a small file that was read in one piece.
    `data` is a view of the parser's buffer (no copy; it keeps the buffer alive, so
    write it out rather than keep it)."""

    path: Path
    executable: bool
    data: memoryview


@dataclass(frozen=True)
class FileExtent:
    """A whole regular file whose contents the parser did not read: what
    `parse(..., direct=True)` gives, from a regular file, for a file of at least
    `DIRECT_MIN` bytes, once its entry is known to be well-formed. Its contents are
    `size` bytes at `position` in the stream's file, byte `offset` of the archive.
    `copy_to(fd)` has the kernel copy them to `fd`, from any thread, at any time
    before the stream is closed: they do not depend on where parsing has got to."""

    path: Path
    executable: bool
    size: int
    position: int
    offset: int
    reader: _Reader = field(repr=False, compare=False)

    def copy_to(self, fd: int) -> None:
        """Copy the contents to `fd`; `FormatError` if the file no longer holds them
        all (it shrank after they were parsed)."""
        self.reader.copy(fd, self.position, self.size, self.offset)


Event = (
    DirectoryStart | DirectoryEnd | FileStart | FileChunk | FileEnd | Symlink | File | FileExtent
)


class _Copier(enum.Enum):
    """How file contents go from the stream's descriptor to a file's, most direct first."""

    RANGE = "copy_file_range"  # regular file to a file on the same file system
    FILE = "sendfile"  # regular file to any file
    NONE = "read and write"


_IN_PLACE = (_Copier.RANGE, _Copier.FILE)  # the kernel copies any part, at any time
_MAX_MOVE = 1 << 30  # per call (Linux moves at most 2 GiB - 4 KiB at once anyway)


# Fixed runs of tokens, matched in one comparison when they are already buffered.
_NODE_START = nardump.OPEN + nardump.string(b"type")
_KIND_REGULAR = nardump.string(b"regular") + nardump.CONTENTS
_KIND_EXECUTABLE = nardump.string(b"regular") + nardump.EXECUTABLE + nardump.CONTENTS
_KIND_SYMLINK = nardump.string(b"symlink") + nardump.string(b"target")
_KIND_DIRECTORY = nardump.string(b"directory")
_NODE_REGULAR = nardump.NODE + _NODE_START + _KIND_REGULAR
_NODE_EXECUTABLE = nardump.NODE + _NODE_START + _KIND_EXECUTABLE


class _Reader:
    """Reads the stream, counting and (optionally) hashing every byte it takes.

    Reading a whole archive (`block` > 0), it takes the stream in blocks and parses
    tokens out of memory; file contents beyond the buffered block are read straight
    from the stream in chunks. Inside a larger stream (`block` == 0), it never reads
    a byte past what the grammar needs, so the archive's end is the stream's position.
    """

    def __init__(
        self, stream: Readable, hasher: Updatable | None, block: int, *, direct: bool = False
    ) -> None:
        self.stream = stream
        self.hasher = hasher
        self.block = block
        self.buffer = b""
        self.position = 0  # next byte of `buffer` to parse
        self.start = 0  # offset in the archive of `buffer[0]`
        self.descriptor = -1  # the stream's, when it is a regular file (see `FileExtent`)
        self.copier = _Copier.NONE
        self.origin = 0  # where in the stream's regular file the archive starts
        if (
            direct
            and hasher is None
            # Unbuffered only: a buffered stream's descriptor is past what it gave out.
            and isinstance(stream, io.FileIO)
            and stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
        ):
            self.descriptor = stream.fileno()
            self.copier = _Copier.RANGE
            self.origin = os.lseek(self.descriptor, 0, os.SEEK_CUR)

    @property
    def offset(self) -> int:
        return self.start + self.position

    def fail(self, reason: str) -> FormatError:
        return FormatError(f"NAR: {reason} (at byte {self.offset})")

    def _read(self, size: int) -> bytes:
        data = self.stream.read(size)
        if data and self.hasher is not None:
            self.hasher.update(data)
        return data

    def _fill(self, size: int) -> bool:
        """Make `size` bytes available from `position`; False at the end of the stream."""
        rest = self.buffer[self.position :]
        parts = [rest] if rest else []
        have = len(rest)
        self.start += self.position
        self.position = 0
        while have < size:
            # Pipes may return less than asked; only an empty read means the end.
            data = self._read(max(self.block, size - have))
            if not data:
                self.buffer = b"".join(parts)
                return False
            parts.append(data)
            have += len(data)
        self.buffer = parts[0] if len(parts) == 1 else b"".join(parts)
        return True

    def exact(self, size: int) -> bytes:
        position = self.position
        end = position + size
        if end > len(self.buffer):
            if not self._fill(size):
                self.position = len(self.buffer)
                raise self.fail("archive is truncated")
            position, end = 0, size
        self.position = end
        return self.buffer[position:end]

    def skip(self, run: bytes) -> bool:
        """Consume `run` if the stream continues with it; consume nothing otherwise.

        Only a whole-archive reader looks ahead; inside a larger stream this is always
        False and the caller falls back to reading token by token.
        """
        if self.buffer.startswith(run, self.position):
            self.position += len(run)
            return True
        if (
            self.block
            and len(self.buffer) - self.position < len(run)
            and self._fill(len(run))
            and self.buffer.startswith(run, self.position)
        ):
            self.position += len(run)
            return True
        return False

    def small_file(self, previous: bytes | None) -> tuple[bytes, bool, int, int] | None:
        """A whole directory entry holding a regular file, if it is already buffered
        and valid in every respect: (name, executable, where its contents start in
        `buffer`, their size). Otherwise None, and nothing is consumed: the general
        path then reads it and names any flaw.

        Most entries of most archives are small files; this reads one with a handful
        of comparisons instead of a dozen token reads.
        """
        buffer = self.buffer
        at = self.position
        if not buffer.startswith(nardump.ENTRY, at):
            return None
        at += len(nardump.ENTRY)
        end = len(buffer)
        if at + 8 > end:
            return None
        (length,) = nardump.U64.unpack_from(buffer, at)
        at += 8
        padded = at + length + (-length % 8)
        if not 0 < length <= MAX_NAME or padded > end:
            return None
        name = buffer[at : at + length]
        if (
            buffer[at + length : padded] != nardump.ZEROS[: padded - at - length]
            or name in (b".", b"..")
            # bytes.find, not `in`: see _has (inlined: this runs for most entries)
            or name.find(b"/") >= 0
            or name.find(b"\0") >= 0
            or name.find(CASE_HACK_SUFFIX) >= 0
            or (previous is not None and name <= previous)
        ):
            return None
        at = padded
        if buffer.startswith(_NODE_REGULAR, at):
            executable = False
            at += len(_NODE_REGULAR)
        elif buffer.startswith(_NODE_EXECUTABLE, at):
            executable = True
            at += len(_NODE_EXECUTABLE)
        else:
            return None
        if at + 8 > end:
            return None
        (size,) = nardump.U64.unpack_from(buffer, at)
        at += 8
        if size > end - at:
            return None
        tail = nardump.PAD_CLOSE_ENTRY[size % 8]
        if not buffer.startswith(tail, at + size):
            return None
        self.position = at + size + len(tail)
        return name, executable, at, size

    def contents(self, size: int) -> Iterator[FileChunk]:
        """`size` bytes of file contents, in chunks of at most `CHUNK` bytes."""
        buffered = min(len(self.buffer) - self.position, size)
        if buffered:
            start = self.position
            self.position += buffered
            size -= buffered
            yield FileChunk(self.buffer[start : start + buffered])
        if not size:
            return
        self.start += len(self.buffer)
        self.buffer = b""
        self.position = 0
        while size:
            data = self._read(min(size, CHUNK))
            if not data:
                raise self.fail("archive is truncated")
            self.start += len(data)
            size -= len(data)
            yield FileChunk(data)

    def skip_contents(self, size: int) -> tuple[int, int]:
        """Pass over `size` bytes of contents of the stream's regular file, reading
        none that are not buffered: (their position in the file, their offset in the
        archive). `FormatError` if the file ends first."""
        offset = self.offset
        buffered = min(len(self.buffer) - self.position, size)
        self.position += buffered
        rest = size - buffered
        if rest:
            self.start += len(self.buffer)
            self.buffer = b""
            self.position = 0
            # Everything before has been read, nothing after: the file's position.
            here = self.origin + self.start
            available = os.fstat(self.descriptor).st_size - here
            if available < rest:  # what a read would have found (checked before seeking
                self.start += max(available, 0)  # to an absurd offset, which fails)
                raise self.fail("archive is truncated")
            os.lseek(self.descriptor, rest, os.SEEK_CUR)
            self.start += rest
        return self.origin + offset, offset

    def copy(self, fd: int, position: int, size: int, offset: int) -> None:
        """Copy `size` bytes at `position` of the stream's file to `fd` (at its own
        position); `offset` is where they start in the archive, for the error when
        the file ends first. Touches nothing parsing uses: any thread may call it.

        The kernel copies them (copy_file_range, else sendfile). Where it cannot (the
        call fails with an error that says so, having moved nothing: two file
        systems, an output opened O_APPEND), the next way down is used from then on,
        down to reading and writing here; an early end of the file is believed only
        when a read agrees.
        """
        done = 0
        while done < size:
            count = min(size - done, _MAX_MOVE)
            at = position + done
            copier = self.copier
            try:
                match copier:
                    case _Copier.RANGE:
                        moved = os.copy_file_range(self.descriptor, fd, count, at)
                    case _Copier.FILE:
                        moved = os.sendfile(fd, self.descriptor, at, count)
                    case _:
                        data = os.pread(self.descriptor, min(count, CHUNK), at)
                        pipeline.write_all(fd, data)
                        moved = len(data)
            except OSError as error:
                if copier is _Copier.NONE or error.errno not in _UNSUPPORTED:
                    raise
                moved = 0
            if not moved:
                if copier is _Copier.NONE:
                    raise FormatError(f"NAR: archive is truncated (at byte {offset + done})")
                # Only ever down (another thread may have got there first).
                self.copier = _Copier.FILE if copier is _Copier.RANGE else _Copier.NONE
                continue
            done += moved

    def length(self, limit: int, what: str) -> int:
        (value,) = struct.unpack("<Q", self.exact(8))
        if value > limit:
            if value >= MAX_LENGTH:
                raise self.fail(f"absurd length {value} for {what}")
            raise self.fail(f"{what} is {value} bytes, more than the {limit} allowed")
        return int(value)

    def padding(self, size: int) -> None:
        pad = -size % 8
        if pad and self.exact(pad) != nardump.ZEROS[:pad]:
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
        return self.position == len(self.buffer) and self.stream.read(1) == b""


def _has(data: bytes, part: bytes) -> bool:
    """`part in data`, which for bytes first tries `part` as an integer and formats and
    clears a TypeError inside CPython: thousands of instructions, three per file name."""
    return data.find(part) >= 0


def _token(data: bytes) -> str:
    return repr(data.decode("ascii", "backslashreplace"))


def _check_name(reader: _Reader, name: bytes) -> None:
    if not name:
        raise reader.fail("empty file name")
    if name in (b".", b".."):
        raise reader.fail(f"file name {_token(name)} is not allowed")
    if _has(name, b"/"):
        raise reader.fail("file name contains '/'")
    if _has(name, b"\0"):
        raise reader.fail("file name contains NUL")
    if _has(name, CASE_HACK_SUFFIX):
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
    files: bool = False,
    direct: bool = False,
) -> Iterator[Event]:
    """Events for the archive read from `stream`, validating as they are read.

    With `whole`, bytes after the archive are an error (a NAR file); without, reading
    stops exactly at its end (a NAR inside an export stream). `hasher`, when given,
    sees exactly the archive's bytes. With `files`, a small file read in one piece
    comes as one `File` event. With `direct`, no `hasher`, and an unbuffered
    `io.FileIO` on a regular file as `stream`, a file of at least `DIRECT_MIN` bytes
    not wholly buffered comes as one `FileExtent`, its contents unread, for the
    consumer to have the kernel copy (from a pipe or a socket, `direct` changes
    nothing). Raises `FormatError` at the first flaw; a consumer that acts on
    events must be ready to undo them (see `restore`).
    """
    reader = _Reader(stream, hasher, BLOCK if whole else 0, direct=direct)
    magic = reader.string(MAX_TOKEN, "the magic")
    if magic != MAGIC:
        raise reader.fail(f"wrong magic {_token(magic)}, not a Nix archive")
    stack: list[_OpenDirectory] = []
    pending: Path | None = ()
    # Each step first tries the canonical run of tokens in one comparison; when that
    # does not match, it reads token by token, which names exactly what was wrong.
    while True:
        if pending is not None:
            path, pending = pending, None
            if not reader.skip(_NODE_START):
                reader.expect(b"(")
                reader.expect(b"type")
            if reader.skip(_KIND_REGULAR):
                kind, executable = b"regular", False
            elif reader.skip(_KIND_EXECUTABLE):
                kind, executable = b"regular", True
            elif reader.skip(_KIND_SYMLINK):
                kind = b"symlink"
            elif reader.skip(_KIND_DIRECTORY):
                kind = b"directory"
            else:
                kind = reader.token()
                if kind == b"regular":
                    tag = reader.token()
                    executable = tag == b"executable"
                    if executable:
                        if reader.string(MAX_TOKEN, "the executable marker"):
                            raise reader.fail("non-empty executable marker")
                        tag = reader.token()
                    if tag != b"contents":
                        raise reader.fail(f"expected 'contents', got unknown token {_token(tag)}")
                elif kind == b"symlink":
                    reader.expect(b"target")
            if kind == b"directory":
                if len(path) >= max_depth:
                    raise reader.fail(f"directories nest deeper than {max_depth}")
                stack.append(_OpenDirectory(path))
                yield DirectoryStart(path)
                continue
            if kind == b"regular":
                size = reader.length(MAX_LENGTH - 1, "file contents")
                if size >= DIRECT_MIN and reader.copier in _IN_PLACE:
                    position, offset = reader.skip_contents(size)
                    reader.padding(size)
                    finished = _finish_node(reader, path)
                    yield FileExtent(path, executable, size, position, offset, reader)
                    if finished:
                        break
                    continue
                yield FileStart(path, executable, size)
                yield from reader.contents(size)
                reader.padding(size)
                finished = _finish_node(reader, path)
                yield FileEnd(path)
            elif kind == b"symlink":
                target = reader.string(MAX_TARGET, "symlink target")
                if not target:
                    raise reader.fail("empty symlink target")
                if _has(target, b"\0"):
                    raise reader.fail("symlink target contains NUL")
                finished = _finish_node(reader, path)
                yield Symlink(path, target)
            else:
                raise reader.fail(f"unknown node type {_token(kind)}")
            if finished:
                break
            continue
        directory = stack[-1]
        small = reader.small_file(directory.previous)
        if small is not None:
            name, executable, start, size = small
            directory.previous = name
            path = (*directory.path, name)
            if files:  # one event instead of three, and no copy: most entries are small files
                yield File(path, executable, memoryview(reader.buffer)[start : start + size])
                continue
            data = reader.buffer[start : start + size]
            yield FileStart(path, executable, size)
            if data:
                yield FileChunk(data)
            yield FileEnd(path)
            continue
        if not reader.skip(nardump.ENTRY):
            if reader.skip(nardump.CLOSE):
                tag = b")"
            else:
                tag = reader.token()
                if tag not in (b")", b"entry"):
                    raise reader.fail(f"expected 'entry' or ')', got unknown token {_token(tag)}")
                if tag == b"entry":
                    reader.expect(b"(")
                    reader.expect(b"name")
            if tag == b")":
                stack.pop()
                finished = _finish_directory(reader, directory.path)
                yield DirectoryEnd(directory.path)
                if finished:
                    break
                continue
        name = reader.string(MAX_NAME, "file name")
        _check_name(reader, name)
        if directory.previous is not None and name <= directory.previous:
            if name == directory.previous:
                raise reader.fail(f"duplicate entry {_token(name)}")
            raise reader.fail(f"directory entries are not sorted at {_token(name)}")
        directory.previous = name
        if not reader.skip(nardump.NODE):
            reader.expect(b"node")
        pending = (*directory.path, name)
    if whole and not reader.at_end():
        raise reader.fail("trailing bytes after the archive")


def _finish_node(reader: _Reader, path: Path) -> bool:
    """Read the `)` closing a file or symlink node and the one closing its entry.

    True when the node is the archive's root (no entry around it).
    """
    if path and reader.skip(nardump.CLOSE_ENTRY):
        return False
    reader.expect(b")")
    if not path:
        return True
    reader.expect(b")")
    return False


def _finish_directory(reader: _Reader, path: Path) -> bool:
    """After a directory's closing `)`, read the `)` closing its entry; True for the root."""
    if not path:
        return True
    if not reader.skip(nardump.CLOSE):
        reader.expect(b")")
    return False


def validate(stream: Readable, *, whole: bool = True) -> NarDigest:
    """Parse the archive to its end, returning its hash and size; raises on any flaw."""
    if not whole:
        counter = CountingHasher()
        for _event in parse(stream, whole=False, hasher=counter):
            pass
        return counter.digest()
    with pipeline.BackgroundHasher() as hasher:
        for _event in parse(stream, hasher=hasher):
            pass
        return NarDigest.sha256(*hasher.result())


class CountingHasher:
    """A SHA-256 that also counts what it saw: the NAR hash and size in one pass."""

    def __init__(self) -> None:
        import hashlib  # noqa: PLC0415 - see the top of the module

        self.hasher = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self.hasher.update(data)
        self.size += len(data)

    def digest(self) -> NarDigest:
        return NarDigest.sha256(self.hasher.digest(), self.size)


# --- listing ---------------------------------------------------------------------------


def list_lines(stream: Readable) -> Iterator[str]:
    """`nix nar ls -lR`-style lines for every node, the root shown as `.`.

    Names and targets are the archive's bytes, shown with `display.escape_bytes`:
    every character that is not printable (C0 and C1 controls, line and paragraph
    separators, bidirectional overrides), every byte that is not UTF-8, and the
    backslash itself become backslash escapes, so one entry is always one line and
    reads in the order it is stored.
    """
    for event in parse(stream):
        match event:
            case DirectoryStart(path):
                yield f"dr-xr-xr-x {0:20d} {_display(path)}"
            case FileStart(path, executable, size):
                mode = "-r-xr-xr-x" if executable else "-r--r--r--"
                yield f"{mode} {size:20d} {_display(path)}"
            case Symlink(path, target):
                shown = display.escape_bytes(target)
                yield f"lrwxrwxrwx {0:20d} {_display(path)} -> {shown}"
            case _:
                pass


def _display(path: Path) -> str:
    return "/".join((".", *(display.escape_bytes(name) for name in path)))


# --- writing from events ---------------------------------------------------------------


def write_events(events: Iterable[Event], write: Write) -> None:
    """Serialize a stream of events (as `parse` yields them) back into NAR bytes.

    With `parse`, this gives copy-through-validation: what comes out is exactly the
    canonical archive of the tree the events describe.
    """
    write(nardump.HEADER)
    file_size = 0
    for event in events:
        match event:
            case DirectoryStart(path):
                write(_entry_open(path) + nardump.TYPE_DIRECTORY)
            case DirectoryEnd(path):
                write(nardump.CLOSE + _entry_close(path))
            case FileStart(path, executable, size):
                header = nardump.TYPE_REGULAR + (nardump.EXECUTABLE if executable else b"")
                write(_entry_open(path) + header + nardump.CONTENTS + struct.pack("<Q", size))
                file_size = size
            case FileChunk(data):
                write(data)
            case FileEnd(path):
                write(b"\0" * (-file_size % 8) + nardump.CLOSE + _entry_close(path))
            case Symlink(path, target):
                write(
                    _entry_open(path)
                    + nardump.TYPE_SYMLINK
                    + nardump.string(target)
                    + nardump.CLOSE
                )
                write(_entry_close(path))


def _entry_open(path: Path) -> bytes:
    return nardump.ENTRY + nardump.string(path[-1]) + nardump.NODE if path else b""


def _entry_close(path: Path) -> bytes:
    return nardump.CLOSE if path else b""
