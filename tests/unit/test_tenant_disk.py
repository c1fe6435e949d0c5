"""The gate's side of a tenant's disk image: what it checks before anything starts. The
root side (mkfs, loop mounts) is in tests/system/test_tenant_disk.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nixwarden.config import Config, Principal, TenantSettings
from nixwarden.errors import ConfigError
from nixwarden.tenants import disk
from nixwarden.tenants.host import TenantSetupError

PATH = "/etc/nixwarden/config.toml"


def principal(text: str) -> Principal:
    return Config.from_toml(f"[principals.t]\n{text}\n".encode(), PATH).principal("t")


def test_disk_images_is_an_absolute_path() -> None:
    config = Config.from_toml(b'[tenants]\ndisk_images = "/var/lib/nw//images/"\n', PATH)
    assert config.tenants.disk_images == "/var/lib/nw/images"
    with pytest.raises(ConfigError, match=r"tenants\.disk_images"):
        Config.from_toml(b'[tenants]\ndisk_images = "images"\n', PATH)
    assert Config.from_toml(b"", PATH).tenants.disk_images == ""


def test_only_a_quota_with_images_uses_one() -> None:
    imaged = TenantSettings(disk_images="/images")
    assert disk.uses_image(imaged, principal('disk_quota = "1G"'))
    assert not disk.uses_image(imaged, principal(""))
    assert not disk.uses_image(TenantSettings(), principal('disk_quota = "1G"'))
    assert disk.image_path(imaged, "t") == "/images/t.ext4"


def test_a_directory_on_the_roots_filesystem_is_refused_whatever_the_policy(
    tmp_path: Path,
) -> None:
    (tmp_path / "t").mkdir()
    settings = TenantSettings(root=str(tmp_path), disk_images="/images")
    assert not disk.is_own_filesystem(str(tmp_path / "t"), str(tmp_path))
    fd = os.open(tmp_path / "t", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for text in ('disk_quota = "1G"', 'disk_quota = "1G"\nlimits = "best-effort"'):
            with pytest.raises(TenantSetupError, match=r"not mounted.*tenant limits apply t"):
                disk.check(settings, principal(text), fd)
    finally:
        os.close(fd)


def test_a_filesystem_larger_than_the_quota_is_refused_unless_best_effort() -> None:
    # /dev stands for the tenant's image: another filesystem than the root's, with a size.
    settings = TenantSettings(root="/", disk_images="/images")
    fd = os.open("/dev", os.O_RDONLY | os.O_DIRECTORY)  # devtmpfs: another filesystem, sized
    try:
        size, _free = disk.filesystem_bytes(fd)
        if size == 0 or os.fstat(fd).st_dev == os.stat("/").st_dev:
            pytest.skip("/dev is not a sized filesystem of its own here")
        small = principal('disk_quota = "32M"') if size > 32 << 20 else None
        if small is None:
            pytest.skip("/dev is too small to be over a quota")
        with pytest.raises(TenantSetupError, match="more than the quota"):
            disk.check(settings, small, fd)
        relaxed = principal('disk_quota = "32M"\nlimits = "best-effort"')
        assert disk.check(settings, relaxed, fd) is None
        assert disk.check(settings, principal(f"disk_quota = {size}"), fd) == (
            size,
            disk.filesystem_bytes(fd)[1],
        )
    finally:
        os.close(fd)


def test_full_means_under_a_mebibyte_or_one_percent() -> None:
    assert disk.disk_full(0, 64 << 20)
    assert disk.disk_full((1 << 20) - 1, 64 << 20)
    assert not disk.disk_full(1 << 20, 64 << 20)
    assert disk.disk_full(9 << 20, 1 << 30)  # 1% of 1 GiB is more than 9 MiB
    assert not disk.disk_full(11 << 20, 1 << 30)


def test_out_of_inodes_is_full_too(tmp_path: Path) -> None:
    assert disk.inodes_full(63, 10_000)
    assert not disk.inodes_full(100, 10_000)
    assert disk.inodes_full(900, 100_000)  # under 1%
    assert not disk.inodes_full(0, 0)  # a filesystem without a fixed count (btrfs, tmpfs)
    info = os.statvfs(tmp_path)
    expected = disk.disk_full(
        info.f_bavail * info.f_frsize, info.f_blocks * info.f_frsize
    ) or disk.inodes_full(info.f_favail, info.f_files)
    assert disk.is_full(str(tmp_path)) is expected
