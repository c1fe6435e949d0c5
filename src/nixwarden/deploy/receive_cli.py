"""`nixwarden receive-daemon --config FILE`: run the receive service in the foreground.

Before it accepts a connection it checks everything it owns: it runs as `[receive] user`
(never root), the countersigning key is a regular file of its own that no one else may
read, the staging and profiles directories are its own and not writable by others, the
provenance database opens, and `[trust]` names CA keys that load. Any problem is one
line and exit 2 (bad configuration or files) before the socket exists.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat

from nixwarden import config as config_module
from nixwarden.ca import load
from nixwarden.cliutil import parser
from nixwarden.config import Config
from nixwarden.deploy import provenance
from nixwarden.deploy.receive import Service, listening_socket, log, serve
from nixwarden.deploy.store import TargetStore
from nixwarden.display import escape
from nixwarden.errors import ConfigError, FormatError, InvalidInput, Refused
from nixwarden.nix import commands
from nixwarden.trust.keys import SecretKey, decode_secret_key

MAX_KEY_FILE = 64 << 10


def main(command: str, argv: list[str]) -> int:
    cli = parser(
        command,
        "Run the deploy receive service in the foreground (systemd: contrib/systemd/).\n"
        "It listens on [receive] socket (or the one systemd passes), verifies each push\n"
        "against [trust] before any NAR byte, imports through the nix-daemon as its own\n"
        "untrusted user with its countersignature, switches profiles and records provenance.",
    )
    cli.add_argument("--config", help="configuration file (default: /etc/nixwarden/config.toml)")
    args = cli.parse_args(argv)
    config = config_module.load(args.config)
    service = prepare(config)
    settings = config.receive
    listener = listening_socket(settings.socket)
    log(f"listening on {settings.socket} as {settings.user}; key {service.key.name}")
    problem = service.store.database_problem()
    if problem is not None:
        log(f"the store database cannot be read now ({escape(problem)}): validity from the daemon")
    serve(service, listener)
    return 0


def prepare(config: Config) -> Service:
    """Check the user, the key, the directories, the database and `[trust]`; the service."""
    settings = config.receive
    user = _running_user()
    if os.geteuid() == 0:
        raise Refused(f"the receive service never runs as root; run it as {settings.user}")
    if user != settings.user:
        raise Refused(f"running as {user}, but [receive] user is {settings.user}")
    key = read_signing_key(settings.signing_key)
    _own_directory(settings.staging_dir, mode=0o700, create=True)
    _remove_leftovers(settings.staging_dir)
    _own_directory(settings.profiles_dir, mode=None, create=True)
    provenance.create(settings.provenance)
    if not config.trust.ca_keys:
        raise ConfigError(config.path, "trust.ca_keys", "the receive service needs CA keys")
    load.ca_keys(config.trust.ca_keys)
    load.krls(config.trust.krl)
    deployers = [p.name for p in config.principals.values() if p.role == "deploy" and p.user]
    if not deployers:
        log('warning: no principal has role = "deploy" and a user: every push is refused')
    env = commands.nix_env()
    # Through the daemon: the service's user cannot write the store itself, so Nix should
    # not have to guess (NIX_DAEMON_SOCKET_PATH, when set, names which daemon).
    env.setdefault("NIX_REMOTE", "daemon")
    return Service(config=config, key=key, store=TargetStore.from_environment(env), env=env)


def _running_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"#{os.geteuid()}"


def read_signing_key(path: str) -> SecretKey:
    """The countersigning key: our own regular file, readable by us alone."""
    data = load.read_file(path, MAX_KEY_FILE, secret=True)  # no symlink, not group/other
    if os.lstat(path).st_uid != os.geteuid():
        raise InvalidInput(f"{path}: not owned by the service's user")
    try:
        return decode_secret_key(data)
    except FormatError as error:
        raise FormatError(f"{path}: {error}") from None


def _own_directory(path: str, *, mode: int | None, create: bool) -> None:
    """`path` is a directory (not a symlink) of ours, writable by no one else; `mode`
    is enforced when given."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise InvalidInput(f"{path}: does not exist") from None
        try:
            os.mkdir(path, 0o700 if mode is None else mode)
        except OSError as error:
            raise InvalidInput(f"{path}: cannot create: {error.strerror}") from None
        status = os.lstat(path)
    if not stat.S_ISDIR(status.st_mode):
        raise InvalidInput(f"{path}: not a directory")
    if status.st_uid != os.geteuid():
        raise InvalidInput(f"{path}: not owned by the service's user")
    if mode is not None and stat.S_IMODE(status.st_mode) != mode:
        os.chmod(path, mode)
    elif stat.S_IMODE(status.st_mode) & 0o022:
        raise InvalidInput(f"{path}: writable by others than the service's user")


def _remove_leftovers(staging: str) -> None:
    """Staging directories of pushes a crash interrupted (never imported: nothing else)."""
    for name in os.listdir(staging):
        if name.startswith("push-"):
            shutil.rmtree(os.path.join(staging, name), ignore_errors=True)
