"""The gate's compiled policy: used only while it mirrors the config file exactly."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nixwarden import config
from nixwarden.gate import compiled, run

CONFIG = """
[gate]
audit_log = "/var/log/nw.jsonl"
[principals.alice]
protocols = ["ssh-ng", "ssh"]
write = true
store = "host"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def test_round_trip(config_file: Path) -> None:
    loaded = config.load(str(config_file))
    written = compiled.write(loaded)
    assert written == str(config_file.parent / ".config.toml.compiled")
    assert os.stat(written).st_mode & 0o777 == 0o644
    result = compiled.read(str(config_file))
    assert result is not None
    gate, _tenants, principals = result
    assert gate.audit_log == "/var/log/nw.jsonl"
    alice = principals["alice"]
    assert alice.protocols == ("ssh-ng", "ssh")
    assert alice.write is True
    with pytest.raises(AttributeError):
        alice.write = False  # type: ignore[misc]


def test_edited_config_is_not_served_from_a_stale_copy(config_file: Path) -> None:
    compiled.write(config.load(str(config_file)))
    time.sleep(0.01)
    config_file.write_text(CONFIG.replace("write = true", "write = false"))
    assert compiled.read(str(config_file)) is None
    _gate, _tenants, principals = run.load_policy(str(config_file))
    assert principals["alice"].write is False


def test_copy_writable_by_others_is_ignored(config_file: Path) -> None:
    written = compiled.write(config.load(str(config_file)))
    os.chmod(written, 0o666)
    assert compiled.read(str(config_file)) is None


def test_garbage_copy_is_ignored(config_file: Path) -> None:
    Path(compiled.path_for(str(config_file))).write_bytes(b"\x00garbage")
    assert compiled.read(str(config_file)) is None
    assert run.load_policy(str(config_file))[2]["alice"].store == "host"


def test_gate_never_takes_its_config_from_the_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIXWARDEN_CONFIG", str(config_file))
    env = {b"SSH_ORIGINAL_COMMAND": b"nix-daemon --stdio"}
    with pytest.raises(run.GateDenied, match=r"/etc/nixwarden/config\.toml"):
        run.serve("alice", None, env)


def test_unexpected_errors_are_logged_denials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "audit.jsonl"
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        f'[gate]\naudit_log = "{log}"\nstate_dir = "{tmp_path}"\n'
        '[principals.alice]\nstore = "host"\n'
    )

    def broken(*_args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(run.sessions, "acquire", broken)
    env = {b"SSH_ORIGINAL_COMMAND": b"nix-daemon --stdio"}
    with pytest.raises(run.GateDenied, match="internal error: OSError"):
        run.serve("alice", str(config_file), env)
    (line,) = log.read_text().splitlines()
    assert '"decision":"deny"' in line and "Input/output error" in line
