"""Preparing a tenant session, in the gate, as the tenant's unix user.

Opens the tenant's directory (created by root at enrolment, owned by this user) by
descriptor, creates its subdirectories, writes the generated /etc, applies the process
limits, cleans the tenant's /tmp when no other session of it runs, refuses a session
over the disk quota, and returns the argv that runs Nix inside the tenant's sandbox.
The tenant's own files are read only inside its sandbox (tenants.usage). Every
problem is a refusal, and no message names a path inside the tenant's directory.
"""

from __future__ import annotations

import os
import resource
import stat

from nixwarden import files, sessions
from nixwarden.tenants import directory, disk, host
from nixwarden.tenants import layout as tenant_layout
from nixwarden.tenants.host import TenantRefused, TenantSetupError

TYPE_CHECKING = False  # not typing's: this module is on the gate's (tenant) start-up path
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from nixwarden.config import Principal, TenantSettings
    from nixwarden.tenants.usage import TenantUsage

__all__ = ["TenantRefused", "TenantSetupError", "check_quota", "policy_of", "prepare"]

SUBDIRECTORIES = ("nix", "etc", "tmp")
# How long a session waits while its tenant's /tmp is cleaned (or the tenant removed).
LOCK_WAIT_SECONDS = 30


def policy_of(principal: Principal) -> tenant_layout.TenantPolicy:
    return tenant_layout.TenantPolicy(
        network=principal.network,
        substituters=tuple(principal.substituters),
        trusted_public_keys=tuple(principal.trusted_public_keys),
        session_timeout=principal.session_timeout,
    )


