"""The harness: real nix-daemon, real sshd on loopback, throwaway unix users.

Everything here drives the real tools as root. A missing prerequisite raises
`PrerequisiteMissing`; the test suite fails on it when NIXWARDEN_REQUIRE_SYSTEM=1 (as in
CI) and skips otherwise (tests/conftest.py), the demo and bench print it and stop.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed import requirements
from testbed.errors import PrerequisiteMissing, SetupConflict, Undeclared

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
NIXWARDEN = str(VENV_BIN / "nixwarden")

# Shared, machine-wide state of the harness (the nix-daemon outlives one test run,
# like a system daemon would; everything else is per run and removed).
STATE = Path("/run/nixwarden-test")
DAEMON_SOCKET = Path("/nix/var/nix/daemon-socket/socket")
USER_PREFIX = "nwt"
# The machine's part (groups, directories, packages) is in requirements.py, and
# scripts/bootstrap.sh creates it; `require_system` runs the bootstrap's own check.
BOOTSTRAP = REPO / "scripts" / "bootstrap.sh"

TOOLS = requirements.HARNESS_TOOLS
# Tests, demo and bench name the groups as harness.*_GROUP.
NIX_USERS_GROUP = requirements.NIX_USERS_GROUP
TRUSTED_GROUP = requirements.TRUSTED_GROUP
LOG_GROUP = requirements.LOG_GROUP
TOOL_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")

DAEMON_NIX_CONF = f"""\
build-users-group = {requirements.BUILD_USERS_GROUP}
sandbox = false
trusted-users = root @{TRUSTED_GROUP}
require-sigs = true
substituters =
experimental-features = nix-command
"""

CLIENT_NIX_CONF = """\
sandbox = false
build-users-group =
substituters =
experimental-features = nix-command
builders-use-substitutes = false
connect-timeout = 10
"""


def need(condition: bool, what: str) -> None:
    """Raise `PrerequisiteMissing` naming `what` unless `condition` holds."""
    if not condition:
        raise PrerequisiteMissing(what)


def which(tool: str) -> str | None:
    """Where `tool` is installed; only for tools declared in requirements.TOOLS."""
    if tool not in requirements.TOOLS:
        raise Undeclared(f"tool {tool}")
    for directory in TOOL_DIRS:
        candidate = os.path.join(directory, tool)
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(tool)


def require_system(tools: Sequence[str] = TOOLS) -> None:
    """Linux, root, and every piece of machine state the bootstrap states (it checks)."""
    need(sys.platform.startswith("linux"), "Linux")
    need(os.geteuid() == 0, "running as root")
    check = run([str(BOOTSTRAP), "--check"], check=False, timeout=120)
    missing = check.stderr.decode(errors="replace").strip().replace("\n", "; ")
    need(check.returncode == 0, f"{missing or 'scripts/bootstrap.sh --check failed'}")
    for tool in tools:
        need(which(tool) is not None, f"{tool} on PATH")
    need(os.access(NIXWARDEN, os.X_OK), f"{NIXWARDEN} (run make deps)")


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    input: bytes | None = None,
    timeout: float = 300,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        list(argv),
        env=env,
        input=input,
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"stdout: {result.stdout.decode(errors='replace')[-4000:]}\n"
            f"stderr: {result.stderr.decode(errors='replace')[-4000:]}"
        )
    return result


def base_env(**extra: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def world_dir(prefix: str) -> Path:
    """A fresh temporary directory that unprivileged test users can traverse."""
    path = Path(f"/tmp/{prefix}-{secrets.token_hex(4)}")
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    return path


# --- nix-daemon ---------------------------------------------------------------------------


def _socket_alive(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class NixDaemon:
    conf_dir: Path
    log: Path

    @property
    def socket(self) -> Path:
        return DAEMON_SOCKET


def ensure_nix_daemon() -> NixDaemon:
    """Make sure a nix-daemon with the harness's nix.conf serves the default socket."""
    STATE.mkdir(mode=0o755, parents=True, exist_ok=True)
    conf_dir = STATE / "nix-daemon-conf"
    conf_dir.mkdir(mode=0o755, exist_ok=True)
    _publish(conf_dir / "nix.conf", DAEMON_NIX_CONF)
    pidfile = STATE / "nix-daemon.pid"
    log = STATE / "nix-daemon.log"

    ours = False
    if pidfile.exists():
        with contextlib.suppress(ValueError):
            ours = _pid_alive(int(pidfile.read_text()))
    if ours and _socket_alive(DAEMON_SOCKET):
        return NixDaemon(conf_dir, log)
    if _socket_alive(DAEMON_SOCKET):
        raise SetupConflict(
            "a nix-daemon the harness did not start serves the default socket; its "
            f"trusted-users are unknown. Stop it, or give it the settings in {conf_dir}/nix.conf"
        )
    with contextlib.suppress(FileNotFoundError):
        DAEMON_SOCKET.unlink()
    daemon = which("nix-daemon")
    assert daemon is not None
    with open(log, "ab") as log_handle:
        process = subprocess.Popen(
            [daemon],
            env=base_env(NIX_CONF_DIR=str(conf_dir)),
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=log_handle,
            start_new_session=True,
        )
    pidfile.write_text(str(process.pid))
    wait_for(lambda: _socket_alive(DAEMON_SOCKET), "nix-daemon's socket")
    return NixDaemon(conf_dir, log)


