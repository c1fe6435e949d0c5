"""A tenant's disk quota held by the kernel: the tenant's directory is a filesystem of its own.

With `[tenants] disk_images` set, root gives each tenant principal with a `disk_quota`
an ext4 image of exactly that size, a sparse file in that directory (root's, 0700: out
of every tenant's reach), and loop-mounts it (nosuid, nodev) at the tenant's directory:
by `nixwarden tenant create`, and again at boot by `nixwarden tenant limits apply`.
A session then cannot write more than the filesystem holds: writes fail with ENOSPC,
whatever wrote them (a build, Nix's database, a file left in /tmp), while the session
runs. Nothing else on the host fills up.

The gate, as the tenant's user, checks before it starts anything that the directory is
that mount (another device than the tenants root) no larger than the quota, and refuses
otherwise, unless the policy accepts best effort. The directory under the mount point
stays root's: when the image is not mounted, the gate finds no directory of the
tenant's user there, and refuses whatever the policy says.

Root-side functions run programs (mkfs.ext4, mount, umount) through nixwarden.process;
the gate's checks (`check`, `is_own_filesystem`) only stat.
"""

from __future__ import annotations

import os
import stat

from nixwarden.tenants.host import TenantSetupError

TYPE_CHECKING = False  # not typing's: the gate's checks are on its start-up path
if TYPE_CHECKING:
    from nixwarden.config import Principal, TenantSettings

MKFS = "/sbin/mkfs.ext4"
MOUNT = "/bin/mount"
UMOUNT = "/bin/umount"
# No set-uid programs or device files from a tenant's filesystem; no atime writes.
MOUNT_OPTIONS = "loop,nosuid,nodev,noatime"
IMAGES_MODE = 0o700
SUFFIX = ".ext4"
TOOL_SECONDS = 120
# "Full": less free than this, or than 1% of the filesystem, whichever is more.
DISK_FULL_BYTES = 1 << 20
DISK_FULL_INODES = 64


def uses_image(settings: TenantSettings, principal: Principal) -> bool:
    return bool(settings.disk_images) and principal.disk_quota is not None


def image_path(settings: TenantSettings, name: str) -> str:
    return os.path.join(settings.disk_images, name + SUFFIX)


def is_own_filesystem(path: str, root: str) -> bool:
    """Whether `path` (a tenant's directory) is another filesystem than `root` (the tenants
    root): the image is mounted there. Never follows a symlink at `path`."""
    try:
        here = os.stat(path, follow_symlinks=False)
        parent = os.stat(root)
    except OSError:
        return False
    return stat.S_ISDIR(here.st_mode) and here.st_dev != parent.st_dev


def filesystem_bytes(fd_or_path: int | str) -> tuple[int, int]:
    """(size, free for writing) of the filesystem holding `fd_or_path`."""
    info = os.statvfs(fd_or_path)
    return info.f_blocks * info.f_frsize, info.f_bavail * info.f_frsize


