"""What `client add-builder` and `remove-builder` must make true (pure).

Three entries, all for the same NAME: the builder's host key in known_hosts under
`HostKeyAlias NAME` (pinned: never learnt on first use), an ssh_config `Host NAME` block
that uses only that key and only the named identity, and a line in Nix's machines file,
which is what makes Nix use the builder: it is written last, and removed first.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from nixwarden.errors import InvalidInput
from nixwarden.provision import blocks, steps
from nixwarden.provision.layout import ClientLayout

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[?[0-9A-Fa-f:.]{2,45}\]?")
SSH_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
SYSTEM = re.compile(r"[a-z0-9_]+-[a-z0-9_]+")
FEATURE = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
PROTOCOLS = ("ssh-ng", "ssh")


@dataclass(frozen=True)
class BuilderEntry:
    name: str
    host: str
    host_key: tuple[str, str]  # type, base64
    systems: tuple[str, ...]
    port: int = 22
    user: str | None = None
    identity: str | None = None
    max_jobs: int = 1
    speed_factor: int = 1
    features: tuple[str, ...] = ()
    mandatory: tuple[str, ...] = ()
    protocol: str = "ssh-ng"

    def __post_init__(self) -> None:
        checks = [
            ("NAME", self.name, NAME),
            ("--host", self.host.strip("[]"), HOST),
            *(("--systems", system, SYSTEM) for system in self.systems),
            *(("--features", feature, FEATURE) for feature in self.features),
            *(("--mandatory-features", feature, FEATURE) for feature in self.mandatory),
        ]
        if self.user is not None:
            checks.append(("--user", self.user, SSH_USER))
        for option, value, pattern in checks:
            if not pattern.fullmatch(value):
                raise InvalidInput(f"{option} {value!r}: not a safe value for ssh_config or Nix")
        if not self.systems:
            raise InvalidInput("--systems: at least one system, such as x86_64-linux")
        if not 0 < self.port < 65536:
            raise InvalidInput(f"--port {self.port}: not a TCP port")
        if self.max_jobs < 1 or self.speed_factor < 1:
            raise InvalidInput("--max-jobs and --speed-factor are whole numbers from 1")
        if self.protocol not in PROTOCOLS:
            raise InvalidInput(f"--protocol {self.protocol!r}: ssh-ng or ssh")

    @property
    def uri(self) -> str:
        return f"{self.protocol}://{self.name}"

    @property
    def host_key_line(self) -> str:
        return f"{self.host_key[0]} {self.host_key[1]}"


@dataclass(frozen=True)
class FileState:
    content: bytes | None
    owner: tuple[int, str | None, str | None] | None  # (mode, owner, group) when it exists


@dataclass(frozen=True)
class ClientWorld:
    files: Mapping[str, FileState]  # path -> what is there


def block_id(name: str) -> str:
    return f"builder {name}"


def known_hosts_lines(entry: BuilderEntry) -> list[str]:
    return [f"{entry.name} {entry.host_key_line}"]


def ssh_config_lines(entry: BuilderEntry, layout: ClientLayout) -> list[str]:
    lines = [
        f"Host {entry.name}",
        f"    HostName {entry.host}",
        f"    Port {entry.port}",
    ]
    if entry.user:
        lines.append(f"    User {entry.user}")
    # The pinned key, under the name Nix also writes it under (the machines line's host-key
    # column); no other known_hosts file counts, and ssh never adds to them.
    lines += [
        f"    HostKeyAlias {entry.name}",
        f"    UserKnownHostsFile {layout.known_hosts}",
        f"    GlobalKnownHostsFile {layout.known_hosts}",
        "    StrictHostKeyChecking yes",
        "    UpdateHostKeys no",
        "    CheckHostIP no",
    ]
    if entry.identity:
        lines.append(f"    IdentityFile {entry.identity}")
    lines += [
        "    IdentitiesOnly yes",
        "    BatchMode yes",
        "    ForwardAgent no",
        "    ForwardX11 no",
        "    ClearAllForwardings yes",
        "    RequestTTY no",
        # Ends the Host block: what follows in the file applies to every host, as before.
        "Host *",
    ]
    return lines


def machines_line(entry: BuilderEntry) -> str:
    host_key = base64.b64encode(entry.host_key_line.encode()).decode()
    fields = [
        entry.uri,
        ",".join(entry.systems),
        entry.identity or "-",
        str(entry.max_jobs),
        str(entry.speed_factor),
        ",".join(entry.features) or "-",
        ",".join(entry.mandatory) or "-",
        host_key,
    ]
    return " ".join(fields)


def _text(world: ClientWorld, path: str) -> str:
    state = world.files.get(path)
    if state is None or state.content is None:
        return ""
    return blocks.decode(state.content, path)


def _file(
    world: ClientWorld, layout: ClientLayout, path: str, text: str, new_mode: int
) -> steps.File:
    """Our edit of `path`: an existing file keeps its mode and owners."""
    state = world.files.get(path)
    if state is not None and state.owner is not None:
        mode, owner, group = state.owner
    elif layout.system:
        mode, owner, group = 0o644, "root", "root"
    else:
        mode, owner, group = new_mode, None, None
    return steps.File(path, text.encode(), mode, owner, group)


def _directory(layout: ClientLayout, path: str, private: bool) -> steps.Directory:
    if layout.system:
        return steps.Directory(path, 0o755, exact=False)
    return steps.Directory(path, 0o700 if private else 0o755, None, None, exact=False)


def _refuse_foreign(world: ClientWorld, layout: ClientLayout, entry: BuilderEntry) -> None:
    """Lines not ours that would also speak for NAME: another known key for it (ssh accepts
    any of them, so the pin would not be one), or a second machines line."""
    for number, line in blocks.foreign_lines(_text(world, layout.known_hosts), layout.known_hosts):
        if _names_host(line, entry.name):
            raise InvalidInput(
                f"{layout.known_hosts}:{number}: a key for {entry.name} that nixwarden did not "
                "pin; remove that line (or choose another NAME) so only the pinned key counts"
            )
    for number, line in blocks.foreign_lines(_text(world, layout.machines), layout.machines):
        uri = line.split("#", 1)[0].split()
        if uri and re.fullmatch(rf"(ssh|ssh-ng)://([^@/]*@)?{re.escape(entry.name)}", uri[0]):
            raise InvalidInput(
                f"{layout.machines}:{number}: {entry.name} already has a line nixwarden did "
                "not write; remove it or choose another NAME"
            )


def _names_host(line: str, name: str) -> bool:
    """Whether a known_hosts line applies to `name` (plain, wildcard or hashed patterns)."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return False
    if fields[0] == "@revoked":
        return False  # a revocation only takes keys away
    if fields[0].startswith("@"):
        fields = fields[1:]
    if not fields:
        return False
    for pattern in fields[0].split(","):
        if pattern.startswith("|1|"):
            salt, _, digest = pattern[3:].partition("|")
            try:
                mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
                if hmac.compare_digest(mac, base64.b64decode(digest)):
                    return True
            except ValueError:
                continue
        elif not pattern.startswith("!") and fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def add_plan(layout: ClientLayout, world: ClientWorld, entry: BuilderEntry) -> list[steps.Step]:
    _refuse_foreign(world, layout, entry)
    known = blocks.replace(
        _text(world, layout.known_hosts),
        layout.known_hosts,
        block_id(entry.name),
        known_hosts_lines(entry),
    )
    config = blocks.replace(
        _text(world, layout.ssh_config),
        layout.ssh_config,
        block_id(entry.name),
        ssh_config_lines(entry, layout),
        first=True,  # ssh_config: the first value obtained wins
    )
    machines = blocks.replace(
        _text(world, layout.machines),
        layout.machines,
        block_id(entry.name),
        [machines_line(entry)],
    )
    plan: list[steps.Step] = []
    for path, private in (
        (layout.known_hosts, True),
        (layout.ssh_config, True),
        (layout.machines, False),
    ):
        parent = os.path.dirname(path)
        directory = _directory(layout, parent, private)
        if directory not in plan:
            plan.append(directory)
    plan += [
        _file(world, layout, layout.known_hosts, known, 0o600),
        _file(world, layout, layout.ssh_config, config, 0o600),
        # Last: Nix uses the builder once this line exists.
        _file(world, layout, layout.machines, machines, 0o644),
    ]
    return plan


