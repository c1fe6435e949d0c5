"""`confine run`'s plan cache with the real tool: used when nothing changed, and never when
any input of the plan changed (the store database, a root's link chain, a PATH entry,
a --package, the options, the host's /bin/sh).

Each test runs a command twice (the plan is stored, then used) and then changes one
input; the next run must not use the plan, and what the program sees shows it. The
runs print the cache's decisions on stderr (NIXWARDEN_DEBUG=1).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from nixwarden import probes
from nixwarden.confine import binsh
from testbed import confine_store, harness
from testbed.confine_store import Programs

NIXWARDEN = harness.NIXWARDEN
USED = "nixwarden: debug: confine run: cached plan used"
STORED = "nixwarden: debug: confine run: plan stored"


@dataclass(frozen=True)
class World:
    programs: Programs
    root: Path  # scratch space: links, PATH directories, the cache
    env: dict[str, str]  # a private cache; the quiet database copy
    changing_db: str  # a second copy, for the test that writes to it


def copy_database(target: Path) -> str:
    """A snapshot of the store database in rollback-journal mode, which nobody else writes."""
    source = sqlite3.connect("file:/nix/var/nix/db/db.sqlite?mode=ro", uri=True)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")
    finally:
        copy.close()
        source.close()
    return str(target)


@pytest.fixture(scope="module")
def world(nix_daemon: harness.NixDaemon, tmp_path_factory: pytest.TempPathFactory) -> World:
    programs = confine_store.shared_programs()
    root = tmp_path_factory.mktemp("confine-cache")
    env = dict(
        confine_store.ENV,
        XDG_CACHE_HOME=str(root / "cache"),
        NIXWARDEN_STORE_DB=copy_database(root / "quiet.sqlite"),
        NIXWARDEN_DEBUG="1",
    )
    changing = copy_database(root / "changing.sqlite")
    # A plan is stored only when its files last changed more than two seconds before.
    time.sleep(probes.SETTLE_NS / 1e9 + 0.2)
    return World(programs, root, env, changing)


def confine(
    world: World, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return harness.run(
        [NIXWARDEN, "confine", "run", *args], env=env or world.env, check=False, cwd=world.root
    )


def notes(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [line for line in result.stderr.decode().splitlines() if "debug: confine run" in line]


def store_listing(result: subprocess.CompletedProcess[bytes]) -> set[str]:
    assert result.returncode == 0, result.stderr
    return {f"/nix/store/{name}" for name in result.stdout.decode().split()}


def twice(world: World, *args: str, env: dict[str, str] | None = None) -> set[str]:
    """Run twice: the first run stores its plan, the second uses it; both see the same."""
    first = confine(world, *args, env=env)
    assert STORED in notes(first), first.stderr
    second = confine(world, *args, env=env)
    assert notes(second) == [USED], second.stderr
    assert store_listing(first) == store_listing(second)
    return store_listing(second)


def test_a_cached_plan_runs_what_a_fresh_one_does(world: World) -> None:
    p = world.programs
    command = ("--no-bin-sh", "--", f"{p.app}/bin/sh", "-c", "ls /nix/store")
    assert twice(world, *command) == confine_store.nix_store_closure(p.app)
    exit_code = ("--", f"{p.app}/bin/sh", "-c", "exit 7")
    assert [confine(world, *exit_code).returncode for _ in range(2)] == [7, 7]
    assert notes(confine(world, *exit_code)) == [USED]
    printed = confine(world, "--print-argv", *command)
    assert notes(printed) != [USED] and notes(confine(world, "--print-argv", *command)) == [USED]
    assert printed.stdout.startswith(b"/usr/bin/bwrap ")


def test_other_options_are_another_plan(world: World) -> None:
    p = world.programs
    command = ("--", f"{p.app}/bin/sh", "-c", "ls /nix/store")
    twice(world, *command)
    other = confine(world, "--mode", "chroot-only", *command)
    assert notes(other)[0].endswith("no cached plan used: none for this command line")


def test_a_changed_database_is_not_used(world: World) -> None:
    """A new reference in the store database: the closure grows, the plan is stale."""
    p = world.programs
    env = dict(world.env, NIXWARDEN_STORE_DB=world.changing_db)
    command = ("--no-bin-sh", "--", f"{p.app}/bin/sh", "-c", "ls /nix/store")
    assert twice(world, *command, env=env) == confine_store.nix_store_closure(p.app)
    with sqlite3.connect(world.changing_db) as db:
        db.execute(
            "INSERT INTO Refs (referrer, reference) SELECT a.id, o.id FROM ValidPaths a, "
            "ValidPaths o WHERE a.path = ? AND o.path = ?",
            (p.app, p.other),
        )
    db.close()
    changed = confine(world, *command, env=env)
    assert notes(changed) == [
        f"nixwarden: debug: confine run: no cached plan used: stale: database {world.changing_db}",
        f"nixwarden: debug: confine run: plan not stored: database {world.changing_db} "
        "changed too recently to tell a later change",
    ]
    assert store_listing(changed) == confine_store.nix_store_closure(p.app) | {p.other}
    time.sleep(probes.SETTLE_NS / 1e9 + 0.2)
    assert twice(world, *command, env=env) == store_listing(changed)


def stale_after(
    world: World,
    command: tuple[str, ...],
    before: set[str],
    change: Callable[[], object],
    stale: str,
    *,
    env: dict[str, str] | None = None,
) -> set[str]:
    """`command` sees `before` twice (stored, then used); after `change()` its plan is
    not used, for the reason `stale`. Returns what the program sees then."""
    assert twice(world, *command, env=env) == before
    change()
    changed = confine(world, *command, env=env)
    assert notes(changed)[0].endswith(f"no cached plan used: stale: {stale}")
    return store_listing(changed)


def retarget(link: Path, target: str) -> None:
    link.unlink()
    link.symlink_to(target)


def test_a_retargeted_root_link_is_not_used(world: World) -> None:
    p = world.programs
    link = world.root / "prog"
    link.symlink_to(f"{p.lib}/bin/busybox")  # -> the busybox binary, through lib
    command = ("--no-bin-sh", "--", str(link), "ls", "/nix/store")
    change = partial(retarget, link, f"{p.busybox}/bin/busybox")
    seen = stale_after(world, command, {p.lib, p.busybox}, change, f"readlink {link}")
    assert seen == {p.busybox}


def test_a_link_in_a_parent_of_the_root_is_followed_again(world: World) -> None:
    p = world.programs
    result = world.root / "result"
    result.symlink_to(p.app)
    command = ("--no-bin-sh", "--", f"{result}/bin/app", "true")  # `result` is the link
    runs = [confine(world, *command) for _ in range(2)]
    assert [r.stdout for r in runs] == [f"lib-data-{p.tag}\n".encode()] * 2
    assert notes(runs[1]) == [USED]
    result.unlink()
    result.symlink_to(p.busybox)  # has no bin/app: a fresh plan finds the root missing
    changed = confine(world, *command)
    assert "no cached plan used: stale: " in notes(changed)[0]
    assert changed.returncode != 0 and b"does not exist" in changed.stderr  # (a traceback:
    # NIXWARDEN_DEBUG=1 shows one, as --debug does)


def test_a_new_path_entry_is_not_used(world: World) -> None:
    """`prog` found in the second PATH directory; then one appears in the first."""
    p = world.programs
    first, second = world.root / "path-a", world.root / "path-b"
    first.mkdir()
    second.mkdir()
    (second / "prog").symlink_to(f"{p.lib}/bin/busybox")
    env = dict(world.env, PATH=f"{first}:{second}:/usr/bin:/bin")
    command = ("--no-bin-sh", "--", "prog", "ls", "/nix/store")
    change = partial((first / "prog").symlink_to, f"{p.busybox}/bin/busybox")
    stale = f"executable {first}/prog"
    assert stale_after(world, command, {p.lib, p.busybox}, change, stale, env=env) == {p.busybox}


def test_a_retargeted_package_is_not_used(world: World) -> None:
    p = world.programs
    package = world.root / "package"
    package.symlink_to(p.other)
    command = ("--no-bin-sh", "--package", str(package), "--", p.bb, "ls", "/nix/store")
    change = partial(retarget, package, p.sibling)
    seen = stale_after(world, command, {p.busybox, p.other}, change, f"readlink {package}")
    assert seen == {p.busybox, p.sibling, p.lib}


def test_the_host_bin_sh_is_checked(world: World) -> None:
    """What a host /bin/sh is (its link, the binary, its loader and libraries) is recorded;
    changing the link or the binary shows (the real /bin/sh is not ours to change)."""
    shell = world.root / "host-sh"
    binary = world.root / "dash"
    shutil.copy2("/usr/bin/dash", binary)
    shell.symlink_to(binary)
    seen: probes.Seen = []
    found = binsh.from_host(str(shell), seen=seen)
    assert found.source == str(binary) and found.host_files
    asked = {(question, path) for question, path, _ in seen}
    assert ("realpath", str(shell)) in asked and ("identity", str(binary)) in asked
    assert {("identity", f.source) for f in found.host_files} <= asked
    assert ("identity", "/etc/ld.so.cache") in asked
    assert probes.first_change(seen) is None
    binary.write_bytes(binary.read_bytes() + b"\0")
    assert probes.first_change(seen) == f"identity {binary}"
    seen = []
    binsh.from_host(str(shell), seen=seen)
    shell.unlink()
    shell.symlink_to("/bin/busybox")
    assert probes.first_change(seen) == f"realpath {shell}"


def test_the_default_bin_sh_plan_is_cached(world: World) -> None:
    p = world.programs
    command = ("--", f"{p.app}/bin/sh", "-c", "/bin/sh -c 'echo from-bin-sh'")
    twice_result = [confine(world, *command) for _ in range(2)]
    assert [r.stdout for r in twice_result] == [b"from-bin-sh\n"] * 2
    assert notes(twice_result[1]) == [USED]


@pytest.mark.parametrize("mode", ["full-apivfs", "chroot-only"])
def test_signals_reach_a_program_run_from_a_cached_plan(world: World, mode: str) -> None:
    p = world.programs
    script = f"trap 'echo got-TERM; exit 42' TERM; echo ready; while :; do {p.bb} sleep 0.05; done"
    argv = [NIXWARDEN, "confine", "run", "--mode", mode, "--", f"{p.app}/bin/sh", "-c", script]
    decisions = []
    for _ in range(2):  # the first run stores the plan, the second runs it
        process = subprocess.Popen(
            argv, env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == b"ready\n"
            process.terminate()
            stdout, stderr = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
        assert (stdout, process.returncode) == (b"got-TERM\n", 42)
        decisions.append([line for line in stderr.decode().splitlines() if "confine run" in line])
    assert STORED in decisions[0] and decisions[1] == [USED]
