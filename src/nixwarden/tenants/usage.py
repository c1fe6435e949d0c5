"""How much a tenant's directory holds, measured inside its own sandbox (see tenants.probe).

The host starts the probe as the tenant's unix user, in the sandbox `tenants.host`
builds for every tenant program, with the tenant's whole directory shown read-only,
under a time limit, and parses its one line of output strictly as untrusted numbers.
Errors say what could not be measured, never a host path.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from nixwarden import process
from nixwarden.errors import CommandFailed, Refused
from nixwarden.sandbox.bwrap import ro_bind
from nixwarden.tenants import host, probe

TYPE_CHECKING = False  # not typing's: on the gate's path when a quota is set
if TYPE_CHECKING:
    from collections.abc import Sequence

    from nixwarden.sandbox.bwrap import Sandbox
    from nixwarden.tenants.layout import TenantLayout

PROBE_SECONDS = 20  # for the gate's quota check; root's commands may give more
_GRACE_SECONDS = 5  # beyond the probe's own deadline, before the host kills it
MAX_REPORT = 256
MAX_VALUE = 1 << 62
# Where the probe finds the nixwarden package (read-only) inside the sandbox.
PROBE_LIBRARY = "/run/nixwarden-probe"
_BOOT = (
    "import sys; sys.path.insert(0, {library!r}); "
    "from nixwarden.tenants.probe import main; sys.exit(main(sys.argv[1:]))"
)
_MEANING = {
    "database": "the tenant store's database could not be read",
    "tree": "the tenant's directory could not be walked",
    "timeout": "the tenant's files could not be measured in time",
    "usage": "the measurement was started wrongly",
}


class UsageUnknown(Refused):
    """The probe gave no usable answer; the message says what failed, never a host path."""


@dataclasses.dataclass(frozen=True)
class TenantUsage:
    disk_bytes: int | None  # blocks allocated to the whole tenant directory (`du -sx`)
    paths: int | None  # valid store paths in the tenant's database
    nar_bytes: int | None  # their NAR sizes added up (`nix path-info --all --size`)


def parse_report(data: bytes) -> TenantUsage:
    """The probe's one line, strictly: `paths=N nar=N disk=N` (N: -1 or decimal digits)."""
    if len(data) > MAX_REPORT or not data.endswith(b"\n") or data.count(b"\n") != 1:
        raise UsageUnknown("the measurement gave no answer")
    try:
        line = data[:-1].decode("ascii")
    except UnicodeDecodeError:
        raise UsageUnknown("the measurement gave a malformed answer") from None
    if line.startswith("error="):
        kind = line.removeprefix("error=")
        raise UsageUnknown(_MEANING.get(kind, "the measurement gave a malformed answer"))
    fields = line.split(" ")
    names = [field.partition("=")[0] for field in fields]
    if names != ["paths", "nar", "disk"]:
        raise UsageUnknown("the measurement gave a malformed answer")
    paths, nar, disk = (_number(field.partition("=")[2]) for field in fields)
    return TenantUsage(disk_bytes=disk, paths=paths, nar_bytes=nar)


def _number(text: str) -> int | None:
    if text == "-1":
        return None
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
        raise UsageUnknown("the measurement gave a malformed answer")
    value = int(text)
    if value > MAX_VALUE or (len(text) > 1 and text[0] == "0"):
        raise UsageUnknown("the measurement gave a malformed answer")
    return value


def probe_sandbox(layout: TenantLayout, sandbox: Sandbox, interpreter: str) -> Sandbox:
    """The tenant's sandbox plus, read-only, its whole directory, the nixwarden package
    and the interpreter where it lives outside the host's shared directories."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    extra = [ro_bind(layout.base, probe.VIEW), ro_bind(package, f"{PROBE_LIBRARY}/nixwarden")]
    if not interpreter.startswith(host.STORE_PREFIX):
        prefixes = {sys.base_prefix, os.path.dirname(os.path.dirname(interpreter))}
        extra += [ro_bind(path) for path in sorted(prefixes) if host.outside_runtime(path)]
    return dataclasses.replace(sandbox, mounts=(*sandbox.mounts, *extra))


def interpreter() -> str:
    return os.path.realpath(sys.executable)


def probe_command(python: str) -> list[str]:
    """The probe, run on `python` inside the sandbox (see `probe_sandbox`)."""
    return [python, "-I", "-S", "-B", "-c", _BOOT.format(library=PROBE_LIBRARY)]


def keeping(paths: Sequence[str], argv: list[str]) -> list[str]:
    """`argv` run by the probe while `paths` are temporary roots of the tenant's store."""
    return [*probe_command(interpreter()), "keep", *paths, "--", *argv]


def measure(
    layout: TenantLayout,
    sandbox: Sandbox,
    bwrap: str,
    *,
    disk: bool = True,
    paths: bool = False,
    clean_tmp: bool = False,
    run_as: tuple[int, int] | None = None,
    seconds: int = PROBE_SECONDS,
) -> TenantUsage:
    """Run the probe in `sandbox` (from `host.tenant_sandbox`, with the interpreter's
    closure where it lives in the host store) and return what it counted."""
    python = interpreter()
    flags = [
        flag
        for flag, wanted in (("--clean-tmp", clean_tmp), ("--disk", disk), ("--paths", paths))
        if wanted
    ]
    command = [*probe_command(python), str(seconds), *flags]
    argv = probe_sandbox(layout, sandbox, python).argv(bwrap, command)
    if run_as is not None:
        argv = host.as_user(*run_as, argv)
    try:
        result = process.run(
            argv, env={"PATH": "/usr/bin:/bin"}, check=False, timeout=seconds + _GRACE_SECONDS
        )
    except CommandFailed as error:
        if "timed out" in str(error):
            raise UsageUnknown(_MEANING["timeout"]) from None
        raise UsageUnknown("the measurement could not start") from None
    if result.returncode < 0:  # SIGXCPU: spinning in a query past its time
        raise UsageUnknown(_MEANING["timeout"])
    return parse_report(result.stdout[: MAX_REPORT + 1])


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
