"""Directory trees a tenant wrote, walked by descriptor: their disk usage, and removing them.

Both walks hold two descriptors whatever the depth. They go down with
openat(O_NOFOLLOW | O_DIRECTORY) and back up through "..", checking that they came back
to the directory they left (device and inode), so nothing is re-resolved from a path,
no symlink is followed, and no other filesystem is entered. Both take a deadline.
Used inside a tenant's sandbox (counting, cleaning its /tmp) and by root on an opened
descriptor (`tenant remove`).
"""

from __future__ import annotations

import os
import stat
import time

from nixwarden.errors import Refused

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHECK_EVERY = 256  # entries between two looks at the clock


class TreeError(Refused):
    """The tree could not be walked or removed; the message never names a host path."""


class TimedOut(TreeError):
    """The deadline passed before the walk ended."""


class _Cursor:
    """One open directory in the tree, moved down by name and back up through "..",
    which must lead back to the directory it came from."""

    def __init__(self, top_fd: int, deadline: float | None) -> None:
        self.fd = os.dup(top_fd)
        info = os.fstat(self.fd)
        if not stat.S_ISDIR(info.st_mode):
            os.close(self.fd)
            raise TreeError("not a directory")
        self.device = info.st_dev
        self.deadline = deadline
        self._ids = [(info.st_dev, info.st_ino)]
        self._names: list[str] = []

    @property
    def depth(self) -> int:
        return len(self._names)

    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimedOut("timed out")

    def down(self, name: str) -> bool:
        """Enter subdirectory `name`; False (and stay) when it is on another filesystem."""
        child = os.open(name, _DIRECTORY, dir_fd=self.fd)
        info = os.fstat(child)
        if info.st_dev != self.device:
            os.close(child)
            return False
        os.close(self.fd)
        self.fd = child
        self._ids.append((info.st_dev, info.st_ino))
        self._names.append(name)
        return True

    def up(self) -> str:
        """Back to the parent; returns the name of the directory just left."""
        parent = os.open("..", _DIRECTORY, dir_fd=self.fd)
        info = os.fstat(parent)
        if (info.st_dev, info.st_ino) != self._ids[-2]:
            os.close(parent)
            raise TreeError("the tree was changed while it was walked")
        os.close(self.fd)
        self.fd = parent
        self._ids.pop()
        return self._names.pop()

    def close(self) -> None:
        os.close(self.fd)


def disk_usage(top_fd: int, *, deadline: float | None = None) -> int:
    """Bytes allocated to the tree at `top_fd` (`du -s -x -B1`): every entry's blocks,
    hard links counted once, symlinks not followed, other filesystems not entered."""
    cursor = _Cursor(top_fd, deadline)
    try:
        total = os.fstat(cursor.fd).st_blocks * 512
        seen: set[tuple[int, int]] = set()
        pending: list[list[str]] = []
        subdirectories, used = _scan(cursor, seen)
        total += used
        pending.append(subdirectories)
        while True:
            cursor.check_time()
            if pending[-1]:
                if cursor.down(pending[-1].pop()):
                    subdirectories, used = _scan(cursor, seen)
                    total += used
                    pending.append(subdirectories)
                continue
            if cursor.depth == 0:
                return total
            cursor.up()
            pending.pop()
    except OSError as error:
        raise TreeError(f"cannot walk the tree: {error.strerror}") from None
    finally:
        cursor.close()


def _scan(cursor: _Cursor, seen: set[tuple[int, int]]) -> tuple[list[str], int]:
    """(subdirectories on this filesystem, bytes of every entry here on it)."""
    subdirectories = []
    used = 0
    with os.scandir(cursor.fd) as entries:
        for count, entry in enumerate(entries):
            if count % _CHECK_EVERY == 0:
                cursor.check_time()
            info = entry.stat(follow_symlinks=False)
            if info.st_dev != cursor.device:
                continue  # a mount point: another filesystem's, not this tree's
            if stat.S_ISDIR(info.st_mode):
                subdirectories.append(entry.name)
            elif info.st_nlink > 1:
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            used += info.st_blocks * 512
    return subdirectories, used


def remove_contents(
    top_fd: int, *, make_writable: bool = False, deadline: float | None = None
) -> None:
    """Remove everything inside the directory open at `top_fd` (not the directory itself).

    `make_writable`: without root's privileges, read-only directories (a Nix build's
    output) are made writable before they are emptied. A mount point inside is an error."""
    cursor = _Cursor(top_fd, deadline)
    try:
        pending = [_unlink_files(cursor)]
        while True:
            cursor.check_time()
            if pending[-1]:
                name = pending[-1].pop()
                if not _enter(cursor, name, make_writable):
                    raise TreeError("another filesystem is mounted inside")
                pending.append(_unlink_files(cursor))
                continue
            if cursor.depth == 0:
                return
            left = cursor.up()
            pending.pop()
            os.rmdir(left, dir_fd=cursor.fd)
    except OSError as error:
        raise TreeError(f"cannot remove the tree: {error.strerror}") from None
    finally:
        cursor.close()


def _enter(cursor: _Cursor, name: str, make_writable: bool) -> bool:
    try:
        entered = cursor.down(name)
    except PermissionError:
        if not make_writable:
            raise
        # Not listable (mode 0000, say): its owner may change that. `name` was seen as
        # a directory, and only the tree's own writer could have swapped it since.
        os.chmod(name, 0o700, dir_fd=cursor.fd)
        entered = cursor.down(name)
    if entered and make_writable:
        os.fchmod(cursor.fd, 0o700)
    return entered


def _unlink_files(cursor: _Cursor) -> list[str]:
    """Unlink every entry of the current directory but its subdirectories; returns those."""
    with os.scandir(cursor.fd) as entries:
        listed = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    subdirectories = []
    for count, (name, is_directory) in enumerate(listed):
        if count % _CHECK_EVERY == 0:
            cursor.check_time()
        if is_directory:
            subdirectories.append(name)
        else:
            os.unlink(name, dir_fd=cursor.fd)
    return subdirectories
