"""The gate's audit log: one JSON line per decision, appended atomically.

`entry()` is pure; `append()` writes one line with a single `write(2)` on an O_APPEND
descriptor under an exclusive `flock`, so concurrent sessions never interleave and a
reader holding the lock sees only whole lines. A log that cannot be written is a
denial (the caller's job), never a silent allowance.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time

from nixwarden.display import escape
from nixwarden.errors import Refused

TYPE_CHECKING = False  # not typing's: this module is on the gate's start-up path
if TYPE_CHECKING:
    from collections.abc import Sequence

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


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
    return (_json(record) + "\n").encode("ascii")


def _json(value: object) -> str:
    """Compact JSON, plain ASCII whatever the client sent. (The json module imports re,
    which costs more than this whole function on every connection.)"""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(_json_char(char) for char in value) + '"'
    if isinstance(value, list):
        return "[" + ",".join(_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not JSON: {type(value).__name__}")


def _json_char(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return char
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as JSON requires
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def append(path: str, line: bytes) -> None:
    """Append one line; a symlink, a FIFO or anything but a regular file is refused."""
    shown = escape(path)
    try:
        fd = os.open(
            path,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
            0o600,
        )
    except OSError as error:
        raise AuditLogUnwritable(f"audit log {shown}: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AuditLogUnwritable(f"audit log {shown}: not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX)
        written = os.write(fd, line)
        if written != len(line):
            raise AuditLogUnwritable(f"audit log {shown}: short write ({written} of {len(line)})")
    except OSError as error:
        raise AuditLogUnwritable(f"audit log {shown}: {error.strerror}") from None
    finally:
        os.close(fd)
