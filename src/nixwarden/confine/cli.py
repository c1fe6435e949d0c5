"""`nixwarden closure` and `nixwarden confine run|unit`: argument parsing only."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from nixwarden.cliutil import Parser, parser
from nixwarden.errors import UsageError

if TYPE_CHECKING:
    from nixwarden.confine.plan import BinSh

CLOSURE_HELP = """\
Print the closure of the roots (store paths, paths inside them, or symlinks into the
store), one store path a line, sorted: the same set as `nix-store -qR`. Reads the
store database read-only; asks `nix-store -qR` when it cannot be read (not with --db).
"""

RUN_HELP = """\
Run CMD in bubblewrap seeing only its closure (read-only): the closure of CMD, of
every argument that lies in the store, of each --package and of /bin/sh.
full-apivfs (default) adds /proc, a minimal /dev, tmpfs /tmp and /run and private
namespaces; chroot-only adds nothing. The environment is empty but for --setenv;
no network unless --network; a new session; exit status and signals pass through.
See docs/confine.md.
"""

UNIT_HELP = """\
Print a systemd drop-in (NAME.service.d/confinement.conf) that confines the service
to its closure as NixOS's confinement module does, plus NoNewPrivileges=,
ProtectProc=, ProcSubset=, RestrictSUIDSGID= and LockPersonality= where the mode allows.
Roots: the store paths in --exec command lines, or in the unit's Exec*= lines
(--unit-file), or anywhere in the unit (--full-unit). See docs/confine.md.
"""


def main(command: str, argv: list[str]) -> int:
    match command:
        case "closure":
            return _closure(argv)
        case "confine":
            return _confine(argv)
        case _:
            raise UsageError(f"nixwarden: confine does not serve {command!r}")


def _closure(argv: list[str]) -> int:
    from nixwarden.nix.closure import Source, closure, resolve_root  # noqa: PLC0415

    p = parser("closure", CLOSURE_HELP)
    p.add_argument("--db", metavar="FILE", help="the store database (default: Nix's)")
    p.add_argument("roots", nargs="+", metavar="ROOT")
    args = p.parse_args(argv)
    store_paths = [resolve_root(root).top for root in args.roots]
    found = closure(store_paths, db=args.db)
    if found.source is Source.NIX_STORE:
        print(
            f"nixwarden: note: {found.why_fallback}; asked nix-store -qR instead",
            file=sys.stderr,
        )
    sys.stdout.write("".join(f"{path}\n" for path in sorted(found.paths)))
    sys.stdout.flush()
    return 0


def _confine(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: nixwarden confine {run,unit} …\n\n"
            "  run   run a program seeing only its closure (bubblewrap)\n"
            "  unit  print a systemd drop-in confining a service to its closure\n\n"
            "nixwarden confine run --help, nixwarden confine unit --help for details."
        )
        return 0 if argv else 2
    match argv[0]:
        case "run":
            return _run(argv[1:])
        case "unit":
            return _unit(argv[1:])
        case other:
            raise UsageError(f"nixwarden confine: unknown subcommand {other!r} (run, unit)")


def _common(p: Parser) -> None:
    from nixwarden.confine.plan import Mode  # noqa: PLC0415

    p.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.FULL_APIVFS.value,
        help="full-apivfs (default) or chroot-only",
    )
    p.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="PATH",
        help="another root (a store path or a path inside one); repeatable",
    )
    sh = p.add_mutually_exclusive_group()
    sh.add_argument("--bin-sh", metavar="PATH", help="bind this store file at /bin/sh")
    sh.add_argument("--no-bin-sh", action="store_true", help="no /bin/sh at all")
    p.add_argument("--db", metavar="FILE", help=argparse.SUPPRESS)


def _bin_sh(args: argparse.Namespace) -> BinSh | None:
    from nixwarden.confine import binsh  # noqa: PLC0415

    if args.no_bin_sh:
        return None
    if args.bin_sh is not None:
        return binsh.from_store(args.bin_sh)
    return binsh.from_host()


def _run(argv: list[str]) -> int:
    from nixwarden.confine import run  # noqa: PLC0415
    from nixwarden.confine.plan import Mode, parse_bind, parse_setenv  # noqa: PLC0415

    if "--" in argv:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1 :]
    else:
        options, command = argv, []
    p = parser("confine run", RUN_HELP, usage="%(prog)s [options] -- CMD [ARG…]")
    _common(p)
    p.add_argument(
        "--ro-bind", action="append", default=[], metavar="SRC[:DST]", help="bind read-only"
    )
    p.add_argument(
        "--bind", action="append", default=[], metavar="SRC[:DST]", help="bind read-write"
    )
    p.add_argument("--network", action="store_true", help="share the host's network")
    p.add_argument("--setenv", action="append", default=[], metavar="K=V", help="set a variable")
    p.add_argument("--chdir", default="/", metavar="DIR", help="working directory (default /)")
    p.add_argument(
        "--print-argv",
        action="store_true",
        help="print the bubblewrap command line (shell-quoted) instead of running it",
    )
    args, extra = p.parse_known_args(options)
    if extra or not command:
        unknown = f"unrecognized arguments: {' '.join(extra)}; " if extra else ""
        raise UsageError(f"nixwarden confine run: {unknown}the command goes after -- (see --help)")
    request = run.Request(
        command=tuple(command),
        mode=Mode(args.mode),
        packages=tuple(args.package),
        bin_sh=_bin_sh(args),
        binds=tuple(
            [parse_bind(b, writable=False) for b in args.ro_bind]
            + [parse_bind(b, writable=True) for b in args.bind]
        ),
        network=args.network,
        env=dict(parse_setenv(item) for item in args.setenv),
        chdir=args.chdir,
        db=args.db,
    )
    run.validate(request)
    spec, command_line = run.prepare(request, os.environ)
    if args.print_argv:
        import shlex  # noqa: PLC0415

        print(shlex.join(run.bwrap_argv(spec, command_line)))
        return 0
    sys.stdout.flush()
    return run.execute(spec, command_line)


def _unit(argv: list[str]) -> int:
    from nixwarden.confine import unit  # noqa: PLC0415
    from nixwarden.confine.plan import Mode  # noqa: PLC0415

    p = parser("confine unit", UNIT_HELP)
    p.add_argument("--name", required=True, help="the service (NAME or NAME.service)")
    _common(p)
    p.add_argument(
        "--full-unit", action="store_true", help="roots: every store path in the unit file"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--exec", nargs="+", action="extend", metavar="CMDLINE", help="the service's commands"
    )
    source.add_argument("--unit-file", metavar="FILE", help="read roots from this unit file")
    args = p.parse_args(argv)
    request = unit.Request(
        name=args.name,
        mode=Mode(args.mode),
        packages=tuple(args.package),
        bin_sh=_bin_sh(args),
        full_unit=args.full_unit,
        execs=tuple(args.exec or ()),
        unit_file=args.unit_file,
        db=args.db,
    )
    text, warnings = unit.build(request)
    for warning in warnings:
        print(f"nixwarden: warning: {warning}", file=sys.stderr)
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0
