"""Deploy targets reached the way `nixwarden push` reaches them: sshd, the gate, its relay.

Each target of a fleet is a machine of its own: `machine_daemon()` gives it a
countersigning nix-daemon over an empty store of its own (a bubblewrap namespace),
and `ReceiveHost.own_store` runs its receive service over the same store. (Two receive
services importing the same paths into one store at once trip Nix 2.8's daemon: a
path that turns valid during AddToStoreNar leaves the NAR unread on the connection.)

`gate_on(host, sshd)` gives a `ReceiveHost` a `[gate]` table (its own audit log and
session state, set up as an administrator would: see gate_setup.py); `add_deployer`
then makes a unix user for a principal, enrols a fresh SSH key with the gate's
authorized_keys line for the host's config, and returns the ssh alias to push to.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nixwarden.sessions import tmpfiles_line
from testbed import harness
from testbed.deploy_setup import CountersignDaemon, ReceiveHost


@dataclass(frozen=True)
class Deployer:
    principal: str
    user: harness.User
    alias: str
    key: Path


def gate_on(host: ReceiveHost) -> None:
    directory = host.directory / "gate"
    (directory / "log").mkdir(mode=0o755, parents=True)
    log = directory / "log" / "audit.jsonl"
    log.touch(mode=0o620)
    log.chmod(0o620)
    shutil.chown(log, group=harness.LOG_GROUP)
    # As an administrator installs it (contrib/tmpfiles.d/nixwarden.conf): root's, not
    # writable by others; each deployer gets its own directory in add_deployer.
    sessions = directory / "state" / "sessions"
    sessions.mkdir(parents=True)
    (directory / "state").chmod(0o755)
    sessions.chmod(0o711)
    directory.chmod(0o755)
    host.gate = {"audit_log": str(log), "state_dir": str(directory / "state")}
    host.write_config()


def audit_lines(host: ReceiveHost) -> list[str]:
    log = Path(str(host.gate["audit_log"]))
    return log.read_text().splitlines() if log.exists() else []


def add_deployer(
    host: ReceiveHost,
    sshd: harness.Sshd,
    principal: str,
    *,
    profiles: Sequence[str] = ("web",),
    role: str = "deploy",
) -> Deployer:
    """A principal reachable over SSH; its user is in the log group only (not nix-users)."""
    user = host.users.create(groups=(harness.LOG_GROUP,))
    if host.gate:
        state_dir = str(host.gate["state_dir"])
        tmpfiles = Path(state_dir).parent / "tmpfiles.conf"
        with tmpfiles.open("a") as conf:
            conf.write(tmpfiles_line(state_dir, user.name, user.name) + "\n")
        harness.run(["systemd-tmpfiles", "--create", str(tmpfiles)])
    if role == "deploy":
        host.add_deployer(principal, profiles=profiles, user=user)
    else:
        host.principals[principal] = {"role": role}
    host.write_config()
    key = sshd.client_key(f"{principal}-{user.name}")
    line = harness.run(
        [
            harness.NIXWARDEN,
            "authorized-keys-line",
            *("--principal", principal),
            *("--key", str(key.with_suffix(".pub"))),
            *("--config", str(host.config)),
            *("--nixwarden", harness.NIXWARDEN),
        ],
        env=harness.base_env(),
    ).stdout.decode()
    harness.install_authorized_key(user, line)
    alias = sshd.add_alias(f"{principal}-{user.name}", user, key)
    return Deployer(principal, user, alias, key)


@contextlib.contextmanager
def machine_daemon(directory: Path) -> Iterator[CountersignDaemon]:
    """A countersigning nix-daemon over an empty store of its own, under `directory`."""
    store = directory / "store" / "nix"
    store.mkdir(parents=True)
    daemon = CountersignDaemon(
        directory / "daemon", f"nwt-machine-{secrets.token_hex(3)}-1", own_store=store
    )
    daemon.directory.mkdir()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        subprocess.run(["chmod", "-R", "u+w", str(store)], check=False)
        shutil.rmtree(directory, ignore_errors=True)
