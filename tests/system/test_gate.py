"""The gate through a real sshd: Nix's own clients get through, nothing else does."""

from __future__ import annotations

import json
import platform
import re
import secrets
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testbed import harness
from testbed.gate_setup import ClientStore, GatedBuilder, Principal

SYSTEM = f"{platform.machine()}-linux"
WORKER_MAGIC_1 = 0x6E697863
WORKER_MAGIC_2 = 0x6478696F


def derivation(tag: str, body: str = "echo hello {tag} > $out") -> str:
    script = body.format(tag=tag)
    return (
        f'derivation {{ name = "nwt-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        f'args = [ "-c" "{script}" ]; }}'
    )


def trusted_host_principal(builder: GatedBuilder, name: str) -> str:
    principal = builder.add(
        name,
        groups=(harness.NIX_USERS_GROUP, harness.TRUSTED_GROUP),
        protocols=["ssh-ng", "ssh"],
        write=True,
        store="host",
    )
    return principal.alias


@pytest.mark.parametrize("scheme", ["ssh-ng", "ssh"])
def test_store_ping_through_the_gate(builder: GatedBuilder, scheme: str) -> None:
    principal = builder.add("pinger", protocols=["ssh-ng", "ssh"], write=True, store="host")
    result = harness.run(
        ["nix", "store", "ping", "--store", f"{scheme}://{principal.alias}"],
        env=builder.sshd.client_env(),
    )
    assert f"{scheme}://{principal.alias}".encode() in result.stdout + result.stderr
    (line,) = builder.log_lines()
    record = json.loads(line)
    assert record["decision"] == "allow"
    assert record["principal"] == "pinger"
    assert record["user"] == principal.user.name
    assert record["client"].startswith("127.0.0.1:")
    assert record["keys"] and record["keys"][0].startswith("ssh-ed25519 SHA256:")
    expected = ["--stdio"] if scheme == "ssh-ng" else ["--serve", "--write"]
    assert record["exec"][1:] == expected
    assert record["exec"][0].startswith("/")


def test_nix_copy_to_host_store(builder: GatedBuilder, client: ClientStore) -> None:
    alias = trusted_host_principal(builder, "copier")
    tag = secrets.token_hex(6)
    path = client.add_text(f"nwt-copy-{tag}", f"copied {tag}\n")
    assert not Path(path).exists()  # the client's store is not the host's
    client.run("nix", "copy", "--to", f"ssh-ng://{alias}", path)
    assert Path(path).read_text() == f"copied {tag}\n"
    harness.run(["nix-store", "--check-validity", path])


def test_untrusted_copy_needs_signatures(builder: GatedBuilder, client: ClientStore) -> None:
    principal = builder.add("untrusted", store="host")
    tag = secrets.token_hex(6)
    # Built by the client, so input-addressed: only a signature could vouch for it. (A
    # content-addressed path from `nix-store --add` is accepted unsigned, rightly.)
    path = client.run("nix-build", "--no-out-link", "-E", derivation(tag)).stdout.decode().strip()
    result = client.run("nix", "copy", "--to", f"ssh-ng://{principal.alias}", path, check=False)
    assert result.returncode != 0
    assert b"because it lacks a valid signature" in result.stderr  # Nix 2.8 wording
    assert not Path(path).exists()


@pytest.mark.parametrize("scheme", ["ssh-ng", "ssh"])
def test_remote_build_through_the_gate(
    builder: GatedBuilder, client: ClientStore, scheme: str
) -> None:
    alias = trusted_host_principal(builder, f"builds-{scheme}")
    tag = secrets.token_hex(6)
    result = client.run(
        "nix-build", "--no-out-link", "--max-jobs", "0",
        "--builders", f"{scheme}://{alias} {SYSTEM} - 1 1",
        "-E", derivation(tag),
    )  # fmt: skip
    out = result.stdout.decode().strip()
    assert out.startswith("/nix/store/") and out.endswith(f"nwt-{tag}")
    # The output came back to the client's own store, and was built on the builder.
    assert (client.root / "store" / out.removeprefix("/nix/store/")).read_text() == f"hello {tag}\n"
    assert Path(out).read_text() == f"hello {tag}\n"
    allowed = [json.loads(line) for line in builder.log_lines()]
    assert allowed and all(record["decision"] == "allow" for record in allowed)


# --- refusals -----------------------------------------------------------------------------