def _publish(path: Path, text: str) -> None:
    """Write `path` by renaming a complete file over it, and only if it differs: other
    test processes (and a running nix-daemon) read it at any moment."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    temporary.write_text(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def client_nix_conf_dir() -> Path:
    conf_dir = STATE / "nix-client-conf"
    conf_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    _publish(conf_dir / "nix.conf", CLIENT_NIX_CONF)
    return conf_dir


# --- unix users ---------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path

    @classmethod
    def lookup(cls, name: str) -> User:
        entry = pwd.getpwnam(name)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


class Users:
    """Creates throwaway users and removes them, their processes and homes afterwards."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def create(self, *, groups: Sequence[str] = (NIX_USERS_GROUP,), shell: str = "/bin/sh") -> User:
        for group in groups:
            if group not in requirements.GROUPS:
                raise Undeclared(f"group {group}")
        name = f"{USER_PREFIX}{secrets.token_hex(3)}"
        argv = ["useradd", "--create-home", "--shell", shell, "--user-group"]
        if groups:
            argv += ["--groups", ",".join(groups)]
        run([*argv, name])
        self.created.append(name)
        # A locked password ("!") makes sshd refuse the account without PAM; "*" is
        # "no password" without the lock.
        run(["usermod", "-p", "*", name])
        return User.lookup(name)

    def cleanup(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["pkill", "-KILL", "-u", name], check=False, capture_output=True)
            time.sleep(0.05)
            subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
        self.created.clear()


# --- sshd ---------------------------------------------------------------------------------


@dataclass
class Sshd:
    """An sshd of the harness's own on a loopback port, with its own host key and log."""

    directory: Path
    port: int
    # An `Include` glob read before everything else, as Debian's sshd_config reads
    # /etc/ssh/sshd_config.d/*.conf (a builder's drop-ins under test go there).
    include: str | None = None
    process: subprocess.Popen[bytes] | None = None
    host_public_key: str = ""
    _aliases: dict[str, str] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def ssh_config(self) -> Path:
        return self.directory / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def config(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def pid_file(self) -> Path:
        return self.directory / "sshd.pid"

    def start(self) -> None:
        host_key = self.directory / "ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
        self.host_public_key = (self.directory / "ssh_host_ed25519_key.pub").read_text().strip()
        config = self.directory / "sshd_config"
        include = f"Include {self.include}\n" if self.include else ""
        config.write_text(
            include
            + f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {self.directory}/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
StrictModes yes
ExposeAuthInfo yes
AllowUsers {USER_PREFIX}*
LogLevel VERBOSE
MaxStartups 64:30:128
MaxSessions 64
"""
        )
        key_type, key_b64 = self.host_public_key.split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key_type} {key_b64}\n")
        self.ssh_config.write_text("")
        sshd = which("sshd")
        assert sshd is not None
        run([sshd, "-t", "-f", str(config)])
        with open(self.log, "ab") as log_handle:
            self.process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],
                env=base_env(),
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=log_handle,
                start_new_session=True,
            )
        wait_for(self._accepting, f"sshd on 127.0.0.1:{self.port}")

    def _accepting(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def client_key(self, name: str) -> Path:
        """A fresh client key pair (private key path; `.pub` beside it)."""
        key = self.directory / f"id_{name}"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)])
        return key

    def add_alias(self, alias: str, user: User, key: Path) -> str:
        """A Host entry in the client ssh_config; returns the alias to use in store URLs."""
        self._aliases[alias] = (
            f"Host {alias}\n"
            f"  HostName 127.0.0.1\n"
            f"  Port {self.port}\n"
            f"  User {user.name}\n"
            f"  IdentityFile {key}\n"
            f"  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            f"  StrictHostKeyChecking yes\n"
            f"  BatchMode yes\n"
            f"  ConnectTimeout 10\n"
            f"  LogLevel ERROR\n"
        )
        self.ssh_config.write_text("".join(self._aliases.values()))
        return alias

    def ssh_argv(self, alias: str, *command: str) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), "-T", alias, *command]

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment for a client-side `nix` that reaches this sshd through the aliases."""
        return base_env(
            NIX_SSHOPTS=f"-F {self.ssh_config}",
            NIX_CONF_DIR=str(client_nix_conf_dir()),
            **extra,
        )


def install_authorized_key(user: User, line: str) -> None:
    ssh_dir = user.home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(line.rstrip("\n") + "\n")
    keys.chmod(0o600)
    os.chown(ssh_dir, user.uid, user.gid)
    os.chown(keys, user.uid, user.gid)


def private_dir(prefix: str) -> Path:
    """A fresh directory whose every parent is root's and writable by root alone (under
    /run, not /tmp), so sshd's StrictModes accepts files in it."""
    base = STATE / "trees"
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = base / f"{prefix}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def started_sshd(include: str | None = None) -> Iterator[Sshd]:
    directory = world_dir("nwt-sshd")
    sshd = Sshd(directory=directory, port=free_port(), include=include)
    try:
        sshd.start()
        yield sshd
    finally:
        sshd.stop()
        shutil.rmtree(directory, ignore_errors=True)


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