def prepare(
    settings: TenantSettings,
    principal: Principal,
    nix_argv: Sequence[str],
    *,
    state_dir: str,
    config_path: str | None = None,
    slot: int = 0,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment to exec for this tenant session. Leaves the principal's
    lock (sessions.principal_lock) open and inheritable: the session holds it."""
    layout = tenant_layout.TenantLayout(settings.root, principal.name)
    policy = policy_of(principal)
    image = disk.uses_image(settings, principal)
    # Unmounted, the directory under the mount point is root's, and opening it would be
    # refused for that; say what is wrong instead (disk.check decides, on the descriptor).
    if image and not disk.is_own_filesystem(layout.base, settings.root):
        raise disk.not_mounted(principal.name)
    base = open_own_directory(settings.root, principal.name, config_path)
    try:
        if image and disk.check(settings, principal, base) is None:
            image = False  # larger than the quota, and the policy accepts best effort
        ensure_subdirectories(base)
        write_etc(base, tenant_layout.etc_files(policy))
        touch(base, "last-use")
        tmp_used = has_entries(base, "tmp")
    finally:
        os.close(base)
    lock, alone = sessions.principal_lock(state_dir, principal.name, wait=LOCK_WAIT_SECONDS)
    try:
        # Limits and niceness first: everything below, the probe included, runs under them.
        # Inline, not limits.has_kernel_limits: nothing more to import without limits.
        if principal.memory is not None or principal.cpu is not None or principal.tasks is not None:
            enter_cgroups(settings, principal, slot)
        apply_limits(principal)
        program = host.resolve_keeping_name(nix_argv[0])
        sandbox = host.tenant_sandbox(layout, policy, [program])
        clean = alone and tmp_used
        measure_disk = principal.disk_quota is not None and not image
        if clean or measure_disk:
            from nixwarden.tenants import usage  # noqa: PLC0415 - only with work to do

            probe_sandbox = sandbox
            if usage.interpreter().startswith(host.STORE_PREFIX):
                probe_sandbox = host.tenant_sandbox(layout, policy, [usage.interpreter()])
            try:
                measured = usage.measure(
                    layout,
                    probe_sandbox,
                    settings.bwrap,
                    disk=measure_disk,
                    clean_tmp=clean,
                )
            except usage.UsageUnknown as error:
                doing = "check the disk quota" if measure_disk else "clean the tenant's /tmp"
                raise TenantRefused(
                    f"cannot {doing}: {error}; as root, see: nixwarden tenant list"
                ) from None
            if measure_disk:
                check_quota(measured, principal)
        if image:
            check_free_space(layout.base, principal)
        if alone:
            sessions.share(lock)
    except BaseException:
        os.close(lock)
        raise
    argv = tenant_layout.session_argv(
        settings.bwrap, sandbox, [program, *nix_argv[1:]], policy.session_timeout
    )
    return argv, {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def open_own_directory(root: str, name: str, config_path: str | None) -> int:
    """The tenant's directory, which must be this unix user's; else a refusal with the fix."""
    uid = os.geteuid()
    create = _create_fix(name, uid, config_path)
    try:
        root_fd = directory.open_root(root)
    except FileNotFoundError:
        raise TenantSetupError(f"the tenant store of {name} is not set up; {create}") from None
    except OSError as error:
        raise TenantSetupError(f"the tenants root cannot be opened: {error.strerror}") from None
    try:
        try:
            fd = directory.open_tenant(root_fd, name)
        except FileNotFoundError:
            raise TenantSetupError(f"the tenant store of {name} is not set up; {create}") from None
        except OSError:
            fd = -1
        info = os.fstat(fd) if fd >= 0 else directory.owner_of(root_fd, name)
    finally:
        os.close(root_fd)
    if fd < 0 or not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        if fd >= 0:
            os.close(fd)
        raise TenantSetupError(
            f"the tenant directory of {name} is not a directory of this unix user's "
            f"(uid {uid}); a tenant's store belongs to the one unix user its keys log in as. "
            f"As root, after looking at what is there: nixwarden tenant remove {name}, "
            f"then {create.removeprefix('as root: ')}"
        )
    if info.st_mode & 0o077:
        os.fchmod(fd, directory.TENANT_MODE)
    return fd


def _create_fix(name: str, uid: int, config_path: str | None) -> str:
    import pwd  # noqa: PLC0415

    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    config = f" --config {config_path}" if config_path else ""
    return f"as root: nixwarden tenant create {name} --user {user}{config}"


def ensure_subdirectories(base: int) -> None:
    for name in SUBDIRECTORIES:
        _make_directory(base, name)
    etc = os.open("etc", directory.DIRECTORY, dir_fd=base)
    try:
        _make_directory(etc, "nix")
    finally:
        os.close(etc)


def _make_directory(parent: int, name: str) -> None:
    """`name`, a directory of this user's with mode 0700 (whatever the tenant made of the
    mode from inside its sandbox, where it is the owner)."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
    except FileExistsError:
        pass
    except OSError as error:
        raise TenantRefused(f"cannot create the tenant's {name}/: {error.strerror}") from None
    try:
        fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError:
        raise TenantRefused(f"the tenant's {name}/ is not a directory") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise TenantRefused(f"the tenant's {name}/ is not this unix user's")
        if stat.S_IMODE(info.st_mode) != 0o700:
            # An O_PATH descriptor cannot be fchmod'ed; its /proc link names the same inode.
            os.chmod(f"/proc/self/fd/{fd}", 0o700)
    finally:
        os.close(fd)


def write_etc(base: int, files: dict[str, str]) -> None:
    """Rewrite a generated file only when it changed: a new file renamed over the old one,
    its mode set before it is visible; nothing there is followed or read beyond its size."""
    etc = os.open("etc", directory.DIRECTORY, dir_fd=base)
    try:
        for relative, content in files.items():
            parent_name, _, name = relative.rpartition("/")
            parent = os.open(parent_name, directory.DIRECTORY, dir_fd=etc) if parent_name else etc
            try:
                _write_if_changed(parent, name, content.encode())
            finally:
                if parent != etc:
                    os.close(parent)
    finally:
        os.close(etc)


def _write_if_changed(parent: int, name: str, data: bytes) -> None:
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent
        )
    except OSError:
        pass  # missing, a symlink, unreadable: replaced below
    else:
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, len(data) + 1) == data:
                return
        finally:
            os.close(fd)
    try:
        files.write_atomic_at(parent, name, data, mode=0o644)
    except OSError as error:
        raise TenantRefused(f"cannot write the tenant's /etc/{name}: {error.strerror}") from None


