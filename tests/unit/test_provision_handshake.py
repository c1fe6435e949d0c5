"""The greetings check-builder reads from a store through the gate: Nix's bytes exactly, and
anything else one error."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nixwarden.errors import FormatError
from nixwarden.nix import daemon
from nixwarden.provision import handshake


def _string(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data + b"\0" * (-len(data) % 8)


def _daemon(version: int, nix: bytes | None, messages: int = 0) -> bytes:
    data = struct.pack("<QQ", daemon.WORKER_MAGIC_2, version)
    if nix is not None:
        data += _string(nix)
    for _ in range(messages):
        data += struct.pack("<Q", daemon.STDERR_NEXT) + _string(b"warning: hi")
    return data + struct.pack("<Q", daemon.STDERR_LAST)


def test_what_the_client_sends_is_what_nix_sends() -> None:
    assert daemon.worker_hello() == struct.pack("<QQQQ", 0x6E697863, 0x122, 0, 0)
    assert handshake.serve_hello() == struct.pack("<QQ", 0x390C9DEB, 0x205)


def test_a_nix_2_8_daemon() -> None:
    greeting = handshake.parse_worker(_daemon(1 << 8 | 34, b"2.8.0", messages=2))
    assert greeting == handshake.Greeting("1.34", "2.8.0")


def test_an_old_daemon_sends_no_version() -> None:
    assert handshake.parse_worker(_daemon(1 << 8 | 32, None)) == handshake.Greeting("1.32", None)


def test_a_newer_daemon_answers_at_our_version() -> None:
    greeting = handshake.parse_worker(_daemon(1 << 8 | 37, b"2.24.9"))
    assert greeting == handshake.Greeting("1.37", "2.24.9")


def test_serve() -> None:
    data = struct.pack("<QQ", handshake.SERVE_MAGIC_2, 2 << 8 | 7)
    assert handshake.parse_serve(data) == handshake.Greeting("2.7", None)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "cut short"),
        (struct.pack("<QQ", 1, 0x122), "wrong magic"),
        (struct.pack("<QQ", daemon.WORKER_MAGIC_2, 0x222), "does not know"),
        (_daemon(0x122, b"2.8.0")[:-8], "cut short"),
        (struct.pack("<QQQ", daemon.WORKER_MAGIC_2, 0x122, 1 << 40), "a string of"),
        (
            _daemon(0x122, b"2.8.0").replace(
                struct.pack("<Q", daemon.STDERR_LAST), struct.pack("<Q", 0x63787470)
            ),
            "message 0x63787470",
        ),
    ],
)
def test_anything_else_is_one_error(data: bytes, problem: str) -> None:
    with pytest.raises(FormatError, match=problem):
        handshake.parse_worker(data)


def test_a_version_with_control_characters_is_escaped() -> None:
    greeting = handshake.parse_worker(_daemon(0x122, b"2.8\x1b[2J"))
    assert greeting.nix_version == "2.8\\x1b[2J"


@given(st.binary(max_size=200))
def test_any_bytes_give_a_greeting_or_format_error(data: bytes) -> None:
    for parse in (handshake.parse_worker, handshake.parse_serve):
        with contextlib.suppress(FormatError):
            assert isinstance(parse(data), handshake.Greeting)
