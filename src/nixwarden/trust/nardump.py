"""The NAR grammar's byte strings, and writing the NAR of a file tree.

Kept apart from parsing (`nixwarden.trust.nar`) so that `nixwarden nar dump` loads
little more than `os` before it starts reading: see `nar` for the format.
"""

from __future__ import annotations

import errno
import os
import stat
import struct

from nixwarden import display
from nixwarden.errors import FormatError
from nixwarden.trust import pipeline

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

TYPE_CHECKING = False  # not typing's (nor collections.abc): `nar hash` starts here
if TYPE_CHECKING:
    from collections.abc import Callable

    Write = Callable[[bytes | bytearray | memoryview], object]


def string(data: bytes) -> bytes:
    """`data` framed as the NAR frames every string: length, bytes, zero padding."""
    return struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8)


# The grammar's tokens as they appear in an archive, and the runs of them that the
# writer emits and the parser matches in one comparison.
OPEN = string(b"(")
CLOSE = string(b")")
HEADER = string(MAGIC)
TYPE_REGULAR = OPEN + string(b"type") + string(b"regular")
EXECUTABLE = string(b"executable") + string(b"")
CONTENTS = string(b"contents")
TYPE_SYMLINK = OPEN + string(b"type") + string(b"symlink") + string(b"target")
TYPE_DIRECTORY = OPEN + string(b"type") + string(b"directory")
ENTRY = string(b"entry") + OPEN + string(b"name")
NODE = string(b"node")
REGULAR = TYPE_REGULAR + CONTENTS
REGULAR_EXECUTABLE = TYPE_REGULAR + EXECUTABLE + CONTENTS
PAD_CLOSE = tuple(b"\0" * (-size % 8) + CLOSE for size in range(8))
ZEROS = bytes(8)
U64 = struct.Struct("<Q")
CLOSE_ENTRY = CLOSE + CLOSE
PAD_CLOSE_ENTRY = tuple(ZEROS[: -size % 8] + CLOSE_ENTRY for size in range(8))


# The archive's bytes leave `dump` in blocks this large; small enough to stay in a
# core's cache between being read and being hashed or written.
BLOCK = 256 << 10
# When a second thread consumes them, larger: the block was written from another core
# anyway, and each hand-over between the threads costs a wake-up (measured here: with
# 1 MiB blocks `nar hash` used about a tenth less processor time than with 256 KiB).
THREADED_BLOCK = 1 << 20
# Files smaller than this are read into the output blocks even where sendfile(2) could
# send them: for them, a system call more costs more than the copy it saves.
_SMALL_FILE = 64 << 10
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the directory was listed must not hang us.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class TreeError(FormatError):
    """A file tree that has no NAR form (a device, a socket, a file that changed meanwhile)."""


class _Changed(Exception):
    """A file changed while it was read; the caller knows its name."""


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
    block = THREADED_BLOCK if threaded else BLOCK
    with pipeline.BlockSink(write, block=block, threaded=threaded) as sink:
        sink.put(HEADER)
        _Dumper(sink).root(os.fsencode(path))
        sink.close()
        return sink.size


