"""Validity from the daemon's socket: the worker protocol's handshake and QueryValidPaths,
against a scripted daemon; whatever it does not expect is `DaemonUnavailable`."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nixwarden.nix import daemon

STORE = "/nix/store/"
APP = STORE + "a" * 32 + "-app"
LIB = STORE + "b" * 32 + "-lib"
GONE = STORE + "c" * 32 + "-gone"


def integer(value: int) -> bytes:
    return struct.pack("<Q", value)


def string(data: bytes) -> bytes:
    return integer(len(data)) + data + b"\0" * (-len(data) % 8)


def read_integer(connection: socket.socket) -> int:
    data = b""
    while len(data) < 8:
        chunk = connection.recv(8 - len(data))
        assert chunk, "the client closed early"
        data += chunk
    return int(struct.unpack("<Q", data)[0])


def read_string(connection: socket.socket) -> bytes:
    length = read_integer(connection)
    data = b""
    padded = length + (-length % 8)
    while len(data) < padded:
        data += connection.recv(padded - len(data))
    return data[:length]


Script = Callable[[socket.socket], None]


def honest(valid: set[str], *, log: bytes = b"") -> Script:
    """A daemon of protocol 1.34 that knows `valid` (and says `log` first, if given)."""

    def serve(connection: socket.socket) -> None:
        assert read_integer(connection) == daemon.WORKER_MAGIC_1
        connection.sendall(integer(daemon.WORKER_MAGIC_2) + integer(1 << 8 | 34))
        assert read_integer(connection) == daemon.CLIENT_VERSION
        assert read_integer(connection) == 0  # no CPU affinity
        assert read_integer(connection) == 0  # no reserved space
        connection.sendall(string(b"2.8.0") + integer(daemon.STDERR_LAST))
        assert read_integer(connection) == daemon.OP_QUERY_VALID_PATHS
        asked = [read_string(connection).decode() for _ in range(read_integer(connection))]
        assert read_integer(connection) == 0  # substitute: no
        answer = [path for path in asked if path in valid]
        reply = integer(daemon.STDERR_NEXT) + string(log) if log else b""
        reply += integer(daemon.STDERR_LAST) + integer(len(answer))
        connection.sendall(reply + b"".join(string(path.encode()) for path in answer))

    return serve


def raw(reply: bytes) -> Script:
    def serve(connection: socket.socket) -> None:
        connection.recv(4096)
        connection.sendall(reply)

    return serve


@pytest.fixture
def fake_daemon(tmp_path: Path) -> Iterator[Callable[[Script], dict[str, str]]]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = str(tmp_path / "socket")
    listener.bind(path)
    listener.listen(1)
    threads = []

    def start(script: Script) -> dict[str, str]:
        def run() -> None:
            connection, _ = listener.accept()
            with connection:
                try:
                    script(connection)
                finally:
                    connection.shutdown(socket.SHUT_RDWR)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return {daemon.SOCKET_ENV: path}

    yield start
    listener.close()
    for thread in threads:
        thread.join(5)


def test_the_daemon_names_the_valid_paths(fake_daemon: Callable[[Script], dict[str, str]]) -> None:
    environ = fake_daemon(honest({APP, LIB}))
    assert daemon.valid_paths([APP, GONE, LIB], environ=environ) == {APP, LIB}


def test_log_messages_before_the_answer_are_skipped(
    fake_daemon: Callable[[Script], dict[str, str]],
) -> None:
    environ = fake_daemon(honest({APP}, log=b"acquiring big lock"))
    assert daemon.valid_paths([APP, GONE], environ=environ) == {APP}


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (integer(0x12345678), "wrong magic"),
        (integer(daemon.WORKER_MAGIC_2) + integer(1 << 8 | 20), "daemon protocol 1.20"),
        (
            integer(daemon.WORKER_MAGIC_2)
            + integer(1 << 8 | 34)
            + string(b"2.8.0")
            + integer(0x63787470),  # STDERR_ERROR
            "answered with message 0x63787470",
        ),
        (integer(daemon.WORKER_MAGIC_2) + integer(1 << 8 | 34) + integer(1 << 40), "string of"),
        (integer(daemon.WORKER_MAGIC_2), "closed the connection"),
    ],
    ids=["wrong_magic", "old_protocol", "error_message", "huge_string", "cut_short"],
)
def test_an_unexpected_daemon_is_unavailable(
    fake_daemon: Callable[[Script], dict[str, str]], reply: bytes, why: str
) -> None:
    environ = fake_daemon(raw(reply))
    with pytest.raises(daemon.DaemonUnavailable, match=why):
        daemon.valid_paths([APP], environ=environ)


def test_a_path_that_was_not_asked_about_is_refused(
    fake_daemon: Callable[[Script], dict[str, str]],
) -> None:
    answer = integer(daemon.STDERR_LAST) + integer(1) + string(GONE.encode())
    handshake = integer(daemon.WORKER_MAGIC_2) + integer(1 << 8 | 34) + string(b"2.8.0")
    environ = fake_daemon(raw(handshake + integer(daemon.STDERR_LAST) + answer))
    with pytest.raises(daemon.DaemonUnavailable):
        daemon.valid_paths([APP], environ=environ)


def test_no_socket_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(daemon.DaemonUnavailable, match="No such file"):
        daemon.valid_paths([APP], environ={daemon.SOCKET_ENV: str(tmp_path / "none")})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, daemon.DEFAULT_SOCKET),
        ({"NIX_REMOTE": "daemon", daemon.SOCKET_ENV: "/run/d"}, "/run/d"),
        ({"NIX_REMOTE": "unix:///run/other"}, "/run/other"),
    ],
)
def test_the_socket_is_found_as_nix_finds_it(environ: dict[str, str], expected: str) -> None:
    assert daemon.socket_path(environ) == expected


def test_another_store_is_not_the_daemon() -> None:
    with pytest.raises(daemon.DaemonUnavailable, match="not the daemon"):
        daemon.socket_path({"NIX_REMOTE": "local"})
