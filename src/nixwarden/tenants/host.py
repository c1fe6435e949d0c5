"""What the host lends a tenant's sandbox, and the one function that builds that sandbox.

Sessions (the gate), `tenant gc` and the measuring probe all run in the sandbox that
`tenant_sandbox` builds: Nix's programs from the host, read-only, and where Nix (or the
interpreter the probe runs on) lives in the host store, as on NixOS, its closure bound
read-only at the same paths.
"""

from __future__ import annotations

import os

from nixwarden.errors import NixwardenError, Refused
from nixwarden.tenants import layout as tenant_layout

TYPE_CHECKING = False  # not typing's: this module is on the gate's (tenant) start-up path
if TYPE_CHECKING:
    from collections.abc import Iterable

    from nixwarden.sandbox.bwrap import Sandbox

STORE_PREFIX = "/nix/store/"
# Host directories every tenant sandbox shows read-only (sandbox.bwrap.host_runtime_mounts).
RUNTIME_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64")
SETPRIV = "/usr/bin/setpriv"


class TenantRefused(Refused):
    """The tenant's session cannot go ahead because of the tenant's own doing (its quota,
    its files); the message says why without naming a host path, and reaches the client."""


class TenantSetupError(Refused):
    """The host is not set up for this tenant (its directory, the tenants root, Nix's
    closure); the message says the exact fix, for the server's log and root's commands."""


def tenant_sandbox(
    layout: tenant_layout.TenantLayout,
    policy: tenant_layout.TenantPolicy,
    programs: Iterable[str],
) -> Sandbox:
    """The sandbox in which `programs` (resolved by `resolve_keeping_name`) run for this
    tenant: sessions, gc and the probe all get theirs from here."""
    host_paths: set[str] = set()
    for program in programs:
        if program.startswith(STORE_PREFIX):
            host_paths.update(host_closure(program))
    existing = [
        path
        for path in (*tenant_layout.CA_BUNDLES, *tenant_layout.RESOLVER_FILES)
        if os.path.exists(path)
    ]
    return tenant_layout.sandbox(
        layout, policy, host_nix_paths=sorted(host_paths), existing=existing
    )


def host_closure(program: str) -> tuple[str, ...]:
    """The closure of the host store path that holds `program`, to bind read-only.

    From the host's own database, else `nix-store -qR` beside `program`; never from
    anything in our environment (sshd may pass the client's variables on)."""
    from nixwarden.nix.closure import closure  # noqa: PLC0415 - only where Nix is in the store

    store_path = STORE_PREFIX + program[len(STORE_PREFIX) :].split("/", 1)[0]
    beside = os.path.join(os.path.dirname(program), "nix-store")
    # Beside Nix's own programs, that nix-store; beside the probe's interpreter, none.
    nix_store = beside if os.access(beside, os.X_OK) else None
    try:
        found = closure([store_path], nix_store=nix_store, environ={})
    except NixwardenError as error:
        raise TenantSetupError(f"cannot find the closure of {store_path}: {error}") from None
    return tuple(sorted(found.paths))


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
    raise TenantSetupError(f"too many symlinks resolving {path}")


def as_user(uid: int, gid: int, argv: list[str]) -> list[str]:
    """`argv` run as the tenant's unix user, never as root: root never reads a tenant's files."""
    if uid == 0:
        raise TenantSetupError("a tenant's files are never read as root, and this tenant is root's")
    return [
        SETPRIV,
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
        *argv,
    ]


def outside_runtime(path: str) -> bool:
    return not any(path == top or path.startswith(top + "/") for top in RUNTIME_DIRS)


def bound_store_paths(sandbox: Sandbox) -> list[str]:
    """The host store paths `sandbox` binds into the tenant's /nix/store."""
    return sorted(
        mount.dest
        for mount in sandbox.mounts
        if mount.dest.startswith(STORE_PREFIX) and mount.source == mount.dest
    )
