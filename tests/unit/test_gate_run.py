"""The gate's shell in-process: what is logged where, what the client is told, which file
is read, and the syslog fallback, received on a datagram socket bound here."""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixwarden.cli import main
from nixwarden.config import Config, Principal
from nixwarden.errors import ConfigError, UsageError
from nixwarden.gate import cli as gate_cli
from nixwarden.gate import keyline, run, syslog

ED25519 = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + b"k" * 32).decode()
KEY = "ssh-ed25519 SHA256:" + "A" * 43
LINE_KEY_ARGUMENT = "ssh-ed25519:SHA256:" + "A" * 43
SYSLOG_LINE = re.compile(
    rb"<(\d+)>(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([ 1-3]\d) "
    rb"(\d\d):(\d\d):(\d\d) nixwarden-gate\[(\d+)\]: (.*)"
)


class Syslog:
    """A /dev/log of our own: a bound datagram socket the gate's syslog module sends to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def records(self) -> list[dict[str, object]]:
        """Every JSON message received so far (each datagram checked against the format)."""
        received = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return received
            match = SYSLOG_LINE.fullmatch(data)
            assert match is not None, data
            assert int(match[1]) == syslog.FACILITY_AUTH * 8 + syslog.SEVERITY_ERR
            assert int(match[7]) == os.getpid()
            received.append(json.loads(match[8]))


@pytest.fixture
def syslog_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Syslog]:
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        monkeypatch.setattr(syslog, "SOCKET", str(path))
        yield Syslog(sock)


def write_config(tmp_path: Path, extra: str = "", audit_log: str | None = None) -> Path:
    # The session state tmpfiles.d makes: root's sessions/, and this user's own directory.
    (tmp_path / "sessions").mkdir(mode=0o711, exist_ok=True)
    (tmp_path / "sessions" / pwd.getpwuid(os.geteuid()).pw_name).mkdir(mode=0o700, exist_ok=True)
    config = tmp_path / "config.toml"
    log = audit_log or str(tmp_path / "audit.jsonl")
    config.write_text(
        f'[gate]\naudit_log = "{log}"\nstate_dir = "{tmp_path}"\nnix_daemon = "/bin/true"\n'
        f'[principals.alice]\nstore = "host"\n{extra}'
    )
    return config


ENV = {b"SSH_ORIGINAL_COMMAND": b"nix-daemon --stdio", b"SSH_CONNECTION": b"192.0.2.7 5 1 22"}


def audit_records(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


# --- a broken configuration: syslog has it all, the client one generic line ---------------


def test_broken_config_denial_goes_to_syslog_and_the_client_learns_nothing(
    tmp_path: Path, syslog_socket: Syslog
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[principals.alice]\nstore = 'nowhere'\nwirte = true\n")
    with pytest.raises(run.GateDenied) as denied:
        run.serve("alice", str(config), ENV)
    assert str(denied.value) == "principal alice: configuration error; see the server's log"
    (record,) = syslog_socket.records()
    assert record["decision"] == "deny"
    assert record["principal"] == "alice"
    assert record["client"] == "192.0.2.7:5"
    assert record["request"] == "nix-daemon --stdio"
    assert str(record["reason"]).startswith(f"configuration error: {config}: principals.alice.")


def test_unreadable_and_deep_configs_are_logged_denials_too(
    tmp_path: Path, syslog_socket: Syslog
) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    for path in (str(tmp_path / "missing.toml"), str(deep)):
        with pytest.raises(run.GateDenied, match=r"configuration error; see the server's log$"):
            run.serve("alice", path, ENV)
    missing, nested = syslog_socket.records()
    assert "cannot read: No such file or directory" in str(missing["reason"])
    assert "nest deeper than 16" in str(nested["reason"])


def test_unknown_principal_is_logged_and_the_client_not_told_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with pytest.raises(run.GateDenied) as denied:
        run.serve("mallory", str(config), ENV)
    assert str(denied.value) == "principal mallory: configuration error; see the server's log"
    (record,) = audit_records(tmp_path)
    assert record["reason"] == f"{config}: principals.mallory: no such principal"


def test_internal_error_is_logged_in_detail_and_generic_for_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path)

    def broken(*_args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(run.sessions, "acquire_numbered", broken)
    with pytest.raises(run.GateDenied) as denied:
        run.serve("alice", str(config), ENV)
    assert str(denied.value) == "principal alice: server-side error; see the server's log"
    (record,) = audit_records(tmp_path)
    assert record["reason"] == "internal error: OSError: [Errno 5] Input/output error"


def test_a_refused_request_is_still_explained_to_the_client(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = {**ENV, b"SSH_ORIGINAL_COMMAND": b"nix-daemon --stdio; id"}
    with pytest.raises(run.GateDenied, match="character ';' is not allowed"):
        run.serve("alice", str(config), env)
    assert audit_records(tmp_path)[0]["decision"] == "deny"


# --- an unusable audit log: the decision goes to syslog, as a denial ---------------------


def test_unwritable_audit_log_turns_an_allow_into_a_syslogged_denial(
    tmp_path: Path, syslog_socket: Syslog
) -> None:
    config = write_config(tmp_path, audit_log=str(tmp_path / "no-such-dir" / "audit.jsonl"))
    with pytest.raises(run.GateDenied) as denied:
        run.serve("alice", str(config), ENV)
    assert (
        str(denied.value) == "principal alice: the session cannot be logged; see the server's log"
    )
    (record,) = syslog_socket.records()
    assert record["decision"] == "deny"
    assert record["exec"] is None
    assert "audit log" in str(record["reason"]) and "No such file" in str(record["reason"])


def test_unwritable_audit_log_on_a_denial_keeps_both_reasons(
    tmp_path: Path, syslog_socket: Syslog
) -> None:
    (tmp_path / "log-is-a-fifo").mkdir()
    fifo = tmp_path / "log-is-a-fifo" / "audit.jsonl"
    os.mkfifo(fifo)
    config = write_config(tmp_path, audit_log=str(fifo))
    env = {**ENV, b"SSH_ORIGINAL_COMMAND": b"id"}
    with pytest.raises(run.GateDenied, match="program 'id' is not nix-daemon"):
        run.serve("alice", str(config), env)
    (record,) = syslog_socket.records()
    assert record["reason"] == (
        f"program 'id' is not nix-daemon or nix-store; and audit log {fifo}: "
        "No such device or address"
    )


def test_without_syslog_the_gate_still_denies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syslog, "SOCKET", str(tmp_path / "nobody-listens"))
    assert syslog.send("x") is not None
    config = tmp_path / "config.toml"
    config.write_text("[principals.alice]\nstore = 'nowhere'\n")
    with pytest.raises(run.GateDenied, match="configuration error"):
        run.serve("alice", str(config), ENV)


def test_syslog_over_a_stream_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        monkeypatch.setattr(syslog, "SOCKET", str(path))
        assert syslog.send("over a stream") is None
        connection, _ = server.accept()
        with connection:
            data = connection.recv(65536)
    assert data.endswith(b"nixwarden-gate[%d]: over a stream\0" % os.getpid())


# --- the syslog line itself ---------------------------------------------------------------


def test_syslog_line_is_what_syslog3_sends_to_dev_log() -> None:
    # 2026-01-05 09:03:07 local time: a one-digit day is padded with a space, like %e.
    import time  # noqa: PLC0415

    now = time.mktime((2026, 1, 5, 9, 3, 7, 0, 0, -1))
    line = syslog.line('{"a":"b\\n"}', now=now, pid=42)
    assert line == b'<35>Jan  5 09:03:07 nixwarden-gate[42]: {"a":"b\\n"}'


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("two\nlines", b"two\\x0alines"),
        ("bidi \u202e", b"bidi \\u202e"),
        ("next \u0085 line", b"next \\u0085 line"),
        ("caf\u00e9", "caf\u00e9".encode()),
    ],
)
def test_syslog_line_is_one_escaped_line(message: str, shown: bytes) -> None:
    line = syslog.line(message, pid=1)
    assert line.endswith(b": " + shown)
    assert b"\n" not in line


def test_syslog_line_is_cut_to_what_rsyslog_keeps() -> None:
    line = syslog.line("\u00e9" * 10000, pid=1)
    assert len(line) <= syslog.MAX_MESSAGE_BYTES
    assert line.endswith(b" [cut]")
    line.decode("utf-8")  # cut on a character boundary


# --- which file: the gate's rule for every form of `nixwarden gate` -----------------------


@pytest.fixture
def permissive_env_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$NIXWARDEN_CONFIG names a policy that allows alice; the default path has none."""
    config = write_config(tmp_path)
    monkeypatch.setenv("NIXWARDEN_CONFIG", str(config))
    assert not Path("/etc/nixwarden/config.toml").exists()
    return config


