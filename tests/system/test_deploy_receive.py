"""The receive service end to end, with real Nix, real OpenSSH certificates and a real
nix-daemon: a client store of its own pushes into the host store through the service's
socket, as a unix user in neither trusted-users nor nix-users (what the gate's relay,
or any code run as the SSH user, does). Every refusal and failure must leave the host
store's valid paths and every profile exactly as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nixwarden.deploy import wire
from nixwarden.trust.keys import SecretKey
from testbed import harness
from testbed.deploy_client import (
    NIX_COMMAND,
    ClientClosure,
    Outcome,
    build,
    closure,
    connect_as,
    push,
    push_over_ssh,
    sign,
)
from testbed.deploy_gate import add_deployer, audit_lines, gate_on
from testbed.deploy_setup import (
    CertifiedKey,
    CountersignDaemon,
    ReceiveHost,
    TeamCa,
    nixwarden,
    receive_host,
)
from testbed.gate_setup import ClientStore

FreshHost = Callable[..., contextlib.AbstractContextManager[tuple[ReceiveHost, harness.User]]]


@pytest.fixture
def fresh_host(users: harness.Users, countersign: CountersignDaemon, team_ca: TeamCa) -> FreshHost:
    """A target of the test's own (options as `receive_host` takes them), with alice as a
    deploy principal of profile `web`, started: `with fresh_host(...) as (host, alice)`."""

    @contextlib.contextmanager
    def make(**options: Any) -> Iterator[tuple[ReceiveHost, harness.User]]:
        idle_timeout = options.pop("idle_timeout", None)
        with receive_host(users, countersign, team_ca, **options) as host:
            if idle_timeout is not None:
                host.receive["idle_timeout"] = idle_timeout
            alice = host.add_deployer("alice", profiles=["web"])
            host.start()
            yield host, alice

    return make


@dataclass
class Established:
    """A running target whose profile `web` already has generation 1 (alice's push)."""

    host: ReceiveHost
    alice: harness.User
    first: ClientClosure
    key: CertifiedKey

    def attempt(self, pushed: ClientClosure, **options: Any) -> tuple[Snapshot, Outcome]:
        """The target's state, then a push of `pushed` as alice (`keys`: alice's certificate
        unless given; `user`, `principal`: another peer or claim)."""
        before = snapshot(self.host, pushed)
        user = options.pop("user", self.alice)
        principal = options.pop("principal", "alice")
        options.setdefault("keys", [self.key])
        return before, push(self.host.socket, user, principal, pushed, **options)


@pytest.fixture(scope="module")
def established(
    module_users: harness.Users,
    countersign: CountersignDaemon,
    team_ca: TeamCa,
    module_client: ClientStore,
    alice_key: CertifiedKey,
) -> Iterator[Established]:
    with receive_host(module_users, countersign, team_ca) as host:
        alice = host.add_deployer("alice", profiles=["web"])
        host.add_deployer("builder-only", profiles=["web"])
        host.principals["builder-only"] = {"role": "build"}  # its user still connects
        host.start()
        first = signed_closure(module_client, alice_key)
        outcome = push(host.socket, alice, "alice", first, keys=[alice_key])
        assert outcome.status == "deployed", (outcome.reason, host.log_text())
        yield Established(host, alice, first, alice_key)


def signed_closure(client: ClientStore, *keys: CertifiedKey, blob_size: int = 0) -> ClientClosure:
    top = build(client, blob_size=blob_size)
    sign(client, top, *keys)
    return closure(client, top)


@dataclass(frozen=True)
class Snapshot:
    invalid: frozenset[str]
    profiles: dict[str, str]
    staged: tuple[str, ...]


def snapshot(host: ReceiveHost, pushed: ClientClosure) -> Snapshot:
    return Snapshot(
        frozenset(host.invalid(pushed.paths)),
        host.profile_state(),
        tuple(sorted(os.listdir(host.staging))),
    )


def deployed(host: ReceiveHost, outcome: Outcome) -> int | None:
    """The push was deployed (else fail with what the service said and logged)."""
    assert outcome.status == "deployed", (outcome.reason, host.log_text()[-3000:])
    return outcome.generation


def refused_without_a_trace(
    host: ReceiveHost, pushed: ClientClosure, before: Snapshot, outcome: Outcome, why: str
) -> None:
    """The push was refused (or failed) for `why`, and nothing on the target changed."""
    assert outcome.status in ("refused", "failed", "error:failed", "error:protocol"), (
        outcome.status,
        outcome.reason,
    )
    assert why in outcome.reason, (outcome.reason, host.log_text()[-3000:])
    assert before.invalid == frozenset(pushed.paths), "the test's closure was valid already"
    assert snapshot(host, pushed) == before


# --- through sshd and the gate ----------------------------------------------------------------


def test_through_sshd_and_the_gate_provenance_names_the_session(  # noqa: PLR0917
    sshd: harness.Sshd,
    users: harness.Users,
    countersign: CountersignDaemon,
    team_ca: TeamCa,
    client: ClientStore,
    alice_key: CertifiedKey,
) -> None:
    with receive_host(users, countersign, team_ca) as host:
        gate_on(host)
        alice = add_deployer(host, sshd, "alice", profiles=["web"])
        host.start()
        pushed = signed_closure(client, alice_key)
        result = client.run(
            *(harness.NIXWARDEN, "push", "--to", alice.alias, "--profile", "web"),
            *("--certs", str(alice_key.certificate), pushed.top),
            check=False,
        )
        assert result.returncode == 0, (result.stderr, host.log_text()[-2000:])
        assert host.invalid(pushed.paths) == set()
        assert Path(host.profiles / "web").resolve() == Path(pushed.top)

        key_line = harness.run(["ssh-keygen", "-l", "-f", f"{alice.key}.pub"]).stdout.decode()
        [record] = json.loads(host.provenance_json(pushed.top, "--json").stdout)["records"]
        assert record["ssh_keys"] == [f"ssh-ed25519 {key_line.split()[1]}"]
        assert str(record["client"]).startswith("127.0.0.1:")
        assert (record["principal"], record["unix_user"]) == ("alice", alice.user.name)
        assert [signer["key_id"] for signer in record["signers"]] == [alice_key.name]
        assert any('"allow"' in line for line in audit_lines(host))

        # A client that misbehaves through the same door changes nothing either.
        ssh, env = sshd.ssh_argv(alice.alias), harness.base_env()
        unsigned = closure(client, build(client))
        before = snapshot(host, unsigned)
        refused = push_over_ssh(ssh, env, unsigned, keys=[alice_key])
        refused_without_a_trace(host, unsigned, before, refused, "no signatures")
        tampered = signed_closure(client, alice_key)
        before = snapshot(host, tampered)
        outcome = push_over_ssh(
            ssh, env, tampered, keys=[alice_key], tamper=lambda _path, nar: nar[:-1] + b"!"
        )
        refused_without_a_trace(host, tampered, before, outcome, "does not match the narHash")


# --- the good path -------------------------------------------------------------------------


def test_push_deploys_a_profile_generation_and_provenance_names_pusher_and_signer(
    established: Established, alice_key: CertifiedKey
) -> None:
    host, first = established.host, established.first
    assert host.invalid(first.paths) == set()
    generations = host.generations("web")
    assert generations.split()[0] == "1" and "(current)" in generations
    assert Path(host.profiles / "web").resolve() == Path(first.top)
    # The service's countersignature is on the imported paths, beside alice's.
    info = json.loads(
        harness.run(
            ["nix", *NIX_COMMAND, "path-info", "--json", "--sigs", first.top], env=host.daemon.env()
        ).stdout
    )[0]
    names = {signature.split(":")[0] for signature in info["signatures"]}
    assert names == {alice_key.name, host.daemon.key_name}
    found = json.loads(host.provenance_json(first.top, "--json").stdout)
    [record] = found["records"]
    assert record["principal"] == "alice"
    assert record["unix_user"] == established.alice.name
    assert record["outcome"] == "deployed"
    assert record["profile"] == "web" and record["generation"] == 1
    assert record["ssh_keys"] == ["SHA256:test-session-key"]
    assert [(s["key_id"], s["serial"]) for s in record["signers"]] == [
        (alice_key.name, alice_key.serial)
    ]
    assert record["tops"] == [first.top]
    text = host.provenance_json(first.top).stdout.decode()
    assert f"signer {alice_key.name} (serial {alice_key.serial}" in text
    # A path below the top is on record too.
    lib = first.named("nwt-dlib")
    assert json.loads(host.provenance_json(lib, "--json").stdout)["records"][0]["seq"] == 1


def test_the_same_push_again_is_up_to_date(
    established: Established, alice_key: CertifiedKey
) -> None:
    host = established.host
    profiles = host.profile_state()
    outcome = push(host.socket, established.alice, "alice", established.first, keys=[alice_key])
    assert (outcome.status, outcome.generation) == ("up-to-date", 1)
    assert host.profile_state() == profiles


def test_plan_verifies_and_transfers_nothing(
    established: Established, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    host = established.host
    pushed = signed_closure(module_client, alice_key)
    before, outcome = established.attempt(pushed, action=wire.Action.PLAN)
    assert outcome.status == "planned"
    last = outcome.last
    assert isinstance(last, wire.Result) and last.paths == 3
    assert snapshot(host, pushed) == before


# --- refusals before a single NAR byte -----------------------------------------------------


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("expired", "expired"),
        ("not_yet_valid", "not valid before"),
        ("wrong_principal", "principal deploy not in [build]"),
        ("no_certificate", "no certificate for this key name"),
        ("revoked_serial", "revoked: serial"),
        ("revoked_key_id", "revoked: key id"),
    ],
)
def test_a_signer_the_trust_policy_rejects_is_refused_and_changes_nothing(
    established: Established, module_client: ClientStore, team_ca: TeamCa, case: str, why: str
) -> None:
    host = established.host
    match case:
        case "expired":
            key = team_ca.certify("old", validity="20200101:20200102")
        case "not_yet_valid":
            key = team_ca.certify("early", validity="+1d:+2d")
        case "wrong_principal":
            key = team_ca.certify("builder", principals=("build",))
        case _:
            key = team_ca.certify(case.replace("_", "-"))
    pushed = signed_closure(module_client, key)
    sent = [] if case == "no_certificate" else [key]
    if case == "revoked_serial":
        team_ca.revoke(serial=key.serial)
    if case == "revoked_key_id":
        team_ca.revoke(key_id=key.name)
    before, outcome = established.attempt(pushed, keys=sent)
    refused_without_a_trace(host, pushed, before, outcome, why)
    last = outcome.last
    assert isinstance(last, wire.Verdict)
    assert {failure.path for failure in last.failures} == set(pushed.paths)
    assert isinstance(outcome.received[-2], wire.Missing)  # refused right after the manifest


