"""Preparing a tenant session, in the gate, as the tenant's unix user.

Creates the tenant's directories on first use (private to that user), writes the
generated /etc, refuses a session over the disk quota, applies the process limits
and returns the argv that runs Nix inside the tenant's sandbox. Every problem is a
refusal: the gate fails closed.
"""

from __future__ import annotations

import os
import resource
import stat

from nixwarden import process
from nixwarden.errors import NixwardenError, Refused
from nixwarden.tenants import layout as tenant_layout

TYPE_CHECKING = False  # not typing's: this module is on the gate's (tenant) start-up path
if TYPE_CHECKING:
    from collections.abc import Sequence

    from nixwarden.config import Principal, TenantSettings

STORE_PREFIX = "/nix/store/"


class TenantRefused(Refused):
    """The tenant session cannot start; the message says why and what to do."""


def policy_of(principal: Principal) -> tenant_layout.TenantPolicy:
    return tenant_layout.TenantPolicy(
        network=principal.network,
        substituters=tuple(principal.substituters),
        trusted_public_keys=tuple(principal.trusted_public_keys),
        session_timeout=principal.session_timeout,
    )


def prepare(
    settings: TenantSettings, principal: Principal, nix_argv: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment to exec for this tenant session."""
    layout = tenant_layout.TenantLayout(settings.root, principal.name)
    policy = policy_of(principal)
    ensure_layout(layout)
    write_etc(layout, tenant_layout.etc_files(policy))
    check_quota(layout, principal)
    os.utime(_touch(layout.last_use))
    program = resolve_keeping_name(nix_argv[0])
    host_nix_paths = host_nix_closure(program, settings) if program.startswith(STORE_PREFIX) else ()
    existing = [
        path
        for path in (*tenant_layout.CA_BUNDLES, *tenant_layout.RESOLVER_FILES)
        if os.path.exists(path)
    ]
    sandbox = tenant_layout.sandbox(
        layout, policy, host_nix_paths=host_nix_paths, existing=existing
    )
    apply_limits(principal)
    argv = tenant_layout.session_argv(
        settings.bwrap, sandbox, [program, *nix_argv[1:]], policy.session_timeout
    )
    return argv, {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def ensure_layout(layout: tenant_layout.TenantLayout) -> None:
    if not os.path.isdir(layout.root):
        raise TenantRefused(
            f"tenants root {layout.root} does not exist "
            f"(create it as root: install -d -m 1733 {layout.root})"
        )
    try:
        os.mkdir(layout.base, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise TenantRefused(
            f"cannot create tenant directory {layout.base}: {error.strerror}"
        ) from None
    info = os.lstat(layout.base)
    uid = os.geteuid()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        raise TenantRefused(
            f"tenant directory {layout.base} is not a directory owned by this user (uid {uid}); "
            "a tenant's store belongs to the unix user its key logs in as"
        )
    if info.st_mode & 0o077:
        os.chmod(layout.base, 0o700)
    for directory in (layout.nix, layout.etc, os.path.join(layout.etc, "nix"), layout.tmp):
        os.makedirs(directory, mode=0o700, exist_ok=True)


def write_etc(layout: tenant_layout.TenantLayout, files: dict[str, str]) -> None:
    """Rewrite a generated file only when it changed, atomically, mode set before the rename."""
    for relative, content in files.items():
        target = os.path.join(layout.etc, relative)
        data = content.encode()
        try:
            with open(target, "rb") as handle:
                if handle.read() == data:
                    continue
        except FileNotFoundError:
            pass
        from nixwarden.files import write_atomic  # noqa: PLC0415 - only when /etc changes

        write_atomic(target, data, mode=0o644, replace=True)


def resolve_keeping_name(path: str) -> str:
    """Follow symlinks while the name stays the same: Nix dispatches on argv[0]
    (`nix-daemon` is often a link to `nix`), and on NixOS the last such link is the
    store path whose closure the tenant must see."""
    name = os.path.basename(path)
    current = os.path.join(os.path.realpath(os.path.dirname(path)), name)
    for _ in range(40):
        if not os.path.islink(current):
            return current
        target = os.path.join(os.path.dirname(current), os.readlink(current))
        target = os.path.join(os.path.realpath(os.path.dirname(target)), os.path.basename(target))
        if os.path.basename(target) != name:
            return current
        current = target
    raise TenantRefused(f"too many symlinks resolving {path}")


def check_quota(layout: tenant_layout.TenantLayout, principal: Principal) -> None:
    if principal.disk_quota is None:
        return
    # Only with a quota: sqlite3 and the store module stay off the other sessions' path.
    from nixwarden.nix.db import DatabaseUnreadable  # noqa: PLC0415
    from nixwarden.tenants.usage import human_bytes, store_usage  # noqa: PLC0415

    try:
        usage = store_usage(layout.database)
    except DatabaseUnreadable as error:  # fail closed
        raise TenantRefused(f"cannot read the tenant store's database: {error}") from None
    if usage.nar_bytes >= principal.disk_quota:
        raise TenantRefused(
            f"tenant store is over its disk quota ({human_bytes(usage.nar_bytes)} used of "
            f"{human_bytes(principal.disk_quota)}); "
            f"free space with: nixwarden tenant gc {principal.name}"
        )


def host_nix_closure(program: str, settings: TenantSettings) -> tuple[str, ...]:
    """Where Nix itself lives in the host store (NixOS): its closure, to bind read-only."""
    parts = program[len(STORE_PREFIX) :].split("/", 1)
    store_path = STORE_PREFIX + parts[0]
    nix_store = os.path.join(os.path.dirname(program), "nix-store")
    try:
        result = process.run(
            [nix_store, "--query", "--requisites", store_path],
            env={"PATH": "/usr/bin:/bin"},
            check=True,
            timeout=30,
        )
    except NixwardenError as error:
        raise TenantRefused(f"cannot find the closure of {store_path}: {error}") from None
    paths = tuple(line for line in result.stdout.decode().splitlines() if line)
    if not all(path.startswith(STORE_PREFIX) and "/" not in path[11:] for path in paths):
        raise TenantRefused(f"unexpected closure of {store_path}")
    return paths


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


def _touch(path: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    return path
