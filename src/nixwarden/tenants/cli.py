"""`nixwarden tenant create|list|gc|remove|limits`: looking after tenant stores, as root.

Root never reads a tenant's files as root: what a tenant's directory holds is measured
by the probe (tenants.usage), and `gc` runs, in the tenant's own sandbox as its unix
user. Root opens tenant paths only by descriptor, with O_NOFOLLOW, to check owners
and to remove a tenant.
"""

from __future__ import annotations

import argparse
import os
import pwd
import stat
import time
from concurrent.futures import ThreadPoolExecutor

from nixwarden import config as config_module
from nixwarden import sessions
from nixwarden.cliutil import Parser, parser
from nixwarden.display import escape
from nixwarden.errors import CommandFailed, InvalidInput, Refused, UsageError
from nixwarden.nix import commands
from nixwarden.tenants import directory, disk, host, limits, tree, usage
from nixwarden.tenants import layout as tenant_layout
from nixwarden.tenants import session as tenant_session

GC_SECONDS = 3600
LIST_PROBE_SECONDS = 30
# The sandbox of a directory whose principal is gone: no network, nothing substituted.
CLOSED_POLICY = tenant_layout.TenantPolicy(
    network=False, substituters=(), trusted_public_keys=(), session_timeout=0
)


def main(command: str, argv: list[str]) -> int:
    cli = parser(
        command,
        'Tenant stores: each principal with store = "tenant" has its own /nix under\n'
        "[tenants] root, created by root with `create` and owned by the principal's unix user.",
    )
    cli.add_argument("--config", help="configuration file")
    # --config is welcome after the action too (`nixwarden tenant list --config F`).
    config_option = Parser(add_help=False)
    config_option.add_argument("--config", default=argparse.SUPPRESS, help="configuration file")
    actions = cli.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        parents=[config_option],
        help="create a tenant's directory, owned by the unix user its keys log in as",
    )
    create.add_argument("name")
    create.add_argument("--user", required=True, help="the unix user the principal's keys use")
    listing = actions.add_parser(
        "list",
        parents=[config_option],
        help="owner, path count, disk usage, sessions and last use of each tenant store",
    )
    listing.add_argument(
        "--time-limit",
        type=_seconds,
        default=LIST_PROBE_SECONDS,
        metavar="SECONDS",
        help=f"to measure one tenant (default {LIST_PROBE_SECONDS})",
    )
    gc = actions.add_parser(
        "gc",
        parents=[config_option],
        help="collect garbage in a tenant's store (inside its sandbox, as its unix user)",
    )
    gc.add_argument("name")
    gc.add_argument(
        "--time-limit",
        type=_seconds,
        default=GC_SECONDS,
        metavar="SECONDS",
        help=f"for the collection (default {GC_SECONDS})",
    )
    remove = actions.add_parser(
        "remove", parents=[config_option], help="delete a tenant's store (refused while in use)"
    )
    remove.add_argument("name")
    limits_action = actions.add_parser(
        "limits",
        parents=[config_option],
        help="apply: create each session slot's cgroups with the policy's limits (at boot)",
    )
    limits_action.add_argument("apply", choices=["apply"])
    limits_action.add_argument("names", nargs="*", metavar="NAME", help="default: every tenant")
    args = cli.parse_args(argv)
    config = config_module.load(args.config)
    match args.action:
        case "create":
            return create_tenant(config, args.name, args.user)
        case "list":
            return list_tenants(config, args.time_limit)
        case "gc":
            return collect_garbage(config, args.name, args.time_limit)
        case "remove":
            return remove_tenant(config, args.name)
        case "limits":
            return apply_limits(config, args.names)
    raise UsageError(f"unknown action {args.action}")