def disk_full(free_bytes: int, size_bytes: int) -> bool:
    return free_bytes < max(DISK_FULL_BYTES, size_bytes // 100)


def inodes_full(free: int, total: int) -> bool:
    """Out of inodes (ext4 has a fixed number): new files fail with ENOSPC too."""
    return total > 0 and free < max(DISK_FULL_INODES, total // 100)


def is_full(fd_or_path: int | str) -> bool:
    """Whether the filesystem holding `fd_or_path` is full, of bytes or of inodes."""
    info = os.statvfs(fd_or_path)
    return disk_full(info.f_bavail * info.f_frsize, info.f_blocks * info.f_frsize) or (
        inodes_full(info.f_favail, info.f_files)
    )


# --- the gate ----------------------------------------------------------------------------


def not_mounted(name: str) -> TenantSetupError:
    return TenantSetupError(
        f"the disk image of {name} is not mounted at its directory; "
        f"as root: nixwarden tenant limits apply {name}"
    )


def check(settings: TenantSettings, principal: Principal, base: int) -> tuple[int, int] | None:
    """In the gate: the tenant's directory (descriptor `base`) must be its image, no larger
    than the quota. Returns (size, free) of it. Not mounted: TenantSetupError, whatever
    the policy (the directory under the mount point is root's in any case). Larger than
    the quota: None when the policy accepts best effort, else TenantSetupError."""
    quota = principal.disk_quota
    assert quota is not None
    try:
        root = os.stat(settings.root)
        here = os.fstat(base)
        size, free = filesystem_bytes(base)
    except OSError as error:
        raise TenantSetupError(f"cannot check the disk of {principal.name}: {error}") from None
    if here.st_dev == root.st_dev:
        raise not_mounted(principal.name)
    if size <= quota:
        return size, free
    if principal.limits == "best-effort":
        return None
    raise TenantSetupError(
        f"the disk quota of {principal.name} is not enforced: its filesystem holds {size} "
        f"bytes, more than the quota of {quota}; make its image again (nixwarden tenant "
        'remove, then create) or raise the quota (limits = "best-effort" accepts that)'
    )


# --- root: images and mounts ---------------------------------------------------------------


def ensure_mounted(settings: TenantSettings, principal: Principal, path: str) -> bool:
    """As root: the principal's image, made when missing, mounted at `path` (its directory,
    which must exist). True when this call mounted it. A partial failure leaves no image
    it made and no mount."""
    quota = principal.disk_quota
    assert quota is not None
    if is_own_filesystem(path, os.path.dirname(path)):
        return False
    image = image_path(settings, principal.name)
    made = _make_image(settings, image, quota)
    try:
        _tool([MOUNT, "-t", "ext4", "-o", MOUNT_OPTIONS, image, path])
        if made:
            # e2fsck's lost+found is root's: the tenant's probe could not measure it.
            try:  # noqa: SIM105
                os.rmdir(os.path.join(path, "lost+found"))
            except FileNotFoundError:
                pass
            os.chmod(path, 0o700)
    except BaseException:
        if is_own_filesystem(path, os.path.dirname(path)):
            _tool([UMOUNT, path], check=False)
        if made:
            os.unlink(image)
        raise
    return True


def _make_image(settings: TenantSettings, image: str, size: int) -> bool:
    """The sparse image of `size` bytes with an empty ext4 in it; False when it exists."""
    _images_directory(settings.disk_images)
    try:
        fd = os.open(
            image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except FileExistsError:
        info = os.stat(image, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != 0:
            raise TenantSetupError(f"{image} is not a regular file of root's") from None
        return False
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    try:
        # No reserved blocks (the quota is the tenant's whole), no journal-less surprises.
        _tool([MKFS, "-q", "-F", "-m", "0", "-E", "root_owner=0:0", image])
    except BaseException:
        os.unlink(image)
        raise
    return True


def _images_directory(directory: str) -> None:
    os.makedirs(directory, mode=IMAGES_MODE, exist_ok=True)
    info = os.stat(directory, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
        raise TenantSetupError(
            f"{directory} must be a directory only root may enter; as root: "
            f"chown root:root {directory} && chmod {IMAGES_MODE:04o} {directory}"
        )


def release(settings: TenantSettings, name: str, path: str) -> None:
    """As root, when the tenant is removed: unmount its image (nothing may hold the
    filesystem open: the caller closed its descriptors) and delete it."""
    if is_own_filesystem(path, os.path.dirname(path)):
        _tool([UMOUNT, path])
    if settings.disk_images:
        try:  # noqa: SIM105
            os.unlink(image_path(settings, name))
        except FileNotFoundError:
            pass


def _tool(argv: list[str], *, check: bool = True) -> None:
    from nixwarden import process  # noqa: PLC0415 - root's commands only

    process.run(
        argv, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, check=check, timeout=TOOL_SECONDS
    )
