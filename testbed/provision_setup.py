"""A builder and a client set up by nixwarden's own provisioning commands, beside the machine's.

Everything `builder init` and `client add-builder` write goes under a fresh `--root`
(a directory under /run, whose parents sshd's StrictModes accepts); the sshd is the
testbed's own, whose config Includes the root's sshd_config.d; the groups are throwaway
ones (`nwt…`); the principals' unix users are real and named `nwt…`, so the testbed
sshd's AllowUsers admits them. Nothing of the machine's /etc/ssh, /etc/nixwarden,
/etc/nix or sshd is read or touched.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nixwarden.gate import compiled
from nixwarden.provision import builder_plan, execute
from nixwarden.provision.layout import BuilderLayout, ClientLayout
from testbed import harness

Entry = tuple[object, ...]


@dataclass
class ProvisionBed:
    root: Path
    sshd: harness.Sshd
    gate_group: str
    log_group: str
    principals: list[str] = field(default_factory=list)

    @property
    def client_root(self) -> Path:
        return self.root / "client"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "nixwarden" / "config.toml"

    @property
    def daemon_nix_conf(self) -> Path:
        return harness.STATE / "nix-daemon-conf" / "nix.conf"

    def builder_options(self) -> list[str]:
        return [
            "--root", str(self.root),
            "--sshd-config", str(self.sshd.config),
            "--sshd-pid-file", str(self.sshd.pid_file),
            "--nix-conf", str(self.daemon_nix_conf),
            "--gate-group", self.gate_group,
            "--log-group", self.log_group,
        ]  # fmt: skip

    def client_options(self) -> list[str]:
        return ["--root", str(self.client_root)]

    def layout(self) -> BuilderLayout:
        return BuilderLayout.from_options(
            str(self.root),
            sshd_config=str(self.sshd.config),
            sshd_pid_file=str(self.sshd.pid_file),
            nix_conf=str(self.daemon_nix_conf),
            gate_group=self.gate_group,
            log_group=self.log_group,
        )

    def client_layout(self) -> ClientLayout:
        return ClientLayout.from_options(
            root=str(self.client_root),
            ssh_config=None,
            known_hosts=None,
            machines=None,
            system=True,
            home="/root",
        )

    def new_principal(self) -> str:
        """A fresh principal name, which is also its unix user's (`nwt…`)."""
        name = f"{harness.USER_PREFIX}{secrets.token_hex(3)}"
        self.principals.append(name)
        return name

    def nixwarden(
        self, *argv: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[bytes]:
        return harness.run(
            [harness.NIXWARDEN, *argv], env=harness.base_env(), check=check, timeout=timeout
        )

    def builder(
        self, action: str, *argv: str, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return self.nixwarden("builder", action, *argv, *self.builder_options(), check=check)

    def client(
        self, action: str, *argv: str, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return self.nixwarden("client", action, *argv, *self.client_options(), check=check)

    def host_key_file(self) -> Path:
        return self.sshd.directory / "ssh_host_ed25519_key.pub"

    def add_builder_argv(
        self, name: str, user: str, identity: Path, protocol: str = "ssh-ng"
    ) -> list[str]:
        return [
            name, "--host", "127.0.0.1", "--port", str(self.sshd.port), "--user", user,
            "--host-key", str(self.host_key_file()), "--identity", str(identity),
            "--systems", f"{os.uname().machine}-linux", "--protocol", protocol,
        ]  # fmt: skip

    def client_ssh_env(self) -> dict[str, str]:
        """What a client's Nix needs to use the files `client add-builder` wrote under the root
        (the machine's own ssh reads /etc/ssh/ssh_config.d instead)."""
        ssh_config = self.client_layout().ssh_config
        return harness.base_env(
            NIX_SSHOPTS=f"-F {ssh_config}", NIX_CONF_DIR=str(harness.client_nix_conf_dir())
        )

    def ssh_login(
        self, user: str, identity: Path, *command: str
    ) -> subprocess.CompletedProcess[bytes]:
        """A login as `user` with `identity`, the host key pinned to the testbed's."""
        argv = [
            "ssh", "-F", "none", "-T", "-p", str(self.sshd.port), "-i", str(identity),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.sshd.known_hosts}", "-o", "ConnectTimeout=10",
            "-l", user, "127.0.0.1", *command,
        ]  # fmt: skip
        return harness.run(argv, env=harness.base_env(), check=False, timeout=60)

    def cleanup(self) -> None:
        for entry in pwd.getpwall():
            marker = builder_plan.USER_COMMENT.format("")
            if (
                entry.pw_gecos.startswith(marker)
                and entry.pw_gecos[len(marker) :] in self.principals
            ):
                subprocess.run(["pkill", "-KILL", "-u", entry.pw_name], check=False)
                subprocess.run(
                    ["userdel", "--remove", entry.pw_name], check=False, capture_output=True
                )
        for group in (self.gate_group, self.log_group):
            subprocess.run(["groupdel", group], check=False, capture_output=True)
        unlock_tree(self.root)
        subprocess.run(["chmod", "-R", "u+w", str(self.root)], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def unlock_tree(root: Path) -> None:
    """Clear the append-only attribute `builder init` sets on the audit log, so the tree can go."""
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    execute.set_append_only(fd, False)
                finally:
                    os.close(fd)


@contextlib.contextmanager
def provision_bed() -> Iterator[ProvisionBed]:
    root = harness.private_dir("nwt-prov")
    tag = secrets.token_hex(3)
    try:
        with harness.started_sshd(include=f"{root}/etc/ssh/sshd_config.d/*.conf") as sshd:
            bed = ProvisionBed(root, sshd, f"nwtg{tag}", f"nwtl{tag}")
            try:
                yield bed
            finally:
                bed.cleanup()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- what a run leaves behind ------------------------------------------------------------------


def _names(info: os.stat_result) -> tuple[str, str]:
    import grp  # noqa: PLC0415

    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = f"uid {info.st_uid}"
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = f"gid {info.st_gid}"
    return owner, group


def tree_state(top: Path, *, mtimes: bool = False) -> dict[str, Entry]:
    """Every entry under `top`: type, mode, owner and group names, and the bytes of a file
    (of a compiled policy, whether it is current: its bytes record the config's inode)."""
    state: dict[str, Entry] = {}
    if not top.exists():
        return state
    for directory, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            relative = os.path.relpath(path, top)
            kind = stat.S_IFMT(info.st_mode)
            content: object = None
            if stat.S_ISREG(info.st_mode):
                if name.endswith(".compiled") and name.startswith("."):
                    config = os.path.join(directory, name[1 : -len(".compiled")])
                    content = ("compiled, current:", compiled.read(config) is not None)
                else:
                    content = Path(path).read_bytes()
            elif stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            entry: Entry = (kind, stat.S_IMODE(info.st_mode), *_names(info), content)
            if mtimes and not stat.S_ISLNK(info.st_mode):
                entry += (info.st_mtime_ns,)
            state[relative] = entry
    return state


def users_state(names: Sequence[str], groups: Sequence[str]) -> dict[str, object]:
    """The unix users (fields but their uid, homes included) and the groups' members."""
    import grp  # noqa: PLC0415

    state: dict[str, object] = {}
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            state[name] = None
            continue
        member_of = sorted(g.gr_name for g in grp.getgrall() if name in g.gr_mem)
        state[name] = (
            entry.pw_gecos,
            entry.pw_shell,
            entry.pw_dir,
            grp.getgrgid(entry.pw_gid).gr_name,
            member_of,
            tree_state(Path(entry.pw_dir)),
        )
    for group in groups:
        try:
            state[f"group {group}"] = sorted(grp.getgrnam(group).gr_mem)
        except KeyError:
            state[f"group {group}"] = None
    return state


def differences(got: object, want: object, where: str = "") -> list[str]:
    """Where two states differ, for an assertion message a person can read."""
    if isinstance(got, dict) and isinstance(want, dict):
        found = []
        for key in sorted(set(got) | set(want), key=str):
            found += differences(got.get(key), want.get(key), f"{where}/{key}")
        return found
    if isinstance(got, tuple | list) and isinstance(want, tuple | list) and len(got) == len(want):
        found = []
        for index, (a, b) in enumerate(zip(got, want, strict=True)):
            found += differences(a, b, f"{where}[{index}]")
        return found
    return [] if got == want else [f"{where}: {got!r:.300} != {want!r:.300}"]


def same(got: object, want: object) -> None:
    found = differences(got, want)
    if found:
        raise AssertionError("\n".join(found[:20]))