def _seconds(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= 86400:
        raise argparse.ArgumentTypeError(f"expected whole seconds from 1 to 86400, got {text!r}")
    return int(text)


# --- create ---------------------------------------------------------------------------------


def create_tenant(config: config_module.Config, name: str, user: str) -> int:
    entry = _unix_user(user)
    path = os.path.join(config.tenants.root, name)
    if ensure_tenant(config, name, user):
        print(f"created {path} for {entry.pw_name}")
    else:
        print(f"{path} exists and belongs to {entry.pw_name}")
    return 0


def ensure_tenant(config: config_module.Config, name: str, user: str) -> bool:
    """<root>/<name>, owned by `user`, with its subdirectories and generated /etc, and its
    session slots' cgroups when the principal has limits (refused, before anything is
    made, when they cannot be enforced here); False when it already was.

    Root fills the directory while it is still root's and private (0700) and gives it to
    `user` last, so a directory of root's is one whose creation was cut short (nobody
    else may create entries in the root): it is finished, not refused."""
    principal = _tenant_principal(config, name)
    entry = _unix_user(user)
    why = limits.unenforceable(config.tenants, principal)
    if why is not None and principal.limits == "enforce":
        raise Refused(
            f"the limits of {name} cannot be enforced on this host: {why} "
            '(limits = "best-effort" accepts that)'
        )
    return _create_directory(config, principal, entry)


def _create_directory(
    config: config_module.Config, principal: config_module.Principal, entry: pwd.struct_passwd
) -> bool:
    name = principal.name
    root = config.tenants.root
    root_fd = _open_or_make_root(root)
    try:
        try:
            os.mkdir(name, directory.TENANT_MODE, dir_fd=root_fd)
        except FileExistsError:
            info = directory.owner_of(root_fd, name)
            if not (stat.S_ISDIR(info.st_mode) and info.st_uid == 0):
                _already_there(root_fd, root, name, entry)
                return False
        # The image at the directory, while both are root's: the directory under the
        # mount point stays root's, so the gate refuses whenever the image is not there.
        if _mount_image(config, principal) and directory.owner_of(root_fd, name).st_uid != 0:
            _already_there(root_fd, root, name, entry)  # the image held a tenant already
            return False
        base = directory.open_tenant(root_fd, name)
    finally:
        os.close(root_fd)
    _fill(config, principal, base, entry.pw_uid, entry.pw_gid)
    return True


def _mount_image(config: config_module.Config, principal: config_module.Principal) -> bool:
    """The principal's disk image mounted at its directory, when it has one; True when
    this mounted it."""
    if not disk.uses_image(config.tenants, principal):
        return False
    path = os.path.join(config.tenants.root, principal.name)
    try:
        mounted = disk.ensure_mounted(config.tenants, principal, path)
    except (host.TenantSetupError, CommandFailed) as error:
        raise Refused(f"disk image of {principal.name}: {error}") from None
    if mounted:
        size, _free = disk.filesystem_bytes(path)
        quota = principal.disk_quota or 0
        print(
            f"disk of {principal.name}: {usage.human_bytes(quota)} ext4 image "
            f"{disk.image_path(config.tenants, principal.name)} "
            f"({usage.human_bytes(size)} usable) mounted at {path}"
        )
    return mounted


def _fill(
    config: config_module.Config,
    principal: config_module.Principal,
    base: int,
    uid: int,
    gid: int,
) -> None:
    """Root's part of a new tenant directory (`base`, root's and private until the end)."""
    try:
        # Still root's and private while it is filled: nobody can interfere.
        tenant_session.ensure_subdirectories(base)
        tenant_session.write_etc(base, tenant_layout.etc_files(tenant_session.policy_of(principal)))
        for relative in (*tenant_session.SUBDIRECTORIES, "etc/nix", *_etc_names(principal)):
            os.chown(relative, uid, gid, dir_fd=base, follow_symlinks=False)
        # Before the directory is the user's: that is what says the tenant is complete.
        _apply_limits_of(config, principal, uid, gid)
        os.fchown(base, uid, gid)
    finally:
        os.close(base)


def _etc_names(principal: config_module.Principal) -> list[str]:
    files = tenant_layout.etc_files(tenant_session.policy_of(principal))
    return [f"etc/{relative}" for relative in files]


def _tenant_principal(config: config_module.Config, name: str) -> config_module.Principal:
    directory.check_name(name)
    principal = config.principal(name)
    if principal.store != "tenant":
        raise InvalidInput(f'principal {name} has store = "{principal.store}", not "tenant"')
    return principal


def _unix_user(user: str) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise InvalidInput(f"no unix user {escape(user)}") from None
    if entry.pw_uid == 0:
        raise InvalidInput("a tenant's unix user must not be root")
    return entry


def _open_or_make_root(root: str) -> int:
    try:
        return directory.open_root(root)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(root), mode=0o755, exist_ok=True)
    try:
        os.mkdir(root, directory.ROOT_MODE)
    except FileExistsError:
        pass
    else:
        os.chmod(root, directory.ROOT_MODE)  # whatever the umask
        print(f"created {root} (mode {directory.ROOT_MODE:04o})")
    return directory.open_root(root)