def touch(base: int, name: str) -> None:
    """Mark the session's start (for `tenant list`); never through a symlink or into a FIFO."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=base)
    except OSError:
        raise TenantRefused(f"the tenant's {name} is not a regular file") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TenantRefused(f"the tenant's {name} is not a regular file")
        os.utime(fd)
    finally:
        os.close(fd)


def has_entries(base: int, name: str) -> bool:
    """Whether directory `name` holds anything (names only: nothing in it is opened)."""
    fd = os.open(name, directory.DIRECTORY, dir_fd=base)
    try:
        with os.scandir(fd) as entries:
            return next(entries, None) is not None
    finally:
        os.close(fd)


def check_quota(usage: TenantUsage, principal: Principal) -> None:
    """Refuse a session when the tenant's directory uses its disk quota or more."""
    if principal.disk_quota is None:
        return
    from nixwarden.tenants.usage import human_bytes  # noqa: PLC0415

    used = usage.disk_bytes
    if used is None:
        raise TenantRefused("the tenant's disk usage was not measured")
    if used >= principal.disk_quota:
        raise TenantRefused(
            f"tenant store is over its disk quota ({human_bytes(used)} used of "
            f"{human_bytes(principal.disk_quota)}); "
            f"free space with: nixwarden tenant gc {principal.name}"
        )


def disk_usage_probe(settings: TenantSettings, principal: Principal) -> Callable[[], int | None]:
    """What the supervisor's watchdog calls while a session runs, for a disk quota without
    a filesystem image: the tenant directory's usage in bytes, measured by the probe in
    the tenant's sandbox (tenants.usage, bounded), or None when it could not be."""
    from nixwarden.tenants import usage  # noqa: PLC0415

    layout = tenant_layout.TenantLayout(settings.root, principal.name)
    sandbox = host.tenant_sandbox(layout, policy_of(principal), [usage.interpreter()])

    def measure() -> int | None:
        try:
            return usage.measure(layout, sandbox, settings.bwrap, disk=True).disk_bytes
        except usage.UsageUnknown:
            return None

    return measure


def check_free_space(path: str, principal: Principal) -> None:
    """With a disk image the kernel holds the quota; a session is still refused when the
    tenant's filesystem is full (what the supervisor reports as the quota hit)."""
    from nixwarden.tenants.usage import human_bytes  # noqa: PLC0415

    size, free = disk.filesystem_bytes(path)
    if disk.is_full(path):
        what = (
            f"{human_bytes(size - free)} used of {human_bytes(size)}, its disk quota"
            if disk.disk_full(free, size)
            else "out of inodes: too many files for its disk quota"
        )
        raise TenantRefused(
            f"tenant store is full ({what}); free space with: nixwarden tenant gc {principal.name}"
        )


def enter_cgroups(settings: TenantSettings, principal: Principal, slot: int) -> None:
    """Into the session slot's cgroups (tenants.limits), or refuse when the limits cannot be
    enforced here, unless the policy accepts best effort."""
    from nixwarden.tenants import limits  # noqa: PLC0415 - only for principals with limits

    why = limits.unenforceable(settings, principal)
    if why is None:
        limits.enter(settings, principal, slot)
    elif principal.limits == "enforce":
        raise TenantSetupError(
            f"the limits of {principal.name} cannot be enforced on this host: {why} "
            '(limits = "best-effort" accepts that)'
        )


def apply_limits(principal: Principal) -> None:
    """Limits inherited by everything the session starts (NPROC counts per real uid)."""
    for limit, value in (
        (resource.RLIMIT_NPROC, principal.max_processes),
        (resource.RLIMIT_NOFILE, principal.max_open_files),
    ):
        _soft, hard = resource.getrlimit(limit)
        ceiling = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (ceiling, ceiling))
    if principal.nice:
        os.nice(principal.nice)
