"""A tenant's directory, opened without trusting anything in it.

Root creates `<tenants.root>/<name>` at enrolment (`nixwarden tenant create`), owned by
the principal's unix user; the root directory is root's and nobody else may write it,
so no other account can create, swap or pre-empt a tenant's directory. Every open
here is relative to a descriptor, with O_NOFOLLOW, and checks the type on the
descriptor.
"""

from __future__ import annotations

import os
import stat

from nixwarden.tenants.host import TenantSetupError

DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
ROOT_MODE = 0o711  # others may reach their own directory, not list or create any
TENANT_MODE = 0o700
MAX_NAME = 32


def check_name(name: str) -> str:
    """A principal's name as a directory name: one plain component."""
    if not name or len(name) > MAX_NAME or name in (".", "..") or "/" in name or "\0" in name:
        raise TenantSetupError(f"not a tenant name: {name!r}")
    return name


def open_root(root: str) -> int:
    """The tenants root (an administrator's path: followed), refused when others may write
    it. Raises FileNotFoundError when it does not exist. An O_PATH descriptor: with mode
    0711 a tenant's user may pass through it, not read it."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    info = os.fstat(fd)
    if info.st_uid != 0 or info.st_mode & 0o022:
        os.close(fd)
        raise TenantSetupError(
            f"the tenants root {root} may be written by others than root, who could take "
            f"a tenant's place; as root: chown root:root {root} && chmod {ROOT_MODE:04o} {root}"
        )
    return fd


def open_tenant(root_fd: int, name: str) -> int:
    """The tenant's directory, never through a symlink; OSError as open(2) fails."""
    return os.open(check_name(name), DIRECTORY, dir_fd=root_fd)


def owner_of(root_fd: int, name: str) -> os.stat_result:
    """What `name` is, without following it (for messages about a directory we cannot open)."""
    return os.stat(name, dir_fd=root_fd, follow_symlinks=False)


def is_directory(info: os.stat_result) -> bool:
    return stat.S_ISDIR(info.st_mode)


def names(root_fd: int) -> list[str]:
    """The entries of the directory at `root_fd` (an O_PATH descriptor; as root)."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)
