"""The gate's last resort: a decision the audit log cannot take goes to syslog.

That happens when the configuration cannot be used (so there is no audit log path to
trust) or the audit log cannot be written. The line goes to the local syslog socket,
`/dev/log`, where journald or rsyslog listens, in the form glibc's `syslog(3)` sends
there (RFC 3164 without the host name, which both read as the local host):

    <PRI>Mmm dd hh:mm:ss nixwarden-gate[PID]: MESSAGE

with facility `auth` (where sshd logs) and severity `err`. Built by hand rather than
with the `syslog` module, whose socket path is fixed (so no test could receive what
it sends), or `logging`, which costs more to import than the gate's whole decision.
Sending is bounded in time (a full receive queue must not hold the session) and never
raises: if syslog is not there either, the caller has nothing left and says so.
"""

from __future__ import annotations

import os
import time

from nixwarden.display import escape

SOCKET = "/dev/log"  # tests point this at a socket of their own
TAG = "nixwarden-gate"
FACILITY_AUTH = 4
SEVERITY_ERR = 3
SEND_TIMEOUT = 2.0  # seconds
# rsyslog's default maximum message size is 8 KiB; journald's is larger.
MAX_MESSAGE_BYTES = 8000
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def line(
    message: str,
    *,
    severity: int = SEVERITY_ERR,
    now: float | None = None,
    pid: int | None = None,
) -> bytes:
    """One datagram: the header, then `message` escaped to one line and cut to size.

    The time is local, like syslog(3)'s, and the month name is spelled here rather than
    by strftime, whose `%b` follows the locale.
    """
    stamp = time.localtime(time.time() if now is None else now)
    header = (
        f"<{FACILITY_AUTH * 8 + severity}>{_MONTHS[stamp.tm_mon - 1]} {stamp.tm_mday:2d} "
        f"{stamp.tm_hour:02d}:{stamp.tm_min:02d}:{stamp.tm_sec:02d} "
        f"{TAG}[{os.getpid() if pid is None else pid}]: "
    )
    # The gate's messages are escaped JSON already; escaping again would double its
    # backslashes, so only text that is not printable is escaped here.
    text = message if message.isprintable() else escape(message)
    data = (header + text).encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        cut = data[: MAX_MESSAGE_BYTES - len(" [cut]")]
        data = cut.decode("utf-8", "ignore").encode("utf-8") + b" [cut]"
    return data


def send(message: str, *, severity: int = SEVERITY_ERR) -> str | None:
    """Send one line to syslog; None when it was sent, else why it could not be."""
    import socket  # noqa: PLC0415 - only when the audit log failed

    data = line(message, severity=severity)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendto(data, SOCKET)
    except OSError as datagram_error:
        try:  # a stream socket, as some syslog daemons use: syslog(3) ends the line with NUL
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.connect(SOCKET)
                sock.sendall(data + b"\0")
        except OSError:
            return f"syslog {escape(SOCKET)}: {datagram_error.strerror or datagram_error}"
    return None