@pytest.fixture
def marker_dir() -> Iterator[Path]:
    """Writable by the gate's users, so a command that got through could create the marker."""
    directory = harness.world_dir("nwt-marker")
    directory.chmod(0o777)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def refused_commands(marker: Path) -> dict[str, list[str]]:
    m = str(marker)
    return {
        "cmd_plain_id": ["id"],
        "cmd_semicolon_chain": [f"nix-daemon --stdio; touch {m}"],
        "cmd_and_chain": [f"nix-daemon --stdio && touch {m}"],
        "cmd_dollar_only_subshell": [f"$(touch {m})"],
        "cmd_backticks": [f"nix-daemon --stdio `touch {m}`"],
        "cmd_newline_second_command": [f"nix-daemon --stdio\ntouch {m}"],
        "cmd_option_build_hook": [f"nix-daemon --stdio --option build-hook {m}"],
        "cmd_bash_c_touch": [f"bash -c 'touch {m}'"],
        "cmd_overlong": ["nix-daemon --stdio --store " + "a" * 5000],
        "cmd_non_utf8": ["nix-daemon --stdio \udcff"],
    }


@pytest.mark.parametrize("name", sorted(refused_commands(Path("/m")).keys()), ids=lambda name: name)
def test_refused_commands_run_nothing(builder: GatedBuilder, marker_dir: Path, name: str) -> None:
    principal = builder.add("victim", protocols=["ssh-ng", "ssh"], write=True, store="host")
    marker = marker_dir / "M"
    command = refused_commands(marker)[name]
    argv = [
        arg.encode("utf-8", "surrogateescape")
        for arg in builder.sshd.ssh_argv(principal.alias, *command)
    ]
    result = subprocess.run(
        argv, env=harness.base_env(), capture_output=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert b"nixwarden: denied: principal victim:" in result.stderr
    assert not marker.exists()
    (line,) = builder.log_lines()
    assert json.loads(line)["decision"] == "deny"


def test_write_refused_without_write(builder: GatedBuilder) -> None:
    principal = builder.add("reader", protocols=["ssh"], store="host")
    result = builder.ssh(principal, "nix-store", "--serve", "--write", input=b"")
    assert result.returncode == 1
    assert b"--write is not allowed (write = false)" in result.stderr
    # Read-only serving is what this principal has.
    allowed = builder.ssh(principal, "nix-store", "--serve", input=b"")
    assert b"denied" not in allowed.stderr


def test_protocol_the_principal_lacks(builder: GatedBuilder) -> None:
    principal = builder.add("ngonly", protocols=["ssh-ng"], store="host")
    result = harness.run(
        ["nix", "store", "ping", "--store", f"ssh://{principal.alias}"],
        env=builder.sshd.client_env(),
        check=False,
    )
    assert result.returncode != 0
    assert b"protocol ssh is not allowed (allowed: ssh-ng)" in result.stderr


# --- what the audit log cannot take goes to syslog ----------------------------------------


class SyslogReceiver:
    """A datagram socket standing in for /dev/log, and a gate launcher that sends there.

    The launcher is the real gate with `syslog.SOCKET` pointed at this socket: the one
    setting only a test changes (the gate takes no path from its environment).
    """

    def __init__(self, builder: GatedBuilder) -> None:
        self.path = builder.directory / "syslog.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.path.chmod(0o666)  # the gate's users send to it
        self.launcher = builder.directory / "gate-with-test-syslog"
        self.launcher.write_text(
            f"#!{harness.VENV_BIN / 'python3'} -I\n"
            "import sys\n"
            "from nixwarden.gate import syslog\n"
            f"syslog.SOCKET = {str(self.path)!r}\n"
            "from nixwarden.cli import main\n"
            "sys.exit(main(['gate', *sys.argv[1:]]))\n"
        )
        self.launcher.chmod(0o755)

    def use_for(self, principal: Principal) -> None:
        """Rewrite the principal's authorized_keys line to run the gate through the launcher."""
        keys = principal.user.home / ".ssh" / "authorized_keys"
        line = keys.read_text()
        command = line.split('command="', 1)[1].split('"', 1)[0]
        gate_words = command.split(" --principal ", 1)
        keys.write_text(line.replace(gate_words[0], str(self.launcher), 1))

    def records(self, count: int = 1) -> list[dict[str, object]]:
        self.sock.settimeout(20)
        received = []
        for _ in range(count):
            data = self.sock.recv(65536)
            header, _, message = data.partition(b": ")
            assert re.fullmatch(
                rb"<35>[A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d nixwarden-gate\[\d+\]", header
            ), data
            received.append(json.loads(message))
        return received

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def syslog_receiver(builder: GatedBuilder) -> Iterator[SyslogReceiver]:
    receiver = SyslogReceiver(builder)
    try:
        yield receiver
    finally:
        receiver.close()


def test_broken_config_is_logged_in_syslog_and_the_client_told_little(
    builder: GatedBuilder, syslog_receiver: SyslogReceiver
) -> None:
    principal = builder.add("fickle", store="host")
    syslog_receiver.use_for(principal)
    builder.config.write_text("[principals.fickle]\nstore = 'nowhere'\n")
    result = builder.ssh(principal, "nix-daemon", "--stdio", input=b"")
    assert result.returncode == 1
    assert result.stderr == (
        b"nixwarden: denied: principal fickle: configuration error; see the server's log\n"
    )
    (record,) = syslog_receiver.records()
    assert record["decision"] == "deny"
    assert record["user"] == principal.user.name
    assert str(record["client"]).startswith("127.0.0.1:")
    assert str(record["reason"]).startswith(
        f"configuration error: {builder.config}: principals.fickle.store: "
    )


def test_unknown_principal_is_in_the_audit_log_not_told_to_the_client(
    builder: GatedBuilder,
) -> None:
    principal = builder.add("fickle", store="host")
    builder.policies = {"other": {"store": "host"}}
    builder.write_config()
    result = builder.ssh(principal, "nix-daemon", "--stdio", input=b"")
    assert result.returncode == 1
    assert str(builder.config).encode() not in result.stderr
    assert b"configuration error; see the server's log" in result.stderr
    (line,) = builder.log_lines()
    assert json.loads(line)["reason"].endswith("principals.fickle: no such principal")


def test_unwritable_audit_log_is_a_denial_in_syslog(
    builder: GatedBuilder, syslog_receiver: SyslogReceiver
) -> None:
    builder.gate["audit_log"] = str(builder.directory / "no-such-dir" / "audit.jsonl")
    principal = builder.add("unlogged", store="host")
    syslog_receiver.use_for(principal)
    result = builder.ssh(principal, "nix-daemon", "--stdio", input=b"")
    assert result.returncode == 1
    assert b"the session cannot be logged; see the server's log" in result.stderr
    assert b"no-such-dir" not in result.stderr
    (record,) = syslog_receiver.records()
    assert record["decision"] == "deny" and record["exec"] is None
    assert "no-such-dir/audit.jsonl: No such file or directory" in str(record["reason"])


def test_syslog_line_matches_what_glibc_sends() -> None:
    """The gate's line and glibc's syslog(3) for the same message, both received on a
    /dev/log of a private mount namespace (a tmpfs over /dev, seen by nothing else)."""
    script = (
        "import socket, subprocess, syslog\n"
        "subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', '/dev'], check=True)\n"
        "receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "receiver.bind('/dev/log')\n"
        "syslog.openlog('nixwarden-gate', syslog.LOG_PID, syslog.LOG_AUTH)\n"
        "syslog.syslog(syslog.LOG_ERR, 'a decision {\"x\":1}')\n"
        "print(receiver.recv(4096).decode())\n"
        "from nixwarden.gate import syslog as gate_syslog\n"
        "assert gate_syslog.SOCKET == '/dev/log'\n"
        "assert gate_syslog.send('a decision {\"x\":1}') is None\n"
        "print(receiver.recv(4096).decode())\n"
    )
    unshare = harness.which("unshare")
    harness.need(unshare is not None, "unshare (util-linux)")
    assert unshare is not None
    result = harness.run(
        [unshare, "--mount", "--propagation", "private", "--",
         str(harness.VENV_BIN / "python3"), "-I", "-c", script],
        env=harness.base_env(),
    )  # fmt: skip
    glibc, ours = result.stdout.decode().splitlines()
    stamp = re.compile(r"(?<=^<35>)[A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d")
    assert stamp.search(glibc) and stamp.search(ours)
    assert stamp.sub("TIME", glibc) == stamp.sub("TIME", ours)


# --- the key is named, whatever the client does with its pty ------------------------------


@pytest.mark.parametrize("pty", ["refused", "granted"])
def test_pty_request_still_names_the_key(builder: GatedBuilder, pty: str) -> None:
    """`ssh -tt` to a `restrict` key: sshd refuses the pty, the client quits at once, and
    sshd removes SSH_USER_AUTH while the gate is still starting. The line's --key names
    the key; with a pty granted, SSH_USER_AUTH does."""
    principal = builder.add("ptyful", store="host")
    keys = principal.user.home / ".ssh" / "authorized_keys"
    if pty == "granted":
        line = keys.read_text().replace("restrict,", "restrict,pty,", 1)
        keys.write_text(re.sub(r" --key [^\s\"]+", "", line, count=1))
    argv = ["ssh", "-F", str(builder.sshd.ssh_config), "-tt", principal.alias, "id"]
    result = harness.run(argv, env=harness.base_env(), input=b"", check=False, timeout=60)
    if pty == "refused":
        assert result.returncode == 255
        assert b"PTY allocation request failed" in result.stderr
    else:
        assert result.returncode == 1
    harness.wait_for(builder.log_lines, "the gate's log line")
    (line,) = builder.log_lines()
    listed = harness.run(["ssh-keygen", "-l", "-f", str(principal.key.with_suffix(".pub"))])
    fingerprint = listed.stdout.decode().split()[1]
    assert json.loads(line)["keys"] == [f"ssh-ed25519 {fingerprint}"]


# --- Lix 2.93 line mode -------------------------------------------------------------------


def _line_session(builder: GatedBuilder, alias: str, remote: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        builder.sshd.ssh_argv(alias, remote),
        env=harness.base_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_lix_line_mode_reaches_the_daemon_handshake(builder: GatedBuilder) -> None:
    principal = builder.add("lix", store="host")
    session = _line_session(builder, principal.alias, "bash")
    assert session.stdin is not None and session.stdout is not None
    try:
        session.stdin.write(b"echo started\n")
        session.stdin.flush()
        assert session.stdout.readline() == b"started\n"
        session.stdin.write(b"exec nix-daemon --stdio\n")
        session.stdin.write(struct.pack("<Q", WORKER_MAGIC_1))
        session.stdin.flush()
        magic, version = struct.unpack("<QQ", session.stdout.read(16))
        assert magic == WORKER_MAGIC_2
        assert version >> 8 == 1  # protocol major version 1
    finally:
        session.kill()
        session.wait()
    (line,) = builder.log_lines()
    record = json.loads(line)
    assert (record["mode"], record["decision"], record["request"]) == (
        "line",
        "allow",
        "exec nix-daemon --stdio",
    )


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (b"echo started\ntouch {m}\n", b"program 'touch' is not nix-daemon"),
        (b"echo started\nnix-daemon --stdio; touch {m}\n", b"character ';'"),
        (b"nix-daemon --stdio\0; touch {m}\n", b"NUL"),
        (b"echo started\n\xff\xfe\n", b"not valid UTF-8"),
        (b"echo started\n" * 17, b"more than 16 lines"),
        (b"echo started", b"ended in the middle of a line"),
    ],
    ids=["forbidden_line", "chained_line", "nul_in_line", "non_utf8_line", "too_many_lines", "eof"],
)
def test_line_mode_refusals(
    builder: GatedBuilder, marker_dir: Path, lines: bytes, reason: bytes
) -> None:
    principal = builder.add("lixbad", store="host")
    marker = marker_dir / "M"
    stdin = lines.replace(b"{m}", str(marker).encode())
    result = builder.ssh(principal, "bash", input=stdin)
    assert result.returncode == 1
    assert reason in result.stderr
    assert not marker.exists()


