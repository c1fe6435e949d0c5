"""The audited file system: every path resolved inside the root, every read bounded.

`System(root)` answers for paths of the audited system (`/etc/ssh/sshd_config`), for
the live machine (`/`) and for a tree under `--root` alike, and walks each path one
component at a time from a descriptor of the root, as the kernel would inside a
chroot: every component is opened with O_NOFOLLOW relative to its parent's
descriptor, a symbolic link is read and spliced in (an absolute target starts again
at the root, `..` never climbs above it, at most 40 links per path), so nothing under
the root can send the audit to a host file, by link or by race. Globs are expanded
the same way, by listing directories through those descriptors.

Only regular files are read (checked on the descriptor), at most 8 MiB each, 64 MiB
and 20,000 files in all; a glob follows at most 32 components, 256 matches and
10,000 directory entries (100,000 in all). What a bound stops is recorded as a `Cut`,
which the audit reports (rules_limits.py): nothing is dropped silently.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from nixwarden.audit import wildcard
from nixwarden.audit.model import Cut, CutKind, FileStat, GlobResult, LimitReached

MAX_FILE = 8 << 20
MAX_TOTAL_BYTES = 64 << 20
MAX_LOOKUPS = 20_000  # files the audit tries to read, found or not
MAX_SYMLINKS = 40  # as Linux's path walk
MAX_GLOB_COMPONENTS = 32
MAX_GLOB_MATCHES = 256
MAX_GLOB_ENTRIES = 10_000  # directory entries one glob may examine
MAX_GLOB_ENTRIES_TOTAL = 100_000
MAX_PATH = 4096  # PATH_MAX: a longer path or pattern names nothing
MAX_STATS = 100_000  # remembered owners and modes

_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass
class Budget:
    """What is left to read in this audit (all files together)."""

    bytes: int
    lookups: int
    glob_entries: int


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


class System:
    """`/` for the live machine, or a directory tree (an image) under --root."""

    def __init__(self, root: str = "/") -> None:
        self.root = root
        self.budget = Budget(MAX_TOTAL_BYTES, MAX_LOOKUPS, MAX_GLOB_ENTRIES_TOTAL)
        self._cache: dict[str, bytes] = {}
        self._cuts: dict[str, Cut] = {}  # one per bound, the first file it stopped
        self._skipped: dict[str, set[str]] = {}  # further files each bound stopped
        # (uid, gid, mode) by path, filled by every walk for the prefixes it passes before
        # any link or `..`: the rules stat a file and every directory above it, and this
        # keeps that linear in the depth instead of quadratic.
        self._stats: dict[str, tuple[int, int, int] | None] = {}

    @property
    def live(self) -> bool:
        return self.root == "/"

    # -- the walk -------------------------------------------------------------------------

    @contextmanager
    def _walk(self, path: str) -> Iterator[tuple[int, int, list[str]]]:
        """(parent descriptor, O_PATH descriptor, canonical components) of `path`."""
        if len(path) > MAX_PATH:
            raise OSError(errno.ENAMETOOLONG, "File name too long", path)
        if "\0" in path:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        fds = [os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
        names: list[str] = []
        pending = _components(path)[::-1]
        links = 0
        lexical = True  # the names walked so far are the path as written
        try:
            while pending:
                part = pending.pop()
                if part == "..":
                    lexical = False
                    if len(fds) > 1:
                        os.close(fds.pop())
                        names.pop()
                    continue
                fd = os.open(part, _PATH_FLAGS, dir_fd=fds[-1])
                info = os.fstat(fd)
                mode = info.st_mode
                if stat_module.S_ISLNK(mode):
                    lexical = False
                    try:
                        target = os.readlink(part, dir_fd=fds[-1])
                    finally:
                        os.close(fd)
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, "Too many levels of symbolic links", path)
                    if target.startswith("/"):
                        while len(fds) > 1:
                            os.close(fds.pop())
                        names.clear()
                    pending.extend(_components(target)[::-1])
                    continue
                if pending and not stat_module.S_ISDIR(mode):
                    os.close(fd)
                    raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
                fds.append(fd)
                names.append(part)
                if lexical and len(self._stats) < MAX_STATS:
                    self._stats["/" + "/".join(names)] = (info.st_uid, info.st_gid, mode)
            yield (fds[-2] if len(fds) > 1 else fds[-1]), fds[-1], names
        finally:
            for fd in fds:
                os.close(fd)

    def resolve(self, path: str) -> str | None:
        """Where `path` leads inside the audited system (every link followed), or None."""
        try:
            with self._walk(path) as (_, _, names):
                return "/" + "/".join(names)
        except (OSError, ValueError):
            return None

    def identity(self, path: str) -> str:
        """A name for the file itself, so an include cycle through links is still a cycle."""
        return self.resolve(path) or path

    def stat(self, path: str) -> FileStat | None:
        key = "/" + "/".join(_components(path)) if ".." not in path.split("/") else None
        if key is not None and key in self._stats:
            known = self._stats[key]
            return None if known is None else FileStat(path, *known)
        try:
            with self._walk(path) as (_, fd, _):
                info = os.fstat(fd)
        except (OSError, ValueError):
            if key is not None and len(self._stats) < MAX_STATS:
                self._stats[key] = None
            return None
        return FileStat(path, info.st_uid, info.st_gid, info.st_mode)

    # -- reading --------------------------------------------------------------------------

    def _cut(self, bound: str, path: str, detail: str) -> LimitReached:
        first = self._cuts.get(bound)
        if first is None:
            self._cuts[bound] = Cut(CutKind.INPUT, path, None, detail)
        elif first.file != path:
            self._skipped.setdefault(bound, set()).add(path)
        return LimitReached(errno.EFBIG, detail, path)

    def read(self, path: str) -> bytes:
        """A regular file's bytes; OSError when absent, unreadable, not regular or cut."""
        if self.budget.lookups <= 0:
            raise self._cut(
                "lookups", path, f"the audit looks at most {MAX_LOOKUPS} files up: not read"
            )
        self.budget.lookups -= 1
        with self._walk(path) as (parent, fd, names):
            info = os.fstat(fd)
            if stat_module.S_ISDIR(info.st_mode):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
            if not stat_module.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", path)
            key = "/" + "/".join(names)
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            if info.st_size > MAX_FILE:
                raise self._cut(
                    f"size:{key}", path, f"larger than {MAX_FILE >> 20} MiB ({info.st_size} bytes)"
                )
            if info.st_size > self.budget.bytes:
                raise self._cut(
                    "bytes",
                    path,
                    f"the audit reads at most {MAX_TOTAL_BYTES >> 20} MiB in all: not read",
                )
            data = self._read_regular(parent, names[-1] if names else ".", info, path)
        self.budget.bytes -= len(data)
        self._cache[key] = data
        return data

    def _read_regular(self, parent: int, name: str, expected: os.stat_result, path: str) -> bytes:
        # Opened by name beside the O_PATH descriptor, never following a link, and checked
        # to be the very file that was inspected: a swap in between is refused.
        fd = os.open(name, _READ_FLAGS, dir_fd=parent)
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != (expected.st_dev, expected.st_ino) or not (
                stat_module.S_ISREG(info.st_mode)
            ):
                raise OSError(errno.EAGAIN, "changed while being read", path)
            limit = min(MAX_FILE, self.budget.bytes)
            chunks: list[bytes] = []
            size = 0
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise self._cut(f"size:{path}", path, f"grew past {limit} bytes while read")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def read_optional(self, path: str) -> bytes | None:
        try:
            return self.read(path)
        except OSError:
            return None

    # -- globs ----------------------------------------------------------------------------

    def _entries(self, directory: str, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` names in a directory of the audited system; True if more were left."""
        try:
            with self._walk(directory) as (_, fd, _):
                listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                try:
                    names: list[str] = []
                    with os.scandir(listing) as entries:
                        for entry in entries:
                            if len(names) >= limit:
                                return names, True
                            names.append(entry.name)
                    return names, False
                finally:
                    os.close(listing)
        except (OSError, ValueError):
            return [], False

    def glob(self, pattern: str) -> GlobResult:
        """glob(3) of an absolute pattern, inside the root and within the bounds above."""
        parts = [part for part in pattern.split("/") if part]
        if len(pattern) > MAX_PATH:
            return GlobResult(())
        if len(parts) > MAX_GLOB_COMPONENTS:
            return GlobResult(
                (), f"{len(parts)} path components; the audit expands at most {MAX_GLOB_COMPONENTS}"
            )
        candidates = [""]
        examined = 0
        cut: str | None = None
        for part in parts:
            if not wildcard.has_magic(part):
                literal = wildcard.unescape(part)
                candidates = [f"{prefix}/{literal}" for prefix in candidates]
                continue
            matches = wildcard.glob_matcher(part)
            found: list[str] = []
            for prefix in candidates:
                allowance = min(MAX_GLOB_ENTRIES - examined, self.budget.glob_entries)
                if allowance <= 0:
                    cut = cut or (
                        f"examined {examined} directory entries; the audit examines at most "
                        f"{MAX_GLOB_ENTRIES} per pattern and {MAX_GLOB_ENTRIES_TOTAL} in all"
                    )
                    break
                names, more = self._entries(prefix or "/", allowance)
                used = len(names) + 1  # an empty directory still costs a look
                examined += used
                self.budget.glob_entries -= used
                if more:
                    cut = cut or (
                        f"{prefix or '/'} has more entries than the audit examines "
                        f"({MAX_GLOB_ENTRIES} per pattern)"
                    )
                for name in sorted(names):
                    if matches(name):
                        found.append(f"{prefix}/{name}")
                if len(found) > MAX_GLOB_MATCHES:
                    cut = cut or f"matches more than {MAX_GLOB_MATCHES} paths"
                    found = found[:MAX_GLOB_MATCHES]
                    break
            candidates = found
            if not candidates:
                break
        existing = [path for path in candidates if path and self.resolve(path) is not None]
        return GlobResult(tuple(sorted(existing)), cut)

    # -- what was cut ---------------------------------------------------------------------

    def cuts(self) -> tuple[Cut, ...]:
        result = []
        for bound, cut in self._cuts.items():
            more = len(self._skipped.get(bound, ()))
            plural = "s" if more > 1 else ""
            detail = f"{cut.detail} (and {more} more file{plural})" if more else cut.detail
            result.append(Cut(cut.kind, cut.file, cut.line, detail))
        return tuple(result)
