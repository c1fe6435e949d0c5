"""A tenant's disk quota held by the kernel: its directory is an ext4 image of that size.

Real loop mounts, the real gate, real builds. Each test's images live in its own
directory, and the fixture unmounts (and so detaches) every filesystem still mounted
under the tenants root, even when the test failed: nothing is left mounted, and the
images are small sparse files on the test's own temporary directory.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixwarden.tenants import host
from nixwarden.tenants import layout as tenant_layout
from testbed import harness
from testbed.gate_setup import ClientStore, GatedBuilder, Principal
from tests.system.test_tenant_limits import limit_reasons
from tests.system.test_tenants import add_tenant, last_reason, script_expression

QUOTA = 64 << 20


def mounts_under(top: Path) -> list[str]:
    """Mount points at or under `top`, deepest first (from /proc/self/mountinfo)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(top) or point.startswith(f"{top}/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


@pytest.fixture
def imaged(tenant_builder: GatedBuilder, tmp_path: Path) -> Iterator[GatedBuilder]:
    tenant_builder.tenants["disk_images"] = str(tmp_path / "images")
    tenant_builder.write_config()
    root = Path(str(tenant_builder.tenants["root"]))
    try:
        yield tenant_builder
    finally:
        for point in mounts_under(root):
            subprocess.run([harness.which("umount") or "umount", "-l", point], check=False)


def store_build(
    client: ClientStore, principal: Principal, expression: str
) -> subprocess.CompletedProcess[bytes]:
    """Build on the tenant's store directly (--store ssh-ng://): Nix prints the remote's
    stderr as it comes."""
    return client.run(
        "nix-build", "--no-out-link", "--store", f"ssh-ng://{principal.alias}",
        "-E", expression, check=False,
    )  # fmt: skip


def output_of(client: ClientStore, expression: str) -> str:
    drv = client.run("nix-instantiate", "-E", expression).stdout.decode().strip()
    return client.run("nix-store", "-q", "--outputs", drv).stdout.decode().strip()


def in_tenant_sandbox(
    builder: GatedBuilder, name: str, command: list[str]
) -> subprocess.CompletedProcess[bytes]:
    """`command` in the tenant's sandbox, as its unix user, as `tenant gc` runs (the test's
    own look at the tenant store from inside)."""
    base = Path(str(builder.tenants["root"])) / name
    info = base.stat()
    layout = tenant_layout.TenantLayout(str(builder.tenants["root"]), name)
    policy = tenant_layout.TenantPolicy(
        network=False, substituters=(), trusted_public_keys=(), session_timeout=0
    )
    sandbox = host.tenant_sandbox(layout, policy, [command[0]])
    argv = host.as_user(info.st_uid, info.st_gid, sandbox.argv("/usr/bin/bwrap", command))
    return harness.run(argv, env={"PATH": "/usr/bin:/bin"}, check=False, timeout=120)


def test_writing_past_the_quota_fails_during_the_session(
    imaged: GatedBuilder, client: ClientStore
) -> None:
    principal = add_tenant(imaged, "filler", disk_quota="64M")
    root = Path(str(imaged.tenants["root"]))
    base = root / "filler"
    # tenant create made the image and mounted it: another filesystem, no larger than the quota.
    assert base.stat().st_dev != root.stat().st_dev
    size = os.statvfs(base).f_blocks * os.statvfs(base).f_frsize
    assert QUOTA * 3 // 4 < size <= QUOTA
    image = Path(str(imaged.tenants["disk_images"])) / "filler.ext4"
    assert image.stat().st_uid == 0 and image.stat().st_mode & 0o777 == 0o600
    assert image.stat().st_blocks * 512 < QUOTA  # sparse
    # 100 MB into the output: the kernel says no while the build runs.
    expression = script_expression("/usr/bin/head -c 100000000 /dev/zero > $out")
    failed = store_build(client, principal, expression)
    assert failed.returncode != 0
    assert b"No space left on device" in failed.stderr, failed.stderr.decode()[-2000:]
    reason = (
        "session of principal filler hit its disk quota (64 MiB): the tenant store is full, "
        "and writes fail with 'No space left on device'"
    )
    # Nix's own error reaches the client first (the daemon's write of the build log fails
    # at once); the gate's line goes to the audit log, and the next session is told below.
    assert limit_reasons(imaged, "filler", at_least=1) == [reason]
    # The host's filesystem did not take it: the image is still no larger than the quota.
    assert image.stat().st_blocks * 512 <= QUOTA
    # Nothing half-written is valid, and the store is consistent, seen from inside.
    verify = in_tenant_sandbox(
        imaged, "filler", ["/usr/bin/nix-store", "--verify", "--check-contents"]
    )
    assert verify.returncode == 0, verify.stderr.decode()[-2000:]
    output = output_of(client, expression)
    check = in_tenant_sandbox(imaged, "filler", ["/usr/bin/nix-store", "--check-validity", output])
    assert check.returncode != 0 and b"is not valid" in check.stderr, check.stderr
    # Nix leaves the partial output on disk (invalid) until it builds that path again or
    # collects garbage: the store stays full, so the next session is refused, and the
    # client is told why; root collects garbage, and a small build succeeds.
    small = store_build(client, principal, script_expression("echo small > $out"))
    assert small.returncode != 0
    assert b"tenant store is full" in small.stderr, small.stderr.decode()[-2000:]
    assert b"its disk quota); free space with: nixwarden tenant gc filler" in small.stderr
    harness.run([harness.NIXWARDEN, "tenant", "gc", "filler", "--config", str(imaged.config)])
    small = store_build(client, principal, script_expression("echo small > $out"))
    assert small.returncode == 0, small.stderr.decode()[-2000:]
    assert len(limit_reasons(imaged, "filler")) == 1


def test_an_image_that_is_not_mounted_is_refused(imaged: GatedBuilder) -> None:
    principal = add_tenant(imaged, "unmounted", disk_quota="32M")
    root = Path(str(imaged.tenants["root"]))
    ping = ["nix", "store", "ping", "--store", f"ssh-ng://{principal.alias}"]
    env = imaged.sshd.client_env()
    harness.run(ping, env=env)
    subprocess.run([harness.which("umount") or "umount", str(root / "unmounted")], check=True)
    # Under the mount point: root's directory. Refused, best effort or not.
    assert (root / "unmounted").stat().st_uid == 0
    for mode in ("enforce", "best-effort"):
        imaged.policies["unmounted"]["limits"] = mode
        imaged.write_config()
        refused = harness.run(ping, env=env, check=False)
        assert refused.returncode != 0
        assert last_reason(imaged).endswith(
            "the disk image of unmounted is not mounted at its directory; "
            "as root: nixwarden tenant limits apply unmounted"
        )
    # At boot, root mounts it again; the tenant's store is as it was.
    config = ["--config", str(imaged.config)]
    apply = harness.run([harness.NIXWARDEN, "tenant", "limits", "apply", "unmounted", *config])
    assert b"ext4 image" in apply.stdout
    harness.run(ping, env=env)
    # remove unmounts it and deletes the image.
    harness.run([harness.NIXWARDEN, "tenant", "remove", "unmounted", *config])
    assert mounts_under(root) == []
    assert not (Path(str(imaged.tenants["disk_images"])) / "unmounted.ext4").exists()
    assert not (root / "unmounted").exists()


def test_without_an_image_a_watchdog_ends_the_session_past_the_quota(
    tenant_builder: GatedBuilder, client: ClientStore
) -> None:
    """No [tenants] disk_images: the supervisor measures the tenant's usage with the probe
    while the session runs, and ends it past the quota (the build would otherwise sleep
    for a minute and succeed)."""
    principal = add_tenant(tenant_builder, "spiller", disk_quota="16M")
    script = "/usr/bin/head -c 40000000 /dev/zero > /tmp/spill; /usr/bin/sleep 60; echo ok > $out"
    expression = script_expression(script)
    ended = store_build(client, principal, expression)
    assert ended.returncode != 0
    line = b"nixwarden: session of principal spiller was ended: its tenant store passed its disk"
    assert line in ended.stderr, ended.stderr.decode()[-2000:]
    (reason,) = limit_reasons(tenant_builder, "spiller", at_least=1)
    assert reason.startswith("session of principal spiller was ended: its tenant store passed")
    assert reason.endswith("MiB used of 16 MiB)")
    # What it left was in /tmp: the next session, starting alone, empties it and builds.
    again = store_build(client, principal, script_expression("echo small > $out"))
    assert again.returncode == 0, again.stderr.decode()[-2000:]
