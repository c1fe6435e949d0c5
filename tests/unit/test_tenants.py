"""Tenant layout and sandbox: pure values, checked without running anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nixwarden.config import Principal
from nixwarden.tenants import layout
from nixwarden.tenants.host import TenantRefused, bound_store_paths, resolve_keeping_name
from nixwarden.tenants.session import check_quota
from nixwarden.tenants.usage import TenantUsage, human_bytes

LAYOUT = layout.TenantLayout("/srv/tenants", "alice")
CLOSED = layout.TenantPolicy(
    network=False, substituters=(), trusted_public_keys=(), session_timeout=60
)
OPEN = layout.TenantPolicy(
    network=True,
    substituters=("https://cache.example",),
    trusted_public_keys=("cache.example-1:AAAA",),
    session_timeout=0,
)


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg == flag]


def test_paths() -> None:
    assert LAYOUT.nix == "/srv/tenants/alice/nix"
    assert LAYOUT.database == "/srv/tenants/alice/nix/var/nix/db/db.sqlite"


def test_sandbox_sees_its_own_store_and_nothing_of_the_host_store() -> None:
    argv = layout.sandbox(LAYOUT, CLOSED).argv("/usr/bin/bwrap", ["/usr/bin/nix-daemon", "--stdio"])
    binds = pairs(argv, "--bind")
    assert ("/srv/tenants/alice/nix", "/nix") in binds
    assert ("/srv/tenants/alice/tmp", "/tmp") in binds
    ro_binds = pairs(argv, "--ro-bind")
    assert all(not source.startswith("/nix") for source, _ in ro_binds)
    assert all(not source.startswith("/home") and source != "/etc" for source, _ in ro_binds)
    assert ("/srv/tenants/alice/etc/nix/nix.conf", "/etc/nix/nix.conf") in ro_binds
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
                 "--unshare-uts", "--die-with-parent", "--new-session", "--clearenv"):  # fmt: skip
        assert flag in argv
    assert argv[argv.index("--uid") + 1] == "0"


def test_network_policy_shares_the_network_and_resolver() -> None:
    argv = layout.sandbox(LAYOUT, OPEN, existing=["/etc/resolv.conf"]).argv("/b", ["x"])
    assert "--unshare-net" not in argv
    assert ("/etc/resolv.conf", "/etc/resolv.conf") in pairs(argv, "--ro-bind-try")
    closed = layout.sandbox(LAYOUT, CLOSED, existing=["/etc/resolv.conf"]).argv("/b", ["x"])
    assert ("/etc/resolv.conf", "/etc/resolv.conf") not in pairs(closed, "--ro-bind-try")


def test_host_nix_closure_is_bound_read_only() -> None:
    closure = ["/nix/store/aaaa-nix-2.18", "/nix/store/bbbb-glibc"]
    argv = layout.sandbox(LAYOUT, CLOSED, host_nix_paths=closure).argv("/b", ["x"])
    ro = pairs(argv, "--ro-bind")
    assert ("/nix/store/aaaa-nix-2.18", "/nix/store/aaaa-nix-2.18") in ro
    # Bound after the tenant's /nix, so they appear inside it.
    assert argv.index("/nix/store/aaaa-nix-2.18") > argv.index("/srv/tenants/alice/nix")


def test_nix_conf_follows_policy() -> None:
    conf = layout.etc_files(OPEN)["nix/nix.conf"]
    assert "substituters = https://cache.example\n" in conf
    assert "trusted-public-keys = cache.example-1:AAAA\n" in conf
    assert "require-sigs = true\n" in conf
    assert "build-users-group =\n" in conf


def test_session_time_limit_wraps_bwrap() -> None:
    sandbox = layout.sandbox(LAYOUT, CLOSED)
    argv = layout.session_argv("/usr/bin/bwrap", sandbox, ["/usr/bin/nix-daemon", "--stdio"], 60)
    assert argv[:4] == ["/usr/bin/timeout", "--kill-after=10s", "60s", "/usr/bin/bwrap"]
    unlimited = layout.session_argv("/usr/bin/bwrap", sandbox, ["n"], 0)
    assert unlimited[0] == "/usr/bin/bwrap"


def test_resolve_keeping_name(tmp_path: Path) -> None:
    store = tmp_path / "store" / "abc-nix" / "bin"
    store.mkdir(parents=True)
    (store / "nix").write_text("")
    (store / "nix-daemon").symlink_to("nix")
    profile = tmp_path / "profile" / "bin"
    profile.mkdir(parents=True)
    (profile / "nix-daemon").symlink_to(store / "nix-daemon")
    resolved = resolve_keeping_name(str(profile / "nix-daemon"))
    assert resolved == os.path.join(os.path.realpath(store), "nix-daemon")


def test_quota_message() -> None:
    frugal = Principal(name="alice", disk_quota=16 << 20)
    with pytest.raises(TenantRefused) as refused:
        check_quota(TenantUsage(disk_bytes=20 << 20, paths=None, nar_bytes=None), frugal)
    assert str(refused.value) == (
        "tenant store is over its disk quota (20.0 MiB used of 16.0 MiB); "
        "free space with: nixwarden tenant gc alice"
    )
    assert refused.value.exit_code == 1
    with pytest.raises(TenantRefused, match="over its disk quota"):  # at the quota: full
        check_quota(TenantUsage(disk_bytes=16 << 20, paths=None, nar_bytes=None), frugal)
    check_quota(TenantUsage(disk_bytes=(16 << 20) - 1, paths=None, nar_bytes=None), frugal)
    unlimited = Principal(name="alice")
    check_quota(TenantUsage(disk_bytes=None, paths=None, nar_bytes=None), unlimited)
    with pytest.raises(TenantRefused, match="not measured"):
        check_quota(TenantUsage(disk_bytes=None, paths=None, nar_bytes=None), frugal)


def test_gc_keeps_the_host_paths_bound_into_the_store() -> None:
    closure = ["/nix/store/aaaa-nix-2.18", "/nix/store/bbbb-glibc"]
    sandbox = layout.sandbox(LAYOUT, CLOSED, host_nix_paths=closure)
    assert bound_store_paths(sandbox) == closure
    assert bound_store_paths(layout.sandbox(LAYOUT, CLOSED)) == []


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (10 << 30, "10.0 GiB")]
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text
