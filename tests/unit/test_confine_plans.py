"""confine run's plan cache: a plan is used only while every input it came from is the same.

Each test changes one input (the command line, the environment, the working directory,
nixwarden's version or code, an answer the file system gave) and shows the plan is not
used; others show a cache directory or file that another user could have written is
never read. The real command line is in tests/system/test_confine_cache.py.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nixwarden import probes
from nixwarden.confine import launch, plans
from nixwarden.nix import closure

ARGV = ["--no-bin-sh", "--", "/nix/store/" + "a" * 32 + "-app/bin/app", "x"]
BWRAP_ARGV = ["/usr/bin/bwrap", "--unshare-all", "--", "/nix/store/" + "a" * 32 + "-app/bin/app"]


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}


def store(environ: dict[str, str], seen: probes.Seen | None = None, argv: list[str] = ARGV) -> str:
    """Store a plan, as if its computation had begun long after its inputs last changed."""
    return plans.store(
        argv,
        environ,
        BWRAP_ARGV,
        print_only=False,
        seen=seen or [],
        started_ns=time.time_ns(),
        settle_ns=0,
    )


def loaded(environ: dict[str, str], argv: list[str] = ARGV) -> list[str] | None:
    return plans.load(argv, environ)[0]


def why(environ: dict[str, str], argv: list[str] = ARGV) -> str:
    return plans.load(argv, environ)[2]


def test_a_stored_plan_is_used(environ: dict[str, str]) -> None:
    assert loaded(environ) is None and "no cache directory" in why(environ)
    assert store(environ) == ""
    assert loaded(environ) == BWRAP_ARGV and why(environ) == ""
    cache = Path(environ["XDG_CACHE_HOME"]) / "nixwarden" / "confine"
    assert cache.stat().st_mode & 0o777 == 0o700
    (plan,) = cache.iterdir()
    assert plan.stat().st_mode & 0o777 == 0o600 and plan.name.endswith(".plan")


def test_print_only_is_part_of_the_plan(environ: dict[str, str]) -> None:
    plans.store(
        ARGV, environ, BWRAP_ARGV, print_only=True, seen=[], started_ns=time.time_ns(), settle_ns=0
    )
    assert plans.load(ARGV, environ) == (BWRAP_ARGV, True, "")


@pytest.mark.parametrize(
    "other",
    [
        ["--mode", "chroot-only", *ARGV],
        [*ARGV, "y"],
        ARGV[:-1],
        ["--network", *ARGV],
    ],
)
def test_another_command_line_does_not_use_it(environ: dict[str, str], other: list[str]) -> None:
    store(environ)
    assert loaded(environ, other) is None
    assert why(environ, other) == "none for this command line"


@pytest.mark.parametrize("name", plans.ENVIRONMENT)
def test_another_environment_does_not_use_it(environ: dict[str, str], name: str) -> None:
    store(environ)
    changed = dict(environ, **{name: "/elsewhere"})
    assert loaded(changed) is None and why(changed) == "none for this command line"
    assert loaded(dict(environ, UNRELATED="x")) == BWRAP_ARGV  # only what the plan used


def test_the_environment_names_every_variable_that_chooses_the_store() -> None:
    """Every variable that changes which database `closure` reads, or whether it asks
    nix-store instead, is part of the key."""
    for name in (*closure.NIX_ENV, closure.DB_ENV, "PATH", "HOME", "NIX_PATH"):
        env = {name: "/somewhere/else"}
        chooses = closure.database_path(None, env) != closure.database_path(
            None, {}
        ) or closure._store_elsewhere(env) != closure._store_elsewhere({})
        if chooses:
            assert name in plans.ENVIRONMENT, name


def test_another_working_directory_does_not_use_it(
    environ: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store(environ)
    assert loaded(environ) == BWRAP_ARGV
    monkeypatch.chdir("/")
    assert loaded(environ) is None and why(environ) == "none for this command line"


def test_another_version_does_not_use_it(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store(environ)
    monkeypatch.setattr(plans, "__version__", "0.0.0-other")
    assert loaded(environ) is None and why(environ) == "none for this command line"


def test_changed_code_does_not_use_it(
    environ: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "module.py"
    module.write_text("A = 1\n")
    monkeypatch.setattr(plans, "_code_files", lambda: [str(module)])
    store(environ)
    assert loaded(environ) == BWRAP_ARGV
    module.write_text("A = 22\n")
    assert loaded(environ) is None and why(environ) == f"stale: identity {module}"


def test_the_real_code_files_are_nixwardens_own() -> None:
    files = plans._code_files()
    assert plans.__file__ in files and probes.__file__ in files
    assert all("/nixwarden/" in file and file.endswith(".py") for file in files)


def test_a_changed_answer_does_not_use_it(environ: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    link = tmp_path / "result"
    link.symlink_to("a")
    seen: probes.Seen = []
    assert probes.ask(seen, "readlink", str(link)) == "a"
    store(environ, seen)
    assert loaded(environ) == BWRAP_ARGV
    link.unlink()
    link.symlink_to("b")
    assert loaded(environ) is None and why(environ) == f"stale: readlink {link}"
    link.unlink()  # an answer that cannot be had at all is a change too
    assert loaded(environ) is None and why(environ) == f"stale: readlink {link}"


def test_every_question_notices_a_change(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"#!/bin/sh\n")
    target.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(target)
    changes: dict[str, Callable[[], object]] = {
        "lexists": link.unlink,
        "islink": lambda: (link.unlink(), link.write_text("now a file")),
        "readlink": lambda: (link.unlink(), link.symlink_to(tmp_path)),
        "realpath": lambda: (link.unlink(), link.symlink_to(tmp_path)),
        "executable": lambda: target.chmod(0o644),
        "identity": lambda: target.write_bytes(b"#!/bin/sh\nexit 1\n"),
    }
    assert set(changes) | {"database"} == set(probes.QUESTIONS)
    for question, change in changes.items():
        path = str(target if question in ("executable", "identity") else link)
        seen: probes.Seen = []
        probes.ask(seen, question, path)
        assert probes.first_change(seen) is None, question
        change()
        assert probes.first_change(seen) == f"{question} {path}", question
        for item in (link, target):
            if item.is_symlink() or item.exists():
                item.unlink()
        target.write_bytes(b"#!/bin/sh\n")
        target.chmod(0o755)
        link.symlink_to(target)


def test_database_state_changes_with_every_commit(tmp_path: Path) -> None:
    file = str(tmp_path / "db.sqlite")
    writer = sqlite3.connect(file, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x)")
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    seen: probes.Seen = []
    probes.ask(seen, "database", file)
    empty_log = probes.database(file)[1]
    assert empty_log is None  # an empty write-ahead log holds nothing: no log
    for value in range(3):
        writer.execute("INSERT INTO t VALUES (?)", (value,))
        assert probes.first_change(seen) == f"database {file}", value
        seen = []
        probes.ask(seen, "database", file)
    writer.close()  # the last connection checkpoints into the file and removes the log
    assert probes.first_change(seen) == f"database {file}"


def test_a_recent_change_is_not_settled(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.write_text("x")
    seen: probes.Seen = []
    probes.ask(seen, "identity", str(fresh))
    probes.ask(seen, "realpath", str(fresh))  # answers compared by value are always settled
    now = time.time_ns()
    assert probes.unsettled(seen, now) == f"identity {fresh}"
    assert probes.unsettled(seen, now + probes.SETTLE_NS + 10**9) is None
    old = (now - 10 * probes.SETTLE_NS) / 1e9
    os.utime(fresh, (old, old))  # the change time is still now: still unsettled
    assert probes.unsettled(seen[:1], now) is not None


def test_a_plan_from_unsettled_inputs_is_not_stored(
    environ: dict[str, str], tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh"
    fresh.write_text("x")
    seen: probes.Seen = []
    probes.ask(seen, "identity", str(fresh))
    result = plans.store(
        ARGV, environ, BWRAP_ARGV, print_only=False, seen=seen, started_ns=time.time_ns()
    )
    assert result == f"identity {fresh} changed too recently to tell a later change"
    assert loaded(environ) is None


def test_off(environ: dict[str, str]) -> None:
    off = dict(environ, NIXWARDEN_CONFINE_CACHE="off")
    assert store(off) == "the cache is off"
    store(environ)
    assert loaded(off) is None and why(off) == "the cache is off"


def test_cache_directory() -> None:
    assert plans.directory({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == "/c/nixwarden/confine"
    assert plans.directory({"XDG_CACHE_HOME": "rel", "HOME": "/h"}) == "/h/.cache/nixwarden/confine"
    assert plans.directory({"HOME": "/h"}) == "/h/.cache/nixwarden/confine"
    assert plans.directory({}) is None
    assert plans.directory({"HOME": "relative"}) is None


def cache_of(environ: dict[str, str]) -> Path:
    return Path(environ["XDG_CACHE_HOME"]) / "nixwarden" / "confine"


def the_plan(environ: dict[str, str]) -> Path:
    return cache_of(environ) / plans.file_name(plans.key(ARGV, environ))


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o722])
def test_a_directory_others_may_use_is_not_trusted(environ: dict[str, str], mode: int) -> None:
    store(environ)
    cache_of(environ).chmod(mode)
    assert loaded(environ) is None and "is not a private directory" in why(environ)
    assert "is not a private directory" in store(environ)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o622])
def test_a_file_others_may_use_is_not_trusted(environ: dict[str, str], mode: int) -> None:
    store(environ)
    the_plan(environ).chmod(mode)
    assert loaded(environ) is None and "is not a private file" in why(environ)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_file_or_directory_of_another_user_is_not_trusted(environ: dict[str, str]) -> None:
    store(environ)
    os.chown(the_plan(environ), 65534, 65534)
    assert loaded(environ) is None and "is not a private file" in why(environ)
    store(environ)  # replaced by our own
    assert loaded(environ) == BWRAP_ARGV
    os.chown(cache_of(environ), 65534, 65534)
    assert loaded(environ) is None and "is not a private directory" in why(environ)


def test_symlinks_are_not_followed(environ: dict[str, str], tmp_path: Path) -> None:
    store(environ)
    plan = the_plan(environ)
    elsewhere = tmp_path / "elsewhere.plan"
    plan.rename(elsewhere)
    plan.symlink_to(elsewhere)
    assert loaded(environ) is None
    plan.unlink()
    elsewhere.rename(plan)
    assert loaded(environ) == BWRAP_ARGV
    cache = cache_of(environ)
    cache.rename(tmp_path / "real-cache")
    cache.symlink_to(tmp_path / "real-cache")
    assert loaded(environ) is None and "Not a directory" in why(environ)  # O_NOFOLLOW


def test_a_plan_under_another_name_is_not_used(environ: dict[str, str]) -> None:
    """The file repeats its key: a plan copied or linked to another key's name is ignored."""
    other = ["--network", *ARGV]
    store(environ, argv=other)
    source = cache_of(environ) / plans.file_name(plans.key(other, environ))
    os.link(source, the_plan(environ))
    assert loaded(environ) is None and why(environ) == "none for this command line"