def test_a_reference_outside_the_push_that_the_target_lacks_is_refused(
    established: Established, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    host = established.host
    pushed = signed_closure(module_client, alice_key)
    data = pushed.named("nwt-ddata")
    before, outcome = established.attempt(pushed, want=[p for p in pushed.paths if p != data])
    refused_without_a_trace(
        host, pushed, before, outcome, f"refers to {data}, which is neither in the push"
    )


def test_a_profile_the_principal_may_not_set_is_refused(
    established: Established, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    host = established.host
    pushed = signed_closure(module_client, alice_key)
    before, outcome = established.attempt(pushed, profile="db")
    refused_without_a_trace(host, pushed, before, outcome, "may not set profile db")
    assert outcome.received == [outcome.last]  # no WELCOME: refused at HELLO


@pytest.mark.parametrize(
    ("principal", "who", "why"),
    [
        ("alice", "stranger", "may not deploy as unix user"),
        ("builder-only", "builder", "not a deploy principal"),
        ("nobody", "alice", "not a deploy principal"),
    ],
)
def test_only_the_principal_configured_for_the_peers_uid_may_push(  # noqa: PLR0917
    established: Established,
    module_client: ClientStore,
    module_users: harness.Users,
    alice_key: CertifiedKey,
    principal: str,
    who: str,
    why: str,
) -> None:
    host = established.host
    user = {
        "stranger": module_users.create(groups=()),
        "builder": host.deployers["builder-only"],
        "alice": established.alice,
    }[who]
    pushed = signed_closure(module_client, alice_key)
    before, outcome = established.attempt(pushed, user=user, principal=principal)
    refused_without_a_trace(host, pushed, before, outcome, why)


# --- refusals and failures while NARs stream -------------------------------------------------


def flip_app_name(target: str) -> Callable[[str, bytes], bytes]:
    """A tamper that changes `target`'s NAR (same length), and no other."""

    def tamper(path: str, data: bytes) -> bytes:
        if path != target:
            return data
        flipped = data.replace(b"app-", b"bpp-", 1)
        assert flipped != data and len(flipped) == len(data)
        return flipped

    return tamper


def test_a_tampered_nar_is_refused_when_it_ends(
    established: Established, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    host = established.host
    pushed = signed_closure(module_client, alice_key)
    before, outcome = established.attempt(pushed, tamper=flip_app_name(pushed.top))
    refused_without_a_trace(host, pushed, before, outcome, "does not match the narHash")


def test_a_tampered_last_nar_removes_the_paths_imported_before_it(
    established: Established, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    # The daemon imports closed layers while later NARs arrive: app's references are
    # valid on the target before app's (tampered) NAR is sent; its refusal removes them.
    host = established.host
    pushed = signed_closure(module_client, alice_key)
    earlier = [path for path in pushed.paths if path != pushed.top]
    seen_valid: list[str] = []

    def before_nar(path: str) -> None:
        if path == pushed.top:
            harness.wait_for(lambda: not host.invalid(earlier), "app's references imported", 60)
            seen_valid.extend(earlier)

    before, outcome = established.attempt(
        pushed, tamper=flip_app_name(pushed.top), before_nar=before_nar
    )
    assert sorted(seen_valid) == sorted(earlier) and len(earlier) == 2
    refused_without_a_trace(host, pushed, before, outcome, "does not match the narHash")


def test_a_failed_push_leaves_what_a_push_under_way_counts_on(
    established: Established, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    # A imports lib and data, then fails on app's NAR; B, under way, found lib and data
    # valid (nothing to send): A's clean-up leaves them to B, which deploys.
    host = established.host
    tag = os.urandom(4).hex()
    app = build(module_client, tag=tag)
    sign(module_client, app, alice_key)
    first, second = (
        closure(module_client, app),
        closure(module_client, build(module_client, tag=tag, attribute="lib")),
    )
    shared = second.paths
    assert set(shared) < set(first.paths)
    second_in_flight, first_done = threading.Event(), threading.Event()
    second_outcome: list[Outcome] = []

    def hold_second() -> None:
        second_in_flight.set()
        assert first_done.wait(60)

    def push_second() -> None:
        outcome = push(host.socket, established.alice, "alice", second, keys=[alice_key],
                       profile=None, after_missing=hold_second)  # fmt: skip
        second_outcome.append(outcome)

    thread = threading.Thread(target=push_second)

    def before_nar(path: str) -> None:
        if path == app:
            harness.wait_for(lambda: not host.invalid(shared), "lib and data imported", 60)
            thread.start()
            assert second_in_flight.wait(60)

    before = snapshot(host, first)
    try:
        outcome = push(host.socket, established.alice, "alice", first, keys=[alice_key],
                       tamper=flip_app_name(app), before_nar=before_nar)  # fmt: skip
    finally:
        first_done.set()
        if thread.ident is not None:
            thread.join(120)
    assert "does not match the narHash" in (outcome.reason or ""), outcome
    assert before.invalid == frozenset(first.paths)
    assert host.invalid(first.paths) == {app}  # lib and data stayed: the second needs them
    assert second_outcome and second_outcome[0].status == "deployed", second_outcome
    host.wait_for_log("left 2 added paths to pushes under way")


def test_a_batch_the_daemon_refuses_ends_the_push_and_changes_nothing(
    fresh_host: FreshHost, client: ClientStore, alice_key: CertifiedKey
) -> None:
    # The service countersigns with a key the daemon does not trust: the daemon refuses
    # the first batch while NARs may still be arriving; the push fails, nothing stays.
    untrusted = SecretKey.generate("nwt-untrusted-countersign-1")
    with fresh_host() as (host, alice):
        host.signing_key.write_text(untrusted.render() + "\n")
        host.restart()
        pushed = signed_closure(client, alice_key)
        before = snapshot(host, pushed)
        outcome = push(host.socket, alice, "alice", pushed, keys=[alice_key])
        refused_without_a_trace(host, pushed, before, outcome, "signature")


def test_a_stream_cut_halfway_changes_nothing(
    established: Established, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    host = established.host
    pushed = signed_closure(module_client, alice_key, blob_size=3 << 20)
    before, outcome = established.attempt(pushed, cut_after=3 << 19)
    assert outcome.closed_early
    host.wait_for_log("truncated payload")
    assert snapshot(host, pushed) == before
    assert before.invalid == frozenset(pushed.paths)


def test_the_service_disk_filling_up_changes_nothing(
    fresh_host: FreshHost, client: ClientStore, alice_key: CertifiedKey
) -> None:
    with fresh_host(staging_size=1 << 20) as (host, alice):
        small = signed_closure(client, alice_key)
        deployed(host, push(host.socket, alice, "alice", small, keys=[alice_key]))
        pushed = signed_closure(client, alice_key, blob_size=3 << 20)
        before = snapshot(host, pushed)
        outcome = push(host.socket, alice, "alice", pushed, keys=[alice_key])
        refused_without_a_trace(host, pushed, before, outcome, "No space left on device")


def test_a_stalled_client_is_dropped(fresh_host: FreshHost) -> None:
    with fresh_host(idle_timeout="2s") as (host, alice):
        connection = connect_as(alice, host.socket)
        try:
            connection.sendall(wire.encode(wire.Relay("alice")))
            reply = wire.read_message(connection.makefile("rb"))
        finally:
            connection.close()
        assert isinstance(reply, wire.Error) and "stalled" in reply.reason
        host.wait_for_log("stalled: no whole frame within 2 s")


def test_an_unknown_frame_is_a_protocol_error(established: Established) -> None:
    host = established.host
    connection = connect_as(established.alice, host.socket)
    try:
        connection.sendall(struct.pack(">II", 99, 0))
        reply = wire.read_message(connection.makefile("rb"))
    finally:
        connection.close()
    assert isinstance(reply, wire.Error) and reply.kind is wire.ErrorKind.PROTOCOL
    assert "unknown message type 99" in reply.reason


# --- quorum ---------------------------------------------------------------------------------


def test_two_signers_required_one_is_refused_two_deploy(
    fresh_host: FreshHost, team_ca: TeamCa, client: ClientStore, alice_key: CertifiedKey
) -> None:
    bob_key = team_ca.certify("bob")
    with fresh_host(trust={"min_signers": 2}) as (host, alice):
        pushed = signed_closure(client, alice_key)
        before = snapshot(host, pushed)
        outcome = push(host.socket, alice, "alice", pushed, keys=[alice_key, bob_key])
        refused_without_a_trace(host, pushed, before, outcome, "1 certified signer")
        sign(client, pushed.top, bob_key)
        both = closure(client, pushed.top)
        deployed(host, push(host.socket, alice, "alice", both, keys=[alice_key, bob_key]))
        record = json.loads(host.provenance_json(both.top, "--json").stdout)["records"][-1]
        assert {s["key_id"] for s in record["signers"]} == {alice_key.name, bob_key.name}


# --- profiles: generations, rollback, activation, concurrency --------------------------------


def test_generations_rollback_and_a_failed_activation_that_rolls_back(
    fresh_host: FreshHost, client: ClientStore, alice_key: CertifiedKey
) -> None:
    work = harness.world_dir("nwt-activation")
    work.chmod(0o777)
    ran, fail_flag = work / "ran", work / "fail"
    script = f'echo "$NIXWARDEN_PROFILE $NIXWARDEN_GENERATION $NIXWARDEN_STORE_PATH" >> {ran}; '
    script += f"test ! -e {fail_flag}"
    activation = {"web": {"command": ["/bin/sh", "-c", script], "timeout": "30s"}}
    try:
        with fresh_host(activation=activation) as (host, alice):
            first = signed_closure(client, alice_key)
            second = signed_closure(client, alice_key)
            assert deployed(host, push(host.socket, alice, "alice", first, keys=[alice_key])) == 1
            assert deployed(host, push(host.socket, alice, "alice", second, keys=[alice_key])) == 2
            assert ran.read_text().splitlines() == [f"web 1 {first.top}", f"web 2 {second.top}"]

            back = push(host.socket, alice, "alice", None, action=wire.Action.ROLLBACK)
            assert deployed(host, back) == 1
            assert Path(host.profiles / "web").resolve() == Path(first.top)

            fail_flag.touch()
            third = signed_closure(client, alice_key)
            before = snapshot(host, third)
            outcome = push(host.socket, alice, "alice", third, keys=[alice_key])
            refused_without_a_trace(host, third, before, outcome, "activation of web failed")
            assert outcome.status == "failed"
            # It tried the new generation, then activated the restored one again.
            assert ran.read_text().splitlines()[-2:] == [
                f"web 3 {third.top}",
                f"web 1 {first.top}",
            ]
            records = json.loads(host.provenance_json("--profile", "web", "--json").stdout)
            assert [r["outcome"] for r in records["records"]] == [
                "deployed",
                "deployed",
                "deployed",
                "failed",
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_concurrent_pushes_to_one_profile_lose_no_generation(
    established: Established, module_client: ClientStore, alice_key: CertifiedKey
) -> None:
    host = established.host
    pushes = [signed_closure(module_client, alice_key) for _ in range(3)]
    outcomes: list[Outcome] = []

    def one(pushed: ClientClosure) -> None:
        outcomes.append(push(host.socket, established.alice, "alice", pushed, keys=[alice_key]))

    threads = [threading.Thread(target=one, args=(pushed,)) for pushed in pushes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    generations = sorted(outcome.generation or 0 for outcome in outcomes)
    assert [outcome.status for outcome in outcomes] == ["deployed"] * 3
    assert len(set(generations)) == 3
    listed = {line.split()[0] for line in host.generations("web").splitlines() if line.strip()}
    assert {str(number) for number in generations} <= listed
    assert "chain intact" in host.provenance_json("verify").stdout.decode()


# --- provenance --------------------------------------------------------------------------------


def test_provenance_verify_finds_a_changed_record_and_revoked_lists_unvouched_paths(
    fresh_host: FreshHost, team_ca: TeamCa, client: ClientStore
) -> None:
    carol_key = team_ca.certify("carol")
    with fresh_host() as (host, alice):
        pushed = signed_closure(client, carol_key)
        deployed(host, push(host.socket, alice, "alice", pushed, keys=[carol_key]))
        clean = nixwarden("provenance", "--config", str(host.config), "--revoked", check=False)
        assert clean.returncode == 0 and clean.stdout == b""
        team_ca.revoke(serial=carol_key.serial)
        revoked = nixwarden(
            "provenance", "--config", str(host.config), "--revoked", "--json", check=False
        )
        assert revoked.returncode == 1
        listed = {item["path"]: item["reasons"] for item in json.loads(revoked.stdout)}
        assert set(listed) == set(pushed.paths)
        assert "revoked: serial" in listed[pushed.top][0]

        assert host.provenance_json("verify").returncode == 0
        host.stop()
        with sqlite3.connect(host.provenance) as connection:
            connection.execute("UPDATE records SET principal = 'mallory' WHERE seq = 1")
        broken = host.provenance_json("verify", check=False)
        assert broken.returncode == 1
        assert b"chain broken at record 1" in broken.stderr


# --- what the SSH user can do on its own ------------------------------------------------------


def test_the_ssh_user_cannot_read_the_key_nor_import_through_the_daemon(
    established: Established,
    module_client: ClientStore,
    module_users: harness.Users,
    alice_key: CertifiedKey,
) -> None:
    host = established.host
    alice = established.alice
    setpriv = harness.which("setpriv")
    assert setpriv is not None

    def as_user(user: harness.User, *argv: str) -> harness.subprocess.CompletedProcess[bytes]:
        return harness.run(
            [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", *argv],
            env=host.daemon.env(HOME=str(user.home)),
            check=False,
        )

    read = as_user(alice, "cat", str(host.signing_key))
    assert read.returncode != 0 and b"Permission denied" in read.stderr

    # A path signed by alice's certified key, in a binary cache alice can read: the
    # daemon takes it only with a signature by a key in its trusted-public-keys.
    top = build(module_client, attribute="plain")
    sign(module_client, top, alice_key)
    cache = harness.world_dir("nwt-deploy-cache")
    try:
        module_client.run("nix", *NIX_COMMAND, "copy", "--to", f"file://{cache}", top)
        harness.run(["chmod", "-R", "a+rX", str(cache)])
        argv = ["nix", *NIX_COMMAND, "copy", "--no-recursive", "--from", f"file://{cache}"]
        argv += ["--to", "daemon", top]
        direct = as_user(alice, *argv)
        assert direct.returncode != 0
        assert b"Permission denied" in direct.stderr  # not even in nix-users
        member = module_users.create(groups=(harness.NIX_USERS_GROUP,))
        as_member = as_user(member, *argv)
        assert as_member.returncode != 0
        assert b"lacks a valid signature" in as_member.stderr
        assert host.invalid([top]) == {top}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def test_the_socket_speaks_only_to_a_relay_frame_first(established: Established) -> None:
    host = established.host
    connection = connect_as(established.alice, host.socket)
    try:
        hello = wire.Hello("alice", wire.Action.PUSH, "web", (established.first.top,))
        connection.sendall(wire.encode(hello))
        reply = wire.read_message(connection.makefile("rb"))
    finally:
        connection.close()
    assert isinstance(reply, wire.Error) and "expected RELAY, got HELLO" in reply.reason
    assert socket.AF_UNIX  # the service answered over the same socket, and closed it
