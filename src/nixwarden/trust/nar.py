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

from nixwarden import display
from nixwarden.errors import FormatError
from nixwarden.trust import pipeline
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
_REGULAR = _TYPE_REGULAR + _CONTENTS
_REGULAR_EXECUTABLE = _TYPE_REGULAR + _EXECUTABLE + _CONTENTS
_PAD_CLOSE = tuple(b"\0" * (-size % 8) + _CLOSE for size in range(8))


# --- serializing ---------------------------------------------------------------------

# The archive's bytes leave `dump` in blocks this large; small enough to stay in a
# core's cache between being read and being hashed or written.
BLOCK = 256 << 10
# Small files (most files) are read straight into the output block in one call.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the directory was listed must not hang us.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class TreeError(FormatError):
    """A file tree that has no NAR form (a device, a socket, a file that changed meanwhile)."""


def dump(path: str | os.PathLike[str], write: Write, *, threaded: bool = True) -> int:
    """Write the NAR of the tree at `path` to `write`; returns the archive's size.

    `write` is called with views of reused blocks: it must consume the data before
    returning (hash it, write it out, compress it), never keep the view. With
    `threaded` (the default) it runs in a second thread, so hashing or writing
    overlaps with reading the tree; calls still come one at a time, in order.

    The tree is walked through directory descriptors, each opened with O_NOFOLLOW
    relative to its parent, and every file's type is checked on its descriptor: a
    tree that someone else can change while it is read yields an error or the NAR of
    what was there, never the contents of a file outside it.
    """
    with pipeline.BlockSink(write, block=BLOCK, threaded=threaded) as sink:
        sink.put(_HEADER)
        _Dumper(sink).root(os.fsencode(path))
        sink.close()
        return sink.size


