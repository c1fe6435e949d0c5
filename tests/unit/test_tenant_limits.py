"""Tenant limits: the policy keys, the mechanism detection and the fail-closed refusal.

The kernel's side (real cgroups, real builds) is in tests/system/test_tenant_limits.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nixwarden.config import Config, Principal, TenantSettings
from nixwarden.errors import ConfigError
from nixwarden.tenants import limits
from nixwarden.tenants.host import TenantSetupError
from nixwarden.tenants.session import enter_cgroups

PATH = "/etc/nixwarden/config.toml"


def principal(text: str) -> Principal:
    return Config.from_toml(f"[principals.t]\n{text}\n".encode(), PATH).principal("t")


def test_limit_keys_parse() -> None:
    limited = principal('memory = "512M"\ncpu = 0.5\ntasks = 64\nlimits = "best-effort"')
    assert (limited.memory, limited.cpu, limited.tasks) == (512 << 20, 0.5, 64)
    assert limited.limits == "best-effort"
    assert limits.has_kernel_limits(limited)
    plain = principal("")
    assert plain.limits == "enforce"
    assert not limits.has_kernel_limits(plain)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('memory = "1M"', "at least 32M"),
        ("cpu = 0", "expected 0.01 to 1024 cores"),
        ("cpu = nan", "expected 0.01 to 1024 cores"),
        ("cpu = inf", "expected 0.01 to 1024 cores"),
        ('cpu = "half"', "expected a number of cores"),
        ("tasks = 2", "expected an integer from 8"),
        ('limits = "maybe"', 'expected "enforce" or "best-effort"'),
    ],
)
def test_bad_limit_values_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        principal(text)


def test_limits_only_apply_to_tenants() -> None:
    with pytest.raises(ConfigError, match='only applies to store = "tenant"'):
        principal('store = "host"\nmemory = "1G"')


def test_cgroup_name_is_a_plain_name() -> None:
    with pytest.raises(ConfigError, match=r"tenants\.cgroup_name"):
        Config.from_toml(b'[tenants]\ncgroup_name = "../escape"\n', PATH)


def test_limit_files_are_what_the_kernel_reads() -> None:
    files = limits.limit_files(principal('memory = "64M"\ncpu = 0.5\ntasks = 64'))
    assert files["memory"] == [("memory.limit_in_bytes", str(64 << 20))]
    assert files["pids"] == [("pids.max", "64")]
    assert files["cpu"] == [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "50000")]
    assert files["cpuacct"] == []
    assert limits.limit_files(principal("")) == {}


def fake_v1(root: Path, controllers: tuple[str, ...]) -> None:
    for controller in controllers:
        (root / controller).mkdir()
        (root / controller / "cgroup.procs").touch()


def test_detection(tmp_path: Path) -> None:
    assert limits.detect(str(tmp_path)) == limits.NO_MECHANISM
    fake_v1(tmp_path, ("memory", "pids"))
    assert limits.detect(str(tmp_path)) == limits.NO_MECHANISM  # cpu is missing
    assert limits.detect(str(tmp_path), ("memory",)) == limits.CGROUP_V1
    (tmp_path / "cgroup.controllers").touch()
    assert limits.detect(str(tmp_path)) == limits.CGROUP_V2


def test_a_host_without_a_mechanism_refuses_a_principal_with_limits(tmp_path: Path) -> None:
    settings = TenantSettings(cgroup_root=str(tmp_path))
    limited = principal('memory = "1G"')
    with pytest.raises(TenantSetupError, match="cannot be enforced on this host: no cgroup v1"):
        enter_cgroups(settings, limited, 0)
    with pytest.raises(TenantSetupError, match="cannot be enforced: no cgroup v1"):
        limits.apply(settings, limited, 1000, 1000)
    (tmp_path / "cgroup.controllers").touch()
    with pytest.raises(TenantSetupError, match="is cgroup v2"):
        enter_cgroups(settings, limited, 0)
    # Best effort is said in the policy, and then nothing is pretended.
    relaxed = principal('memory = "1G"\nlimits = "best-effort"')
    enter_cgroups(settings, relaxed, 0)
    assert limits.apply(settings, relaxed, 1000, 1000) == []
    assert limits.unenforceable(settings, principal("")) is None


def test_a_missing_slot_names_the_fix(tmp_path: Path) -> None:
    fake_v1(tmp_path, ("memory",))
    settings = TenantSettings(cgroup_root=str(tmp_path))
    with pytest.raises(TenantSetupError, match="nixwarden tenant limits apply t"):
        limits.enter(settings, principal('memory = "1G"'), 3)


def test_audit_reports_limits_the_host_cannot_enforce() -> None:
    from nixwarden.audit import rules_nixwarden  # noqa: PLC0415
    from nixwarden.audit.facts import Facts, NixwardenFacts  # noqa: PLC0415

    text = b'[principals.t]\nmemory = "1G"\n'
    config = Config.from_toml(text, PATH)
    why = "no cgroup v1 hierarchy of memory under /sys/fs/cgroup"
    facts = Facts(nixwarden=NixwardenFacts(PATH, config, text=text, unenforceable={"t": why}))
    (finding,) = rules_nixwarden.check(facts)
    assert finding.rule == "nixwarden-limits-unenforceable"
    assert finding.evidence == f"principals.t (limits = enforce): {why}"
    assert finding.line == 1
    quiet = Facts(nixwarden=NixwardenFacts(PATH, config, text=text))
    assert rules_nixwarden.check(quiet) == []


def test_counters_the_supervisor_watches() -> None:
    settings = TenantSettings(cgroup_root="/cg", cgroup_name="nw")
    limited = principal('memory = "1536M"\ncpu = 0.5\ntasks = 64')
    assert limits.counters(settings, limited, 2) == [
        ("memory", "/cg/memory/nw/t/slot2/memory.oom_control", "1.5 GiB"),
        ("tasks", "/cg/pids/nw/t/slot2/pids.events", "64"),
    ]
    assert limits.counters(settings, principal("cpu = 1"), 0) == []  # at its cap it waits


@pytest.mark.parametrize(
    ("count", "text"),
    [(128 << 20, "128 MiB"), (8 << 30, "8 GiB"), (1536 << 20, "1.5 GiB"), (512, "512 B")],
)
def test_size_text(count: int, text: str) -> None:
    assert limits.size_text(count) == text


def test_what_status_and_audit_say_about_the_host(tmp_path: Path) -> None:
    fake_v1(tmp_path, ("memory", "pids", "cpu"))
    settings = TenantSettings(cgroup_root=str(tmp_path))
    imaged = TenantSettings(cgroup_root=str(tmp_path), disk_images="/var/lib/nw-images")
    assert limits.host_mechanism(settings) == (
        f"cgroup v1 at {tmp_path}: memory, cpu and tasks limits enforced; "
        "disk quotas measured every 5 s by the gate ([tenants] disk_images unset)"
    )
    assert limits.host_mechanism(imaged).endswith("held by ext4 images in /var/lib/nw-images")
    (tmp_path / "cgroup.controllers").touch()
    assert limits.host_mechanism(settings).startswith(f"cgroup v2 at {tmp_path}: not supported")
    # The disk quota without images is said to be the gate's watch only; with them, held.
    quota = principal('disk_quota = "1G"')
    assert "not held by the kernel" in str(limits.unenforced(settings, quota))
    assert limits.unenforced(imaged, quota) is None
    both = principal('memory = "1G"\ndisk_quota = "1G"')
    why = str(limits.unenforced(settings, both))
    assert why.startswith(f"{tmp_path} is cgroup v2") and "disk_images" in why


def test_describe_lists_the_limits() -> None:
    assert limits.describe(principal("")) == "-"
    text = 'memory = "8G"\ncpu = 0.5\ntasks = 64\ndisk_quota = "20G"\nlimits = "best-effort"'
    assert limits.describe(principal(text)) == (
        "memory 8 GiB, cpu 0.5, tasks 64, disk 20 GiB, best-effort"
    )