def test_check_reads_what_the_gate_serves_not_the_environment(
    permissive_env_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=r"^/etc/nixwarden/config\.toml: cannot read"):
        run.check("alice", None, "nix-daemon --stdio")
    command = ["gate", "--check", "--principal", "alice", "--command", "nix-daemon --stdio"]
    assert main(command) == 2
    assert "/etc/nixwarden/config.toml" in capsys.readouterr().err
    assert main([*command, "--config", str(permissive_env_config)]) == 0
    assert capsys.readouterr().out.startswith("allow: /bin/true --stdio")


def test_serve_ignores_the_environment(permissive_env_config: Path) -> None:
    with pytest.raises(run.GateDenied, match="configuration error"):
        run.serve("alice", None, ENV)


def test_compile_ignores_the_environment(
    permissive_env_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gate", "--compile"]) == 2
    assert "/etc/nixwarden/config.toml" in capsys.readouterr().err
    assert not list(permissive_env_config.parent.glob(".*.compiled"))


# --- which key ----------------------------------------------------------------------------


def auth_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes) -> bytes:
    """An SSH_USER_AUTH file where sshd would put it (its prefix made to point here)."""
    prefix = str(tmp_path / "sshauth.").encode()
    monkeypatch.setattr(run, "AUTH_INFO_PREFIX", prefix)
    path = prefix + b"XXXXXXXXXXXXXXX"
    Path(os.fsdecode(path)).write_bytes(content)
    return path


