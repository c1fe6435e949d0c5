"""`nixwarden closure` and `nixwarden confine run|unit`: argument parsing only.

Lean at import: `confine run` first looks for a cached plan (`confine.plans`) and, when
one is still right, runs it without importing argparse, the store database or anything
else that computes a plan; `closure` parses its two kinds of argument by hand, since
argparse costs more than the query. See docs/confine.md.
"""

from __future__ import annotations

import sys

from nixwarden.errors import UsageError

TYPE_CHECKING = False  # not typing's: `confine run` and `closure` start here
if TYPE_CHECKING:
    import argparse

    from nixwarden.cliutil import Parser
    from nixwarden.confine.plan import BinSh
    from nixwarden.probes import Seen

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


CLOSURE_USAGE = "usage: nixwarden closure [-h] [--db FILE] ROOT [ROOT ...]"


def _closure_arguments(argv: list[str]) -> tuple[str | None, list[str]] | None:
    """(--db, the roots) from `closure`'s arguments; None for --help."""
    db: str | None = None
    roots: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            roots += words
        elif word in ("-h", "--help"):
            return None
        elif word == "--db" or word.startswith("--db="):
            value = word[len("--db=") :] if "=" in word else next(words, None)
            if value is None:
                raise UsageError(f"nixwarden closure: --db needs a FILE\n{CLOSURE_USAGE}")
            db = value
        elif word.startswith("-") and word != "-":
            raise UsageError(f"nixwarden closure: unknown option {word!r}\n{CLOSURE_USAGE}")
        else:
            roots.append(word)
    if not roots:
        raise UsageError(f"nixwarden closure: no ROOT given\n{CLOSURE_USAGE}")
    return db, roots


def _closure(argv: list[str]) -> int:
    parsed = _closure_arguments(argv)
    if parsed is None:
        print(
            f"{CLOSURE_USAGE}\n\n{CLOSURE_HELP}\noptions:\n"
            "  -h, --help  show this help message and exit\n"
            "  --db FILE   the store database (default: Nix's)"
        )
        return 0
    db, roots = parsed
    from nixwarden.nix.closure import Source, closure, resolve_root  # noqa: PLC0415

    store_paths = [resolve_root(root).top for root in roots]
    found = closure(store_paths, db=db)
    if found.source == Source.NIX_STORE:
        print(
            f"nixwarden: note: {found.why_fallback}; asked nix-store -qR instead",
            file=sys.stderr,
        )
    if found.paths:
        sys.stdout.write("\n".join(sorted(found.paths)) + "\n")
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
            from nixwarden.confine import plans  # noqa: PLC0415

            return plans.main("confine", argv)
        case "unit":
            return _unit(argv[1:])
        case other:
            raise UsageError(f"nixwarden confine: unknown subcommand {other!r} (run, unit)")


def _common(p: Parser) -> None:
    import argparse  # noqa: PLC0415 - only when the arguments are parsed

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


def _bin_sh(args: argparse.Namespace, seen: Seen | None = None) -> BinSh | None:
    from nixwarden.confine import binsh  # noqa: PLC0415

    if args.no_bin_sh:
        return None
    if args.bin_sh is not None:
        return binsh.from_store(args.bin_sh, seen=seen)
    return binsh.from_host(seen=seen)


def run_fresh(argv: list[str], started_ns: int) -> int:
    """`confine run` without a usable stored plan (see `confine.plans.main`): work one
    out, store it, and perform it. `started_ns`: when, before any question to the file
    system, the run began."""
    from nixwarden.cliutil import parser  # noqa: PLC0415
    from nixwarden.confine import plans, run  # noqa: PLC0415
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
    seen: Seen = []
    request = run.Request(
        command=tuple(command),
        mode=Mode(args.mode),
        packages=tuple(args.package),
        bin_sh=_bin_sh(args, seen),
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
    environ = plans.environment()  # what the cached run will look its plan up by
    prepared = run.prepare(request, environ, seen)
    bwrap_argv = run.bwrap_argv(prepared.spec, prepared.command)
    if prepared.cacheable:
        why = plans.store(
            argv,
            environ,
            bwrap_argv,
            print_only=args.print_argv,
            seen=seen,
            started_ns=started_ns,
        )
        plans.debug(f"confine run: plan not stored: {why}" if why else "confine run: plan stored")
    else:
        plans.debug("confine run: plan not stored: the closure came from nix-store -qR")
    return plans.perform(bwrap_argv, print_only=args.print_argv)


def _unit(argv: list[str]) -> int:
    from nixwarden.cliutil import parser  # noqa: PLC0415
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