def sha256(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """The SHA-256 digest and the size of the NAR of the tree at `path` (as `dump`,
    hashed in a second thread); `nar.hash_path` gives it a type."""
    import hashlib  # noqa: PLC0415 - `nar dump` needs no hashing

    hasher = hashlib.sha256()
    size = dump(path, hasher.update)
    return hasher.digest(), size


def dump_to(path: str | os.PathLike[str], out: int) -> int:
    """`dump` straight to the file descriptor `out` (a pipe, a file, /dev/null).

    Large files go with sendfile(2), from the page cache to `out` without a copy
    through this process; headers and small files are written in blocks. When `out`
    cannot take sendfile (a terminal, a file opened for appending), everything is
    written as `dump` writes it.
    """

    def write(data: bytes | bytearray | memoryview) -> None:
        pipeline.write_all(out, data)

    with pipeline.BlockSink(write, block=BLOCK, threaded=False) as sink:
        sink.put(HEADER)
        _Dumper(sink, send_to=out).root(os.fsencode(path))
        sink.close()
        return sink.size


def dump_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole NAR of a (small) tree; for tests and small files."""
    parts: list[bytes] = []
    dump(path, lambda data: parts.append(bytes(data)), threaded=False)
    return b"".join(parts)


class _Dumper:
    """Walks a tree into a sink; `where` (the path from the root) only names errors."""

    def __init__(self, sink: pipeline.BlockSink, *, send_to: int | None = None) -> None:
        self.sink = sink
        self.send_to = send_to  # where large files may go with sendfile(2), if anywhere

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
            try:
                self.regular(os.open(path, _FILE_FLAGS), b"", PAD_CLOSE, (path,))
            except _Changed as error:
                raise TreeError(f"{_show((path,))}: {error}") from None
        else:
            raise TreeError(f"{_show((path,))}: not a regular file, symlink or directory")

    def symlink(self, target: bytes, where: tuple[bytes, ...]) -> None:
        if len(target) > MAX_TARGET:
            raise TreeError(f"{_show(where)}: symlink target longer than {MAX_TARGET} bytes")
        self.sink.put(TYPE_SYMLINK + string(target) + CLOSE)

    def directory(self, fd: int, where: tuple[bytes, ...]) -> None:
        if len(where) > MAX_DEPTH:
            raise TreeError(f"{_show(where)}: tree nests deeper than {MAX_DEPTH} directories")
        put = self.sink.put
        put(TYPE_DIRECTORY)
        encode = os.fsencode
        with os.scandir(fd) as listing:
            # Nix orders entries by their bytes (std::map<std::string>), as sorted() does.
            entries = sorted((encode(entry.name), entry) for entry in listing)
        for name, entry in entries:
            # The entry's type from the directory listing is a hint that saves a stat;
            # what is opened is checked again on its descriptor.
            try:
                if entry.is_file(follow_symlinks=False):
                    opened = os.open(name, _FILE_FLAGS, dir_fd=fd)
                    prefix = ENTRY + string(name) + NODE
                    self.regular(opened, prefix, PAD_CLOSE_ENTRY, (*where, name))
                    continue
                put(ENTRY + string(name) + NODE)
                if entry.is_symlink():
                    self.symlink(os.readlink(name, dir_fd=fd), (*where, name))
                elif entry.is_dir(follow_symlinks=False):
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    try:
                        self.directory(child, (*where, name))
                    finally:
                        os.close(child)
                else:
                    raise TreeError(
                        f"{_show((*where, name))}: not a regular file, symlink or directory"
                    )
                put(CLOSE)
            except OSError as error:
                if error.filename in (None, name):  # name it from the tree's root
                    error.filename = b"/".join((*where, name))
                raise
            except _Changed as error:
                raise TreeError(f"{_show((*where, name))}: {error}") from None
        put(CLOSE)

    def regular(
        self, fd: int, prefix: bytes, suffixes: tuple[bytes, ...], where: tuple[bytes, ...]
    ) -> None:
        """`prefix`, the node of the regular file open at `fd`, and the suffix its size
        selects (padding and closing parentheses). Takes over `fd`."""
        try:
            info = os.fstat(fd)
            mode = info.st_mode
            if not stat.S_ISREG(mode):
                raise _Changed("changed while being archived")
            size = info.st_size
            kind = REGULAR_EXECUTABLE if mode & stat.S_IXUSR else REGULAR
            self.sink.put(prefix + kind + U64.pack(size))
            if self.send_to is not None and size >= _SMALL_FILE:
                self.sink.hand_over()  # what came before goes first
                if _send_file(self.send_to, fd, size, where):
                    self.sink.size += size
                else:
                    self.send_to = None
                    _copy_file(self.sink, fd, size, where)
            else:
                _copy_file(self.sink, fd, size, where)
        finally:
            os.close(fd)
        self.sink.put(suffixes[size % 8])


def _copy_file(sink: pipeline.BlockSink, fd: int, size: int, where: tuple[bytes, ...]) -> None:
    """`size` bytes of the file open at `fd`, read straight into the sink's blocks: no
    copy in this process. A small file that fits the block's rest takes one read."""
    remaining = size
    try:
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
                return  # a short read at the end: the file ends where it should
            if got == 0:
                raise TreeError(f"{_show(where)}: shrank while being archived")
    except OSError as error:
        error.filename = b"/".join(where)
        raise


def _send_file(out: int, fd: int, size: int, where: tuple[bytes, ...]) -> bool:
    """`size` bytes of the file at `fd` sent to `out` with sendfile(2); False, with
    nothing sent, when `out` cannot take it."""
    offset = 0
    try:
        while offset < size:
            try:
                sent = os.sendfile(out, fd, offset, min(size - offset, 1 << 30))
            except OSError as error:
                if offset == 0 and error.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    return False
                raise
            if sent == 0:
                raise TreeError(f"{_show(where)}: shrank while being archived")
            offset += sent
        if os.pread(fd, 1, size):
            raise TreeError(f"{_show(where)}: grew while being archived")
    except OSError as error:
        error.filename = b"/".join(where)
        raise
    return True


def _show(where: tuple[bytes, ...]) -> str:
    return display.escape_bytes(b"/".join(where))
