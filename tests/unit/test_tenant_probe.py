"""The tenant probe's pieces: walks by descriptor, and its answer parsed as untrusted numbers."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.tenants import probe, tree
from nixwarden.tenants.usage import TenantUsage, UsageUnknown, parse_report
from tests.corpus.tenant_states import db_recursive_view, nest, write_schema


@pytest.fixture
def few_descriptors() -> Iterator[None]:
    """A descriptor limit a walk holding one per level would run into."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def opened(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def test_disk_usage_is_du(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "big").write_bytes(b"x" * 100_000)
    (tmp_path / "a" / "b" / "small").write_bytes(b"y")
    os.link(tmp_path / "a" / "big", tmp_path / "a" / "b" / "same")  # counted once
    (tmp_path / "a" / "out").symlink_to("/usr")  # not followed
    os.mkfifo(tmp_path / "a" / "fifo")  # not opened
    du = subprocess.run(["du", "-s", "-x", "-B1", str(tmp_path)], capture_output=True, check=True)
    fd = opened(tmp_path)
    try:
        assert tree.disk_usage(fd) == int(du.stdout.split()[0])
    finally:
        os.close(fd)


def test_deep_trees_are_walked_and_removed_with_two_descriptors(
    tmp_path: Path, few_descriptors: None
) -> None:
    nest(tmp_path, 3000)
    fd = opened(tmp_path)
    try:
        assert tree.disk_usage(fd) >= 3000 * 512
        tree.remove_contents(fd)
    finally:
        os.close(fd)
    assert list(tmp_path.iterdir()) == []


def test_remove_leaves_what_links_point_at(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "file").write_text("kept\n")
    inside = tmp_path / "inside"
    (inside / "store").mkdir(parents=True)
    (inside / "store" / "link").symlink_to(outside / "keep")
    (inside / "store" / "file-link").symlink_to(outside / "keep" / "file")
    os.mkfifo(inside / "fifo")
    fd = opened(inside)
    try:
        tree.remove_contents(fd)
    finally:
        os.close(fd)
    assert list(inside.iterdir()) == []
    assert (outside / "keep" / "file").read_text() == "kept\n"


def test_a_tree_changed_under_the_walk_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    fd = opened(tmp_path / "a")
    cursor = tree._Cursor(fd, None)
    os.close(fd)
    try:
        assert cursor.down("b")
        (tmp_path / "a" / "b").rename(tmp_path / "elsewhere" / "b")  # moved while inside
        with pytest.raises(tree.TreeError, match="changed"):
            cursor.up()
    finally:
        cursor.close()


def test_walks_end_at_their_deadline(tmp_path: Path) -> None:
    nest(tmp_path, 50)
    fd = opened(tmp_path)
    try:
        with pytest.raises(tree.TimedOut):
            tree.disk_usage(fd, deadline=time.monotonic() - 1)
        with pytest.raises(tree.TimedOut):
            tree.remove_contents(fd, deadline=time.monotonic() - 1)
    finally:
        os.close(fd)


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "nix" / "var" / "nix" / "db" / "db.sqlite"  # where tenant_states put it
    path.parent.mkdir(parents=True)
    monkeypatch.setattr(probe, "DATABASE", str(path))
    return path


def test_store_counts_of_a_nix_database(database: Path) -> None:
    write_schema(
        database,
        "CREATE TABLE ValidPaths (id INTEGER PRIMARY KEY, path TEXT, narSize INTEGER);"
        "INSERT INTO ValidPaths (path, narSize) VALUES ('/nix/store/a', 10), ('/nix/store/b', 5);",
    )
    assert probe._store_counts(time.monotonic() + 10) == (2, 15)


def test_no_database_is_an_empty_store(database: Path) -> None:
    assert probe._store_counts(time.monotonic() + 10) == (0, 0)


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
def test_a_database_that_is_not_a_file_is_refused_at_once(database: Path, kind: str) -> None:
    match kind:
        case "fifo":
            os.mkfifo(database)
        case "symlink":
            database.symlink_to("/etc/passwd")
        case "directory":
            database.mkdir()
    with pytest.raises(probe._Failed, match="database"):
        probe._store_counts(time.monotonic() + 10)


def test_an_endless_view_is_interrupted_at_the_deadline(database: Path, tmp_path: Path) -> None:
    db_recursive_view(tmp_path)
    started = time.monotonic()
    with pytest.raises(probe._Failed, match="timeout"):
        probe._store_counts(started + 0.5)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("report", "usage"),
    [
        (b"paths=12 nar=3400 disk=8192\n", TenantUsage(disk_bytes=8192, paths=12, nar_bytes=3400)),
        (b"paths=-1 nar=-1 disk=0\n", TenantUsage(disk_bytes=0, paths=None, nar_bytes=None)),
    ],
)
def test_reports_parse(report: bytes, usage: TenantUsage) -> None:
    assert parse_report(report) == usage


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        (b"", "no answer"),
        (b"paths=1 nar=2 disk=3", "no answer"),  # no newline
        (b"paths=1 nar=2 disk=3\npaths=1 nar=2 disk=3\n", "no answer"),
        (b"paths=1 nar=2 disk=3\n" + b" " * 300, "no answer"),
        (b"paths=-5000000 nar=2 disk=3\n", "malformed"),
        (b"paths=+1 nar=2 disk=3\n", "malformed"),
        (b"paths=01 nar=2 disk=3\n", "malformed"),
        (b"paths=1 nar=2 disk=99999999999999999999\n", "malformed"),
        (b"paths=1 nar=2 disk=9223372036854775807\n", "malformed"),
        (b"paths=1 nar=2.5 disk=3\n", "malformed"),
        (b"paths=\xd9\xa1 nar=2 disk=3\n", "malformed"),  # Arabic-Indic digit one
        (b"paths=\x31 nar=2  disk=3\n", "malformed"),
        (b"disk=3 nar=2 paths=1\n", "malformed"),
        (b"paths=1 nar=2 disk=3 extra=4\n", "malformed"),
        (b"error=timeout\n", "in time"),
        (b"error=database\n", "database could not be read"),
        (b"error=/etc/shadow\n", "malformed"),
    ],
)
def test_malformed_reports_are_refused(report: bytes, reason: str) -> None:
    with pytest.raises(UsageUnknown, match=reason):
        parse_report(report)


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_any_report_is_a_usage_or_usage_unknown(data: bytes) -> None:
    try:
        usage = parse_report(data)
    except UsageUnknown as error:
        assert "\n" not in str(error)
        return
    for value in (usage.disk_bytes, usage.paths, usage.nar_bytes):
        assert value is None or 0 <= value <= 1 << 62


@given(st.tuples(*[st.integers(-1, 1 << 62)] * 3))
def test_reports_round_trip(values: tuple[int, int, int]) -> None:
    paths, nar, disk = values
    usage = parse_report(f"paths={paths} nar={nar} disk={disk}\n".encode())
    assert usage == TenantUsage(
        disk_bytes=None if disk < 0 else disk,
        paths=None if paths < 0 else paths,
        nar_bytes=None if nar < 0 else nar,
    )
