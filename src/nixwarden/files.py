"""Atomic file writes: temporary file in the same directory, content, fsync, owner and mode,
rename, directory fsync.

`write_atomic` takes a path; `write_atomic_at` a directory descriptor and a name, for
directories opened without following symlinks. Both accept a `hook`, called with a label
at each point between two of those steps, so tests can stop a write there (SIGKILL) and
check what a crash at that instant leaves behind.
"""

from __future__ import annotations

import contextlib
import os

from nixwarden.errors import InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Hook = Callable[[str], None]


def write_atomic(
    path: str,
    data: bytes,
    *,
    mode: int,
    replace: bool,
    owner: tuple[int, int] | None = None,
    hook: Hook | None = None,
) -> None:
    """Make `path` hold `data` with `mode` (and `owner`, a (uid, gid)); readers see the old
    file or the new, never half.

    With `replace=False` an existing file is never touched (the final step is link(2),
    which refuses to overwrite), as secret keys need.
    """
    directory, name = os.path.split(os.path.abspath(path))
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_atomic_at(fd, name, data, mode=mode, replace=replace, owner=owner, hook=hook)
    except FileExistsError:
        raise InvalidInput(f"{path}: already exists; not overwriting it") from None
    finally:
        os.close(fd)


def write_atomic_at(
    directory: int,
    name: str,
    data: bytes,
    *,
    mode: int,
    replace: bool = True,
    owner: tuple[int, int] | None = None,
    hook: Hook | None = None,
) -> None:
    """`write_atomic` in the directory open at `directory`. The temporary file is created
    with O_EXCL and O_NOFOLLOW (a name planted in its place makes this fail, never
    redirects it); raises FileExistsError when `replace=False` and `name` exists."""
    mark = hook or _no_hook
    temporary = f".{name}.{os.urandom(6).hex()}"
    fd = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=directory,
    )
    try:
        mark("created")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        mark("written")
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)  # after fchown, which clears set-id bits; before the name is visible
        os.close(fd)
        fd = -1
        mark("ready")
        if replace:
            os.rename(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
        else:
            os.link(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
            os.unlink(temporary, dir_fd=directory)
        mark("renamed")
        os.fsync(directory)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=directory)


def read_at_most(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes from `fd` (a caller reading one more than it accepts learns that
    a file is too large without reading all of it)."""
    chunks = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def remove_at(directory: int, name: str) -> bool:
    """Unlink `name` (never following it) and make that durable; False if it was not there."""
    try:
        os.unlink(name, dir_fd=directory)
    except FileNotFoundError:
        return False
    os.fsync(directory)
    return True


def _no_hook(_label: str) -> None:
    return None
