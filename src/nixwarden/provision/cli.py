"""`nixwarden builder init|enroll|revoke|status` and `nixwarden client add-builder|remove-builder|
check-builder`."""

from __future__ import annotations

import argparse
import os
import sys

from nixwarden.cliutil import parser
from nixwarden.errors import UsageError
from nixwarden.provision import builder_plan, client_plan, commands
from nixwarden.provision.layout import BuilderLayout, ClientLayout, safe_path

BUILDER = """\
Set up this machine as a gated builder (as root), and enrol and revoke its principals.
Each action changes only what is not yet as it should be, and says "nothing to do"
when run again; killed at any point and run again, it finishes. See docs/provision.md.

  init     the config, the audit log, session state (tmpfiles.d), the sshd drop-in
  enroll   a principal: its unix user and groups, its policy, its tenant store, its
           session state, the compiled policy, and last its key line
  revoke   the key lines first, then the rest (--remove-user: the user and its store)
  status   principals, users, keys, tenant stores, sessions, and what init set up

Every path has a default under / (or under --root DIR, for tests and trials: the files
there name the paths under DIR, so a builder runs from there as it is).
"""

CLIENT = """\
Point this machine's Nix at a gated builder: a known_hosts entry pinning its host key
under HostKeyAlias NAME, an ssh_config Host NAME block, and a line in Nix's machines
file. As root: /etc/ssh/ssh_config.d/nixwarden.conf, /etc/ssh/ssh_known_hosts and
/etc/nix/machines; as a user: ~/.ssh/config, ~/.ssh/known_hosts, ~/.config/nix/machines.
"""


def _builder_layout_options(cli: argparse.ArgumentParser) -> None:
    group = cli.add_argument_group("paths (defaults under / or --root)")
    group.add_argument("--root", metavar="DIR", help="put every default path under DIR")
    group.add_argument("--config", metavar="FILE", help="default /etc/nixwarden/config.toml")
    group.add_argument(
        "--keys-dir", metavar="DIR", help="key lines, a file per unix user (/etc/nixwarden/…)"
    )
    group.add_argument("--sshd-config", metavar="FILE", help="sshd's main config, for sshd -t/-T")
    group.add_argument(
        "--sshd-dropin", metavar="FILE", help="/etc/ssh/sshd_config.d/nixwarden.conf"
    )
    group.add_argument("--sshd-pid-file", metavar="FILE", help="to reload sshd (/run/sshd.pid)")
    group.add_argument("--tmpfiles", metavar="FILE", help="/etc/tmpfiles.d/nixwarden.conf")
    group.add_argument("--nix-conf", metavar="FILE", help="the daemon's nix.conf (/etc/nix/…)")
    group.add_argument("--gate-group", metavar="NAME", help="sshd's Match Group (nixwarden-gate)")
    group.add_argument("--log-group", metavar="NAME", help="appends to the audit log")
    group.add_argument("--python", metavar="FILE", help="the gate's interpreter (this one)")
    group.add_argument("--launcher", metavar="FILE", help="the gate's launcher (nixwarden-gate)")
    group.add_argument("--audit-log", metavar="FILE", help="for a new config only")
    group.add_argument("--state-dir", metavar="DIR", help="for a new config only")
    group.add_argument("--tenants-root", metavar="DIR", help="for a new config only")


def _builder_layout(args: argparse.Namespace) -> BuilderLayout:
    names = (
        "config", "keys_dir", "sshd_config", "sshd_dropin", "sshd_pid_file", "tmpfiles",
        "nix_conf", "gate_group", "log_group", "python", "launcher", "audit_log",
        "state_dir", "tenants_root",
    )  # fmt: skip
    return BuilderLayout.from_options(args.root, **{name: getattr(args, name) for name in names})


def _words(text: str) -> tuple[str, ...]:
    return tuple(word for word in text.replace(",", " ").split() if word)


def builder_main(argv: list[str]) -> int:
    cli = parser("builder", BUILDER)
    actions = cli.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="set up this machine as a gated builder")
    enroll = actions.add_parser("enroll", help="enrol a principal and its key")
    revoke = actions.add_parser("revoke", help="take a principal's keys away, then the rest")
    status = actions.add_parser("status", help="what is set up, and who may log in")
    for action in (init, enroll, revoke, status):
        _builder_layout_options(action)
    for action in (init, enroll, revoke):
        action.add_argument("--dry-run", action="store_true", help="print the plan only")
    enroll.add_argument("--principal", required=True, help="its name in the config")
    enroll.add_argument("--key", required=True, metavar="PUBFILE", help="its OpenSSH public key")
    enroll.add_argument("--store", choices=("tenant", "host"), help="default: tenant")
    enroll.add_argument("--protocols", help="ssh-ng (default), ssh, or both: ssh-ng,ssh")
    enroll.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="allow nix-store --serve --write (--no-write takes it away)",
    )
    enroll.add_argument("--user", help="the unix user (default: the principal's name)")
    enroll.add_argument("--role", choices=builder_plan.ROLES, help="build (default) or deploy")
    enroll.add_argument("--profiles", help="deploy: the profiles it may set (a,b)")
    revoke.add_argument("--principal", required=True)
    revoke.add_argument("--remove-user", action="store_true", help="and its unix user and store")
    revoke.add_argument("--user", help="the unix user, when nothing records it any more")
    status.add_argument("--json", action="store_true", help="machine-readable")
    args = cli.parse_args(argv)
    layout = _builder_layout(args)
    out = sys.stdout
    match args.action:
        case "init":
            return commands.init(layout, out=out, dry_run=args.dry_run)
        case "enroll":
            if args.profiles is not None and args.role != "deploy":
                raise UsageError("nixwarden builder enroll: --profiles goes with --role deploy")
            text = commands.read_key_text(args.key)
            request = builder_plan.Enrollment(
                principal=_principal_name(args.principal),
                key=commands.parse_key(text, args.key),
                store=args.store,
                protocols=_protocols(args.protocols),
                write=args.write,
                user=args.user,
                role=args.role,
                profiles=_words(args.profiles) if args.profiles is not None else None,
            )
            return commands.enroll(layout, request, out=out, dry_run=args.dry_run)
        case "revoke":
            revocation = builder_plan.Revocation(
                _principal_name(args.principal), args.remove_user, args.user
            )
            return commands.revoke(layout, revocation, out=out, dry_run=args.dry_run)
        case "status":
            return commands.status(layout, out=out, as_json=args.json)
    raise UsageError(f"unknown action {args.action}")