# --- sessions and the log under load ------------------------------------------------------


def test_max_sessions(builder: GatedBuilder) -> None:
    principal = builder.add("single", store="host", max_sessions=1)
    first = subprocess.Popen(
        builder.sshd.ssh_argv(principal.alias, "nix-daemon", "--stdio"),
        env=harness.base_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        harness.wait_for(lambda: len(builder.log_lines()) == 1, "the first session's log line")
        second = builder.ssh(principal, "nix-daemon", "--stdio", input=b"")
        assert second.returncode == 1
        assert b"all 1 sessions are in use (max_sessions = 1)" in second.stderr
    finally:
        first.kill()
        first.wait()
    harness.wait_for(
        lambda: builder.ssh(principal, "nix-daemon", "--stdio", input=b"").returncode == 0 or False,
        "the slot to be free again",
    )


def test_parallel_sessions_log_exactly_one_line_each(builder: GatedBuilder) -> None:
    principal = builder.add("busy", store="host", max_sessions=64)
    env = builder.sshd.client_env()

    def ping(index: int) -> int:
        if index % 2:
            return builder.ssh(principal, f"id; echo {index}").returncode
        return harness.run(
            ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"], env=env
        ).returncode

    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(ping, range(24)))
    assert codes.count(0) == 12
    records = [json.loads(line) for line in builder.log_lines()]
    assert len(records) == 24
    assert sorted(record["decision"] for record in records) == ["allow"] * 12 + ["deny"] * 12
    assert len({record["pid"] for record in records}) == 24