def _already_there(root_fd: int, root: str, name: str, entry: pwd.struct_passwd) -> None:
    """Nothing to do when it is the user's directory; refused otherwise."""
    path = os.path.join(root, name)
    info = directory.owner_of(root_fd, name)
    if stat.S_ISDIR(info.st_mode) and info.st_uid == entry.pw_uid:
        return
    what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a directory"
    raise Refused(
        f"{path} exists, {what}, owned by uid {info.st_uid}, not by {entry.pw_name}: "
        f"look at it, remove it (nixwarden tenant remove {name}) and create it again"
    )


# --- limits -------------------------------------------------------------------------------


def apply_limits(config: config_module.Config, names: list[str]) -> int:
    """As root, at boot and after a policy change: every slot cgroup of each named tenant
    (default: every tenant principal with limits), for the unix user owning its directory."""
    chosen = names or [
        name
        for name, principal in config.principals.items()
        if principal.store == "tenant"
        and (limits.has_kernel_limits(principal) or disk.uses_image(config.tenants, principal))
    ]
    for name in chosen:
        principal = _tenant_principal(config, name)
        root_fd, base, before = _opened(config, name)
        os.close(base)
        os.close(root_fd)
        if _mount_image(config, principal):
            root_fd, base, info = _opened(config, name)
            os.close(root_fd)
            if info.st_uid == 0:
                # A new image over a tenant that had none: a fresh store for its user.
                if before.st_uid == 0:
                    os.close(base)
                    raise Refused(
                        f"tenant {name}: its directory is root's, so its user is not known; "
                        f"as root: nixwarden tenant create {name} --user USER"
                    )
                _fill(config, principal, base, before.st_uid, before.st_gid)
                continue
            os.close(base)
            before = info
        _apply_limits_of(config, principal, before.st_uid, before.st_gid)
    return 0


def _apply_limits_of(
    config: config_module.Config, principal: config_module.Principal, uid: int, gid: int
) -> None:
    if not limits.has_kernel_limits(principal):
        return
    try:
        made = limits.apply(config.tenants, principal, uid, gid)
    except host.TenantSetupError as error:
        raise Refused(str(error)) from None
    except OSError as error:
        raise Refused(f"cgroups of {principal.name}: {error}") from None
    if made:
        print(
            f"limits of {principal.name}: {len(made)} slot cgroups "
            f"under {config.tenants.cgroup_root}"
        )
    else:
        print(f"limits of {principal.name}: not enforced on this host (best-effort)")


# --- list -----------------------------------------------------------------------------------


