"""`nixwarden push` the way a person runs it: from a client store of its own, over real
ssh to the testbed's sshd, through the gate (a deploy principal's forced command), whose
relay carries the session to a real receive service importing through a real nix-daemon.

The gate part: a deploy principal is allowed exactly the receive request and none of the
Nix build protocol (and a build principal not the receive request); the relay passes
bytes both ways and ends when both sides have closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nixwarden.deploy import wire
from testbed import harness
from testbed.deploy_client import build, sign
from testbed.deploy_gate import Deployer, add_deployer, audit_lines, gate_on, machine_daemon
from testbed.deploy_setup import (
    CertifiedKey,
    CountersignDaemon,
    ReceiveHost,
    TeamCa,
    receive_host,
)
from testbed.gate_setup import ClientStore

RECEIVE = "nixwarden-receive --protocol 1"


@dataclass
class Target:
    host: ReceiveHost
    alice: Deployer
    builder: Deployer


@pytest.fixture(scope="module")
def target(
    sshd: harness.Sshd,
    module_users: harness.Users,
    countersign: CountersignDaemon,
    team_ca: TeamCa,
) -> Iterator[Target]:
    with receive_host(module_users, countersign, team_ca) as host:
        gate_on(host)
        alice = add_deployer(host, sshd, "alice", profiles=["web"])
        builder = add_deployer(host, sshd, "builder", role="build")
        host.start()
        yield Target(host, alice, builder)


def run_push(
    client: ClientStore, *arguments: str, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    return client.run(harness.NIXWARDEN, "push", *arguments, check=False, timeout=timeout)


def json_lines(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def signed_top(client: ClientStore, key: CertifiedKey | None) -> str:
    top = build(client)
    if key is not None:
        sign(client, top, key)
    return top


def closure_of(client: ClientStore, top: str) -> list[str]:
    output = client.run("nix-store", "--query", "--requisites", top).stdout.decode()
    return output.split()


# --- the gate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "nix-daemon --stdio",
        "exec nix-store --serve --write",
        "nixwarden-receive --protocol 2",
        "nixwarden-receive --protocol 1 ",
        "exec exec nixwarden-receive --protocol 1",
        "/usr/bin/nixwarden-receive --protocol 1",
        "nixwarden-receive --protocol 1; sh",
        "sh -c id",
        "",
    ],
)
def test_a_deploy_principal_may_run_only_the_receive_request(
    target: Target, sshd: harness.Sshd, command: str
) -> None:
    before = len(audit_lines(target.host))
    result = harness.run(
        sshd.ssh_argv(target.alice.alias, command), env=harness.base_env(), check=False
    )
    assert result.returncode == 1, result
    assert b"a deploy principal may only run 'nixwarden-receive --protocol 1'" in result.stderr
    assert result.stdout == b""
    (entry,) = [json.loads(line) for line in audit_lines(target.host)[before:]]
    assert (entry["principal"], entry["decision"], entry["exec"]) == ("alice", "deny", None)
    assert "may only run" in entry["reason"]


def test_a_build_principal_may_not_run_the_receive_request(
    target: Target, sshd: harness.Sshd
) -> None:
    result = harness.run(
        sshd.ssh_argv(target.builder.alias, RECEIVE), env=harness.base_env(), check=False
    )
    assert result.returncode == 1
    assert b"program 'nixwarden-receive' is not nix-daemon or nix-store" in result.stderr
    entry = json.loads(audit_lines(target.host)[-1])
    assert (entry["principal"], entry["decision"]) == ("builder", "deny")


def test_gate_check_tells_the_deploy_decision(target: Target) -> None:
    def check(command: str) -> subprocess.CompletedProcess[bytes]:
        argv = [harness.NIXWARDEN, "gate", "--check", "--principal", "alice"]
        argv += ["--command", command, "--config", str(target.host.config)]
        return harness.run(argv, env=harness.base_env(), check=False)

    allowed = check(RECEIVE)
    assert allowed.returncode == 0
    assert allowed.stdout.startswith(b"allow: relay to the receive service")
    denied = check("nix-daemon --stdio")
    assert denied.returncode == 1
    assert b"may only run" in denied.stdout


@dataclass
class EchoService:
    """Stands where the receive service listens: takes the RELAY frame, then echoes."""

    path: Path
    relays: list[tuple[wire.Relay, int]]
    reply_first: bytes = b""
    errors: list[BaseException] | None = None

    def serve_one(self, listener: socket.socket) -> None:
        connection, _ = listener.accept()
        try:
            ucred = struct.Struct("3i")
            _pid, uid, _gid = ucred.unpack(
                connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, ucred.size)
            )
            reader = connection.makefile("rb")
            relay = wire.expect(wire.read_message(reader), wire.Relay)
            self.relays.append((relay, uid))
            if self.reply_first:
                connection.sendall(self.reply_first)
                return  # and close, without reading what the client sends
            while chunk := reader.read1(1 << 16):
                connection.sendall(chunk)
        except BaseException as error:  # reported by the test
            if self.errors is not None:
                self.errors.append(error)
        finally:
            connection.close()


@pytest.fixture
def echo_target(
    sshd: harness.Sshd,
    module_users: harness.Users,
    countersign: CountersignDaemon,
    team_ca: TeamCa,
) -> Iterator[tuple[ReceiveHost, Deployer]]:
    """A target whose [receive] socket is a test's own listener, not the service."""
    with receive_host(module_users, countersign, team_ca) as host:
        gate_on(host)
        deployer = add_deployer(host, sshd, "echo", profiles=["web"])
        yield host, deployer