def remove_plan(layout: ClientLayout, world: ClientWorld, name: str) -> list[steps.Step]:
    if not NAME.fullmatch(name):
        raise InvalidInput(f"NAME {name!r}: not a builder name")
    plan: list[steps.Step] = []
    # First the machines line (Nix stops using the builder), then what it relied on.
    for path in (layout.machines, layout.ssh_config, layout.known_hosts):
        state = world.files.get(path)
        if state is None or state.content is None:
            continue
        text = _text(world, path)
        new = blocks.replace(text, path, block_id(name), None)
        if new != text:
            plan.append(_file(world, layout, path, new, 0o644))
    return plan


@dataclass(frozen=True)
class Configured:
    """A builder as its machines line describes it (for check-builder)."""

    uri: str
    identity: str | None
    host_key_base64: str | None


def configured(layout: ClientLayout, world: ClientWorld, name: str) -> Configured:
    text = _text(world, layout.machines)
    block = blocks.find(text, layout.machines, block_id(name))
    if block is None or not block.body:
        raise InvalidInput(
            f"no builder {name} in {layout.machines} (nixwarden client add-builder {name} …)"
        )
    fields = block.body[0].split()
    if len(fields) < 8:
        raise InvalidInput(f"{layout.machines}: the line of {name} is not one nixwarden wrote")
    return Configured(
        uri=fields[0],
        identity=None if fields[2] == "-" else fields[2],
        host_key_base64=None if fields[7] == "-" else fields[7],
    )
