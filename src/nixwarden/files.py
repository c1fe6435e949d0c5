"""Atomic file writes: temporary file in the same directory, final mode, fsync, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile

from nixwarden.errors import InvalidInput


def write_atomic(path: str, data: bytes, *, mode: int, replace: bool) -> None:
    """Make `path` hold `data` with `mode`; readers see the old file or the new, never half.

    With `replace=False` an existing file is never touched (the final step is link(2),
    which refuses to overwrite), as secret keys need.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        os.fchmod(fd, mode)  # before any byte is written, and before the name is visible
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise InvalidInput(f"{path}: already exists; not overwriting it") from None
            os.unlink(temporary)
        _fsync_directory(directory)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