def list_tenants(config: config_module.Config, seconds: int = LIST_PROBE_SECONDS) -> int:
    root = config.tenants.root
    try:
        root_fd = directory.open_root(root)
    except FileNotFoundError:
        names: list[str] = []
        root_fd = -1
    else:
        names = sorted(directory.names(root_fd))
    try:
        found = [(name, os.stat(name, dir_fd=root_fd, follow_symlinks=False)) for name in names]
        tenants = [(name, info) for name, info in found if stat.S_ISDIR(info.st_mode)]
        last_uses = {name: _last_use(root_fd, name) for name, _info in tenants}
    finally:
        if root_fd >= 0:
            os.close(root_fd)
    workers = max(1, min(len(tenants), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(
            pool.map(
                lambda item: _row(config, item[0], item[1], last_uses[item[0]], seconds),
                tenants,
            )
        )
    header = ("TENANT", "OWNER", "PATHS", "DISK", "QUOTA", "SESSIONS", "LAST USE", "")
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _row(
    config: config_module.Config, name: str, info: os.stat_result, last_use: str, seconds: int
) -> tuple[str, ...]:
    principal = config.principals.get(name)
    tenant = principal is not None and principal.store == "tenant"
    notes = [] if tenant else ["(no tenant principal)"]
    paths = disk = "?"
    try:
        measured = _measure(config, name, info, paths=True, seconds=seconds)
    except Refused as error:
        notes.append(f"(not measured: {error})")
    else:
        paths = str(measured.paths)
        disk = usage.human_bytes(measured.disk_bytes or 0)
    quota = principal.disk_quota if principal is not None else None
    owner = _user_name(info.st_uid)
    busy = 0
    if principal is not None and owner is not None:
        try:
            busy = sessions.in_use(config.gate.state_dir, owner, name, principal.max_sessions)
        except Refused as error:
            notes.append(f"({error})")
    return (
        escape(name),
        owner or str(info.st_uid),
        paths,
        disk,
        usage.human_bytes(quota) if quota is not None else "-",
        str(busy),
        last_use,
        " ".join(notes),
    )


def _last_use(root_fd: int, name: str) -> str:
    try:
        base = directory.open_tenant(root_fd, name)
    except OSError:
        return "?"
    try:
        info = os.stat("last-use", dir_fd=base, follow_symlinks=False)  # never opened
    except FileNotFoundError:
        return "never"
    finally:
        os.close(base)
    if not stat.S_ISREG(info.st_mode):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(info.st_mtime))


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


# --- measuring and gc, in the tenant's sandbox, as its unix user ----------------------------


def _run_as(info: os.stat_result) -> tuple[int, int]:
    """The tenant's unix user and primary group: whoever owns its directory, never root."""
    if info.st_uid == 0:
        raise Refused("the directory belongs to root; a tenant's files are never read as root")
    try:
        gid = pwd.getpwuid(info.st_uid).pw_gid
    except KeyError:
        raise Refused(f"its owner (uid {info.st_uid}) is not a unix user any more") from None
    return info.st_uid, gid


def _policy(config: config_module.Config, name: str) -> tenant_layout.TenantPolicy:
    principal = config.principals.get(name)
    if principal is None or principal.store != "tenant":
        return CLOSED_POLICY
    return tenant_session.policy_of(principal)


def _measure(
    config: config_module.Config,
    name: str,
    info: os.stat_result,
    *,
    paths: bool,
    seconds: int,
) -> usage.TenantUsage:
    layout = tenant_layout.TenantLayout(config.tenants.root, name)
    sandbox = host.tenant_sandbox(layout, _policy(config, name), [usage.interpreter()])
    return usage.measure(
        layout,
        sandbox,
        config.tenants.bwrap,
        paths=paths,
        run_as=_run_as(info),
        seconds=seconds,
    )


def _opened(config: config_module.Config, name: str) -> tuple[int, int, os.stat_result]:
    """(root fd, tenant fd, its stat) of an existing tenant directory, never via a symlink."""
    root = config.tenants.root
    try:
        root_fd = directory.open_root(root)
    except FileNotFoundError:
        raise InvalidInput(f"no tenant store {os.path.join(root, name)}") from None
    try:
        base = directory.open_tenant(root_fd, name)
    except FileNotFoundError:
        os.close(root_fd)
        raise InvalidInput(f"no tenant store {os.path.join(root, name)}") from None
    except OSError as error:
        os.close(root_fd)
        raise InvalidInput(f"{os.path.join(root, name)}: {error.strerror}") from None
    return root_fd, base, os.fstat(base)


def collect_garbage(config: config_module.Config, name: str, seconds: int = GC_SECONDS) -> int:
    """`nix-store --gc` in the tenant's sandbox (the session's, from the same function), as
    the unix user who owns the store; then what remains, measured the same way."""
    principal = _tenant_principal(config, name)
    root_fd, base, info = _opened(config, name)
    os.close(base)
    os.close(root_fd)
    uid, gid = _run_as(info)
    layout = tenant_layout.TenantLayout(config.tenants.root, name)
    program = host.resolve_keeping_name(config.gate.nix_store)
    python = usage.interpreter()
    sandbox = host.tenant_sandbox(layout, tenant_session.policy_of(principal), [program, python])
    sandbox = usage.probe_sandbox(layout, sandbox, python)
    # Host store paths bound into the sandbox have mount points in the tenant's store:
    # temporary roots while the collector runs, so that it leaves them alone.
    bound = host.bound_store_paths(sandbox)

    def wrap(argv: list[str]) -> list[str]:
        inside = usage.keeping(bound, argv) if bound else argv
        return host.as_user(uid, gid, sandbox.argv(config.tenants.bwrap, inside))

    summary = commands.collect_garbage(
        env={"PATH": "/usr/bin:/bin"}, nix_store=program, wrap=wrap, timeout=seconds
    )
    print(f"{name}: {summary}")
    try:
        remaining = _measure(config, name, info, paths=True, seconds=LIST_PROBE_SECONDS)
    except Refused as error:
        print(f"{name}: what remains was not measured: {error}")
    else:
        print(
            f"{name}: {remaining.paths} paths remain, "
            f"{usage.human_bytes(remaining.disk_bytes or 0)} on disk"
        )
    return 0


# --- remove ---------------------------------------------------------------------------------


def remove_tenant(config: config_module.Config, name: str) -> int:
    remove_tenant_directory(config, name)
    print(f"removed {os.path.join(config.tenants.root, name)}")
    return 0


def remove_tenant_directory(config: config_module.Config, name: str) -> None:
    """Delete the tenant's directory through its descriptor, holding every session slot of
    the principal (and its lock), so that no session runs or starts meanwhile."""
    directory.check_name(name)
    root_fd, base, info = _opened(config, name)
    try:
        principal = config.principals.get(name)
        owner = _user_name(info.st_uid)
        held = (
            sessions.hold_all(
                config.gate.state_dir, owner, name, principal.max_sessions if principal else 0
            )
            if owner is not None
            else ()
        )
        try:
            tree.remove_contents(base)
            now = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
                raise Refused(f"tenant {name}: its directory was replaced while it was removed")
            path = os.path.join(config.tenants.root, name)
            if disk.is_own_filesystem(path, config.tenants.root) or config.tenants.disk_images:
                os.close(base)  # an open descriptor would keep the filesystem busy
                base = -1
                _release_image(config, name, path)
                base = directory.open_tenant(root_fd, name)  # what was under the mount
                tree.remove_contents(base)
            os.rmdir(name, dir_fd=root_fd)
            limits.remove(config.tenants, name)
        finally:
            sessions.release(held)
    except sessions.SessionsBusy:
        raise Refused(
            f"tenant {name} has sessions running; try again when they have ended"
        ) from None
    finally:
        if base >= 0:
            os.close(base)
        os.close(root_fd)


def _release_image(config: config_module.Config, name: str, path: str) -> None:
    try:
        disk.release(config.tenants, name, path)
    except CommandFailed as error:
        raise Refused(f"disk image of {name}: {error}") from None
