"""Session slots with real unix users: nobody takes another's, and a reboot needs no one."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from testbed import harness
from testbed.gate_setup import GatedBuilder

REPO = Path(__file__).resolve().parents[2]
SNIPPET = REPO / "contrib" / "tmpfiles.d" / "nixwarden.conf"

# What another local account tries, as itself, against alice's slots.
ATTACK = """
import fcntl, os, sys
sessions, victim = sys.argv[1] + "/sessions", sys.argv[2]
CREATE = os.O_CREAT | os.O_RDONLY
attempts = {
    "create her slot": lambda: os.open(f"{sessions}/{victim}/alice.0.lock", CREATE, 0o644),
    "enter her directory": lambda: os.open(f"{sessions}/{victim}", os.O_RDONLY),
    "list the users": lambda: os.listdir(sessions),
    "plant a slot beside": lambda: os.open(f"{sessions}/alice.0.lock", CREATE, 0o644),
    "plant a directory": lambda: os.mkdir(f"{sessions}/{victim}-fake"),
}
for name, attempt in attempts.items():
    try:
        fd = attempt()
    except PermissionError:
        print(f"{name}: refused")
    else:
        if isinstance(fd, int):
            fcntl.flock(fd, fcntl.LOCK_EX)
        print(f"{name}: done")
"""


def test_another_user_can_neither_take_nor_hold_a_slot(builder: GatedBuilder) -> None:
    alice = builder.add("alice", store="host", max_sessions=1)
    eve = builder.add("eve", store="host")
    attack = harness.run(
        ["setpriv", f"--reuid={eve.user.uid}", f"--regid={eve.user.gid}", "--clear-groups",
         "/usr/bin/python3", "-I", "-c", ATTACK, str(builder.state_dir), alice.user.name],
    )  # fmt: skip
    lines = attack.stdout.decode().splitlines()
    assert len(lines) == 5 and all(line.endswith(": refused") for line in lines), lines
    ping = ["nix", "store", "ping", "--store", f"ssh-ng://{alice.alias}"]
    assert harness.run(ping, env=builder.sshd.client_env(), check=False).returncode == 0
    slot = builder.state_dir / "sessions" / alice.user.name / "alice.0.lock"
    assert slot.stat().st_uid == alice.user.uid and stat.S_IMODE(slot.stat().st_mode) == 0o600


def test_nothing_in_the_session_state_is_writable_by_others(builder: GatedBuilder) -> None:
    principal = builder.add("tidy", store="host")
    harness.run(
        ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"],
        env=builder.sshd.client_env(),
    )
    for directory, names, files in os.walk(builder.state_dir):
        for path in [directory, *(os.path.join(directory, name) for name in names + files)]:
            mode = os.lstat(path).st_mode
            assert not mode & 0o022, f"{path} is writable by others: {stat.filemode(mode)}"


def test_state_lost_at_a_reboot_comes_back_with_tmpfiles(builder: GatedBuilder) -> None:
    principal = builder.add("rebooted", store="host")
    ping = ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"]
    env = builder.sshd.client_env()
    shutil.rmtree(builder.state_dir)  # /run is a tmpfs: a reboot empties it
    denied = harness.run(ping, env=env, check=False)
    assert denied.returncode != 0
    reason = json.loads(builder.log_lines()[-1])["reason"]
    line = f"d {builder.state_dir}/sessions/{principal.user.name} 0700 {principal.user.name} "
    fix = (
        f"as root: echo '{line}{principal.user.name} -' >> /etc/tmpfiles.d/nixwarden.conf "
        "&& systemd-tmpfiles --create /etc/tmpfiles.d/nixwarden.conf"
    )
    assert reason.endswith(fix), reason
    assert b"server-side error" in denied.stderr and b"tmpfiles" not in denied.stderr
    # What systemd-tmpfiles-setup.service does at boot, from the lines already installed.
    harness.run(["systemd-tmpfiles", "--create", str(builder.tmpfiles)])
    assert harness.run(ping, env=env, check=False).returncode == 0


def test_the_shipped_tmpfiles_snippet_makes_the_state_directories(tmp_path: Path) -> None:
    harness.run(["systemd-tmpfiles", "--create", f"--root={tmp_path}", str(SNIPPET)])
    sessions = tmp_path / "run" / "nixwarden" / "sessions"
    info = sessions.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o711)
    assert stat.S_IMODE(sessions.parent.stat().st_mode) == 0o755
    assert list(sessions.iterdir()) == []