@pytest.mark.parametrize("content", [b"", b"\x00garbage", b"\xfb\x00\x00\x00", b"[]"])
def test_a_damaged_plan_is_not_used(environ: dict[str, str], content: bytes) -> None:
    store(environ)
    plan = the_plan(environ)
    plan.write_bytes(content)
    assert loaded(environ) is None


def test_old_plans_are_pruned(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plans, "MAX_PLANS", 3)
    for index in range(5):
        store(environ, argv=[*ARGV, str(index)])
    names = sorted(cache_of(environ).iterdir())
    assert len(names) == 3
    assert loaded(environ, [*ARGV, "4"]) == BWRAP_ARGV


@pytest.mark.parametrize(
    ("info", "pid"),
    [
        (b'{\n    "child-pid": 4242\n}\n', 4242),
        (b'{\n    "child-pid": 17,\n    "cgroup-namespace": 4026531835\n}\n', 17),
        (b'{"child-pid":9}', 9),
        (b"", None),
        (b'{\n    "child-pid": \n}\n', None),
        (b'{\n    "child-pid": -1\n}\n', None),
        (b'{\n    "child-pid": 12345678901\n}\n', None),
        (b'{\n    "other": 1, "child-pid": 5\n}\n', None),
        (b'"child-pid": 5', None),
        (b'{\n    "child-pid" 5\n}\n', None),
    ],
)
def test_bubblewraps_info_names_the_child(info: bytes, pid: int | None) -> None:
    assert launch.child_pid(info) == pid
