"""Closures from a store database (a real SQLite file with Nix's schema, in WAL mode)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nixwarden.errors import CommandFailed
from nixwarden.nix import db
from nixwarden.nix.closure import closure as closure_with_fallback

SCHEMA = """
CREATE TABLE ValidPaths (id integer primary key autoincrement not null, path text unique not null,
  hash text not null, registrationTime integer not null, deriver text, narSize integer,
  ultimate integer, sigs text, ca text);
CREATE TABLE Refs (referrer integer not null, reference integer not null,
  primary key (referrer, reference));
"""


def path(n: int) -> str:
    return f"/nix/store/{n:032d}-p{n}".replace("0", "a")


def make_db(tmp_path: Path, edges: dict[int, list[int]]) -> str:
    file = tmp_path / "db.sqlite"
    connection = sqlite3.connect(file)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(SCHEMA)
    nodes = set(edges) | {r for refs in edges.values() for r in refs}
    for node in sorted(nodes):
        connection.execute(
            "INSERT INTO ValidPaths (id, path, hash, registrationTime) VALUES (?, ?, 'h', 0)",
            (node, path(node)),
        )
    for referrer, refs in edges.items():
        for reference in refs:
            connection.execute("INSERT INTO Refs VALUES (?, ?)", (referrer, reference))
    connection.commit()
    connection.close()
    return str(file)


GRAPH = {1: [1, 2, 3], 2: [4], 3: [4, 5], 4: [], 5: [], 6: [5], 7: [7]}


def test_closure_follows_references_and_self_references(tmp_path: Path) -> None:
    file = make_db(tmp_path, GRAPH)
    assert db.closure([path(1)], file) == {path(n) for n in (1, 2, 3, 4, 5)}
    assert db.closure([path(6), path(7)], file) == {path(5), path(6), path(7)}
    assert db.closure([path(4)], file) == {path(4)}


def test_invalid_roots_are_named(tmp_path: Path) -> None:
    file = make_db(tmp_path, GRAPH)
    with pytest.raises(db.InvalidPaths) as caught:
        db.closure([path(1), path(99)], file)
    assert caught.value.paths == (path(99),)
    assert path(99) in str(caught.value)


def test_the_database_is_never_written(tmp_path: Path) -> None:
    file = make_db(tmp_path, GRAPH)
    before = Path(file).read_bytes()
    db.closure([path(1)], file)
    assert Path(file).read_bytes() == before


def test_unreadable_database(tmp_path: Path) -> None:
    with pytest.raises(db.DatabaseUnreadable):
        db.closure([path(1)], str(tmp_path / "missing.sqlite"))
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(db.DatabaseUnreadable):
        db.closure([path(1)], str(other))


def test_explicit_db_does_not_fall_back(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed):
        closure_with_fallback([path(1)], db=str(tmp_path / "missing.sqlite"))


def test_busy_database_is_retried(tmp_path: Path) -> None:
    """An exclusive lock (what a checkpoint or a rollback-journal writer holds) is waited out."""
    file = str(tmp_path / "db.sqlite")
    connection = sqlite3.connect(file, check_same_thread=False)
    connection.executescript(SCHEMA)
    connection.execute(
        "INSERT INTO ValidPaths (id, path, hash, registrationTime) VALUES (1, ?, 'h', 0)",
        (path(1),),
    )
    connection.commit()
    connection.isolation_level = None
    connection.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(0.3, connection.rollback)
    release.start()
    started = time.monotonic()
    try:
        assert db.closure([path(1)], file, busy_timeout=0.05) == {path(1)}
    finally:
        release.join()
        connection.close()
    assert time.monotonic() - started >= 0.25


def test_one_snapshot_while_a_writer_commits(tmp_path: Path) -> None:
    """In WAL mode a reader is not blocked by a writer and sees a consistent closure."""
    file = make_db(tmp_path, {n: [n + 1] for n in range(1, 300)})
    writer = sqlite3.connect(file, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM Refs WHERE referrer = 150")
    try:
        assert len(db.closure([path(1)], file)) == 300  # the uncommitted delete is invisible
    finally:
        writer.execute("COMMIT")
        writer.close()
    assert len(db.closure([path(1)], file)) == 150


@pytest.mark.parametrize(
    ("environ", "reads_database"),
    [
        ({}, True),
        ({"NIX_REMOTE": "daemon"}, True),
        ({"NIX_REMOTE": "local?root=/srv/other"}, False),
        ({"NIX_REMOTE": "ssh://builder"}, False),
        ({"NIX_STATE_DIR": "/srv/state"}, False),
        ({"NIX_STORE_DIR": "/gnu/store"}, False),
    ],
)
def test_closure_reads_the_database_only_for_the_default_store(
    environ: dict[str, str], reads_database: bool
) -> None:
    from nixwarden.nix import closure as nix_closure  # noqa: PLC0415

    assert (nix_closure._store_elsewhere(environ) is None) == reads_database


@given(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)))
def test_roots_are_passed_as_a_json_array(values: list[str]) -> None:
    assert json.loads(db.json_strings(values)) == values