def _principal_name(name: str) -> str:
    from nixwarden.config import PRINCIPAL_NAME  # noqa: PLC0415

    if not PRINCIPAL_NAME.fullmatch(name):
        raise UsageError(
            f"--principal {name!r}: 1-32 of a-z, 0-9, '_' and '-', starting with a letter or _"
        )
    return name


def _protocols(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    words = _words(text)
    if not words or any(word not in ("ssh-ng", "ssh") for word in words):
        raise UsageError(f"--protocols {text!r}: ssh-ng, ssh, or ssh-ng,ssh")
    return tuple(dict.fromkeys(words))


# --- client ----------------------------------------------------------------------------------


def _client_layout_options(cli: argparse.ArgumentParser) -> None:
    group = cli.add_argument_group("files (default: the system's as root, else your own)")
    group.add_argument("--root", metavar="DIR", help="the system's files under DIR")
    group.add_argument("--ssh-config", metavar="FILE")
    group.add_argument("--known-hosts", metavar="FILE")
    group.add_argument("--machines", metavar="FILE")


def _client_layout(args: argparse.Namespace) -> ClientLayout:
    system = os.geteuid() == 0
    return ClientLayout.from_options(
        root=args.root,
        ssh_config=args.ssh_config,
        known_hosts=args.known_hosts,
        machines=args.machines,
        system=system,
        home=os.path.expanduser("~"),
    )


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 1 << 20:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1, got {text!r}")
    return int(text)


def client_main(argv: list[str]) -> int:
    cli = parser("client", CLIENT)
    actions = cli.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add-builder", help="pin a builder's host key and use it")
    remove = actions.add_parser("remove-builder", help="stop using a builder")
    check = actions.add_parser("check-builder", help="ping its store through the gate")
    for action in (add, remove, check):
        action.add_argument("name", metavar="NAME", help="the builder's name (Host, alias)")
        _client_layout_options(action)
    for action in (add, remove):
        action.add_argument("--dry-run", action="store_true", help="print the plan only")
    add.add_argument("--host", required=True, help="its address or DNS name")
    add.add_argument("--port", type=_positive, default=22)
    add.add_argument("--user", help="the SSH user its key logs in as")
    add.add_argument(
        "--host-key", required=True, metavar="KEY|FILE", help="'ssh-ed25519 AAAA…' or a .pub file"
    )
    add.add_argument("--systems", required=True, help="x86_64-linux[,…]")
    add.add_argument("--max-jobs", type=_positive, default=1)
    add.add_argument("--speed-factor", type=_positive, default=1)
    add.add_argument("--features", default="", help="supported features (kvm,big-parallel)")
    add.add_argument("--mandatory-features", default="", help="features a build must ask for")
    add.add_argument("--identity", metavar="FILE", help="the private key to log in with")
    add.add_argument("--protocol", choices=client_plan.PROTOCOLS, default="ssh-ng")
    add.add_argument(
        "--no-check", action="store_true", help="do not check the key against the host"
    )
    args = cli.parse_args(argv)
    layout = _client_layout(args)
    out = sys.stdout
    match args.action:
        case "add-builder":
            entry = client_plan.BuilderEntry(
                name=args.name,
                host=args.host,
                host_key=commands.host_key(args.host_key),
                systems=_words(args.systems),
                port=args.port,
                user=args.user,
                identity=safe_path("--identity", args.identity) if args.identity else None,
                max_jobs=args.max_jobs,
                speed_factor=args.speed_factor,
                features=_words(args.features),
                mandatory=_words(args.mandatory_features),
                protocol=args.protocol,
            )
            return commands.add_builder(
                layout, entry, check=not args.no_check, out=out, dry_run=args.dry_run
            )
        case "remove-builder":
            return commands.remove_builder(layout, args.name, out=out, dry_run=args.dry_run)
        case "check-builder":
            return commands.check_builder(layout, args.name, out=out)
    raise UsageError(f"unknown action {args.action}")


def main(command: str, argv: list[str]) -> int:
    if command == "builder":
        return builder_main(argv)
    return client_main(argv)