def _listen(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o666)
    listener.listen(4)
    return listener


def test_the_relay_passes_bytes_both_ways_and_ends_when_both_sides_close(
    echo_target: tuple[ReceiveHost, Deployer], sshd: harness.Sshd
) -> None:
    host, deployer = echo_target
    errors: list[BaseException] = []
    echo = EchoService(host.socket, [], errors=errors)
    with _listen(host.socket) as listener:
        server = threading.Thread(target=echo.serve_one, args=(listener,), daemon=True)
        server.start()
        data = os.urandom(24 << 20)
        started = time.monotonic()
        result = harness.run(
            sshd.ssh_argv(deployer.alias, RECEIVE),
            env=harness.base_env(),
            input=data,
            check=False,
            timeout=120,
        )
        server.join(30)
    assert not errors
    assert result.returncode == 0, result.stderr
    assert result.stdout == data  # every byte, in order, both ways
    assert time.monotonic() - started < 60
    ((relay, uid),) = echo.relays
    # The service learns who connected from the kernel: the gate runs as the SSH user.
    assert uid == deployer.user.uid
    assert relay.principal == "echo"
    assert relay.client is not None and relay.client.startswith("127.0.0.1:")
    assert len(relay.ssh_keys) == 1 and "SHA256:" in relay.ssh_keys[0]
    entry = json.loads(audit_lines(host)[-1])
    assert (entry["decision"], entry["exec"]) == ("allow", ["relay", str(host.socket)])


