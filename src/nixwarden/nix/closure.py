"""Closures of roots given on a command line: resolve them, then ask the database or Nix.

Roots may be store paths, paths inside them, or symlinks (chains of them) that lead
into the store, like `./result` or `/run/current-system/sw/bin/ls`. As Nix's
`followLinksToStorePath` does, links are followed only until the path is in the
store; from there the store path that contains it is the root.
"""

from __future__ import annotations

import os

from nixwarden.errors import CommandFailed, InvalidInput
from nixwarden.nix import db as store_db
from nixwarden.nix.storepath import STORE_DIR, BadStorePath, Root, in_store, parse_root
from nixwarden.probes import ask

TYPE_CHECKING = False  # not typing's: `nixwarden closure` starts here
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from nixwarden.probes import Seen

MAX_LINKS = 40
# Where to look for the store database instead of Nix's default (it may still fall back).
DB_ENV = "NIXWARDEN_STORE_DB"

# What `nix-store` may need from our environment to find the same store we would read.
NIX_ENV = ("NIX_REMOTE", "NIX_CONF_DIR", "NIX_STATE_DIR", "NIX_STORE_DIR", "NIX_DAEMON_SOCKET_PATH")


class Source:
    """Where a closure came from. Constants rather than an enum: `nixwarden closure`
    would spend a millisecond importing `enum` for these two."""

    DATABASE = "database"
    NIX_STORE = "nix-store -qR"


class Closure:
    """The closure's store paths, and where they came from (a plain class, not a
    dataclass: `nixwarden closure` does not pay for importing `dataclasses`)."""

    __slots__ = ("paths", "source", "why_fallback")

    def __init__(self, paths: frozenset[str], source: str, why_fallback: str = "") -> None:
        self.paths = paths
        self.source = source
        self.why_fallback = why_fallback


def resolve_root(
    text: str, store_dir: str = STORE_DIR, cwd: str | None = None, seen: Seen | None = None
) -> Root:
    """The store path (and the part below it) that `text` names; errors name `text`.

    Every question asked of the file system is recorded in `seen` (when given), so a
    caller can later tell whether resolving again would give the same root.
    """
    if not text:
        raise InvalidInput("root '': empty")
    path = text if os.path.isabs(text) else os.path.join(cwd or os.getcwd(), text)
    for _ in range(MAX_LINKS):
        if in_store(path, store_dir):
            try:
                root = parse_root(path, store_dir)
            except BadStorePath as error:
                raise InvalidInput(f"root {text!r}: {error}") from error
            if root.inner and not ask(seen, "lexists", root.path):
                raise InvalidInput(f"root {text!r}: {root.path} does not exist")
            return root
        path = os.path.normpath(path)
        if ask(seen, "islink", path):
            target = str(ask(seen, "readlink", path))
            path = target if os.path.isabs(target) else os.path.join(os.path.dirname(path), target)
            continue
        if not ask(seen, "lexists", path):
            raise InvalidInput(f"root {text!r}: does not exist (and is not in {store_dir})")
        # A parent may be the link (`./result/bin/hello`): resolve the parents only, so
        # that a link in the last component is still followed one step at a time.
        parent = os.path.dirname(path)
        real_parent = str(ask(seen, "realpath", parent))
        if real_parent == parent:
            break
        path = os.path.join(real_parent, os.path.basename(path))
    else:
        raise InvalidInput(f"root {text!r}: too many levels of symbolic links")
    raise InvalidInput(f"root {text!r}: not in the store {store_dir} (resolves to {path})")


def _store_elsewhere(environ: Mapping[str, str]) -> str | None:
    """The variable that points Nix at a store whose database is not the default one."""
    if environ.get("NIX_REMOTE", "") not in ("", "auto", "daemon", "local"):
        return "NIX_REMOTE"
    for name in ("NIX_STATE_DIR", "NIX_STORE_DIR"):
        if environ.get(name):
            return name
    return None


def nix_store_closure(
    store_paths: Sequence[str], nix_store: str, environ: Mapping[str, str]
) -> frozenset[str]:
    """`nix-store --query --requisites`: the fallback when the database cannot be read."""
    from nixwarden.nix import commands  # noqa: PLC0415 - only on the fallback

    env = {"PATH": "/usr/bin:/bin"} | {k: environ[k] for k in NIX_ENV if k in environ}
    if "HOME" in environ:
        env["HOME"] = environ["HOME"]
    return commands.query_requisites(store_paths, env=env, nix_store=nix_store)


def database_path(db: str | None, environ: Mapping[str, str]) -> str:
    """The database `closure` reads: `db`, else $NIXWARDEN_STORE_DB, else Nix's."""
    return db or environ.get(DB_ENV) or store_db.DEFAULT_DB


def closure(
    store_paths: Iterable[str],
    *,
    db: str | None = None,
    nix_store: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Closure:
    """The closure from the database (`db`; by default $NIXWARDEN_STORE_DB or Nix's);
    falls back to `nix-store -qR` when it cannot be read, unless `db` was given."""
    paths = sorted(set(store_paths))
    if not paths:
        return Closure(frozenset(), Source.DATABASE)
    environ = os.environ if environ is None else environ
    elsewhere = _store_elsewhere(environ)
    if db is None and elsewhere and DB_ENV not in environ:
        why = f"{elsewhere} names another store than {store_db.DEFAULT_DB}'s"
    else:
        try:
            return Closure(store_db.closure(paths, database_path(db, environ)), Source.DATABASE)
        except store_db.DatabaseUnreadable as error:
            if db is not None:
                raise CommandFailed(str(error)) from error
            why = str(error)
    from nixwarden.nix.programs import find_nix_program  # noqa: PLC0415 - only on the fallback

    found = nix_store_closure(paths, nix_store or find_nix_program("nix-store"), environ)
    return Closure(found, Source.NIX_STORE, why)
