"""A deploy principal's session: exactly the receive request, relayed to the receive service.

A principal with `role = "deploy"` may run one command, `nixwarden-receive --protocol 1`
(optionally after one `exec `), and nothing of the Nix build protocols. The gate does
not run a program for it: it connects to the receive service's socket ([receive]
socket), sends one RELAY frame (the principal, the SSH key fingerprints sshd exposed,
the client's address), then copies bytes both ways until both sides have closed. The
service learns the gate's uid from the socket itself (SO_PEERCRED) and verifies
everything the client sends; the gate holds no key and no privilege of its own.

Imported only for deploy principals, so the build path's start-up stays lean. Bytes
move through a 1 MiB buffer per direction, a thread each. Not `os.splice`: with the
pipes OpenSSH 9.2's sshd gives a command, spliced data stalled the session in either
direction (sshd blocked reading a pipe it had polled readable), and this copy costs
a small part of what ssh's own encryption does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

from nixwarden import sessions
from nixwarden.errors import Refused
from nixwarden.gate.policy import PolicyRefused
from nixwarden.gate.request import MAX_REQUEST_BYTES, RequestRefused, describe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from nixwarden.config import GateSettings, Principal

RECEIVE_PROGRAM = "nixwarden-receive"
CONNECT_TIMEOUT = 10.0
# After the service has closed its side, how long a client may take to close its own.
CLOSE_GRACE = 2.0
CHUNK = 1 << 20


class DeployRefused(PolicyRefused):
    """A deploy principal asked for something other than the receive protocol (the client
    is told why, as for any policy refusal)."""


def receive_request() -> str:
    from nixwarden.deploy.wire import PROTOCOL_ARGUMENT  # noqa: PLC0415

    return f"{RECEIVE_PROGRAM} --protocol {PROTOCOL_ARGUMENT}"


def check_request(raw: bytes) -> None:
    """Exactly `nixwarden-receive --protocol 1`, or that after one `exec `; else refuse.

    No quoting, no other spacing, no program path: the client runs our fixed command."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestRefused(f"request too long ({len(raw)} bytes)")
    wanted = receive_request().encode()
    if raw not in (wanted, b"exec " + wanted):
        raise DeployRefused(
            f"a deploy principal may only run '{receive_request()}', not {describe(raw)!r}"
        )


class Relay:
    """A decided deploy session: its socket connected, its slot held, ready to run."""

    def __init__(self, connection: socket.socket, header: bytes, slot: int, target: str) -> None:
        self.connection = connection
        self.header = header
        self.slot = slot
        self.argv = ("relay", target)  # what the audit log records as executed

    def close(self) -> None:
        self.connection.close()
        os.close(self.slot)

    def run(self, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
        """Send the RELAY frame, then copy both ways; 0 once both sides have closed."""
        try:
            self.connection.sendall(self.header)
            self.connection.settimeout(None)
            _copy_both_ways(self.connection, stdin_fd, stdout_fd)
        finally:
            self.close()
        return 0


def prepare(  # noqa: PLR0917 - the session's facts, as the gate's run.py has them
    gate: GateSettings,
    principal: Principal,
    config_path: str,
    raw: bytes,
    keys: Sequence[str],
    client: str | None,
) -> Relay:
    """The decision for a deploy principal and what the relay needs; raises a `Refused`."""
    check_request(raw)
    user = _user_name()
    if principal.user != user:
        raise DeployRefused(
            f"principal {principal.name} deploys as unix user {principal.user}, "
            f"this session runs as {user}"
        )
    from nixwarden import config as config_module  # noqa: PLC0415 - the [receive] table
    from nixwarden.deploy import wire  # noqa: PLC0415

    target = config_module.load(config_path, from_environment=False).receive.socket
    header = wire.encode(
        wire.Relay(
            principal.name,
            tuple(key[: wire.MAX_STRING] for key in keys[: wire.MAX_SSH_KEYS]),
            None if client is None else client[: wire.MAX_STRING],
        )
    )
    slot = sessions.acquire(gate.state_dir, principal.name, principal.max_sessions)
    try:
        connection = _connect(target)
    except BaseException:
        os.close(slot)
        raise
    return Relay(connection, header, slot, target)


class ReceiveUnavailable(Refused):
    """The receive service's socket cannot be reached."""


def _connect(path: str) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    connection.settimeout(CONNECT_TIMEOUT)
    try:
        connection.connect(path)
    except OSError as error:
        connection.close()
        raise ReceiveUnavailable(
            f"receive service at {path}: {error.strerror or type(error).__name__}"
        ) from None
    return connection


def _user_name() -> str:
    import pwd  # noqa: PLC0415

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"#{os.getuid()}"


# --- copying ---------------------------------------------------------------------------


def _copy_both_ways(connection: socket.socket, stdin_fd: int, stdout_fd: int) -> None:
    """client → service in a thread, service → client here; ends when both have closed
    (or, once the service has closed, when the client does or CLOSE_GRACE has passed)."""
    for fd in (stdin_fd, stdout_fd):
        _grow_pipe(fd)
    upstream = threading.Thread(
        target=_client_to_service, args=(stdin_fd, connection), name="relay-up", daemon=True
    )
    upstream.start()
    _service_to_client(connection, stdout_fd)
    upstream.join(CLOSE_GRACE)


def _client_to_service(stdin_fd: int, connection: socket.socket) -> None:
    # An OSError here is the service gone (EPIPE, ECONNRESET): it has said what it had to.
    try:
        with contextlib.suppress(OSError):
            _pump(stdin_fd, connection.fileno(), to_socket=connection)
    finally:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_WR)


def _service_to_client(connection: socket.socket, stdout_fd: int) -> None:
    # An OSError here is the client gone: nothing more can reach it.
    try:
        with contextlib.suppress(OSError):
            _pump(connection.fileno(), stdout_fd, to_socket=None)
    finally:
        # The client sees the end of the stream now, whatever the other direction does.
        with contextlib.suppress(OSError):
            os.close(stdout_fd)


def _pump(source: int, sink: int, *, to_socket: socket.socket | None) -> None:
    """Copy until `source` ends, through one 1 MiB buffer (a read takes what is there)."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while True:
        count = os.readv(source, [view])
        if not count:
            return
        if to_socket is not None:
            to_socket.sendall(view[:count])
            continue
        written = 0
        while written < count:
            written += os.write(sink, view[written:count])


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe (where it is one, and allowed): fewer, larger reads from sshd."""
    import fcntl  # noqa: PLC0415

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, 1031, CHUNK)  # F_SETPIPE_SZ