def test_the_relay_ends_when_the_service_closes_first(
    echo_target: tuple[ReceiveHost, Deployer], sshd: harness.Sshd
) -> None:
    host, deployer = echo_target
    reply = os.urandom(3 << 20)
    echo = EchoService(host.socket, [], reply_first=reply)
    with _listen(host.socket) as listener:
        server = threading.Thread(target=echo.serve_one, args=(listener,), daemon=True)
        server.start()
        process = subprocess.Popen(
            sshd.ssh_argv(deployer.alias, RECEIVE),
            env=harness.base_env(),
            stdin=subprocess.PIPE,  # kept open: the client has not closed its side
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            received = process.stdout.read()
            assert received == reply
            # The client still holds its stdin open; the session ends anyway.
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()
        server.join(10)


def test_a_deploy_session_without_the_service_is_denied_and_logged(
    echo_target: tuple[ReceiveHost, Deployer], sshd: harness.Sshd
) -> None:
    host, deployer = echo_target  # nothing listens on its socket
    result = harness.run(
        sshd.ssh_argv(deployer.alias, RECEIVE), env=harness.base_env(), check=False
    )
    assert result.returncode == 1
    assert b"server-side error; see the server's log" in result.stderr
    entry = json.loads(audit_lines(host)[-1])
    assert entry["decision"] == "deny"
    assert f"receive service at {host.socket}" in entry["reason"]


# --- nixwarden push, end to end ---------------------------------------------------------------


def test_push_deploys_then_is_up_to_date_then_rolls_back(
    target: Target, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    host = target.host
    first = signed_top(module_client, alice_key)
    paths = closure_of(module_client, first)
    assert host.invalid(paths) == set(paths)
    certs = ("--certs", str(alice_key.certificate))
    to = ("--to", target.alice.alias)

    result = run_push(module_client, *to, *certs, "--profile", "web", "--json", first)
    assert result.returncode == 0, (result.stderr, host.log_text()[-2000:])
    (outcome,) = json_lines(result)
    assert outcome["status"] == "deployed", outcome
    assert (outcome["paths"], outcome["category"]) == (len(paths), None)
    generation = outcome["generation"]
    assert isinstance(generation, int)
    assert host.invalid(paths) == set()
    assert os.readlink(host.profiles / "web") == f"web-{generation}-link"
    assert f": deployed: {len(paths)} paths" in result.stderr.decode()
    record = json.loads(host.provenance_json(first, "--json").stdout)
    assert "alice" in json.dumps(record) and alice_key.name in json.dumps(record)

    again = run_push(module_client, *to, *certs, "--profile", "web", "--json", first)
    assert again.returncode == 0
    (same,) = json_lines(again)
    assert (same["status"], same["paths"], same["generation"]) == ("up-to-date", 0, generation)

    second = signed_top(module_client, alice_key)
    newer = run_push(module_client, *to, *certs, "--profile", "web", "--json", second)
    (pushed,) = json_lines(newer)
    assert pushed["status"] == "deployed"
    assert pushed["generation"] != generation

    back = run_push(module_client, *to, "--profile", "web", "--rollback", "--json")
    assert back.returncode == 0, back.stderr
    (rolled,) = json_lines(back)
    assert (rolled["status"], rolled["generation"]) == ("deployed", generation)


def test_dry_run_verifies_plans_and_transfers_nothing(
    target: Target, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    host = target.host
    top = signed_top(module_client, alice_key)
    paths = closure_of(module_client, top)
    profiles = host.profile_state()
    result = run_push(
        module_client,
        *("--to", target.alice.alias, "--certs", str(alice_key.certificate)),
        *("--profile", "web", "--dry-run", "--json", top),
    )
    assert result.returncode == 0, result.stderr
    (outcome,) = json_lines(result)
    assert (outcome["status"], outcome["paths"]) == ("planned", len(paths))
    assert isinstance(outcome["bytes"], int) and outcome["bytes"] > 0
    assert host.invalid(paths) == set(paths)  # nothing imported
    assert host.profile_state() == profiles
    assert os.listdir(host.staging) == []


def test_an_unsigned_push_is_a_verification_refusal_and_key_signs_it_first(
    target: Target, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    host = target.host
    top = signed_top(module_client, None)
    paths = closure_of(module_client, top)
    to = ("--to", target.alice.alias, "--certs", str(alice_key.certificate))
    refused = run_push(module_client, *to, "--json", top)
    assert refused.returncode == 1
    (outcome,) = json_lines(refused)
    assert (outcome["status"], outcome["category"]) == ("refused", "verification")
    failures = outcome["failures"]
    assert isinstance(failures, list) and {f["path"] for f in failures} == set(paths)
    assert host.invalid(paths) == set(paths)

    # A dry run signs in memory only: the target accepts, the local store is unchanged.
    planned = run_push(module_client, *to, "--key", str(alice_key.secret), "--dry-run", top)
    assert planned.returncode == 0, planned.stderr
    sigs = module_client.run("nix", "path-info", "--sigs", top).stdout.decode()
    assert alice_key.name not in sigs

    signed = run_push(module_client, *to, "--key", str(alice_key.secret), "--json", top)
    assert signed.returncode == 0, signed.stderr
    (deployed,) = json_lines(signed)
    assert deployed["status"] == "deployed"
    assert host.invalid(paths) == set()
    sigs = module_client.run("nix", "path-info", "--sigs", top).stdout.decode()
    assert alice_key.name in sigs


def test_an_unreachable_target_is_a_transport_failure(
    target: Target, module_client: ClientStore, sshd: harness.Sshd
) -> None:
    top = signed_top(module_client, None)
    result = run_push(
        module_client, "--to", f"nobody-{os.getpid()}@127.0.0.1:{sshd.port}", "--json", top
    )
    assert result.returncode == 1
    (outcome,) = json_lines(result)
    assert (outcome["status"], outcome["category"]) == ("failed", "transport")
    assert outcome["reason"]


def test_a_fleet_of_three_where_one_refuses(
    sshd: harness.Sshd,
    module_users: harness.Users,
    team_ca: TeamCa,
    module_client: ClientStore,
    alice_key: CertifiedKey,
) -> None:
    """Three machines, each its own store, daemon, receive service and deploy user."""
    work = harness.world_dir("nwt-fleet")
    with contextlib.ExitStack() as machines:
        hosts = []
        aliases = []
        for number, profiles in enumerate((["web"], ["web"], ["db"])):
            daemon = machines.enter_context(machine_daemon(work / f"machine-{number}"))
            host = machines.enter_context(receive_host(module_users, daemon, team_ca))
            host.own_store = daemon.own_store
            gate_on(host)
            aliases.append(add_deployer(host, sshd, "fleet", profiles=profiles).alias)
            host.start()
            hosts.append(host)
        top = signed_top(module_client, alice_key)
        paths = closure_of(module_client, top)
        result = run_push(
            module_client,
            *(argument for alias in aliases for argument in ("--to", alias)),
            *("--certs", str(alice_key.certificate), "--profile", "web"),
            *("--jobs", "3", "--json", top),
        )
        assert result.returncode == 1, result.stderr
        outcomes = json_lines(result)
        assert [o["target"] for o in outcomes] == aliases
        statuses = [o["status"] for o in outcomes]
        assert statuses == ["deployed", "deployed", "refused"], [o["reason"] for o in outcomes]
        assert [o["paths"] for o in outcomes[:2]] == [len(paths), len(paths)]
        assert outcomes[2]["category"] == "verification"
        assert "may not set profile web" in str(outcomes[2]["reason"])
        one, two, three = hosts
        for host in (one, two):
            assert os.path.islink(host.profiles / "web")
            assert host.invalid(paths) == set()
        assert three.profile_state() == {}
        assert three.invalid(paths) == set(paths)
        summary = result.stderr.decode()
        assert summary.count(": deployed: ") == 2 and summary.count(": refused: ") == 1
    shutil.rmtree(work, ignore_errors=True)
