"""A deploy target for the tests and demo: a team CA, a receive service, its own nix-daemon.

The receive service imports through a nix-daemon that trusts its countersigning key.
The harness's shared daemon must not learn a test key (other tests rely on exactly its
settings), so each `CountersignDaemon` is a second nix-daemon on the same store, with
its own nix.conf (the harness's settings plus `trusted-public-keys` = a fresh key) and
its own socket, which the service reaches through NIX_DAEMON_SOCKET_PATH. Its socket's
directory is open to nix-users only, as Debian's is.

A `ReceiveHost` is one configured machine: a service user (in nix-users, nothing else),
its state directory (0700: the countersigning key, staging, profiles, provenance), a
config with `[trust]`, `[receive]` and deploy principals, and the running service.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed import harness
from testbed.gate_setup import own_store_argv, toml_value

DEPLOY_PRINCIPAL_SCOPE = "deploy"


def nixwarden(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return harness.run([harness.NIXWARDEN, *arguments], env=harness.base_env(), check=check)


# --- the team CA ------------------------------------------------------------------------


@dataclass(frozen=True)
class CertifiedKey:
    """A person's Nix signing key and the CA's certificate for it."""

    name: str
    secret: Path
    public: Path
    certificate: Path
    serial: int

    def blob(self) -> bytes:
        return base64.b64decode(self.certificate.read_text().split()[1])


@dataclass
class TeamCa:
    directory: Path
    serial: int = 0

    @property
    def secret(self) -> Path:
        return self.directory / "team-ca"

    @property
    def public(self) -> Path:
        return self.directory / "team-ca.pub"

    @property
    def krl(self) -> Path:
        return self.directory / "revoked.krl"

    def create(self) -> None:
        self.directory.mkdir(mode=0o755, parents=True)
        nixwarden("ca", "init", "--secret", str(self.secret), "--public", str(self.public))
        # A KRL that revokes nothing issued: the target lists it from the start, and
        # revoking later only rewrites it (the service reads it for every push).
        self.revoke(serial=2**63)

    def certify(
        self,
        person: str,
        *,
        principals: Sequence[str] = (DEPLOY_PRINCIPAL_SCOPE,),
        validity: str = "-5m:+1h",
    ) -> CertifiedKey:
        self.serial += 1
        name = f"{person}-{secrets.token_hex(3)}-1"
        secret, public = self.directory / f"{name}.sec", self.directory / f"{name}.pub"
        nixwarden(
            "key", "generate", "--name", name, "--secret", str(secret), "--public", str(public)
        )
        certificate = self.directory / f"{name}-cert.pub"
        nixwarden(
            *("ca", "issue", "--ca", str(self.secret), "--key", str(public)),
            *("--serial", str(self.serial), "--principal", ",".join(principals)),
            *("--validity", validity, "--out", str(certificate)),
        )
        return CertifiedKey(name, secret, public, certificate, self.serial)

    def revoke(self, *, serial: int | None = None, key_id: str | None = None) -> None:
        arguments = ["ca", "revoke", "--ca-public", str(self.public), "--krl", str(self.krl)]
        if serial is not None:
            arguments += ["--serial", str(serial)]
        if key_id is not None:
            arguments += ["--key-id", key_id]
        nixwarden(*arguments)
        self.krl.chmod(0o644)


# --- a nix-daemon that trusts the countersigning key -------------------------------------


@dataclass
class CountersignDaemon:
    directory: Path
    key_name: str
    process: subprocess.Popen[bytes] | None = None
    own_store: Path | None = None  # serve the store bound at /nix from here, not the host's

    @property
    def secret(self) -> Path:
        return self.directory / "countersign.sec"

    @property
    def public(self) -> Path:
        return self.directory / "countersign.pub"

    @property
    def socket(self) -> Path:
        return self.directory / "socket" / "socket"

    @property
    def log(self) -> Path:
        return self.directory / "nix-daemon.log"

    def env(self, **extra: str) -> dict[str, str]:
        """What a Nix client needs to reach this daemon (and only it)."""
        return harness.base_env(
            NIX_REMOTE="daemon", NIX_DAEMON_SOCKET_PATH=str(self.socket), **extra
        )

    def start(self) -> None:
        nixwarden(
            *("key", "generate", "--name", self.key_name),
            *("--secret", str(self.secret), "--public", str(self.public)),
        )
        conf = self.directory / "conf"
        conf.mkdir(mode=0o755)
        (conf / "nix.conf").write_text(
            harness.DAEMON_NIX_CONF + f"trusted-public-keys = {self.public.read_text().strip()}\n"
        )
        socket_dir = self.socket.parent
        socket_dir.mkdir(mode=0o750)
        shutil.chown(socket_dir, group=harness.NIX_USERS_GROUP)
        daemon = harness.which("nix-daemon")
        assert daemon is not None
        with open(self.log, "ab") as log:
            argv = [daemon]
            if self.own_store is not None:
                # Without /nix/var/nix, the "auto" store of each of the daemon's workers
                # is the daemon at NIX_DAEMON_SOCKET_PATH, itself: a fork bomb.
                (self.own_store / "var" / "nix").mkdir(parents=True, exist_ok=True)
                argv = own_store_argv(self.own_store, daemon)
            self.process = subprocess.Popen(
                argv,
                env=harness.base_env(
                    NIX_CONF_DIR=str(conf), NIX_DAEMON_SOCKET_PATH=str(self.socket)
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        harness.wait_for(self.socket.exists, "the countersigning nix-daemon's socket")

    def stop(self) -> None:
        if self.process is not None:
            harness.kill_tree(self.process)
            self.process.wait(timeout=10)
            self.process = None


@contextlib.contextmanager
def countersign_daemon() -> Iterator[CountersignDaemon]:
    directory = harness.STATE / f"deploy-{secrets.token_hex(4)}"
    directory.mkdir(mode=0o755, parents=True)
    daemon = CountersignDaemon(directory, f"nwt-receive-{secrets.token_hex(3)}-1")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


# --- the receive host ---------------------------------------------------------------------


@dataclass
class ReceiveHost:
    """A configured target: its service user, state, config and running receive service."""

    users: harness.Users
    daemon: CountersignDaemon
    ca: TeamCa
    directory: Path
    service_user: harness.User
    gate: dict[str, object] = field(default_factory=dict)
    trust: dict[str, object] = field(default_factory=dict)
    receive: dict[str, object] = field(default_factory=dict)
    activation: dict[str, dict[str, object]] = field(default_factory=dict)
    principals: dict[str, dict[str, object]] = field(default_factory=dict)
    deployers: dict[str, harness.User] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    own_store: Path | None = None  # as its daemon's (see CountersignDaemon.own_store)

    @property
    def config(self) -> Path:
        return self.directory / "config.toml"

    @property
    def state(self) -> Path:
        return self.directory / "state"

    @property
    def signing_key(self) -> Path:
        return self.state / "host.sec"

    @property
    def staging(self) -> Path:
        return self.state / "staging"

    @property
    def profiles(self) -> Path:
        return self.state / "profiles"

    @property
    def provenance(self) -> Path:
        return self.state / "provenance.db"

    @property
    def socket(self) -> Path:
        return self.directory / "run" / "receive.sock"

    @property
    def log(self) -> Path:
        return self.directory / "receive.log"

    def add_deployer(
        self,
        principal: str,
        *,
        profiles: Sequence[str] = ("web",),
        user: harness.User | None = None,
    ) -> harness.User:
        """A unix user in no group (neither nix-users nor trusted) for `principal`."""
        user = user or self.users.create(groups=())
        self.principals[principal] = {
            "role": "deploy",
            "user": user.name,
            "profiles": list(profiles),
        }
        self.deployers[principal] = user
        return user

    def write_config(self) -> None:
        tables: dict[str, dict[str, object]] = {"gate": self.gate} if self.gate else {}
        tables |= {
            "trust": {
                "ca_keys": [str(self.ca.public)],
                "krl": [str(self.ca.krl)],
                "principals": [DEPLOY_PRINCIPAL_SCOPE],
            }
            | self.trust,
            "receive": {
                "user": self.service_user.name,
                "socket": str(self.socket),
                "signing_key": str(self.signing_key),
                "profiles_dir": str(self.profiles),
                "staging_dir": str(self.staging),
                "provenance": str(self.provenance),
                "idle_timeout": "20s",
            }
            | self.receive,
        }
        lines: list[str] = []
        for name, table in tables.items():
            lines.append(f"[{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        for profile, activation in self.activation.items():
            lines.append(f"[receive.activation.{profile}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in activation.items()]
        for name, policy in self.principals.items():
            lines.append(f"[principals.{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in policy.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.config.chmod(0o644)

    def start(self) -> None:
        self.write_config()
        # A socket file left by a service stopped before (restart) would satisfy the wait
        # below before the new one listens: connecting then is refused.
        self.socket.unlink(missing_ok=True)
        setpriv = harness.which("setpriv")
        assert setpriv is not None
        user = self.service_user
        with open(self.log, "ab") as log:
            argv = [
                setpriv,
                f"--reuid={user.uid}",
                f"--regid={user.gid}",
                "--init-groups",
                harness.NIXWARDEN,
                "receive-daemon",
                "--config",
                str(self.config),
            ]
            if self.own_store is not None:
                argv = own_store_argv(self.own_store, *argv)
            self.process = subprocess.Popen(
                argv,
                env=self.daemon.env(HOME=str(user.home), USER=user.name, LOGNAME=user.name),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        harness.wait_for(
            lambda: self.socket.exists() or self.process is None or self.process.poll() is not None,
            "the receive service's socket",
        )
        if not self.socket.exists():
            raise AssertionError(f"the receive service did not start:\n{self.log_text()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                harness.kill_tree(self.process)
                self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        """Until the service's log has a line containing `text` (a session it finished)."""
        try:
            harness.wait_for(lambda: text in self.log_text(), f"{text!r} in the log", timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; the log ends:\n{self.log_text()[-3000:]}") from None

    # --- what a test observes ---------------------------------------------------------

    def invalid(self, paths: Sequence[str]) -> set[str]:
        """Those of `paths` the host store does not hold (asked of the daemon, as root)."""
        if not paths:
            return set()
        result = harness.run(
            ["nix-store", "--check-validity", "--print-invalid", *paths], env=self.daemon.env()
        )
        return set(result.stdout.decode().split())

    def profile_state(self) -> dict[str, str]:
        """Every entry of the profiles directory and where it points: the profiles'
        generations exactly (locks excluded)."""
        if not self.profiles.exists():
            return {}
        return {
            entry.name: os.readlink(entry)
            for entry in sorted(self.profiles.iterdir())
            if entry.is_symlink()
        }

    def generations(self, profile: str) -> str:
        return harness.run(
            ["nix-env", "--profile", str(self.profiles / profile), "--list-generations"],
            env=self.daemon.env(),
        ).stdout.decode()

    def provenance_json(
        self, *arguments: str, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return nixwarden("provenance", "--db", str(self.provenance), *arguments, check=check)

    def clean_up_profiles(self) -> None:
        """Drop the test's profiles, so the daemon's GC roots to them dangle (and go)."""
        shutil.rmtree(self.profiles, ignore_errors=True)


@contextlib.contextmanager
def receive_host(
    users: harness.Users,
    daemon: CountersignDaemon,
    ca: TeamCa,
    *,
    staging_size: int | None = None,
    trust: dict[str, object] | None = None,
    activation: dict[str, dict[str, object]] | None = None,
) -> Iterator[ReceiveHost]:
    """A target, not yet started: add deployers, then `start()`. With `staging_size`,
    the staging directory is a tmpfs of that many bytes (a disk that fills up)."""
    directory = harness.world_dir("nwt-receive")
    service_user = users.create(groups=(harness.NIX_USERS_GROUP,))
    host = ReceiveHost(
        users,
        daemon,
        ca,
        directory,
        service_user,
        trust=dict(trust or {}),
        activation=dict(activation or {}),
    )
    host.state.mkdir(mode=0o700)
    (directory / "run").mkdir(mode=0o755)
    shutil.copy(daemon.secret, host.signing_key)
    host.signing_key.chmod(0o600)
    for path in (host.state, host.signing_key, directory / "run"):
        os.chown(path, service_user.uid, service_user.gid)
    mounted = False
    try:
        if staging_size is not None:
            host.staging.mkdir(mode=0o700)
            harness.run(
                [
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={staging_size},mode=0700,uid={service_user.uid},gid={service_user.gid}",
                    "tmpfs",
                    str(host.staging),
                ]
            )
            mounted = True
        yield host
    finally:
        host.stop()
        if mounted:
            harness.run(["umount", str(host.staging)], check=False)
        host.clean_up_profiles()
        shutil.rmtree(directory, ignore_errors=True)
