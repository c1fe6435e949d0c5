"""Tenant stores: an untrusted user's remote build, in a store of its own."""

from __future__ import annotations

import platform
import secrets
import subprocess
from pathlib import Path

from demo.framework import NIXWARDEN, Demo
from testbed import harness
from testbed.gate_setup import ClientStore, GatedBuilder

TITLE = "Tenant stores: remote builds without trusted-users"
SYSTEM = f"{platform.machine()}-linux"


def run(demo: Demo, builder: GatedBuilder, client: ClientStore) -> None:
    root = demo.scratch / "tenants"
    builder.tenants["root"] = str(root)
    alice = builder.add(
        "alice", groups=(), protocols=["ssh-ng", "ssh"], write=True, create_tenant=False
    )
    bob = builder.add("bob", store="host")
    demo.say(
        f"principal 'alice' (store = \"tenant\") is unix user {alice.user.name}: not in\n"
        f"trusted-users, not even in nix-users. 'bob' (store = \"host\") is {bob.user.name},\n"
        "in nix-users but not trusted: what a careful builder gives people today."
    )
    demo.step(
        "root creates alice's tenant directory, owned by her unix user (nobody else may\n"
        "# create one: the root that holds them is root's, mode 0711)",
        [NIXWARDEN, "tenant", "create", "alice", "--user", alice.user.name,
         "--config", str(builder.config)],
    )  # fmt: skip
    demo.step("the tenants", ["ls", "-la", str(root)])
    demo.step(
        "the host daemon's trust settings", ["cat", f"{harness.STATE}/nix-daemon-conf/nix.conf"]
    )
    demo.step("groups of alice's unix user", ["id", alice.user.name])
    tag = secrets.token_hex(4)
    dep = (
        f'derivation {{ name = "demo-input-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        f'args = [ "-c" "echo input built on the client > $out" ]; }}'
    )
    top = (
        f"let dep = {dep}; in "
        f'derivation {{ name = "demo-tenant-{tag}"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        'args = [ "-c" "read x < ${dep}; echo \\"built in a tenant store from: $x\\" > $out" ]; }'
    )
    demo.step(
        "the client builds an input locally", client.argv("nix-build", "--no-out-link", "-E", dep)
    )
    env = builder.sshd.client_env()
    for principal in (bob, alice):
        expect = 1 if principal is bob else 0
        what = (
            "bob, untrusted on the host store: Nix refuses (this is why people hand out root)"
            if principal is bob
            else "alice builds remotely in her tenant store: input copied over, output back"
        )
        result = demo.step(
            what,
            client.argv(
                "nix-build", "--no-out-link", "--max-jobs", "0",
                "--builders", f"ssh-ng://{principal.alias} {SYSTEM} - 1 1", "-E", top,
            ),
            env=env,
            expect_exit=expect,
        )  # fmt: skip
    out = result.stdout.decode().strip()
    name = out.removeprefix("/nix/store/")
    demo.step("the output, back in the client's store", ["cat", str(client.root / "store" / name)])
    demo.step(
        "the output in alice's tenant store",
        ["ls", "-l", str(root / "alice" / "nix" / "store" / name)],
    )
    demo.step("and not in the host store", ["nix-store", "--check-validity", out], expect_exit=1)
    if Path(out).exists():
        raise AssertionError("the tenant's output reached the host store")
    listing = [NIXWARDEN, "tenant", "--config", str(builder.config), "list", "--time-limit", "5"]
    demo.step("the tenant stores, measured inside each tenant's sandbox, as its user", listing)
    database = root / "alice" / "nix" / "var" / "nix" / "db" / "db.sqlite"
    as_alice = ["setpriv", f"--reuid={alice.user.uid}", f"--regid={alice.user.gid}",
                "--clear-groups"]  # fmt: skip
    demo.step(
        "alice's database swapped for a symlink to /etc/shadow, as a build of hers could",
        [*as_alice, "sh", "-c", f"mv {database} {database}.real && ln -s /etc/shadow {database}"],
    )
    demo.step("root's listing never opens it as root, and says nothing of /etc/shadow", listing)
    demo.step("put back", [*as_alice, "mv", f"{database}.real", str(database)])
    _disk_quota(demo, builder, client, root)
    # Store files are read-only by design; let the demo's clean-up remove them.
    subprocess.run(["/usr/bin/chmod", "-R", "u+w", str(root)], check=False)


def _disk_quota(demo: Demo, builder: GatedBuilder, client: ClientStore, root: Path) -> None:
    """A disk quota the kernel holds: carol's directory is a 64 MiB ext4 image."""
    builder.tenants["disk_images"] = str(demo.scratch / "tenant-images")
    carol = builder.add(
        "carol", groups=(), protocols=["ssh-ng"], disk_quota="64M",
        create_tenant=False,
    )  # fmt: skip
    try:
        demo.step(
            "with [tenants] disk_images, carol's disk_quota = \"64M\" is a filesystem of her own",
            [NIXWARDEN, "tenant", "create", "carol", "--user", carol.user.name,
             "--config", str(builder.config)],
        )  # fmt: skip
        demo.step(
            "her directory is a 64 MiB ext4 image, loop-mounted", ["df", "-h", str(root / "carol")]
        )
        fill = (
            f'derivation {{ name = "demo-fill-{secrets.token_hex(4)}"; system = "{SYSTEM}"; '
            'builder = "/bin/sh"; args = [ "-c" "/usr/bin/head -c 100000000 /dev/zero > $out" ]; }'
        )
        demo.step(
            "a build writing 100 MB fails while it runs: the kernel says no (the gate logs why)",
            client.argv(
                "nix-build", "--no-out-link", "--store", f"ssh-ng://{carol.alias}", "-E", fill
            ),
            env=builder.sshd.client_env(),
            expect_exit=1,
        )
        demo.step(
            "root removes carol: her image is unmounted and deleted",
            [NIXWARDEN, "tenant", "remove", "carol", "--config", str(builder.config)],
        )
    finally:
        if (root / "carol").is_mount():
            umount = harness.which("umount") or "/bin/umount"
            subprocess.run([umount, "-l", str(root / "carol")], check=False)
