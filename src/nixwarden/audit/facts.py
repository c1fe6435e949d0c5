"""Everything the rules look at, gathered once: values only, so rules stay pure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from nixwarden.audit.accounts import Accounts
from nixwarden.audit.authorized_keys import AuthorizedKey, KeyProblem
from nixwarden.audit.machines import Machines
from nixwarden.audit.model import Cut, FileStat
from nixwarden.audit.nixconf import NixConf
from nixwarden.audit.sshd import SshdConfig
from nixwarden.config import Config

# Stats a path of the audited system (following symlinks inside it); None if absent.
Stat = Callable[[str], FileStat | None]


def no_stat(path: str) -> FileStat | None:
    return None


@dataclass(frozen=True)
class KeyFile:
    """One authorized_keys file of one user."""

    user: str
    path: str
    keys: tuple[AuthorizedKey, ...]
    problems: tuple[KeyProblem, ...]


@dataclass(frozen=True)
class NixwardenFacts:
    """One nixwarden configuration: loaded, or why not (`unread`: a bound stopped it)."""

    path: str
    config: Config | None = None
    error: str | None = None
    text: bytes = b""
    unread: bool = False
    # principal -> why its memory/cpu/tasks limits cannot be enforced on this host
    # (tenants.limits), from the audited system's cgroup hierarchies.
    unenforceable: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Facts:
    nix_conf_path: str = "/etc/nix/nix.conf"
    nix_conf: NixConf = field(default_factory=NixConf)
    nix_conf_missing: bool = False
    machines: Machines = field(default_factory=Machines)
    sshd_path: str = "/etc/ssh/sshd_config"
    sshd: SshdConfig | None = None
    accounts: Accounts = field(default_factory=Accounts)
    key_files: tuple[KeyFile, ...] = ()
    stat: Stat = no_stat
    socket_dir_path: str = "/nix/var/nix/daemon-socket"
    # uid the running nix-daemon runs as; None when unknown (an image): assumed root.
    daemon_uid: int | None = None
    # Configuration-related environment of the running nix-daemon(s), when known.
    daemon_env: Mapping[str, str] | None = None
    nix_version: str | None = None  # e.g. "nix (Nix) 2.8.0"
    version_source: str = "nix --version"
    nixwarden: NixwardenFacts | None = None
    # Every configuration a gate line or ForceCommand names (its --config, else the gate's
    # default), by path: the one that gate reads, whatever the audit's --config says.
    gate_configs: Mapping[str, NixwardenFacts] = field(default_factory=dict)
    # What the audit did not read because a bound was reached (reported by rules_limits).
    cuts: tuple[Cut, ...] = ()

    @cached_property
    def _key_files_by_user(self) -> dict[str, tuple[KeyFile, ...]]:
        index: dict[str, list[KeyFile]] = {}
        for key_file in self.key_files:
            index.setdefault(key_file.user, []).append(key_file)
        return {user: tuple(files) for user, files in index.items()}

    def keys_of(self, user: str) -> tuple[KeyFile, ...]:
        return self._key_files_by_user.get(user, ())
