"""The system programs provisioning runs (shadow's user tools, sshd, systemd-tmpfiles), found
in the system's own directories, never on $PATH, and run with a fixed environment."""

from __future__ import annotations

import os

from nixwarden import process
from nixwarden.errors import CommandFailed

SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
TIMEOUT = 60.0


def program(name: str) -> str:
    for directory in SYSTEM_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise CommandFailed(f"{name}: not found in {', '.join(SYSTEM_DIRS)}")


def run(name: str, *args: str, check: bool = True, ok: tuple[int, ...] = (0,)) -> bytes:
    """Run system program `name`; an exit status outside `ok` raises (with `check`)."""
    result = process.run([program(name), *args], env=ENV, check=False, timeout=TIMEOUT)
    if check and result.returncode not in ok:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CommandFailed(
            f"{name} {' '.join(args[:4])}: exit status {result.returncode}"
            + (f": {detail[-1]}" if detail else "")
        )
    return result.stdout
