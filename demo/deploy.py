"""Deploy: a push through the gate to a receive service, verified before any byte."""

from __future__ import annotations

import json
import platform
import secrets
from pathlib import Path

from demo.framework import NIXWARDEN, Demo, DemoFailed
from testbed.deploy_gate import add_deployer, gate_on, machine_daemon
from testbed.deploy_setup import TeamCa, receive_host
from testbed.gate_setup import ClientStore, GatedBuilder

TITLE = "Deploy: push a signed closure, no root and no trusted-users on the target"
SYSTEM = f"{platform.machine()}-linux"


def run(demo: Demo, builder: GatedBuilder, client: ClientStore) -> None:
    work = demo.scratch / "deploy"
    ca = TeamCa(work / "ca")
    ca.create()
    alice = ca.certify("alice")
    demo.say(
        f"the team's CA certified alice's Nix signing key ({alice.name}) for principal\n"
        "'deploy'; the target trusts the CA, not the key."
    )
    top = _build(demo, client, "web", alice.secret)
    unsigned = _build(demo, client, "unsigned", None)
    with (
        machine_daemon(work / "target") as daemon,
        receive_host(builder.users, daemon, ca) as host,
    ):
        host.own_store = daemon.own_store
        gate_on(host)
        deployer = add_deployer(host, builder.sshd, "alice", profiles=["web"])
        host.start()
        demo.say(
            f"the target: a nix-daemon over a store of its own, trusting only its receive\n"
            f"service's countersigning key; the service runs as {host.service_user.name}; "
            f"alice's SSH user\n{deployer.user.name} is in neither trusted-users nor nix-users."
        )
        demo.step("the target's policy", ["cat", str(host.config)], show_lines=40)
        env = builder.sshd.client_env()
        push = [NIXWARDEN, "push", "--to", deployer.alias, "--certs", str(alice.certificate)]

        demo.step(
            "a dry run: the service verifies the closure and plans; nothing is sent",
            client.argv(*push, "--profile", "web", "--dry-run", "--json", top),
            env=env,
        )
        if not host.invalid([top]):
            raise DemoFailed("the dry run made the path valid on the target")
        result = demo.step(
            "the push: verified against [trust] before any NAR byte, staged, countersigned, "
            "imported as an untrusted daemon client, a new generation of profile 'web'",
            client.argv(*push, "--profile", "web", "--json", top),
            env=env,
        )
        _expect_status(result.stdout, "deployed")
        if host.invalid([top]):
            raise DemoFailed("the pushed path is not valid on the target")
        demo.step(
            "the profile is a real Nix profile",
            ["nix-env", "--profile", str(host.profiles / "web"), "--list-generations"],
            env=daemon.env(),
        )
        demo.step(
            "on the target: who put it there, signed by whom",
            [NIXWARDEN, "provenance", "--db", str(host.provenance), top],
            show_lines=20,
        )
        result = demo.step(
            "the same push again: nothing to send",
            client.argv(*push, "--profile", "web", "--json", top),
            env=env,
        )
        _expect_status(result.stdout, "up-to-date")
        profiles_before = host.profile_state()
        result = demo.step(
            "a closure no certified key signed is refused before any NAR byte (exit 1)",
            client.argv(*push, "--profile", "web", "--json", unsigned),
            env=env,
            expect_exit=1,
        )
        _expect_status(result.stdout, "refused")
        if not host.invalid([unsigned]):
            raise DemoFailed("the refused path became valid on the target")
        if host.profile_state() != profiles_before:
            raise DemoFailed("the refused push changed a profile")
        demo.say("  the target's store does not hold it, and profile 'web' did not change")
        demo.step(
            "the provenance chain is intact",
            [NIXWARDEN, "provenance", "--db", str(host.provenance), "verify"],
        )
        host.stop()
        host.clean_up_profiles()


def _build(demo: Demo, client: ClientStore, name: str, key: Path | None) -> str:
    tag = secrets.token_hex(4)
    expression = (
        f'derivation {{ name = "demo-{name}-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        f'args = [ "-c" "echo {name} release {tag} > $out" ]; }}'
    )
    built = client.run("nix-build", "--no-out-link", "-E", expression)
    top = built.stdout.decode().split()[-1]
    if key is not None:
        client.run("nix", "store", "sign", "--key-file", str(key), "-r", top)
        demo.say(f"built {top} in the client's store and signed it with alice's key")
    else:
        demo.say(f"built {top} in the client's store, unsigned")
    return top


def _expect_status(stdout: bytes, status: str) -> None:
    for line in stdout.decode().splitlines():
        if line.startswith("{") and json.loads(line).get("status") == status:
            return
    raise DemoFailed(f"the push did not report status {status!r}")
