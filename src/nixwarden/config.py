"""The policy model and its TOML file.

`Config.from_toml(bytes, path)` is pure: it validates everything and raises
`ConfigError` naming the file, the key and what was expected, in one line with every
piece of the file's own text escaped (`display.escape`). `load()` adds the one bit of
I/O (finding and reading the file).

The boundary is strict because every value ends up somewhere that trusts it: paths in
argv and open(), list items as words of a generated nix.conf, numbers in limits. So
no setting may hold a control or other non-printable character, a nix.conf word may
not hold whitespace or `#`, numbers are ASCII digits, and the document itself is
bounded (size, nesting, dotted-key length) before `tomllib` sees it, since tomllib
recurses once per nesting level and is quadratic in the parts of a dotted key.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nixwarden.defaults import CONFIG_ENV, DEFAULT_CONFIG_PATH, config_path
from nixwarden.display import escape
from nixwarden.errors import ConfigError
from nixwarden.files import read_at_most
from nixwarden.nix.programs import find_nix_program

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG_PATH", "Config", "Principal", "config_path", "load"]

PROTOCOLS = ("ssh-ng", "ssh")
STORE_MODES = ("tenant", "host")
ROLES = ("build", "deploy")

PRINCIPAL_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# A profile is a file name in [receive] profiles_dir; Nix adds `-N-link` for generations.
PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+.-]{0,63}")
UNIX_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
MAX_ACTIVATION_TIMEOUT = 86400
# ASCII only: \d and \s would also take other scripts' digits and spaces, which int() reads.
_SIZE = re.compile(r"([0-9]{1,15}) ?([KMGT]?)i?B?", re.IGNORECASE | re.ASCII)
_DURATION = re.compile(r"([0-9]{1,12}) ?([smhdw]?)", re.ASCII)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SIZE = 1 << 60  # 1 EiB: any real quota, and far from overflowing a C off_t
MAX_DURATION = 366 * 86400
ANY_DURATION = 1 << 40  # where the caller checks a tighter bound of its own (seconds)

# Bounds on the document, checked before tomllib parses it (see the module docstring).
MAX_CONFIG_BYTES = 1 << 20
MAX_NESTING = 16  # arrays and inline tables; a valid config nests 1 deep
MAX_DOTS_PER_LINE = 32  # a valid config's longest key is principals.NAME.KEY
MAX_STRING_CHARS = 4096  # PATH_MAX
MAX_LIST_ITEMS = 256
MAX_SHOWN_CHARS = 80  # of a bad value quoted back in an error message


@dataclass(frozen=True)
class GateSettings:
    audit_log: str = "/var/log/nixwarden/audit.jsonl"
    state_dir: str = "/run/nixwarden"
    nix_daemon: str = field(default_factory=lambda: find_nix_program("nix-daemon"))
    nix_store: str = field(default_factory=lambda: find_nix_program("nix-store"))
    line_mode: bool = True
    ssl_cert_file: str | None = None


@dataclass(frozen=True)
class TenantSettings:
    root: str = "/var/lib/nixwarden/tenants"
    bwrap: str = "/usr/bin/bwrap"
    # Where the cgroup hierarchies are mounted, and the name of nixwarden's cgroup in each
    # (tenants.limits): <cgroup_root>/<controller>/<cgroup_name>/<principal>/slot<n>.
    cgroup_root: str = "/sys/fs/cgroup"
    cgroup_name: str = "nixwarden"
    # Where root keeps each tenant's filesystem image (tenants.disk): a principal with a
    # disk_quota gets an ext4 image of that size, loop-mounted at its directory. Empty:
    # no images, and the disk quota is only checked when a session starts.
    disk_images: str = ""


@dataclass(frozen=True)
class TrustSettings:
    """`[trust]`: which certified signing keys count (see docs/ca.md).

    A signature counts when a certificate by one of `ca_keys` (OpenSSH public key
    files) certifies its key, no KRL in `krl` revokes it, one of `principals` is
    among its principals (none listed: any principal), its validity spans at most
    `max_validity` seconds and holds now, give or take `clock_skew`; every path
    needs `min_signers` distinct certified signers.
    """

    ca_keys: tuple[str, ...] = ()
    krl: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()
    max_validity: int | None = None
    clock_skew: int = 0
    min_signers: int = 1


@dataclass(frozen=True)
class Activation:
    """`[receive.activation.NAME]`: a program the receive service runs after switching
    profile NAME (argv, absolute program path), killed after `timeout` seconds."""

    command: tuple[str, ...]
    timeout: int = 300


@dataclass(frozen=True)
class ReceiveSettings:
    """`[receive]`: the deploy receive service of this machine (see docs/deploy.md)."""

    user: str = "nixwarden-receive"
    socket: str = "/run/nixwarden/receive.sock"
    signing_key: str = "/var/lib/nixwarden/receive/host.sec"
    profiles_dir: str = "/nix/var/nix/profiles/nixwarden"
    staging_dir: str = "/var/lib/nixwarden/receive/staging"
    provenance: str = "/var/lib/nixwarden/receive/provenance.db"
    idle_timeout: int = 60
    max_connections: int = 16
    activation: Mapping[str, Activation] = field(default_factory=dict)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str = "build"
    user: str | None = None  # deploy: the unix user whose sessions may speak for it
    profiles: tuple[str, ...] = ()  # deploy: the profiles it may set
    protocols: tuple[str, ...] = ("ssh-ng",)
    write: bool = False
    store: str = "tenant"
    max_sessions: int = 4
    allowed_stores: tuple[str, ...] = ()
    # Tenant-mode limits and store settings.
    network: bool = False
    substituters: tuple[str, ...] = ()
    trusted_public_keys: tuple[str, ...] = ()
    max_processes: int = 512
    max_open_files: int = 4096
    nice: int = 10
    session_timeout: int = 3600
    disk_quota: int | None = None
    # Kernel-enforced limits of each session (tenants.limits): bytes, cores, tasks.
    memory: int | None = None
    cpu: float | None = None
    tasks: int | None = None
    limits: str = "enforce"


@dataclass(frozen=True)
class Config:
    path: str
    gate: GateSettings = field(default_factory=GateSettings)
    tenants: TenantSettings = field(default_factory=TenantSettings)
    principals: Mapping[str, Principal] = field(default_factory=dict)
    trust: TrustSettings = field(default_factory=TrustSettings)
    receive: ReceiveSettings = field(default_factory=ReceiveSettings)

    @classmethod
    def from_toml(cls, data: bytes, path: str) -> Config:
        if len(data) > MAX_CONFIG_BYTES:
            raise _error(path, "", f"larger than {MAX_CONFIG_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _error(path, "", f"not UTF-8 (byte {error.start})") from None
        problem = document_problem(text)
        if problem is not None:
            raise _error(path, "", problem)
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise _error(path, "", f"not valid TOML: {escape(str(error))}") from None
        except ValueError as error:  # e.g. an integer of more than 4300 digits
            raise _error(path, "", f"not a usable TOML value: {_shown(str(error))}") from None
        return cls.from_mapping(document, path)

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any], path: str) -> Config:
        reader = _Reader(path)
        reader.only_keys("", document, ("gate", "tenants", "principals", "trust", "receive"))
        gate_table = reader.table("gate", document.get("gate", {}))
        tenants_table = reader.table("tenants", document.get("tenants", {}))
        principals_table = reader.table("principals", document.get("principals", {}))
        principals = {
            name: _principal(reader, name, reader.table(f"principals.{name}", value))
            for name, value in principals_table.items()
        }
        return cls(
            path=path,
            gate=_gate(reader, gate_table),
            tenants=_tenants(reader, tenants_table),
            principals=principals,
            trust=_trust(reader, reader.table("trust", document.get("trust", {}))),
            receive=_receive(reader, reader.table("receive", document.get("receive", {}))),
        )

    def principal(self, name: str) -> Principal:
        try:
            return self.principals[name]
        except KeyError:
            raise _error(self.path, f"principals.{name}", "no such principal") from None


def load(explicit: str | None = None, *, from_environment: bool = True) -> Config:
    path = config_path(explicit, from_environment=from_environment)
    return Config.from_toml(read_bounded(path), path)


def read_bounded(path: str) -> bytes:
    """The config file's bytes: a regular file (a FIFO must not hang the gate), at most
    MAX_CONFIG_BYTES. Symlinks are followed: /etc is often links (NixOS); the file is
    root's, as is its directory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as error:
        raise _error(path, "", f"cannot read: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _error(path, "", "not a regular file")
        return read_at_most(fd, MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise _error(path, "", f"cannot read: {error.strerror}") from None
    finally:
        os.close(fd)


def _error(path: str, key: str, problem: str) -> ConfigError:
    """A ConfigError whose path and key are escaped (`problem` is escaped by its maker)."""
    return ConfigError(escape(path), escape(key), problem)


def _shown(value: object) -> str:
    """A bad value quoted back in an error: escaped, and cut short."""
    text = escape(value if isinstance(value, str) else repr(value))
    if len(text) > MAX_SHOWN_CHARS:
        text = text[:MAX_SHOWN_CHARS] + "…"
    return f"'{text}'"


def document_problem(text: str) -> str | None:
    """What makes `text` too deep or too costly for tomllib, or None.

    One pass that skips strings and comments exactly where TOML does, counting the
    nesting of arrays and inline tables (tomllib recurses once per level and fails with
    RecursionError at a few hundred) and the dots per line (tomllib's work on a dotted
    key grows with the square of its parts). TOML is parsed left to right and stops at
    its first error, so whatever this scan does past an invalid point is never reached
    by tomllib: on every valid prefix the two agree.
    """
    depth = 0
    dots = 0
    line = 1
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return f"line {line}: arrays and inline tables nest deeper than {MAX_NESTING}"
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char == ".":
            dots += 1
            if dots > MAX_DOTS_PER_LINE:
                return f"line {line}: more than {MAX_DOTS_PER_LINE} dots outside strings"
        elif char == "\n":
            line += 1
            dots = 0
        elif char == "#":
            end = text.find("\n", index)
            index = length if end < 0 else end
            continue
        elif char in "\"'":
            end, newlines = _string_end(text, index)
            line += newlines
            index = end
            continue
        index += 1
    return None


def _string_end(text: str, start: int) -> tuple[int, int]:
    """Where the TOML string opening at `start` ends (one past it), and its newlines."""
    quote = text[start]
    length = len(text)
    if text.startswith(quote * 3, start):
        index = start + 3
        while index < length:
            if quote == '"' and text[index] == "\\":
                index += 2
                continue
            if text.startswith(quote * 3, index):
                index += 3
                # Up to two more quotes belong to the content (`"""a""""` is `a"`).
                for _ in range(2):
                    if index < length and text[index] == quote:
                        index += 1
                break
            index += 1
        index = min(index, length)
        return index, text.count("\n", start, index)
    index = start + 1
    while index < length:
        char = text[index]
        if char == "\n":  # an unterminated string: tomllib stops here
            return index, 0
        index += 2 if quote == '"' and char == "\\" else 1
        if char == quote:
            return index, 0
    return length, 0


def parse_size(text: str | int) -> int:
    """`10G`, `512MiB`, `4096` → bytes (ASCII digits only)."""
    return _quantity(text, _SIZE, _SIZE_UNITS, "a size such as 4096, 512M or 10G", str.upper)


def parse_duration(text: str | int) -> int:
    """`90`, `90s`, `30m`, `2h`, `1d`, `52w` → seconds (ASCII digits only)."""
    return _quantity(text, _DURATION, _DURATION_UNITS, "a duration such as 90, 30m or 2h", str)


def _quantity(
    text: str | int,
    pattern: re.Pattern[str],
    units: Mapping[str, int],
    expected: str,
    unit_key: Callable[[str], str],
) -> int:
    """A number, or digits and a unit that `pattern` splits and `units` multiplies."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("must not be negative")
        return text
    match = pattern.fullmatch(str(text))
    if not match:
        raise ValueError(f"expected {expected}")
    return int(match[1]) * units[unit_key(match[2])]


class _Reader:
    """Typed access to a TOML document that names the file and key in every error."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> ConfigError:
        return _error(self.path, key, problem)

    def table(self, key: str, value: object) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {_kind(value)}")
        return value

    def only_keys(self, prefix: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(
                    f"{prefix}.{key}" if prefix else key,
                    f"unknown key (expected one of: {', '.join(allowed)})",
                )

    def boolean(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_kind(value)}")
        return value

    def integer(self, key: str, value: object, minimum: int, maximum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, f"expected an integer, got {_kind(value)}")
        if not minimum <= value <= maximum:
            raise self.fail(
                key, f"expected an integer from {minimum} to {maximum}, got {_shown(value)}"
            )
        return value

    def string(self, key: str, value: object) -> str:
        """Printable text only: no control, format (bidi), separator or other invisible
        character, whatever the setting, so none can split a line or hide in a name."""
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_kind(value)}")
        if len(value) > MAX_STRING_CHARS:
            raise self.fail(key, f"longer than {MAX_STRING_CHARS} characters")
        if not value.isprintable():
            bad = next(char for char in value if not char.isprintable())
            raise self.fail(
                key, f"must not contain control or invisible characters (found {escape(bad)})"
            )
        return value

    def absolute_path(self, key: str, value: object) -> str:
        text = self.string(key, value)
        if not os.path.isabs(text):
            raise self.fail(key, f"expected an absolute path, got {_shown(text)}")
        return os.path.normpath(text)

    def strings(self, key: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of strings, got {_kind(value)}")
        if len(value) > MAX_LIST_ITEMS:
            raise self.fail(key, f"more than {MAX_LIST_ITEMS} items")
        return tuple(self.string(f"{key}[{index}]", item) for index, item in enumerate(value))

    def nix_conf_words(self, key: str, value: object) -> tuple[str, ...]:
        """Items that become one nix.conf value, separated by spaces: each must be one
        word (Nix splits values on whitespace and cuts a line at `#`)."""
        words = self.strings(key, value)
        for index, word in enumerate(words):
            if not word or any(char.isspace() or char == "#" for char in word):
                raise self.fail(
                    f"{key}[{index}]",
                    f"expected one word without spaces or '#', got {_shown(word)}",
                )
        return words

    def choice(self, key: str, value: object, choices: tuple[str, ...]) -> str:
        text = self.string(key, value)
        if text not in choices:
            expected = " or ".join(f'"{choice}"' for choice in choices)
            raise self.fail(key, f"expected {expected}, got {_shown(text)}")
        return text

    def converted(self, key: str, value: object, convert: Any, maximum: int) -> int:
        if not isinstance(value, int | str) or isinstance(value, bool):
            raise self.fail(key, f"expected a number or a string, got {_kind(value)}")
        try:
            result: int = convert(value)
        except ValueError as error:
            raise self.fail(key, f"{error}, got {_shown(value)}") from None
        if result > maximum:
            raise self.fail(key, f"at most {maximum}, got {_shown(value)}")
        return result


def _cores(reader: _Reader, key: str, value: object) -> float:
    """A cap in cores: 0.5 is half of one core's time, 2 is two cores'."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise reader.fail(key, f"expected a number of cores such as 0.5 or 2, got {_kind(value)}")
    cores = float(value)
    if not MIN_CPU <= cores <= MAX_CPU:  # also refuses nan and inf
        raise reader.fail(key, f"expected {MIN_CPU} to {MAX_CPU:g} cores, got {_shown(value)}")
    return cores


def _kind(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a float"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "a table"
        case _:
            return type(value).__name__


def _gate(reader: _Reader, table: Mapping[str, Any]) -> GateSettings:
    keys = ("audit_log", "state_dir", "nix_daemon", "nix_store", "line_mode", "ssl_cert_file")
    reader.only_keys("gate", table, keys)
    values: dict[str, Any] = {}
    for key in ("audit_log", "state_dir", "nix_daemon", "nix_store", "ssl_cert_file"):
        if key in table:
            values[key] = reader.absolute_path(f"gate.{key}", table[key])
    if "line_mode" in table:
        values["line_mode"] = reader.boolean("gate.line_mode", table["line_mode"])
    return GateSettings(**values)


def _tenants(reader: _Reader, table: Mapping[str, Any]) -> TenantSettings:
    reader.only_keys(
        "tenants", table, ("root", "bwrap", "cgroup_root", "cgroup_name", "disk_images")
    )
    values = {
        key: reader.absolute_path(f"tenants.{key}", table[key])
        for key in table
        if key != "cgroup_name"
    }
    if "cgroup_name" in table:
        name = reader.string("tenants.cgroup_name", table["cgroup_name"])
        if not PRINCIPAL_NAME.fullmatch(name):
            raise reader.fail("tenants.cgroup_name", "expected 1-32 of a-z, 0-9, '_' and '-'")
        values["cgroup_name"] = name
    return TenantSettings(**values)


MAX_VALIDITY = 2**31 - 1  # what ssh-keygen -V can express as an interval
MAX_CLOCK_SKEW = 86400
MAX_MIN_SIGNERS = 64


def _trust(reader: _Reader, table: Mapping[str, Any]) -> TrustSettings:
    keys = ("ca_keys", "krl", "principals", "max_validity", "clock_skew", "min_signers")
    reader.only_keys("trust", table, keys)
    values: dict[str, Any] = {}
    for listed in ("ca_keys", "krl"):
        if listed in table:
            value = table[listed]
            items = [value] if isinstance(value, str) else reader.strings(f"trust.{listed}", value)
            values[listed] = tuple(
                reader.absolute_path(f"trust.{listed}", item) for item in dict.fromkeys(items)
            )
    if "principals" in table:
        principals = reader.strings("trust.principals", table["principals"])
        if not all(principals):
            raise reader.fail("trust.principals", "a principal must not be empty")
        values["principals"] = tuple(dict.fromkeys(principals))
    if "max_validity" in table:
        seconds = reader.converted(
            "trust.max_validity", table["max_validity"], parse_duration, MAX_VALIDITY
        )
        if seconds <= 0:
            raise reader.fail("trust.max_validity", "must be longer than 0 seconds")
        values["max_validity"] = seconds
    if "clock_skew" in table:
        values["clock_skew"] = reader.converted(
            "trust.clock_skew", table["clock_skew"], parse_duration, MAX_CLOCK_SKEW
        )
    if "min_signers" in table:
        values["min_signers"] = reader.integer(
            "trust.min_signers", table["min_signers"], 1, MAX_MIN_SIGNERS
        )
    return TrustSettings(**values)


_RECEIVE_PATHS = ("socket", "signing_key", "profiles_dir", "staging_dir", "provenance")


def _receive(reader: _Reader, table: Mapping[str, Any]) -> ReceiveSettings:
    keys = ("user", *_RECEIVE_PATHS, "idle_timeout", "max_connections", "activation")
    reader.only_keys("receive", table, keys)
    values: dict[str, Any] = {}
    if "user" in table:
        user = reader.string("receive.user", table["user"])
        if not UNIX_USER_NAME.fullmatch(user):
            raise reader.fail("receive.user", f"{user!r} is not a unix user name")
        if user == "root":
            raise reader.fail("receive.user", "the receive service never runs as root")
        values["user"] = user
    for key in _RECEIVE_PATHS:
        if key in table:
            values[key] = reader.absolute_path(f"receive.{key}", table[key])
    if "idle_timeout" in table:
        seconds = reader.converted(
            "receive.idle_timeout", table["idle_timeout"], parse_duration, ANY_DURATION
        )
        if not 1 <= seconds <= 3600:
            raise reader.fail("receive.idle_timeout", "expected 1 second to 1 hour")
        values["idle_timeout"] = seconds
    if "max_connections" in table:
        values["max_connections"] = reader.integer(
            "receive.max_connections", table["max_connections"], 1, 1024
        )
    activations = reader.table("receive.activation", table.get("activation", {}))
    values["activation"] = {
        name: _activation(reader, f"receive.activation.{name}", name, value)
        for name, value in activations.items()
    }
    return ReceiveSettings(**values)


def _activation(reader: _Reader, prefix: str, profile: str, value: object) -> Activation:
    if not PROFILE_NAME.fullmatch(profile):
        raise reader.fail(prefix, "a profile name is 1-64 of A-Z a-z 0-9 _ + . -")
    table = reader.table(prefix, value)
    reader.only_keys(prefix, table, ("command", "timeout"))
    if "command" not in table:
        raise reader.fail(f"{prefix}.command", "required (the program and its arguments)")
    command = reader.strings(f"{prefix}.command", table["command"])
    if not command or not os.path.isabs(command[0]):
        raise reader.fail(f"{prefix}.command", "expected [absolute program, arguments…]")
    timeout = 300
    if "timeout" in table:
        timeout = reader.converted(
            f"{prefix}.timeout", table["timeout"], parse_duration, ANY_DURATION
        )
        if not 1 <= timeout <= MAX_ACTIVATION_TIMEOUT:
            raise reader.fail(f"{prefix}.timeout", "expected 1 second to 1 day")
    return Activation(command=command, timeout=timeout)


_PRINCIPAL_KEYS = (
    "role",
    "user",
    "profiles",
    "protocols",
    "write",
    "store",
    "max_sessions",
    "allowed_stores",
    "network",
    "substituters",
    "trusted_public_keys",
    "max_processes",
    "max_open_files",
    "nice",
    "session_timeout",
    "disk_quota",
    "memory",
    "cpu",
    "tasks",
    "limits",
)
_TENANT_ONLY = (
    "network",
    "substituters",
    "trusted_public_keys",
    "max_processes",
    "max_open_files",
    "nice",
    "session_timeout",
    "disk_quota",
    "memory",
    "cpu",
    "tasks",
    "limits",
)
LIMIT_MODES = ("enforce", "best-effort")
MIN_MEMORY = 32 << 20  # below this not even the sandbox and Nix start
MAX_CPU = 1024.0
MIN_CPU = 0.01  # 1 ms of each 100 ms CFS period
_BUILD_ONLY = ("protocols", "write", "store", "allowed_stores", *_TENANT_ONLY)


def _principal(reader: _Reader, name: str, table: Mapping[str, Any]) -> Principal:
    prefix = f"principals.{name}"
    if not PRINCIPAL_NAME.fullmatch(name):
        raise reader.fail(
            prefix, "a principal name is 1-32 of a-z, 0-9, '_' and '-', starting with a letter or _"
        )
    reader.only_keys(prefix, table, _PRINCIPAL_KEYS)
    values: dict[str, Any] = {"name": name}

    def key(k: str) -> str:
        return f"{prefix}.{k}"

    if "role" in table:
        values["role"] = reader.choice(key("role"), table["role"], ROLES)
    if "user" in table:
        user = reader.string(key("user"), table["user"])
        if not UNIX_USER_NAME.fullmatch(user):
            raise reader.fail(key("user"), f"{user!r} is not a unix user name")
        values["user"] = user
    if "profiles" in table:
        profiles = reader.strings(key("profiles"), table["profiles"])
        for index, profile in enumerate(profiles):
            if not PROFILE_NAME.fullmatch(profile):
                raise reader.fail(
                    f"{key('profiles')}[{index}]", "a profile name is 1-64 of A-Z a-z 0-9 _ + . -"
                )
        values["profiles"] = tuple(dict.fromkeys(profiles))
    if "protocols" in table:
        protocols = reader.strings(key("protocols"), table["protocols"])
        for index, protocol in enumerate(protocols):
            reader.choice(f"{key('protocols')}[{index}]", protocol, PROTOCOLS)
        if not protocols:
            raise reader.fail(key("protocols"), 'expected at least one of "ssh-ng", "ssh"')
        values["protocols"] = tuple(dict.fromkeys(protocols))
    for flag in ("write", "network"):
        if flag in table:
            values[flag] = reader.boolean(key(flag), table[flag])
    if "store" in table:
        values["store"] = reader.choice(key("store"), table["store"], STORE_MODES)
    if "max_sessions" in table:
        values["max_sessions"] = reader.integer(key("max_sessions"), table["max_sessions"], 1, 1024)
    if "allowed_stores" in table:
        values["allowed_stores"] = reader.strings(key("allowed_stores"), table["allowed_stores"])
    for listed in ("substituters", "trusted_public_keys"):  # words of the tenant's nix.conf
        if listed in table:
            values[listed] = reader.nix_conf_words(key(listed), table[listed])
    if "max_processes" in table:
        values["max_processes"] = reader.integer(
            key("max_processes"), table["max_processes"], 1, 1 << 22
        )
    if "max_open_files" in table:
        values["max_open_files"] = reader.integer(
            key("max_open_files"), table["max_open_files"], 16, 1 << 20
        )
    if "nice" in table:
        values["nice"] = reader.integer(key("nice"), table["nice"], 0, 19)
    if "session_timeout" in table:
        values["session_timeout"] = reader.converted(
            key("session_timeout"), table["session_timeout"], parse_duration, MAX_DURATION
        )
    if "disk_quota" in table:
        values["disk_quota"] = reader.converted(
            key("disk_quota"), table["disk_quota"], parse_size, MAX_SIZE
        )
    if "memory" in table:
        values["memory"] = reader.converted(key("memory"), table["memory"], parse_size, MAX_SIZE)
        if values["memory"] < MIN_MEMORY:
            raise reader.fail(key("memory"), f"at least {MIN_MEMORY >> 20}M")
    if "cpu" in table:
        values["cpu"] = _cores(reader, key("cpu"), table["cpu"])
    if "tasks" in table:
        values["tasks"] = reader.integer(key("tasks"), table["tasks"], 8, 1 << 22)
    if "limits" in table:
        values["limits"] = reader.choice(key("limits"), table["limits"], LIMIT_MODES)

    principal = Principal(**values)
    if principal.role == "deploy":
        # A deploy principal speaks only the receive protocol: nothing of a build's applies.
        for build_key in _BUILD_ONLY:
            if build_key in table:
                raise reader.fail(key(build_key), 'does not apply to role = "deploy"')
        if principal.user is None:
            raise reader.fail(
                key("user"), 'role = "deploy" needs the unix user whose sessions speak for it'
            )
        return principal
    for deploy_key in ("user", "profiles"):
        if deploy_key in table:
            raise reader.fail(key(deploy_key), 'only applies to role = "deploy"')
    if principal.write and "ssh" not in principal.protocols:
        raise reader.fail(key("write"), 'write = true only matters with "ssh" in protocols')
    if principal.store == "tenant" and principal.allowed_stores:
        raise reader.fail(
            key("allowed_stores"),
            'a tenant principal\'s store is its own; only store = "host" '
            "may let the client choose --store",
        )
    if principal.store == "host":
        for tenant_key in _TENANT_ONLY:
            if tenant_key in table:
                raise reader.fail(key(tenant_key), 'only applies to store = "tenant"')
    return principal
