"""The receive service's pure parts: [receive] configuration, staging NARs as a file://
binary cache (hash and size checked as they arrive), profile generations, the socket's
framing and time limit."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixwarden.config import Config
from nixwarden.deploy import wire
from nixwarden.deploy.profiles import generation_of
from nixwarden.deploy.receive import Channel, PeerGone, Staging, Stalled, peer_of
from nixwarden.deploy.receive_cli import read_signing_key
from nixwarden.errors import CommandFailed, ConfigError, FormatError, InvalidInput, Refused
from nixwarden.nix.commands import parse_generations
from nixwarden.nix.storepath import StorePath
from nixwarden.trust import cache, nar
from nixwarden.trust.keys import SecretKey, TrustedKeys

# --- configuration -------------------------------------------------------------------------


def config(text: str) -> Config:
    return Config.from_toml(text.encode(), "/etc/nixwarden/config.toml")


def test_receive_defaults_and_settings() -> None:
    assert config("").receive.socket == "/run/nixwarden/receive.sock"
    settings = config(
        """
        [receive]
        user = "deployd"
        socket = "/run/x/receive.sock"
        idle_timeout = "90s"
        max_connections = 4
        [receive.activation.web]
        command = ["/usr/bin/sudo", "-n", "/usr/bin/systemctl", "restart", "web.service"]
        timeout = "5m"
        """
    ).receive
    assert (settings.user, settings.idle_timeout, settings.max_connections) == ("deployd", 90, 4)
    assert settings.activation["web"].command[0] == "/usr/bin/sudo"
    assert settings.activation["web"].timeout == 300


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[receive]\nuser = "root"', "never runs as root"),
        ('[receive]\nuser = "a b"', "not a unix user name"),
        ('[receive]\nsocket = "relative.sock"', "absolute path"),
        ('[receive]\nidle_timeout = "2h"', "1 second to 1 hour"),
        ("[receive]\nmax_connections = 0", "from 1 to 1024"),
        ("[receive]\nport = 22", "unknown key"),
        ('[receive.activation.web]\ncommand = ["systemctl"]', "absolute program"),
        ('[receive.activation.web]\ntimeout = "5m"', "required"),
        ('[receive.activation."../x"]\ncommand = ["/bin/true"]', "profile name"),
        ('[receive.activation.web]\ncommand = ["/bin/true"]\ntimeout = "2d"', "1 second"),
    ],
)
def test_bad_receive_settings_are_one_line_config_errors(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        config(text)


# --- staging -------------------------------------------------------------------------------

PATH = "/nix/store/" + "a" * 32 + "-hello"


class Frames:
    """A channel that hands out prepared messages."""

    def __init__(self, messages: list[wire.Message]) -> None:
        self.messages: Iterator[wire.Message] = iter(messages)

    def read(self) -> wire.Message:
        return next(self.messages)


def announced(tree: Path, **changes: object) -> tuple[wire.PathInfo, bytes]:
    data = nar.dump_bytes(tree)
    digest = nar.hash_path(tree)
    info = wire.PathInfo(
        path=str(changes.get("path", PATH)),
        nar_hash=digest.hash,
        nar_size=int(changes.get("nar_size", digest.size)),  # type: ignore[call-overload]
        references=(),
        deriver=None,
        ca=None,
        signatures=(),
    )
    return info, data


def chunks(data: bytes, size: int = 7) -> list[wire.Message]:
    parts: list[wire.Message] = [
        wire.NarData(data[i : i + size]) for i in range(0, len(data), size)
    ]
    return [*parts, wire.NarEnd()]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    path = tmp_path / "hello"
    path.write_text("hello, world\n")
    return path


@pytest.fixture
def staging(tmp_path: Path) -> Iterator[Staging]:
    parent = tmp_path / "staging"
    parent.mkdir(mode=0o700)
    made = Staging(str(parent))
    yield made
    made.remove()
    assert not os.listdir(parent)


def test_a_staged_path_is_a_binary_cache_entry_with_the_countersignature(
    staging: Staging, tree: Path
) -> None:
    info, data = announced(tree)
    host = SecretKey.generate("host-1")
    staging.receive_nar(Frames(chunks(data)), info)  # type: ignore[arg-type]
    staging.write_narinfo(info, host)
    assert os.stat(staging.root).st_mode & 0o777 == 0o700
    read = cache.BinaryCache(staging.root).check(
        StorePath.parse(PATH), TrustedKeys.of([host.public()])
    )
    assert read.nar_hash == info.nar_hash and read.compression == "none"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("tampered", "does not match the narHash"),
        ("short", "NAR has"),
        ("long", "NAR longer than"),
    ],
)
def test_a_nar_that_is_not_what_was_announced_is_refused(
    staging: Staging, tree: Path, change: str, why: str
) -> None:
    info, data = announced(tree)
    match change:
        case "tampered":
            data = data.replace(b"hello", b"jello")
        case "short":
            data = data[:-8]
        case "long":
            info = announced(tree, nar_size=len(data) - 8)[0]
    with pytest.raises(Refused, match=why):
        staging.receive_nar(Frames(chunks(data)), info)  # type: ignore[arg-type]


def test_a_nar_interrupted_by_another_message_is_a_protocol_error(
    staging: Staging, tree: Path
) -> None:
    info, data = announced(tree)
    with pytest.raises(wire.WireError, match="expected NAR_DATA or NAR_END, got COMMIT"):
        staging.receive_nar(Frames([wire.NarData(data[:5]), wire.Commit()]), info)  # type: ignore[arg-type]


# --- profiles ------------------------------------------------------------------------------


def test_generation_links() -> None:
    assert generation_of("web", "web-12-link") == 12
    for target in ("web-x-link", "db-1-link", "/nix/store/x", "web-1-link/.."):
        with pytest.raises(CommandFailed):
            generation_of("web", target)


def test_list_generations_output() -> None:
    text = "   1   2026-11-22 21:05:48   \n   2   2026-11-22 21:06:01   (current)\n"
    assert parse_generations(text) == ((1, False), (2, True))
    with pytest.raises(CommandFailed):
        parse_generations("error: something\n")


# --- the socket ------------------------------------------------------------------------------


def test_a_frame_must_arrive_whole_within_the_idle_timeout() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        channel = Channel(ours, idle_timeout=0.3)
        theirs.sendall(wire.encode(wire.Commit()))
        assert isinstance(channel.read(), wire.Commit)
        theirs.sendall(wire.encode(wire.Relay("alice"))[:5])  # a trickle that never ends
        started = time.monotonic()
        with pytest.raises(Stalled, match=r"no whole frame within 0\.3 s"):
            channel.read()
        assert time.monotonic() - started < 5


def test_a_peer_that_closes_between_frames_is_gone() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        theirs.close()
        with pytest.raises(PeerGone):
            Channel(ours, idle_timeout=5).read()


def test_the_peer_is_who_the_kernel_says() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        peer = peer_of(ours)
    assert (peer.uid, peer.pid) == (os.geteuid(), os.getpid())


# --- the countersigning key ------------------------------------------------------------------


def test_the_signing_key_must_be_a_private_file_of_ours(tmp_path: Path) -> None:
    key = SecretKey.generate("host-1")
    path = tmp_path / "host.sec"
    path.write_text(key.render())
    path.chmod(0o600)
    assert read_signing_key(str(path)) == key
    link = tmp_path / "link.sec"
    link.symlink_to(path)
    with pytest.raises(InvalidInput):
        read_signing_key(str(link))
    path.chmod(0o640)
    with pytest.raises(InvalidInput, match="too open"):
        read_signing_key(str(path))
    path.chmod(0o600)
    path.write_text("host-1:bm90IGEga2V5")
    with pytest.raises(FormatError, match=r"host\.sec"):
        read_signing_key(str(path))
