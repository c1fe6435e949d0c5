"""`nixwarden tenant list|gc|remove`: looking after tenant stores, as root."""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import stat
import time

from nixwarden import config as config_module
from nixwarden import process
from nixwarden.cliutil import Parser, parser
from nixwarden.errors import InvalidInput, Refused, UsageError
from nixwarden.gate import sessions
from nixwarden.tenants import layout as tenant_layout
from nixwarden.tenants.session import policy_of, resolve_keeping_name
from nixwarden.tenants.usage import human_bytes, store_usage

SETPRIV = "/usr/bin/setpriv"


def main(command: str, argv: list[str]) -> int:
    cli = parser(
        command,
        'Tenant stores: each principal with store = "tenant" has its own /nix under\n'
        "[tenants] root, created on its first session.",
    )
    cli.add_argument("--config", help="configuration file")
    # --config is welcome after the action too (`nixwarden tenant list --config F`).
    config_option = Parser(add_help=False)
    config_option.add_argument("--config", default=argparse.SUPPRESS, help="configuration file")
    actions = cli.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "list",
        parents=[config_option],
        help="size, path count, owner and last use of each tenant store",
    )
    gc = actions.add_parser(
        "gc",
        parents=[config_option],
        help="collect garbage in a tenant's store (inside its sandbox)",
    )
    gc.add_argument("name")
    remove = actions.add_parser(
        "remove", parents=[config_option], help="delete a tenant's store (refused while in use)"
    )
    remove.add_argument("name")
    args = cli.parse_args(argv)
    config = config_module.load(args.config)
    match args.action:
        case "list":
            return list_tenants(config)
        case "gc":
            return collect_garbage(config, args.name)
        case "remove":
            return remove_tenant(config, args.name)
    raise UsageError(f"unknown action {args.action}")


def list_tenants(config: config_module.Config) -> int:
    root = config.tenants.root
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    rows = [("TENANT", "OWNER", "PATHS", "SIZE", "SESSIONS", "LAST USE", "")]
    for name in names:
        layout = tenant_layout.TenantLayout(root, name)
        if not os.path.isdir(layout.base):
            continue
        principal = config.principals.get(name)
        usage = store_usage(layout.database)
        try:
            last = time.strftime(
                "%Y-%m-%d %H:%M", time.localtime(os.stat(layout.last_use).st_mtime)
            )
        except FileNotFoundError:
            last = "never"
        busy = (
            sessions.in_use(config.gate.state_dir, name, principal.max_sessions) if principal else 0
        )
        note = "" if principal and principal.store == "tenant" else "(no tenant principal)"
        rows.append(
            (
                name,
                _owner(layout.base),
                str(usage.paths),
                human_bytes(usage.nar_bytes),
                str(busy),
                last,
                note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _tenant(
    config: config_module.Config, name: str
) -> tuple[tenant_layout.TenantLayout, os.stat_result]:
    layout = tenant_layout.TenantLayout(config.tenants.root, name)
    try:
        info = os.lstat(layout.base)
    except FileNotFoundError:
        raise InvalidInput(f"no tenant store {layout.base}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidInput(f"{layout.base} is not a directory")
    return layout, info


def collect_garbage(config: config_module.Config, name: str) -> int:
    """`nix-store --gc` inside the tenant's sandbox, as the unix user who owns the store."""
    principal = config.principal(name)
    if principal.store != "tenant":
        raise InvalidInput(f'principal {name} has store = "{principal.store}", not "tenant"')
    layout, info = _tenant(config, name)
    policy = policy_of(principal)
    program = resolve_keeping_name(config.gate.nix_store)
    sandbox = tenant_layout.sandbox(layout, policy, existing=())
    argv = [
        SETPRIV,
        f"--reuid={info.st_uid}",
        f"--regid={info.st_gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--reset-env",
        *sandbox.argv(config.tenants.bwrap, [program, "--gc"]),
    ]
    result = process.run(argv, env={"PATH": "/usr/bin:/bin"}, check=True, timeout=3600)
    remaining = store_usage(layout.database)
    summary = result.stdout.decode().strip() or result.stderr.decode().strip().splitlines()[-1]
    print(f"{name}: {summary}")
    print(f"{name}: {remaining.paths} paths, {human_bytes(remaining.nar_bytes)} remain")
    return 0


def remove_tenant(config: config_module.Config, name: str) -> int:
    layout, _info = _tenant(config, name)
    principal = config.principals.get(name)
    limit = principal.max_sessions if principal else 1024
    if sessions.in_use(config.gate.state_dir, name, limit):
        raise Refused(f"tenant {name} has sessions running; try again when they have ended")
    # Store paths are read-only by design; make them writable so they can be deleted.
    for directory, subdirectories, _files in os.walk(layout.base, followlinks=False):
        for entry in subdirectories:
            path = os.path.join(directory, entry)
            if not os.path.islink(path):
                os.chmod(path, 0o700)
    shutil.rmtree(layout.base)
    print(f"removed {layout.base}")
    return 0


def _owner(path: str) -> str:
    uid = os.stat(path).st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
