"""The gate: a key that can only speak Nix."""

from __future__ import annotations

import platform
import secrets

from demo.framework import NIXWARDEN, Demo
from testbed import harness
from testbed.gate_setup import ClientStore, GatedBuilder

TITLE = "Gate: SSH keys pinned to the Nix protocol"
SYSTEM = f"{platform.machine()}-linux"


def run(demo: Demo, builder: GatedBuilder, client: ClientStore) -> None:
    ci = builder.add(
        "ci",
        groups=(harness.NIX_USERS_GROUP, harness.TRUSTED_GROUP),
        protocols=["ssh-ng", "ssh"],
        write=True,
        store="host",
    )
    demo.say(
        f"principal 'ci' (store = \"host\") is unix user {ci.user.name}; for this demo its user\n"
        f"is in trusted-users (the tenant part below shows a build that needs no trust)."
    )
    demo.step("the policy", ["cat", str(builder.config)])
    demo.step(
        "the authorized_keys line the gate put in place",
        ["cat", str(ci.user.home / ".ssh" / "authorized_keys")],
    )
    env = builder.sshd.client_env()
    demo.step(
        "a Nix client reaches the daemon through the gate (ssh-ng)",
        ["nix", "store", "ping", "--store", f"ssh-ng://{ci.alias}"],
        env=env,
    )
    tag = secrets.token_hex(4)
    expression = (
        f'derivation {{ name = "demo-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        f'args = [ "-c" "echo built remotely > $out" ]; }}'
    )
    demo.step(
        "a remote build from a client with its own store, through the gate (ssh-ng)",
        client.argv(
            "nix-build", "--no-out-link", "--max-jobs", "0",
            "--builders", f"ssh-ng://{ci.alias} {SYSTEM} - 1 1", "-E", expression,
        ),
        env=env,
    )  # fmt: skip
    marker = builder.directory / "MARKER"
    demo.step(
        "a command chained after the daemon is refused, and nothing runs",
        builder.sshd.ssh_argv(ci.alias, f"nix-daemon --stdio; touch {marker}"),
        expect_exit=1,
    )
    if marker.exists():
        raise AssertionError("the refused command ran")
    demo.say(f"  {marker} does not exist: nothing ran")
    demo.step(
        "a shell is refused",
        builder.sshd.ssh_argv(ci.alias, "bash -c id"),
        expect_exit=1,
    )
    demo.step(
        "a look-alike character is refused even inside quotes (a Cyrillic o in 'local')",
        builder.sshd.ssh_argv(ci.alias, "nix-daemon --stdio --store 'l\u043ecal'"),
        expect_exit=1,
    )
    demo.step(
        "the decision without running anything",
        [NIXWARDEN, "gate", "--check", "--principal", "ci", "--config", str(builder.config),
         "--command", "exec /nix/store/x-nix/bin/nix-store --serve --write"],
    )  # fmt: skip
    demo.step("the audit log: one JSON line per decision", ["cat", str(builder.audit_log)])
