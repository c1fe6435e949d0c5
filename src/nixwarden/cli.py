"""Command-line entry point: finds the subcommand and imports only the part that serves it.

Each part owns a module with `main(command: str, argv: list[str]) -> int` that parses
its own arguments (see `nixwarden.cliutil.parser`). Importing one part never imports
another, so the gate's start-up on every SSH connection stays small. No
`from __future__ import annotations` here: it imports a module of its own, on every
command's start-up.
"""

import posix  # not os: see nixwarden.launcher and confine.plans (start-up cost)
import sys

# Exit codes as nixwarden.errors names them; that module is imported only when an
# error is raised (its classes cost a cached `confine run` a tenth of its own work).
EXIT_REFUSED = 1
EXIT_USAGE = 2

# command -> (module, one-line summary). Keep in the order `--help` shows them.
COMMANDS: dict[str, tuple[str, str]] = {
    "gate": ("nixwarden.gate.cli", "SSH forced command: allow only the Nix remote protocol"),
    "authorized-keys-line": (
        "nixwarden.gate.cli",
        "print the restrict,command=… authorized_keys line for a principal's key",
    ),
    "tenant": ("nixwarden.tenants.cli", "list, garbage-collect and remove tenant stores"),
    "nar": ("nixwarden.trust.narcli", "dump, hash, list and restore Nix archives"),
    "key": ("nixwarden.trust.cli", "generate Nix signing keys; show one as an OpenSSH key"),
    "sign": ("nixwarden.trust.cli", "sign store paths"),
    "verify": ("nixwarden.ca.cli", "verify store paths' signatures: trusted or certified keys"),
    "cache": ("nixwarden.trust.cli", "export a closure as a signed file:// binary cache"),
    "ca": ("nixwarden.ca.cli", "certify Nix signing keys with an OpenSSH CA; revoke them in KRLs"),
    "closure": ("nixwarden.confine.cli", "print the closure of store paths"),
    "confine": ("nixwarden.confine.cli", "run a program or a service seeing only its closure"),
    "audit": ("nixwarden.audit.cli", "check a machine's Nix, SSH and nixwarden trust settings"),
    "push": (
        "nixwarden.deploy.push_cli",
        "deploy store paths to targets' receive services: verified, all or nothing, no root",
    ),
    "receive-daemon": (
        "nixwarden.deploy.receive_cli",
        "run the deploy receive service (verified pushes without root)",
    ),
    "provenance": (
        "nixwarden.deploy.provenance_cli",
        "who put a store path here: the receive service's hash-chained records",
    ),
    "builder": (
        "nixwarden.provision.cli",
        "set up a gated builder; enrol, revoke and list its principals",
    ),
    "client": ("nixwarden.provision.cli", "point this machine's Nix at a gated builder"),
}

# (command, subcommand) -> the module that serves it first. A `confine run` whose plan is
# cached is mostly interpreter start-up, so it skips the confine part's parser; on a
# cache miss confine.plans hands over to it.
SUBCOMMANDS: dict[tuple[str, str], str] = {("confine", "run"): "nixwarden.confine.plans"}

USAGE = "usage: nixwarden [--debug] COMMAND [ARGS…]   (nixwarden COMMAND --help for details)"


def _help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [USAGE, "", "Least-privilege remote building and deployment for Nix and Lix.", ""]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += [
        "",
        "Exit status: 0 success, 1 refused or a finding, 2 bad usage or bad input.",
        "--debug (anywhere before `--`) shows tracebacks; so does NIXWARDEN_DEBUG=1.",
    ]
    return "\n".join(lines)


def _split_debug(argv: list[str]) -> tuple[bool, list[str]]:
    debug = posix.environ.get(b"NIXWARDEN_DEBUG") == b"1"
    rest: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            rest.extend(argv[index:])
            break
        if arg == "--debug":
            debug = True
        else:
            rest.append(arg)
    return debug, rest


def main(argv: list[str] | None = None) -> int:
    debug, args = _split_debug(list(sys.argv[1:] if argv is None else argv))
    if not args or args[0] in ("-h", "--help", "help"):
        print(_help())
        return 0 if args else EXIT_USAGE
    if args[0] == "--version":
        from nixwarden import __version__  # noqa: PLC0415

        print(f"nixwarden {__version__}")
        return 0
    command, rest = args[0], args[1:]
    entry = COMMANDS.get(command)
    if entry is None:
        print(f"nixwarden: error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    try:
        # __import__, not importlib.import_module: `importlib` is not loaded at start-up.
        served_by = SUBCOMMANDS.get((command, rest[0]), entry[0]) if rest else entry[0]
        module = __import__(served_by, fromlist=["main"])
        result: int = module.main(command, rest)
        return result
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (`| head`): not an error worth a traceback.
        posix.dup2(posix.open("/dev/null", posix.O_WRONLY), sys.stdout.fileno())
        return EXIT_REFUSED
    except Exception as error:
        if debug:
            raise
        # Whatever raised a NixwardenError has imported this module already.
        from nixwarden.errors import NixwardenError  # noqa: PLC0415

        if isinstance(error, NixwardenError):
            print(f"nixwarden: {error.prefix}: {error}", file=sys.stderr)
            return error.exit_code
        # the last line of defence: fail closed, one line
        print(
            f"nixwarden: error: internal error: {type(error).__name__}: {error} "
            "(run with --debug for a traceback)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
