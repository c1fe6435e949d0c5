"""A compiled copy of the validated configuration, for the gate's start-up path.

Parsing TOML and building the validated model costs about 30 ms of imports (tomllib,
re, dataclasses, typing) on every SSH connection. `nixwarden gate --compile` (and
`nixwarden authorized-keys-line`) write the already-validated values beside the
config file; the gate uses them only while they match that file exactly (device,
inode, size, modification and change times). On any mismatch it parses the TOML
itself, so a forgotten recompile costs time, never correctness.

Trust: the compiled file is used only when it has the same owner as the config file
and nobody else may write it, which is the trust the config file itself gets (and the
trust Python gives the .pyc files the gate runs from). It is read with `marshal`,
which is only as safe as its input, for that reason.
"""

from __future__ import annotations

import marshal
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nixwarden.config import Config, GateSettings, Principal, TenantSettings

# Raised whenever validation tightens or the model grows: a copy compiled by an older
# nixwarden holds values checked by its rules (3: printable strings, one-word nix.conf
# items; 4: the tenant limits and cgroup settings; 5: principals carry role, user and
# profiles; 6: [tenants] disk_images), so it is ignored.
FORMAT = 6


class Values:
    """Read-only attribute access to a mapping of validated values (a config object's view)."""

    __slots__ = ("_values",)
    _values: dict[str, object]

    def __init__(self, values: dict[str, object]) -> None:
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> object:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"read-only: {name}")


def path_for(config_path: str) -> str:
    directory, name = os.path.split(os.path.abspath(config_path))
    return os.path.join(directory, f".{name}.compiled")


def _fingerprint(info: os.stat_result) -> tuple[int, int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def read(
    config_path: str,
) -> tuple[GateSettings, TenantSettings, dict[str, Principal]] | None:
    """The compiled policy if it is current and trustworthy, else None (parse the TOML)."""
    try:
        config_info = os.stat(config_path)
        fd = os.open(path_for(config_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != config_info.st_uid
            or info.st_mode & 0o022
        ):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            document = marshal.load(handle)  # noqa: S302 - trusted as the config is
    except (OSError, EOFError, ValueError, TypeError):
        return None
    finally:
        os.close(fd)
    if (
        not isinstance(document, dict)
        or document.get("format") != FORMAT
        or document.get("source") != _fingerprint(config_info)
    ):
        return None
    gate = Values(document["gate"])
    tenants = Values(document["tenants"])
    principals = {name: Values(values) for name, values in document["principals"].items()}
    return gate, tenants, principals  # type: ignore[return-value]  # Values mirrors them


def write(config: Config) -> str:
    """Write the compiled copy of `config` atomically beside it; returns its path."""
    from dataclasses import asdict  # noqa: PLC0415 - never on the gate's path

    document = {
        "format": FORMAT,
        "source": _fingerprint(os.stat(config.path)),
        "gate": asdict(config.gate),
        "tenants": asdict(config.tenants),
        "principals": {name: asdict(p) for name, p in config.principals.items()},
    }
    from nixwarden.files import write_atomic  # noqa: PLC0415 - never on the gate's path

    target = path_for(config.path)
    write_atomic(target, marshal.dumps(document), mode=0o644, replace=True)
    return target
