"""`confine run`: the imperative shell around `plan` (roots, closure, the bubblewrap argv).

Every question `prepare` asks the file system goes through `nix.probes`, so that the
plan it makes can be cached (`confine.plans`) and reused only while each answer stays
the same; running the plan, with signals and exit status passed through, is `launch`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nixwarden.confine.launch import BWRAP
from nixwarden.confine.plan import BIN_SH, Bind, BinSh, Mode, RunSpec, sandbox
from nixwarden.errors import InvalidInput, UsageError
from nixwarden.nix.closure import Source, closure, database_path, resolve_root
from nixwarden.nix.storepath import STORE_DIR, in_store, references_in
from nixwarden.probes import Seen, ask


@dataclass(frozen=True)
class Request:
    """`confine run`'s command line, parsed."""

    command: tuple[str, ...]
    mode: Mode = Mode.FULL_APIVFS
    packages: tuple[str, ...] = ()
    bin_sh: BinSh | None = None
    binds: tuple[Bind, ...] = ()
    network: bool = False
    env: Mapping[str, str] | None = None
    chdir: str = "/"
    db: str | None = None


@dataclass(frozen=True)
class Prepared:
    """What `confine run` will run, and whether that may be cached."""

    spec: RunSpec
    command: list[str]  # the command line inside the sandbox
    # False when the closure came from `nix-store -qR`: its answer cannot be checked
    # for staleness the way the database's files can.
    cacheable: bool


def _search_path(name: str, environ: Mapping[str, str], seen: Seen | None) -> str:
    for directory in environ.get("PATH", "").split(":"):
        if not directory:
            continue
        candidate = os.path.join(directory, name)
        if ask(seen, "executable", candidate):
            return candidate
    raise UsageError(f"confine run: {name!r} not found in PATH")


def _provided(path: str, request: Request) -> bool:
    """Is `path` something the sandbox provides besides the closure (/bin/sh, a bind)?"""
    if path == BIN_SH and request.bin_sh is not None:
        return True
    return any(path == b.dest or path.startswith(b.dest.rstrip("/") + "/") for b in request.binds)


def resolve_command(
    request: Request, environ: Mapping[str, str], seen: Seen | None = None
) -> tuple[str, str | None]:
    """(path to execute inside the sandbox, its store path root or None)."""
    program = request.command[0]
    if _provided(program, request):
        return program, None
    if "/" not in program:
        program = _search_path(program, environ, seen)
    root = resolve_root(program, STORE_DIR, seen=seen)
    if not in_store(root.path):
        raise UsageError(f"confine run: {program!r} is not in the store")
    return root.path, root.top


def roots(request: Request, command_root: str | None, seen: Seen | None = None) -> list[str]:
    found: list[str] = []
    if command_root is not None:
        found.append(command_root)
    for argument in request.command[1:]:
        found += [p.absolute() for p in references_in(argument)]
    for package in request.packages:
        found.append(resolve_root(package, seen=seen).top)
    if request.bin_sh is not None:
        found += request.bin_sh.store_roots
    return list(dict.fromkeys(found))


def symlinks(paths: frozenset[str]) -> dict[str, str]:
    """Closure members that are themselves symlinks: bubblewrap recreates them as links."""
    return {path: os.readlink(path) for path in paths if os.path.islink(path)}


def prepare(request: Request, environ: Mapping[str, str], seen: Seen | None = None) -> Prepared:
    """The sandbox description and the command to run in it; every question asked of
    the file system on the way is recorded in `seen`."""
    executable, command_root = resolve_command(request, environ, seen)
    store_roots = roots(request, command_root, seen)
    # Before the query: a write after this look shows as a change (see probes.unsettled).
    ask(seen, "database", database_path(request.db, environ))
    found = closure(store_roots, db=request.db, environ=environ)
    spec = RunSpec(
        mode=request.mode,
        closure=found.paths,
        # Store paths do not change while valid: the database's state covers these.
        links=symlinks(found.paths),
        bin_sh=request.bin_sh,
        binds=request.binds,
        network=request.network,
        env=dict(request.env or {}),
        chdir=request.chdir,
    )
    return Prepared(
        spec, [executable, *request.command[1:]], cacheable=found.source == Source.DATABASE
    )


def bwrap_argv(spec: RunSpec, command: Sequence[str], bwrap: str = BWRAP) -> list[str]:
    return sandbox(spec).argv(bwrap, command)


def validate(request: Request) -> None:
    if not request.command:
        raise UsageError("confine run: no command given (after --)")
    if not request.chdir.startswith("/"):
        raise InvalidInput(f"--chdir {request.chdir!r}: must be absolute")
