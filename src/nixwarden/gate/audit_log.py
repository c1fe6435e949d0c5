"""The gate's audit log: one JSON line per decision, appended atomically.

`entry()` is pure; `append()` writes one line with a single `write(2)` on an O_APPEND
descriptor under an exclusive `flock`, so concurrent sessions never interleave and a
reader holding the lock sees only whole lines. A log that cannot be written is a
denial (the caller's job), never a silent allowance.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Sequence

from nixwarden.errors import Refused


class AuditLogUnwritable(Refused):
    """The audit log could not be written, so the gate refuses."""


def entry(
    *,
    principal: str,
    decision: str,
    reason: str,
    request: str,
    mode: str,
    client: str | None,
    keys: Sequence[str],
    user: str,
    argv: Sequence[str] | None,
    now: float | None = None,
) -> bytes:
    seconds = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    record = {
        "time": f"{stamp}.{int(seconds % 1 * 1000):03d}Z",
        "principal": principal,
        "user": user,
        "client": client,
        "keys": list(keys),
        "mode": mode,
        "request": request,
        "decision": decision,
        "reason": reason,
        "exec": None if argv is None else list(argv),
        "pid": os.getpid(),
    }
    # ensure_ascii: the line is plain ASCII whatever the client sent.
    return (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def append(path: str, line: bytes) -> None:
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
    except OSError as error:
        raise AuditLogUnwritable(f"audit log {path}: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        written = os.write(fd, line)
        if written != len(line):
            raise AuditLogUnwritable(f"audit log {path}: short write ({written} of {len(line)})")
    except OSError as error:
        raise AuditLogUnwritable(f"audit log {path}: {error.strerror}") from None
    finally:
        os.close(fd)
