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
