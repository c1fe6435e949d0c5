"""Provisioning: a builder and a client set up by nixwarden's own commands, nothing by hand."""

from __future__ import annotations

import hashlib
import platform
import secrets

from demo.framework import Demo
from testbed.gate_setup import client_store
from testbed.provision_setup import ProvisionBed, provision_bed

TITLE = "Provisioning: builder init, enroll, revoke; client add-builder"
SYSTEM = f"{platform.machine()}-linux"


def run(demo: Demo) -> None:
    with provision_bed() as bed:
        demo.say(
            f"Everything goes under --root {bed.root} (the machine's /etc is not touched),\n"
            f"with an sshd of its own on 127.0.0.1:{bed.sshd.port} that includes\n"
            f"{bed.root}/etc/ssh/sshd_config.d/*.conf, and throwaway groups."
        )
        _builder(demo, bed)


def _builder(demo: Demo, bed: ProvisionBed) -> None:
    options = bed.builder_options()
    demo.nixwarden("set up the builder", "builder", "init", *options, show_lines=20)
    demo.nixwarden("run again: nothing to do", "builder", "init", *options)
    drop_in = bed.root / "etc/ssh/sshd_config.d/nixwarden.conf"
    demo.step("the gate users' sshd block", ["cat", str(drop_in)], show_lines=30)

    tenant = bed.new_principal()
    tenant_key = bed.sshd.client_key(tenant)
    demo.nixwarden(
        "enrol a tenant principal: user, groups, policy, store, session state, key line last",
        "builder", "enroll", "--principal", tenant, "--key", str(tenant_key.with_suffix(".pub")),
        "--protocols", "ssh-ng,ssh", "--write", *options,
        show_lines=20,
    )  # fmt: skip
    host = bed.new_principal()
    host_key = bed.sshd.client_key(host)
    demo.nixwarden(
        "enrol a host-store principal (untrusted on the host daemon)",
        "builder", "enroll", "--principal", host, "--key", str(host_key.with_suffix(".pub")),
        "--store", "host", *options,
    )  # fmt: skip
    demo.nixwarden("what is set up, and who may log in", "builder", "status", *options)
    demo.step(
        f"{tenant}'s key line, in a root-owned file sshd reads for it",
        ["cat", str(bed.root / "etc/nixwarden/authorized_keys" / tenant)],
    )

    with client_store(bed.sshd) as client:
        client_options = bed.client_options()
        machines = {}
        for name, user, key, protocol in (
            ("tenant-ssh-ng", tenant, tenant_key, "ssh-ng"),
            ("tenant-ssh", tenant, tenant_key, "ssh"),
            ("host-ssh-ng", host, host_key, "ssh-ng"),
        ):
            machines[name] = bed.client_root / f"machines-{name}"
            demo.nixwarden(
                f"the client: pin the builder's host key, Host block, machines line ({name})",
                "client", "add-builder", *bed.add_builder_argv(name, user, key, protocol),
                "--machines", str(machines[name]), *client_options,
            )  # fmt: skip
        demo.step(
            "the machines line Nix reads",
            ["cat", str(machines["tenant-ssh-ng"])],
        )
        env = bed.client_ssh_env()
        for name in ("tenant-ssh-ng", "tenant-ssh"):
            tag = secrets.token_hex(4)
            expression = (
                f'derivation {{ name = "demo-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
                f'args = [ "-c" "echo built in a tenant store > $out" ]; }}'
            )
            demo.step(
                f"a remote build through {name}, the client set up only by add-builder",
                client.argv(
                    "nix-build", "--no-out-link", "--max-jobs", "0",
                    "--builders", f"@{machines[name]}", "-E", expression,
                ),
                env=env,
            )  # fmt: skip
        tag = secrets.token_hex(4)
        digest = hashlib.sha256(f"fixed {tag}\n".encode()).hexdigest()
        expression = (
            f'derivation {{ name = "demo-fixed-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
            f'args = [ "-c" "echo fixed {tag} > $out" ]; outputHashMode = "flat"; '
            f'outputHashAlgo = "sha256"; outputHash = "{digest}"; }}'
        )
        demo.step(
            "the host principal builds a fixed-output derivation (untrusted users may)",
            client.argv(
                "nix-build", "--no-out-link", "--max-jobs", "0",
                "--builders", f"@{machines['host-ssh-ng']}", "-E", expression,
            ),
            env=env,
        )  # fmt: skip
        demo.nixwarden(
            "ping the builder's store through the gate",
            "client", "check-builder", "tenant-ssh-ng",
            "--machines", str(machines["tenant-ssh-ng"]), *client_options,
        )  # fmt: skip

    demo.nixwarden(
        "revoke: the key line goes first, then the rest, the user too",
        "builder", "revoke", "--principal", tenant, "--remove-user", *options,
    )  # fmt: skip
    result = bed.ssh_login(tenant, tenant_key, "nix-daemon", "--stdio")
    demo.say(f"  a login with the revoked key: exit {result.returncode} (refused by sshd)")
    if result.returncode != 255:
        raise AssertionError("the revoked key still logs in")
