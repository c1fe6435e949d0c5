"""Hostile tenant states: what a tenant can leave in its own directory, one per attack.

Everything under <tenants.root>/<name>/ is written by the tenant from inside its
sandbox (or, for files only the gate writes, by its unix user), so host-side code
must survive each of these. `STATES` maps each name to the reason it is hostile and
to the function that plants it in a tenant's directory (as root; the caller then
gives everything to the tenant's unix user). tests/system/test_tenant_corpus.py
holds what each must do to nixwarden, and checks that both lists name the same states.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HOST_DB = "/nix/var/nix/db/db.sqlite"
DEEP = 3000  # deeper than Python's recursion limit, and than a descriptor per level allows
HOARD = 20 << 20


@dataclass(frozen=True)
class State:
    reason: str
    plant: Callable[[Path], None]


def _db(base: Path) -> Path:
    directory = base / "nix" / "var" / "nix" / "db"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / "db.sqlite"


def write_schema(path: Path, script: str) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.executescript(script)
        connection.commit()
    finally:
        connection.close()


def db_fifo(base: Path) -> None:
    os.mkfifo(_db(base))


def db_symlink_shadow(base: Path) -> None:
    _db(base).symlink_to("/etc/shadow")


def db_symlink_host_db(base: Path) -> None:
    _db(base).symlink_to(HOST_DB)


def db_recursive_view(base: Path) -> None:
    write_schema(
        _db(base),
        "CREATE VIEW ValidPaths AS WITH RECURSIVE r(n) AS "
        "(SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n AS id, n AS narSize FROM r;",
    )


def db_negative_size(base: Path) -> None:
    write_schema(
        _db(base),
        "CREATE TABLE ValidPaths (id INTEGER PRIMARY KEY, path TEXT, narSize INTEGER);"
        "INSERT INTO ValidPaths (path, narSize) VALUES ('/nix/store/a', -5000000);",
    )


def db_symlink_oracle(base: Path) -> None:
    # The test points it at a host file that exists and at one that does not.
    _db(base).symlink_to("/etc/shadow")


def last_use_fifo(base: Path) -> None:
    os.mkfifo(base / "last-use")


def last_use_symlink(base: Path) -> None:
    (base / "last-use").symlink_to("/etc/passwd")


def etc_fifo(base: Path) -> None:
    conf = base / "etc" / "nix" / "nix.conf"
    conf.unlink(missing_ok=True)
    os.mkfifo(conf)


def nest(top: Path, depth: int) -> None:
    """`depth` directories, each in the last, made by descriptor: the path outgrows PATH_MAX."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def deep_tree(base: Path) -> None:
    nest(base / "nix", DEEP)


def hoard_outside_store(base: Path) -> None:
    hoard = base / "nix" / "var" / "hoard"
    hoard.parent.mkdir(parents=True, exist_ok=True)
    hoard.write_bytes(b"\0" * HOARD)


def tmp_litter(base: Path) -> None:
    deep = base / "tmp" / "left" / "deep"
    (deep / "er").mkdir(parents=True)
    (deep / "big").write_bytes(b"\0" * HOARD)
    (base / "tmp" / "left" / "link").symlink_to("/etc/passwd")
    (base / "tmp" / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(base / "tmp" / "fifo")
    (deep / "er").chmod(0o500)
    deep.chmod(0o000)
    (base / "tmp").chmod(0o000)  # from inside, where the tenant owns its /tmp


STATES: dict[str, State] = {
    "tenant_db_fifo": State("the store database is a FIFO: opening it blocks for ever", db_fifo),
    "tenant_db_symlink_shadow": State(
        "the store database is a symlink to /etc/shadow, which root would open", db_symlink_shadow
    ),
    "tenant_db_symlink_host_db": State(
        "the store database is a symlink to the host's: its paths would pass for the tenant's",
        db_symlink_host_db,
    ),
    "tenant_db_recursive_view": State(
        "ValidPaths is a view over a recursive query that never ends", db_recursive_view
    ),
    "tenant_db_negative_size": State("NAR sizes that add up to a negative total", db_negative_size),
    "tenant_db_symlink_oracle": State(
        "the store database is a symlink to a host path: the reply must not say if it exists",
        db_symlink_oracle,
    ),
    "tenant_last_use_fifo": State(
        "last-use is a FIFO: opening it to write blocks for ever", last_use_fifo
    ),
    "tenant_last_use_symlink": State(
        "last-use is a symlink to a host file the gate would touch", last_use_symlink
    ),
    "tenant_etc_fifo": State(
        "the generated nix.conf was replaced by a FIFO: reading it blocks for ever", etc_fifo
    ),
    "tenant_deep_tree": State(
        f"directories nested {DEEP} deep: recursion and a descriptor per level both give out",
        deep_tree,
    ),
    "tenant_hoard_outside_store": State(
        "20 MiB left under /nix outside the store, which counting NAR sizes never sees",
        hoard_outside_store,
    ),
    "tenant_tmp_litter": State(
        "20 MiB, a FIFO, a symlink out and unreadable directories in an unreadable /tmp",
        tmp_litter,
    ),
}
