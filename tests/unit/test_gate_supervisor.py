"""The gate's supervisor of a limited session: the counters it reads, when it says a limit
was hit, and that it hands on the child's status and signals. The kernel's side (real
cgroups, real builds, what the client sees) is in tests/system/test_tenant_limits.py."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from nixwarden import process
from nixwarden.gate import supervisor
from nixwarden.tenants.disk import disk_full

OOM_CONTROL = b"oom_kill_disable 0\nunder_oom 0\noom_kill %d\n"


def test_counter_files_parse() -> None:
    assert supervisor.parse("memory", OOM_CONTROL % 3) == 3
    assert supervisor.parse("tasks", b"max 17\n") == 17
    assert supervisor.parse("memory", b"oom_kill_disable 0\nunder_oom 0\n") is None
    assert supervisor.parse("tasks", b"max -1\n") is None
    assert supervisor.parse("tasks", b"max 1 2\n") is None
    assert supervisor.parse("memory", b"\xff" * 300) is None


def test_a_counter_reports_growth_once(tmp_path: Path) -> None:
    path = tmp_path / "memory.oom_control"
    path.write_bytes(OOM_CONTROL % 2)  # kills of earlier sessions in this slot
    counter = supervisor.Counter("memory", str(path), "128 MiB")
    assert not counter.hit()
    path.write_bytes(OOM_CONTROL % 3)
    assert counter.hit()
    path.write_bytes(OOM_CONTROL % 4)
    assert not counter.hit()  # once per session


def test_an_unreadable_counter_never_reports(tmp_path: Path) -> None:
    missing = supervisor.Counter("tasks", str(tmp_path / "pids.events"), "64")
    assert missing.baseline is None and not missing.hit()
    (tmp_path / "target").write_bytes(b"max 0\n")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    linked = supervisor.Counter("tasks", str(tmp_path / "link"), "64")
    (tmp_path / "target").write_bytes(b"max 5\n")
    assert not linked.hit()  # never through a symlink


def test_a_full_disk_is_reported(tmp_path: Path) -> None:
    disk = supervisor.Counter("disk", str(tmp_path), "64 MiB")
    info = os.statvfs(tmp_path)
    full = disk_full(info.f_bavail * info.f_frsize, info.f_blocks * info.f_frsize)
    assert disk.hit() is full  # the test's own filesystem: not full, unless it is


def test_messages_name_the_limit() -> None:
    memory = supervisor.Counter("memory", "/nonexistent", "128 MiB")
    tasks = supervisor.Counter("tasks", "/nonexistent", "64")
    disk = supervisor.Counter("disk", "/nonexistent", "1 GiB")
    assert supervisor.message(memory, "alice") == (
        "session of principal alice hit its memory limit (128 MiB): "
        "the kernel killed a process of it"
    )
    assert "tasks limit (64): a new process or thread was refused" in supervisor.message(
        tasks, "alice"
    )
    assert "disk quota (1 GiB): the tenant store is full" in supervisor.message(disk, "alice")


def test_run_reports_and_returns_the_childs_status(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "pids.events"
    events.write_bytes(b"max 0\n")
    counter = supervisor.Counter("tasks", str(events), "64")
    script = f"sleep 0.3; echo 'max 1' > {events}; sleep 0.3; exit 3"
    reported: list[str] = []
    status = supervisor.run(["/bin/sh", "-c", script], {}, [counter], reported.append, "bob")
    assert status == 3
    assert reported == [supervisor.message(counter, "bob")]
    assert capfd.readouterr().err == f"nixwarden: {reported[0]}\n"


def test_run_forwards_sigterm_and_gives_128_plus_the_signal() -> None:
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        status = supervisor.run(["/bin/sleep", "20"], {}, [], lambda _line: None, "carol")
    finally:
        timer.cancel()
    assert status == 128 + signal.SIGTERM


def test_watch_is_called_while_the_child_runs_and_once_after() -> None:
    calls: list[int] = []
    status = process.supervise(
        ["/bin/sh", "-c", "sleep 0.35"],
        env={},
        forward=(),
        targets=lambda pid: (pid,),
        watch=calls.append,
        every=0.1,
    )
    assert status == 0
    assert 3 <= len(calls) <= 8
    assert len(set(calls)) == 1  # the child's pid, each time


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_watchdog_measures_only_when_due_and_reports_past_the_quota() -> None:
    clock = Clock()
    usage = [10 << 20, 17 << 20]
    calls: list[int] = []

    def measure() -> int | None:
        calls.append(1)
        return usage.pop(0)

    dog = supervisor.Watchdog(measure, 16 << 20, "16 MiB", interval=5, clock=clock)
    assert not dog.hit() and calls == []  # not due yet
    clock.now += 5
    assert not dog.hit() and len(calls) == 1  # 10 MiB: under
    clock.now += 1
    assert not dog.hit() and len(calls) == 1
    clock.now += 4
    assert dog.hit()  # 17 MiB: past it
    assert supervisor.message(dog, "dan") == (
        "session of principal dan was ended: its tenant store passed its disk quota "
        "(17.0 MiB used of 16 MiB)"
    )
    clock.now += 5
    assert not dog.hit()  # once


def test_a_watchdog_that_cannot_measure_ends_the_session() -> None:
    clock = Clock()
    dog = supervisor.Watchdog(lambda: None, 1 << 20, "1 MiB", interval=1, clock=clock)
    clock.now += 1
    assert dog.hit()
    assert "its disk usage could not be measured" in supervisor.message(dog, "erin")


def test_run_ends_the_session_when_the_watchdog_says_so() -> None:
    dog = supervisor.Watchdog(lambda: 2 << 20, 1 << 20, "1 MiB", interval=0.2)
    reported: list[str] = []
    status = supervisor.run(["/bin/sleep", "30"], {}, [dog], reported.append, "fay")
    assert status == 128 + signal.SIGKILL
    assert reported == [supervisor.message(dog, "fay")]


def test_a_session_that_ended_by_itself_is_not_ended_again() -> None:
    """The watchdog runs only while the child runs: the supervisor asks without reaping."""
    sleeper = os.posix_spawn("/bin/sleep", ["/bin/sleep", "30"], {})
    quick = os.posix_spawn("/bin/true", ["/bin/true"], {})
    try:
        os.waitid(os.P_PID, quick, os.WEXITED | os.WNOWAIT)  # ended, not reaped
        assert supervisor._running(sleeper)
        assert not supervisor._running(quick)
        assert not supervisor._running(quick)  # asking does not reap it
    finally:
        os.kill(sleeper, signal.SIGKILL)
        for pid in (sleeper, quick):
            os.waitpid(pid, 0)
