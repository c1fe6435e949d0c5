"""A gated builder for the tests, demo and bench: config, principals, users, keys, sshd."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nixwarden.sessions import tmpfiles_line
from testbed import harness

SYSTEM = f"{os.uname().machine}-linux"


def chain_expression(tag: str) -> str:
    """An input-addressed derivation whose input is built first, locally on the client,
    then copied over (`dep_expression` builds that input)."""
    return (
        f'let dep = derivation {{ name = "nwt-dep-{tag}"; system = "{SYSTEM}"; '
        f'builder = "/bin/sh"; args = [ "-c" "echo dep {tag} > $out" ]; }}; in '
        f'derivation {{ name = "nwt-top-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        f'args = [ "-c" "read line < ${{dep}}; echo \\"top on $line\\" > $out" ]; }}'
    )


def dep_expression(expression: str) -> str:
    """The input of a `chain_expression`, on its own."""
    return expression.split(" in ", 1)[0].removeprefix("let dep = ").rstrip(";")


def toml_value(value: object) -> str:
    match value:
        case bool():
            return "true" if value else "false"
        case int():
            return str(value)
        case float():
            return repr(value)  # 0.5, 2.0: TOML floats
        case str():
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        case list() | tuple():
            return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


@dataclass
class Principal:
    name: str
    user: harness.User
    alias: str
    key: Path


@dataclass
class GatedBuilder:
    """One config file, one audit log, principals that each have a user, a key and an alias."""

    sshd: harness.Sshd
    users: harness.Users
    directory: Path
    gate: dict[str, object] = field(default_factory=dict)
    tenants: dict[str, object] = field(default_factory=dict)
    policies: dict[str, dict[str, object]] = field(default_factory=dict)
    principals: dict[str, Principal] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.directory / "config.toml"

    @property
    def audit_log(self) -> Path:
        return self.directory / "log" / "audit.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def tmpfiles(self) -> Path:
        """This builder's tmpfiles.d file (contrib/tmpfiles.d/nixwarden.conf's lines)."""
        return self.directory / "tmpfiles.conf"

    def allow_sessions(self, user: str, group: str) -> None:
        """As an administrator does for each gate user: its line in tmpfiles.d, applied."""
        with self.tmpfiles.open("a") as conf:
            conf.write(tmpfiles_line(str(self.state_dir), user, group) + "\n")
        harness.run(["systemd-tmpfiles", "--create", str(self.tmpfiles)])

    def create_tenant(self, name: str, user: str) -> None:
        """As `builder enroll` will: root creates the tenant's directory, owned by `user`."""
        harness.run(
            [harness.NIXWARDEN, "tenant", "create", name, "--user", user,
             "--config", str(self.config)]
        )  # fmt: skip

    def write_config(self) -> None:
        gate: dict[str, object] = {
            "audit_log": str(self.audit_log),
            "state_dir": str(self.state_dir),
        }
        sections = {"gate": gate | self.gate}
        lines: list[str] = []
        for name, table in sections.items():
            lines.append(f"[{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        if self.tenants:
            lines.append("[tenants]")
            lines += [f"{key} = {toml_value(value)}" for key, value in self.tenants.items()]
        for name, policy in self.policies.items():
            lines.append(f"[principals.{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in policy.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.config.chmod(0o644)

    def add(
        self,
        name: str,
        *,
        groups: Sequence[str] = (harness.NIX_USERS_GROUP,),
        create_tenant: bool = True,
        **policy: object,
    ) -> Principal:
        """A principal with a unix user of its own, set up as the docs say: its session
        state, and for a tenant (with a [tenants] root) its directory."""
        self.policies[name] = dict(policy)
        self.write_config()
        user = self.users.create(groups=(*groups, harness.LOG_GROUP))
        self.allow_sessions(user.name, user.name)
        if create_tenant and policy.get("store", "tenant") == "tenant" and self.tenants:
            self.create_tenant(name, user.name)
        key = self.sshd.client_key(f"{name}-{user.name}")
        line = harness.run(
            [
                harness.NIXWARDEN,
                "authorized-keys-line",
                "--principal",
                name,
                "--key",
                str(key.with_suffix(".pub")),
                "--config",
                str(self.config),
                "--nixwarden",
                harness.NIXWARDEN,
            ],
            env=harness.base_env(),
        ).stdout.decode()
        harness.install_authorized_key(user, line)
        alias = self.sshd.add_alias(f"{name}-{user.name}", user, key)
        principal = Principal(name, user, alias, key)
        self.principals[name] = principal
        return principal

    def ssh(
        self,
        principal: Principal,
        *command: str,
        input: bytes | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        return harness.run(
            self.sshd.ssh_argv(principal.alias, *command),
            env=harness.base_env(),
            input=input,
            check=False,
            timeout=timeout,
        )

    def log_lines(self) -> list[str]:
        if not self.audit_log.exists():
            return []
        return self.audit_log.read_text().splitlines()


@contextlib.contextmanager
def gated_builder(sshd: harness.Sshd, users: harness.Users) -> Iterator[GatedBuilder]:
    directory = harness.world_dir("nwt-gate")
    # As an administrator would: the log exists, appendable by the gate users' group
    # (which the bootstrap creates).
    (directory / "log").mkdir(mode=0o755)
    log = directory / "log" / "audit.jsonl"
    log.touch(mode=0o620)
    log.chmod(0o620)
    shutil.chown(log, group=harness.LOG_GROUP)
    try:
        builder = GatedBuilder(sshd, users, directory)
        builder.write_config()
        # What an administrator installs once (contrib/tmpfiles.d/nixwarden.conf), and
        # root's own line, for running the gate as root in the bench.
        builder.tmpfiles.write_text(
            f"d {builder.state_dir} 0755 root root -\n"
            f"d {builder.state_dir}/sessions 0711 root root -\n"
        )
        builder.allow_sessions("root", "root")
        yield builder
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def own_store_argv(root: Path, *command: str) -> list[str]:
    """`command` in a mount namespace where `/nix` is `root`: a store of its own."""
    bwrap = harness.which("bwrap")
    assert bwrap is not None
    return [bwrap, "--dev-bind", "/", "/", "--bind", str(root), "/nix", "--", *command]


@dataclass(frozen=True)
class ClientStore:
    """A Nix client with a store of its own: `/nix` bound from `root` in a mount namespace."""

    root: Path
    sshd: harness.Sshd

    def argv(self, *command: str) -> list[str]:
        return own_store_argv(self.root, *command)

    def run(
        self, *command: str, check: bool = True, timeout: float = 300, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return harness.run(
            self.argv(*command),
            env=self.sshd.client_env(),
            check=check,
            timeout=timeout,
            input=input,
        )

    def add_text(self, name: str, text: str) -> str:
        source = self.root.parent / f"{name}.src"
        source.write_text(text)
        return self.run("nix-store", "--add", str(source)).stdout.decode().strip()


@contextlib.contextmanager
def client_store(sshd: harness.Sshd) -> Iterator[ClientStore]:
    base = Path(f"/tmp/nwt-client-{os.urandom(4).hex()}")
    root = base / "nix"
    root.mkdir(parents=True)
    try:
        yield ClientStore(root, sshd)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(base)], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