def test_keys_from_ssh_user_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = keyline.parse_public_key(f"ssh-ed25519 {ED25519}", "k.pub")[1]
    path = auth_info(tmp_path, monkeypatch, f"publickey ssh-ed25519 {blob}\npassword\n".encode())
    assert run._auth_keys(path) == [f"ssh-ed25519 {keyline.fingerprint(blob)}"]


@pytest.mark.parametrize("kind", ["fifo", "symlink", "other_prefix", "missing", "subdir"])
def test_auth_info_that_sshd_did_not_write_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path = auth_info(tmp_path, monkeypatch, f"publickey ssh-ed25519 {ED25519}\n".encode())
    target = Path(os.fsdecode(path))
    match kind:
        case "fifo":
            target.unlink()
            os.mkfifo(target)  # must not block the gate
        case "symlink":
            real = tmp_path / "real"
            target.rename(real)
            target.symlink_to(real)
        case "other_prefix":
            path = str(tmp_path / "elsewhere").encode()
            target.rename(os.fsdecode(path))
        case "missing":
            target.unlink()
        case "subdir":
            path = run.AUTH_INFO_PREFIX + b"x/../" + path.rsplit(b"/", 1)[1]
    assert run._auth_keys(path) == []


def test_the_line_names_its_key_when_sshd_removed_the_file(tmp_path: Path) -> None:
    """sshd unlinks SSH_USER_AUTH when the connection closes, which a client refused a
    pty does at once: the gate, still starting, then finds no file."""
    config = write_config(tmp_path)
    env = {**ENV, b"SSH_USER_AUTH": b"/tmp/sshauth.gone-already"}
    with pytest.raises(run.GateDenied):
        run.serve("alice", str(config), {**env, b"SSH_ORIGINAL_COMMAND": b"id"}, line_key=KEY)
    assert audit_records(tmp_path)[0]["keys"] == [KEY]


