"""The systemd drop-in that confines a service to its closure, as NixOS's
`systemd-confinement.nix` does, plus the hardening that module leaves out. Pure.

The module's mode-dependent settings are `mkDefault`s: a unit that sets one of them
itself keeps its own value. A drop-in overrides its unit, so with `--unit-file` we
leave out every defaulted directive the unit already sets (and say so in a comment).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nixwarden.confine.plan import BIN_SH, BinSh, Mode
from nixwarden.confine.unitfile import EXEC_KEYS, ExecPrefix, Unit, parse_exec
from nixwarden.errors import InvalidInput, Refused
from nixwarden.nix.storepath import STORE_DIR, in_store, references_in

SERVICE = "Service"
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?")
_TRUE = ("1", "yes", "y", "true", "t", "on")
_FALSE = ("0", "no", "n", "false", "f", "off")

# The module's `mkDefault (mode == "full-apivfs")` settings, in its order.
APIVFS_SETTINGS = (
    "MountAPIVFS",
    "PrivateDevices",
    "PrivateTmp",
    "PrivateUsers",
    "ProtectControlGroups",
    "ProtectKernelModules",
    "ProtectKernelTunables",
)


@dataclass(frozen=True)
class Hardening:
    key: str
    value: str
    needs_proc: bool
    why: str


# What the module does not set, and nixwarden does where the mode allows.
HARDENING = (
    Hardening("NoNewPrivileges", "yes", False, "no setuid/file-capability gains via execve"),
    Hardening("ProtectProc", "invisible", True, "other users' processes hidden in /proc"),
    Hardening("ProcSubset", "pid", True, "/proc shows processes only, not kernel knobs"),
    Hardening("RestrictSUIDSGID", "yes", False, "cannot create setuid/setgid files"),
    Hardening("LockPersonality", "yes", False, "cannot change the execution domain"),
)


@dataclass(frozen=True)
class UnitName:
    name: str  # with the .service suffix
    prefix: str  # before '@' (or the whole name without suffix)
    template: bool  # foo@.service or foo@bar.service

    @property
    def runtime_dir(self) -> str:
        """A path-safe name under /run/confinement, distinct for every instance."""
        safe = re.sub(r"[@:\\\[\]]", "-", self.prefix)
        return f"confinement/{safe}-%i" if self.template else f"confinement/{safe}"


def parse_unit_name(text: str) -> UnitName:
    name = text if "." in text.rsplit("@", 1)[-1] else f"{text}.service"
    base, dot, suffix = name.rpartition(".")
    if not dot or suffix != "service":
        raise InvalidInput(f"--name {text!r}: confinement applies to services (NAME.service)")
    if not _UNIT_NAME.fullmatch(base) or base.startswith(("@", ".", "-")) or len(name) > 255:
        raise InvalidInput(f"--name {text!r}: not a valid systemd unit name")
    prefix, at, _ = base.partition("@")
    return UnitName(name, prefix, bool(at))


def parse_bool(value: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidInput(f"{where}: {value!r} is not a boolean")


@dataclass(frozen=True)
class Roots:
    store_paths: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def check_unit(unit: Unit, origin: str) -> None:
    """Refuse what confinement cannot work with."""
    start_only = unit.last(SERVICE, "RootDirectoryStartOnly")
    if start_only and parse_bool(start_only, f"{origin}: RootDirectoryStartOnly="):
        raise Refused(
            f"{origin}: RootDirectoryStartOnly=yes cannot be confined: it limits only "
            "RootDirectory=, not the closure's bind mounts, so ExecStartPre= and friends "
            "would run on the host with the binds half applied (NixOS refuses it too)"
        )
    for key in ("RootDirectory", "RootImage"):
        if unit.last(SERVICE, key):
            raise Refused(f"{origin}: the unit sets {key}=; confinement needs its own root")


def exec_roots(unit: Unit, origin: str) -> Roots:
    """Roots from the `Exec*=` lines (the module's default), with warnings for `+` lines."""
    found: list[str] = []
    warnings: list[str] = []
    for key in EXEC_KEYS:
        for item in unit.values(SERVICE, key):
            where = f"{origin}:{item.line}: {key}="
            for command in parse_exec(item.value, where):
                if ExecPrefix.FULL_PRIVILEGES in command.prefixes:
                    warnings.append(
                        f"{where}: the '+' prefix runs this command outside the confinement"
                    )
                elif not in_store(command.executable) and command.executable != BIN_SH:
                    warnings.append(
                        f"{where}: {command.executable} is not in the store: it will not "
                        "exist inside the confinement"
                    )
                for word in command.argv:
                    found += [p.absolute() for p in references_in(word)]
    return Roots(tuple(dict.fromkeys(found)), tuple(warnings))


def full_unit_roots(unit: Unit, origin: str) -> Roots:
    """Every store path in the unit's settings (`fullUnit`; comments do not count),
    warning about environment files."""
    found = [p.absolute() for item in unit.assignments for p in references_in(item.value)]
    warnings: list[str] = []
    for key in ("EnvironmentFile", "Environment"):
        for item in unit.assignments:
            if item.section != SERVICE or item.key != key:
                continue
            paths = list(dict.fromkeys(p.absolute() for p in references_in(item.value)))
            if paths:
                warnings.append(
                    f"{origin}:{item.line}: {key}= puts {', '.join(paths)} in the chroot: "
                    "the service can read the file itself (secrets in it included), not "
                    "only the variables it exports"
                )
    return Roots(tuple(dict.fromkeys(found)), tuple(warnings))


@dataclass(frozen=True)
class DropIn:
    unit: UnitName
    mode: Mode
    closure: frozenset[str]
    links: Mapping[str, str] = field(default_factory=dict)  # closure path -> readlink -e
    bin_sh: BinSh | None = None
    unit_settings: Mapping[str, str] = field(default_factory=dict)  # the unit's own values
    store_dir: str = STORE_DIR


def _check_value(path: str) -> str:
    if not path.startswith("/") or any(c in path for c in " \t\n\r:%\"'\\"):
        raise InvalidInput(f"cannot put {path!r} in a BindReadOnlyPaths= line")
    return path


def _bind(source: str, dest: str) -> str:
    if source == dest:
        return f"BindReadOnlyPaths={_check_value(dest)}"
    return f"BindReadOnlyPaths={_check_value(source)}:{_check_value(dest)}"


def private_tmp(drop_in: DropIn) -> bool:
    own = drop_in.unit_settings.get("PrivateTmp")
    dynamic = drop_in.unit_settings.get("DynamicUser")
    if dynamic is not None and parse_bool(dynamic, "DynamicUser="):
        return True  # DynamicUser= forces PrivateTmp=
    if own is not None:
        return parse_bool(own, "PrivateTmp=")
    return drop_in.mode is Mode.FULL_APIVFS


def render(drop_in: DropIn) -> str:
    unit, mode = drop_in.unit, drop_in.mode
    full = mode is Mode.FULL_APIVFS
    root = f"/run/{unit.runtime_dir}"
    lines = [
        f"# Confines {unit.name} to its closure ({len(drop_in.closure)} store paths), "
        f"mode {mode.value}.",
        "# Generated by `nixwarden confine unit`; install as",
        f"# /etc/systemd/system/{unit.name}.d/confinement.conf and run systemctl daemon-reload.",
        "[Service]",
        "# The root is an empty runtime directory: the service sees only what is bound below.",
        f"RuntimeDirectory={unit.runtime_dir}",
        f"RootDirectory={root}",
        "# Hide the root's backing directory from the host-side view of the namespace,",
        "# and keep the root itself read-only.",
        f"InaccessiblePaths=-+{root}",
        "ReadOnlyPaths=+/",
        "PrivateMounts=yes",
    ]
    if drop_in.bin_sh is not None:
        lines.append(f"# {BIN_SH} for system(3) and friends.")
        lines.append(_bind(drop_in.bin_sh.source, BIN_SH))
        lines += [_bind(f.source, f.dest) for f in drop_in.bin_sh.host_files]
    if not private_tmp(drop_in):
        lines.append("# No PrivateTmp=: keep the host's /tmp and /var/tmp out.")
        lines += ["InaccessiblePaths=-+/tmp", "InaccessiblePaths=-+/var/tmp"]
    lines.append("# The closure, read-only; a store path that is a symlink is bound at its target.")
    for path in sorted(drop_in.closure):
        lines.append(_bind(drop_in.links.get(path, path), path))
    lines.append(
        "# API file systems and namespaces: "
        + ("on (full-apivfs)." if full else "off (chroot-only): no /proc, /dev, /sys.")
    )
    lines += _defaulted(drop_in, [(key, "yes" if full else "no") for key in APIVFS_SETTINGS])
    lines.append("# Hardening the NixOS module leaves out:")
    for item in HARDENING:
        if item.needs_proc and not full:
            continue
        lines += _defaulted(drop_in, [(item.key, item.value)], why=item.why)
    return "\n".join(lines) + "\n"


def _defaulted(drop_in: DropIn, settings: Iterable[tuple[str, str]], why: str = "") -> list[str]:
    """Settings the unit may override (systemd has no trailing comments: own lines)."""
    out: list[str] = []
    for key, value in settings:
        own = drop_in.unit_settings.get(key)
        if own is not None:
            out.append(f"# {key}= kept as the unit sets it ({own}).")
            continue
        if why:
            out.append(f"# {why}")
        out.append(f"{key}={value}")
    return out