def dump_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole NAR of a (small) tree; for tests and small files."""
    parts: list[bytes] = []
    dump(path, lambda data: parts.append(bytes(data)), threaded=False)
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
    def __init__(self, sink: pipeline.BlockSink) -> None:
        self.sink = sink

    def root(self, path: bytes) -> None:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            self.symlink(os.readlink(path), (path,))
        elif stat.S_ISDIR(info.st_mode):
            fd = os.open(path, _DIR_FLAGS)
            try:
                self.directory(fd, (path,))
            finally:
                os.close(fd)
        elif stat.S_ISREG(info.st_mode):
            self.regular(os.open(path, _FILE_FLAGS), (path,))
        else:
            raise TreeError(f"{_show((path,))}: not a regular file, symlink or directory")

    def symlink(self, target: bytes, where: tuple[bytes, ...]) -> None:
        if len(target) > MAX_TARGET:
            raise TreeError(f"{_show(where)}: symlink target longer than {MAX_TARGET} bytes")
        self.sink.put(_TYPE_SYMLINK + _string(target) + _CLOSE)

    def directory(self, fd: int, where: tuple[bytes, ...]) -> None:
        if len(where) > MAX_DEPTH:
            raise TreeError(f"{_show(where)}: tree nests deeper than {MAX_DEPTH} directories")
        put = self.sink.put
        put(_TYPE_DIRECTORY)
        with os.scandir(fd) as listing:
            # Nix orders entries by their bytes (std::map<std::string>), as sorted() does.
            entries = sorted((os.fsencode(entry.name), entry) for entry in listing)
        for name, entry in entries:
            put(_ENTRY + _string(name) + _NODE)
            try:
                self.entry(fd, name, entry, where)
            except OSError as error:
                if error.filename in (None, name):  # name it from the tree's root
                    error.filename = b"/".join((*where, name))
                raise
            put(_CLOSE)
        put(_CLOSE)

    def entry(
        self, fd: int, name: bytes, entry: os.DirEntry[str], where: tuple[bytes, ...]
    ) -> None:
        # The entry's type from the directory listing is a hint that saves a stat;
        # what is opened is checked again on its descriptor.
        if entry.is_symlink():
            self.symlink(os.readlink(name, dir_fd=fd), (*where, name))
        elif entry.is_dir(follow_symlinks=False):
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                self.directory(child, (*where, name))
            finally:
                os.close(child)
        elif entry.is_file(follow_symlinks=False):
            self.regular(os.open(name, _FILE_FLAGS, dir_fd=fd), (*where, name))
        else:
            raise TreeError(f"{_show((*where, name))}: not a regular file, symlink or directory")

    def regular(self, fd: int, where: tuple[bytes, ...]) -> None:
        """Write the regular file open at `fd` (closing it)."""
        sink = self.sink
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise TreeError(f"{_show(where)}: changed while being archived")
            size = info.st_size
            sink.put(
                (_REGULAR_EXECUTABLE if info.st_mode & stat.S_IXUSR else _REGULAR)
                + struct.pack("<Q", size)
            )
            remaining = size
            while True:
                space = sink.space()
                # Ask for one byte more than is left: reading it means the file grew.
                want = min(remaining + 1, len(space))
                got = os.readv(fd, [space[:want]])
                if got > remaining:
                    raise TreeError(f"{_show(where)}: grew while being archived")
                sink.used += got
                remaining -= got
                if not remaining and want > got:
                    break  # a short read at the end: the file ends where it should
                if got == 0:
                    raise TreeError(f"{_show(where)}: shrank while being archived")
        finally:
            os.close(fd)
        sink.put(_PAD_CLOSE[size % 8])


def _show(where: tuple[bytes, ...]) -> str:
    return display.escape_bytes(b"/".join(where))


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


# Fixed runs of tokens, matched in one comparison when they are already buffered.
_NODE_START = _OPEN + _string(b"type")
_KIND_REGULAR = _string(b"regular") + _CONTENTS
_KIND_EXECUTABLE = _string(b"regular") + _EXECUTABLE + _CONTENTS
_KIND_SYMLINK = _string(b"symlink") + _string(b"target")
_KIND_DIRECTORY = _string(b"directory")
_CLOSE_ENTRY = _CLOSE + _CLOSE
_ZEROS = bytes(8)
_U64 = struct.Struct("<Q")
_NODE_REGULAR = _NODE + _NODE_START + _KIND_REGULAR
_NODE_EXECUTABLE = _NODE + _NODE_START + _KIND_EXECUTABLE
_PAD_CLOSE_ENTRY = tuple(_ZEROS[: -size % 8] + _CLOSE_ENTRY for size in range(8))


class _Reader:
    """Reads the stream, counting and (optionally) hashing every byte it takes.

    Reading a whole archive (`block` > 0), it takes the stream in blocks and parses
    tokens out of memory; file contents beyond the buffered block are read straight
    from the stream in chunks. Inside a larger stream (`block` == 0), it never reads
    a byte past what the grammar needs, so the archive's end is the stream's position.
    """

    def __init__(self, stream: Readable, hasher: Updatable | None, block: int) -> None:
        self.stream = stream
        self.hasher = hasher
        self.block = block
        self.buffer = b""
        self.position = 0  # next byte of `buffer` to parse
        self.start = 0  # offset in the archive of `buffer[0]`

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

    def small_file(self, previous: bytes | None) -> tuple[bytes, bool, bytes] | None:
        """A whole directory entry holding a regular file, if it is already buffered
        and valid in every respect: (name, executable, contents). Otherwise None, and
        nothing is consumed: the general path then reads it and names any flaw.

        Most entries of most archives are small files; this reads one with a handful
        of comparisons instead of a dozen token reads.
        """
        buffer = self.buffer
        at = self.position
        if not buffer.startswith(_ENTRY, at):
            return None
        at += len(_ENTRY)
        end = len(buffer)
        if at + 8 > end:
            return None
        (length,) = _U64.unpack_from(buffer, at)
        at += 8
        padded = at + length + (-length % 8)
        if not 0 < length <= MAX_NAME or padded > end:
            return None
        name = buffer[at : at + length]
        if (
            buffer[at + length : padded] != _ZEROS[: padded - at - length]
            or name in (b".", b"..")
            or b"/" in name
            or b"\0" in name
            or CASE_HACK_SUFFIX in name
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
        (size,) = _U64.unpack_from(buffer, at)
        at += 8
        if size > end - at:
            return None
        tail = _PAD_CLOSE_ENTRY[size % 8]
        if not buffer.startswith(tail, at + size):
            return None
        self.position = at + size + len(tail)
        return name, executable, buffer[at : at + size]

    def contents(self, size: int) -> Iterator[bytes]:
        """`size` bytes of file contents, in chunks of at most `CHUNK` bytes."""
        buffered = min(len(self.buffer) - self.position, size)
        if buffered:
            start = self.position
            self.position += buffered
            size -= buffered
            yield self.buffer[start : start + buffered]
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
            yield data

    def length(self, limit: int, what: str) -> int:
        (value,) = struct.unpack("<Q", self.exact(8))
        if value > limit:
            if value >= MAX_LENGTH:
                raise self.fail(f"absurd length {value} for {what}")
            raise self.fail(f"{what} is {value} bytes, more than the {limit} allowed")
        return int(value)

    def padding(self, size: int) -> None:
        pad = -size % 8
        if pad and self.exact(pad) != _ZEROS[:pad]:
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
    reader = _Reader(stream, hasher, BLOCK if whole else 0)
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
                yield FileStart(path, executable, size)
                for chunk in reader.contents(size):
                    yield FileChunk(chunk)
                reader.padding(size)
                finished = _finish_node(reader, path)
                yield FileEnd(path)
            elif kind == b"symlink":
                target = reader.string(MAX_TARGET, "symlink target")
                if not target:
                    raise reader.fail("empty symlink target")
                if b"\0" in target:
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
            name, executable, data = small
            directory.previous = name
            path = (*directory.path, name)
            yield FileStart(path, executable, len(data))
            if data:
                yield FileChunk(data)
            yield FileEnd(path)
            continue
        if not reader.skip(_ENTRY):
            if reader.skip(_CLOSE):
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
        if not reader.skip(_NODE):
            reader.expect(b"node")
        pending = (*directory.path, name)
    if whole and not reader.at_end():
        raise reader.fail("trailing bytes after the archive")


def _finish_node(reader: _Reader, path: Path) -> bool:
    """Read the `)` closing a file or symlink node and the one closing its entry.

    True when the node is the archive's root (no entry around it).
    """
    if path and reader.skip(_CLOSE_ENTRY):
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
    if not reader.skip(_CLOSE):
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
        digest, size = hasher.result()
    return NarDigest(digest, size)


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