def test_key_argument_is_checked() -> None:
    assert gate_cli.log_key(LINE_KEY_ARGUMENT) == KEY
    assert gate_cli.log_key("sk-ssh-ed25519@openssh.com:SHA256:" + "b" * 43).startswith("sk-")
    for bad in ("ssh-ed25519", "ssh-ed25519:MD5:aa", "x y:SHA256:" + "A" * 43, "a:SHA256:A\n"):
        with pytest.raises(UsageError, match="is not TYPE:SHA256:FINGERPRINT"):
            gate_cli.log_key(bad)


def test_key_line_names_its_key_and_the_gate_reads_it() -> None:
    key = keyline.parse_public_key(f"ssh-ed25519 {ED25519} alice@laptop", "k.pub")
    line = keyline.render(["/py", "-I", "/g"], "alice", "/etc/nw.toml", key)
    argument = line.split('"')[1].split()[-1]
    assert gate_cli.log_key(argument) == f"ssh-ed25519 {keyline.fingerprint(key[1])}"


# --- a broken command line under sshd is a logged denial too ------------------------------


def test_bad_gate_arguments_under_sshd_are_logged(
    syslog_socket: Syslog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "environb", {**ENV})
    assert main(["gate", "--principal", "alice", "--key", "nonsense"]) == 1
    assert (
        capsys.readouterr().err == "nixwarden: denied: configuration error; see the server's log\n"
    )
    (record,) = syslog_socket.records()
    assert "the gate's command line is wrong" in str(record["reason"])
    # At a terminal (no SSH_CONNECTION), a person is told what is wrong.
    monkeypatch.setattr(os, "environb", {})
    assert main(["gate", "--principal", "alice", "--key", "nonsense"]) == 2
    assert "is not TYPE:SHA256:FINGERPRINT" in capsys.readouterr().err


def test_check_output_is_escaped(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    allowed, detail = run.check("alice", str(config), "nix-daemon --stdio --store '\u202e'")
    assert not allowed and detail.isprintable()


def test_a_limit_hit_is_a_limit_line_in_the_audit_log_or_syslog(
    tmp_path: Path, syslog_socket: Syslog
) -> None:
    session = run._Session("alice", ENV)
    log = tmp_path / "audit.jsonl"
    assert session.log(str(log), "limit", "session of principal alice hit its tasks limit", None)
    (entry,) = map(json.loads, log.read_text().splitlines())
    assert (entry["decision"], entry["exec"]) == ("limit", None)
    # The audit log cannot take it: syslog has it, still a limit line, and why it is there.
    assert not session.log(str(tmp_path / "missing" / "audit.jsonl"), "limit", "hit", None)
    (record,) = syslog_socket.records()
    assert record["decision"] == "limit"
    assert record["reason"].startswith("hit; and audit log ")


def test_only_principals_with_limits_are_supervised() -> None:
    def principal(text: str) -> Principal:
        return Config.from_toml(f"[principals.t]\n{text}\n".encode(), "c").principal("t")

    assert not run._has_limits(principal(""))
    assert not run._has_limits(principal("max_processes = 64\nsession_timeout = 60"))
    for text in ('memory = "1G"', "cpu = 1", "tasks = 64", 'disk_quota = "1G"'):
        assert run._has_limits(principal(text)), text
