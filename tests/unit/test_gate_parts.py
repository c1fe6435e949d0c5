"""The gate's other pieces: the audit log line, session slots, the authorized_keys line."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from nixwarden.errors import InvalidInput
from nixwarden.gate import audit_log, keyline

ED25519_BLOB = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + b"k" * 32).decode()


def test_audit_entry_is_one_ascii_json_line() -> None:
    line = audit_log.entry(
        principal="alice",
        decision="deny",
        reason="character ';' is not allowed",
        request="nix-daemon --stdio; touch M\n\u00e9\\xff",
        mode="command",
        client="127.0.0.1:5000",
        keys=["ssh-ed25519 SHA256:abc"],
        user="builder",
        argv=None,
        now=0.5,
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    line.decode("ascii")
    record = json.loads(line)
    assert record["time"] == "1970-01-01T00:00:00.500Z"
    assert record["request"] == "nix-daemon --stdio; touch M\n\u00e9\\xff"
    assert set(record) == {
        "time", "principal", "user", "client", "keys", "mode", "request", "decision",
        "reason", "exec", "pid",
    }  # fmt: skip


def test_audit_append_and_unwritable(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    audit_log.append(str(log), b'{"a":1}\n')
    audit_log.append(str(log), b'{"a":2}\n')
    assert log.read_bytes() == b'{"a":1}\n{"a":2}\n'
    assert log.stat().st_mode & 0o777 == 0o600
    with pytest.raises(audit_log.AuditLogUnwritable, match="No such file"):
        audit_log.append(str(tmp_path / "missing" / "audit.jsonl"), b"x\n")


def test_audit_log_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "audit.jsonl").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(audit_log.AuditLogUnwritable):
        audit_log.append(str(tmp_path / "audit.jsonl"), b"x\n")


def test_key_line() -> None:
    key = keyline.parse_public_key(f"ssh-ed25519 {ED25519_BLOB} alice@laptop\n", "k.pub")
    command = ["/opt/nw/bin/python3", "-I", "/opt/nw/bin/nixwarden-gate"]
    line = keyline.render(command, "alice", "/etc/nixwarden/config.toml", key)
    assert line == (
        'restrict,command="/opt/nw/bin/python3 -I /opt/nw/bin/nixwarden-gate --principal alice '
        "--config /etc/nixwarden/config.toml "
        f'--key ssh-ed25519:{keyline.fingerprint(ED25519_BLOB)}" ssh-ed25519 {ED25519_BLOB} '
        "alice@laptop"
    )
    # What `ssh-keygen -l` prints for the same key.
    assert keyline.fingerprint(ED25519_BLOB) == "SHA256:" + base64.b64encode(
        hashlib.sha256(base64.b64decode(ED25519_BLOB)).digest()
    ).decode().rstrip("=")


def test_gate_command_prefers_the_launcher(tmp_path: Path) -> None:
    nixwarden = tmp_path / "nixwarden"
    nixwarden.write_text("")
    assert keyline.gate_command(str(nixwarden), "/py") == ["/py", "-I", str(nixwarden), "gate"]
    (tmp_path / "nixwarden-gate").write_text("")
    assert keyline.gate_command(str(nixwarden), "/py") == [
        "/py", "-I", str(tmp_path / "nixwarden-gate"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "exactly one"),
        (f"ssh-ed25519 {ED25519_BLOB}\nssh-ed25519 {ED25519_BLOB}\n", "exactly one"),
        (f'command="id" ssh-ed25519 {ED25519_BLOB}', "not an OpenSSH public key"),
        ("ssh-ed25519 not*base64", "base64"),
        (f"ssh-rsa {ED25519_BLOB}", "does not match"),
        (f"ssh-ed25519 {ED25519_BLOB} a\x07b", "control characters"),
    ],
)
def test_bad_public_keys(text: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        keyline.parse_public_key(text, "k.pub")


@pytest.mark.parametrize(
    "path", ["relative/nixwarden", "/opt/my nixwarden", '/opt/"x', "/opt/$(id)", "/opt/a;b"]
)
def test_paths_the_login_shell_would_interpret_are_refused(path: str) -> None:
    key = keyline.parse_public_key(f"ssh-ed25519 {ED25519_BLOB}", "k.pub")
    with pytest.raises(InvalidInput, match="must be absolute"):
        keyline.render([path, "gate"], "alice", "/etc/nixwarden/config.toml", key)


def test_key_line_renders_the_fallback_gate_command() -> None:
    """Without the lean launcher beside it, the line runs `nixwarden gate`."""
    from nixwarden.gate import keyline  # noqa: PLC0415

    command = keyline.gate_command(
        "/opt/nixwarden/bin/nixwarden-missing-dir/nixwarden", "/usr/bin/python3"
    )
    assert command[-1] == "gate"
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    line = keyline.render(command, "alice", "/etc/nixwarden/config.toml", ("ssh-ed25519", blob, ""))
    assert "nixwarden gate --principal alice --config /etc/nixwarden/config.toml" in line
    with pytest.raises(InvalidInput):
        keyline.render(
            ["/usr/bin/python3", "-I", "rel/nixwarden", "gate"],
            "alice",
            "/etc/nixwarden/config.toml",
            ("ssh-ed25519", blob, ""),
        )
