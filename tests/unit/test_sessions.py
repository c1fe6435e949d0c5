"""Session slots: a directory per unix user, its own and private; nothing planted there works."""

from __future__ import annotations

import os
import pwd
import shutil
import time
from pathlib import Path

import pytest

from nixwarden import sessions

ME = pwd.getpwuid(os.geteuid()).pw_name


def state(tmp_path: Path, *, user: str = ME, mode: int = 0o700) -> Path:
    """The state directory an administrator's tmpfiles.d lines make."""
    (tmp_path / "sessions").mkdir(mode=0o711)
    (tmp_path / "sessions").chmod(0o711)
    mine = tmp_path / "sessions" / user
    mine.mkdir()
    mine.chmod(mode)
    return mine


def test_slots_are_taken_held_and_freed(tmp_path: Path) -> None:
    state(tmp_path)
    held = [sessions.acquire(str(tmp_path), "alice", 2) for _ in range(2)]
    assert sessions.in_use(str(tmp_path), ME, "alice", 2) == 2
    with pytest.raises(sessions.SessionsFull, match="all 2 sessions"):
        sessions.acquire(str(tmp_path), "alice", 2)
    assert all(os.get_inheritable(fd) for fd in held)
    os.close(held[0])
    again = sessions.acquire(str(tmp_path), "alice", 2)
    os.close(again)
    os.close(held[1])
    assert sessions.in_use(str(tmp_path), ME, "alice", 2) == 0
    slot = tmp_path / "sessions" / ME / "alice.0.lock"
    assert slot.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("missing", ["sessions", "user"])
def test_missing_state_is_refused_with_the_exact_fix(tmp_path: Path, missing: str) -> None:
    if missing == "user":
        (tmp_path / "sessions").mkdir(mode=0o711)
    group = ME  # root's primary group is root
    line = f"d {tmp_path}/sessions/{ME} 0700 {ME} {group} -"
    fix = (
        f"as root: echo '{line}' >> /etc/tmpfiles.d/nixwarden.conf "
        "&& systemd-tmpfiles --create /etc/tmpfiles.d/nixwarden.conf"
    )
    with pytest.raises(sessions.SessionStateError) as raised:
        sessions.acquire(str(tmp_path), "alice", 1)
    assert str(raised.value).endswith(fix)
    assert sessions.tmpfiles_line(str(tmp_path), ME, group) == line


def test_a_sessions_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    state(tmp_path)
    (tmp_path / "sessions").chmod(0o1777)
    with pytest.raises(sessions.SessionStateError, match="install -d -m 0711 -o root -g root"):
        sessions.acquire(str(tmp_path), "alice", 1)


def test_a_user_directory_others_may_enter_is_refused(tmp_path: Path) -> None:
    state(tmp_path, mode=0o755)
    with pytest.raises(sessions.SessionStateError, match=r"must belong to \S+ alone"):
        sessions.acquire(str(tmp_path), "alice", 1)


def test_a_user_directory_of_someone_else_is_refused(tmp_path: Path) -> None:
    mine = state(tmp_path)
    os.chown(mine, 65534, 65534)
    with pytest.raises(sessions.SessionStateError, match="install -d -m 0700"):
        sessions.acquire(str(tmp_path), "alice", 1)


def test_a_symlinked_user_directory_is_refused(tmp_path: Path) -> None:
    mine = state(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    mine.rename(elsewhere)
    mine.symlink_to(elsewhere)
    with pytest.raises(sessions.SessionStateError, match="rm -f"):
        sessions.acquire(str(tmp_path), "alice", 1)


def test_a_planted_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    mine = state(tmp_path)
    os.mkfifo(mine / "alice.0.lock")
    with pytest.raises(sessions.SessionStateError, match="not a regular file"):
        sessions.acquire(str(tmp_path), "alice", 1)


def test_a_planted_symlink_is_refused(tmp_path: Path) -> None:
    mine = state(tmp_path)
    (mine / "alice.0.lock").symlink_to("/etc/passwd")
    with pytest.raises(sessions.SessionStateError):
        sessions.acquire(str(tmp_path), "alice", 1)
    assert (mine / "alice.0.lock").is_symlink()


def test_principal_lock_tells_the_first_session_it_is_alone(tmp_path: Path) -> None:
    state(tmp_path)
    first, alone = sessions.principal_lock(str(tmp_path), "alice", wait=1)
    assert alone
    sessions.share(first)
    second, alone = sessions.principal_lock(str(tmp_path), "alice", wait=1)
    assert not alone
    os.close(first)
    os.close(second)
    third, alone = sessions.principal_lock(str(tmp_path), "alice", wait=1)
    assert alone
    os.close(third)


def test_principal_lock_waits_for_a_cleaning_then_refuses(tmp_path: Path) -> None:
    state(tmp_path)
    cleaning, alone = sessions.principal_lock(str(tmp_path), "alice", wait=1)
    assert alone  # held exclusively: a cleaning is under way
    started = time.monotonic()
    with pytest.raises(sessions.SessionsBusy, match="cleaned or removed"):
        sessions.principal_lock(str(tmp_path), "alice", wait=0.3)
    assert time.monotonic() - started >= 0.3
    os.close(cleaning)


def test_hold_all_refuses_while_a_session_runs(tmp_path: Path) -> None:
    state(tmp_path)
    running = sessions.acquire(str(tmp_path), "alice", 4)
    with pytest.raises(sessions.SessionsBusy):
        sessions.hold_all(str(tmp_path), ME, "alice", 4)
    os.close(running)
    held = sessions.hold_all(str(tmp_path), ME, "alice", 4)
    with pytest.raises(sessions.SessionsFull):
        sessions.acquire(str(tmp_path), "alice", 4)
    with pytest.raises(sessions.SessionsBusy):
        sessions.principal_lock(str(tmp_path), "alice", wait=0.1)
    sessions.release(held)
    os.close(sessions.acquire(str(tmp_path), "alice", 4))


def test_hold_all_covers_slots_beyond_a_lowered_max_sessions(tmp_path: Path) -> None:
    state(tmp_path)
    slots = [sessions.acquire(str(tmp_path), "alice", 8) for _ in range(6)]
    for fd in slots[:5]:
        os.close(fd)
    # max_sessions went from 8 to 2: slot 5 is still held by a running session.
    with pytest.raises(sessions.SessionsBusy):
        sessions.hold_all(str(tmp_path), ME, "alice", 2)
    os.close(slots[5])
    sessions.release(sessions.hold_all(str(tmp_path), ME, "alice", 2))


@pytest.mark.skipif(os.geteuid() != 0, reason="root gives files it creates to their owner")
def test_hold_all_gives_the_files_it_creates_to_the_directory_owner(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    theirs = state(tmp_path, user="nobody")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    sessions.release(sessions.hold_all(str(tmp_path), "nobody", "bob", 2))
    owners = {(path.stat().st_uid, path.stat().st_gid) for path in theirs.iterdir()}
    assert owners == {(nobody.pw_uid, nobody.pw_gid)}
    assert sorted(path.name for path in theirs.iterdir()) == [
        "bob.0.lock",
        "bob.1.lock",
        "bob.lock",
    ]


def test_no_directory_means_no_sessions_to_count_or_hold(tmp_path: Path) -> None:
    assert sessions.in_use(str(tmp_path), ME, "alice", 4) == 0
    assert sessions.hold_all(str(tmp_path), ME, "alice", 4) == ()
    shutil.rmtree(tmp_path)
    assert sessions.in_use(str(tmp_path), ME, "alice", 4) == 0
