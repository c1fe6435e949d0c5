"""`nixwarden closure` against `nix-store -qR` on real store contents."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from testbed import confine_store, harness
from testbed.confine_store import Programs, nix_store_closure

NIXWARDEN = harness.NIXWARDEN


@pytest.fixture(scope="module")
def programs(nix_daemon: harness.NixDaemon) -> Programs:
    return confine_store.shared_programs()


def closure(*roots: str, check: bool = True, env: dict[str, str] | None = None) -> set[str]:
    result = harness.run([NIXWARDEN, "closure", *roots], env=env or confine_store.ENV)
    lines = result.stdout.decode().splitlines()
    assert lines == sorted(lines)
    return set(lines)


def test_equals_nix_store_on_programs(programs: Programs) -> None:
    every = [
        programs.app,
        programs.tool,
        programs.lib,
        programs.link,
        programs.busybox,
        programs.other,
        programs.sibling,
    ]
    for root in every:
        assert closure(root) == nix_store_closure(root), root
    assert closure(programs.app, programs.other) == nix_store_closure(programs.app, programs.other)
    app = closure(programs.app)
    assert len(app) == 5  # app -> tool -> lib -> busybox, and the link
    assert programs.other not in app and programs.sibling not in app


def test_roots_inside_and_symlinked(programs: Programs, tmp_path: Path) -> None:
    expected = nix_store_closure(programs.app)
    (tmp_path / "result").symlink_to(programs.app)
    (tmp_path / "chain").symlink_to(tmp_path / "result")
    (tmp_path / "bin-link").symlink_to("result/bin/app")
    for root in (
        f"{programs.app}/bin/app",
        f"{programs.app}/bin/sh",  # a symlink inside the store: its store path is the root
        str(tmp_path / "result"),
        str(tmp_path / "chain"),
        str(tmp_path / "bin-link"),
        str(tmp_path / "result" / "bin" / "app"),  # a parent is the link
    ):
        assert closure(root) == expected, root
    relative = harness.run([NIXWARDEN, "closure", "result"], env=confine_store.ENV, cwd=tmp_path)
    assert set(relative.stdout.decode().split()) == expected


def test_bad_roots_are_errors_naming_them(programs: Programs, tmp_path: Path) -> None:
    missing = "/nix/store/" + "0" * 32 + f"-nwt-never-built-{programs.tag}"
    (tmp_path / "outside").symlink_to("/etc/passwd")
    for root, message in (
        ("/etc/passwd", "not in the store"),
        (str(tmp_path / "outside"), "not in the store"),
        (missing, "not a valid store path"),
        (f"{programs.app}/bin/nonexistent", "does not exist"),
        (f"{programs.app}/../../../etc/shadow", "'..' is not allowed"),
        ("/nix/store/tooshort-x", "hash has 8 characters"),
    ):
        result = harness.run([NIXWARDEN, "closure", root], env=confine_store.ENV, check=False)
        assert result.returncode == 2, root
        err = result.stderr.decode()
        assert err.startswith("nixwarden: error:") and message in err, err
        assert root in err or missing in err
        assert result.stdout == b""


def test_synthetic_closure_of_2000_paths(nix_daemon: harness.NixDaemon) -> None:
    chain = confine_store.shared_chain(2000)
    expected = nix_store_closure(chain[-1])
    assert len(expected) == 2000
    assert closure(chain[-1]) == expected
    assert closure(chain[999]) == set(chain[:1000])


def test_while_a_build_writes_to_the_store(programs: Programs) -> None:
    chain = confine_store.shared_chain(2000)
    expected = set(chain)
    process, expression = confine_store.start_busy_build(programs.busybox)
    overlapped = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = process.poll() is None
            assert closure(chain[-1]) == expected
            assert closure(programs.app) == nix_store_closure(programs.app)
            overlapped += running and process.poll() is None
            if not running:
                break
        assert process.wait(timeout=120) == 0, process.stderr.read() if process.stderr else ""
    finally:
        harness.kill_tree(process) if process.poll() is None else None
        os.unlink(expression)
    assert overlapped >= 2


def test_falls_back_to_nix_store_when_the_database_is_unreadable(programs: Programs) -> None:
    env = dict(confine_store.ENV, NIXWARDEN_STORE_DB="/nonexistent/db.sqlite")
    result = harness.run([NIXWARDEN, "closure", programs.app], env=env)
    assert set(result.stdout.decode().split()) == nix_store_closure(programs.app)
    assert "/nonexistent/db.sqlite" in result.stderr.decode()
    assert "asked nix-store -qR" in result.stderr.decode()
    missing = "/nix/store/" + "0" * 32 + f"-nwt-never-built-{programs.tag}"
    bad = harness.run([NIXWARDEN, "closure", missing], env=env, check=False)
    assert bad.returncode == 2 and missing in bad.stderr.decode()
    # An explicit --db never falls back: it names the database it could not read.
    explicit = harness.run(
        [NIXWARDEN, "closure", "--db", "/nonexistent/db.sqlite", programs.app],
        env=confine_store.ENV,
        check=False,
    )
    assert explicit.returncode == 1 and "/nonexistent/db.sqlite" in explicit.stderr.decode()


def test_unprivileged_user_gets_the_same_closure(programs: Programs, users: harness.Users) -> None:
    """A user who cannot open the WAL database read-only is answered by nix-store -qR."""
    user = users.create()
    env = harness.base_env(HOME=str(user.home), NIX_REMOTE="daemon")
    result = harness.run(
        [
            "setpriv",
            f"--reuid={user.uid}",
            f"--regid={user.gid}",
            "--init-groups",
            NIXWARDEN,
            "closure",
            programs.app,
        ],
        env=env,
    )
    assert set(result.stdout.decode().split()) == nix_store_closure(programs.app)
