"""`confine unit`: the imperative shell around `dropin` (read the unit, compute the closure)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from nixwarden.confine.dropin import (
    APIVFS_SETTINGS,
    HARDENING,
    SERVICE,
    DropIn,
    Roots,
    check_unit,
    exec_roots,
    full_unit_roots,
    parse_unit_name,
    render,
)
from nixwarden.confine.plan import BinSh, Mode
from nixwarden.confine.unitfile import Unit, parse_exec, parse_unit
from nixwarden.errors import InvalidInput, UsageError
from nixwarden.nix.closure import closure, resolve_root
from nixwarden.nix.storepath import in_store, references_in

OWN_SETTINGS = (*APIVFS_SETTINGS, *(h.key for h in HARDENING), "DynamicUser")


@dataclass(frozen=True)
class Request:
    name: str
    mode: Mode = Mode.FULL_APIVFS
    packages: tuple[str, ...] = ()
    bin_sh: BinSh | None = None
    full_unit: bool = False
    execs: tuple[str, ...] = ()
    unit_file: str | None = None
    db: str | None = None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"--unit-file {path}: {error}") from error


def unit_roots(request: Request) -> tuple[Roots, Unit | None]:
    if request.unit_file is not None:
        text = _read(request.unit_file)
        unit = parse_unit(text, request.unit_file)
        check_unit(unit, request.unit_file)
        from_exec = exec_roots(unit, request.unit_file)
        if not request.full_unit:
            return from_exec, unit
        full = full_unit_roots(unit, request.unit_file)
        return Roots(full.store_paths, from_exec.warnings + full.warnings), unit
    if request.full_unit:
        raise UsageError("confine unit: --full-unit needs --unit-file")
    found: list[str] = []
    for index, line in enumerate(request.execs, start=1):
        for command in parse_exec(line, f"--exec #{index}"):
            for word in command.argv:
                found += [p.absolute() for p in references_in(word)]
    return Roots(tuple(dict.fromkeys(found))), None


def build(request: Request) -> tuple[str, Sequence[str]]:
    """(the drop-in's text, warnings)."""
    name = parse_unit_name(request.name)
    roots, unit = unit_roots(request)
    every = list(roots.store_paths)
    every += [resolve_root(p).top for p in request.packages]
    if request.bin_sh is not None:
        every += request.bin_sh.store_roots
    found = closure(dict.fromkeys(every), db=request.db)
    warnings = list(roots.warnings)
    paths, links = set(found.paths), {}
    for path in sorted(found.paths):
        if not os.path.islink(path):
            continue
        target = os.path.realpath(path)  # readlink -e, as the module does
        if in_store(target) and os.path.exists(target):
            links[path] = target
        else:
            # Binding it would put a host file into the chroot (or fail to start).
            paths.discard(path)
            warnings.append(f"{path} is a symlink to {target}, outside the store: not bound")
    own = {}
    if unit is not None:
        for key in OWN_SETTINGS:
            value = unit.last(SERVICE, key)
            if value:
                own[key] = value
    text = render(
        DropIn(
            unit=name,
            mode=request.mode,
            closure=frozenset(paths),
            links=links,
            bin_sh=request.bin_sh,
            unit_settings=own,
        )
    )
    if not every:
        warnings.append(f"{name.name}: no store paths found; the closure is empty")
    return text, warnings
