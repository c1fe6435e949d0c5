"""The confine sandbox (pure): what is mounted, in which order, which namespaces."""

from __future__ import annotations

import pytest

from nixwarden.confine.plan import (
    BinSh,
    HostFile,
    Mode,
    RunSpec,
    mounts,
    parse_bind,
    parse_setenv,
    sandbox,
)
from nixwarden.errors import InvalidInput
from nixwarden.sandbox.bwrap import MountKind, Namespace

A = "/nix/store/" + "a" * 32 + "-a"
B = "/nix/store/" + "b" * 32 + "-b"
LINK = "/nix/store/" + "c" * 32 + "-link"


def spec(mode: Mode = Mode.FULL_APIVFS, **kwargs: object) -> RunSpec:
    return RunSpec(mode=mode, closure=frozenset({B, A, LINK}), links={LINK: f"{A}/x"}, **kwargs)  # type: ignore[arg-type]


def test_full_apivfs_sandbox() -> None:
    argv = sandbox(spec(env={"K": "V"})).argv("/usr/bin/bwrap", [f"{A}/bin/a", "x"])
    joined = " ".join(argv)
    assert f"--ro-bind {A} {A} --ro-bind {B} {B} --symlink {A}/x {LINK}" in joined
    assert "--proc /proc --dev /dev --tmpfs /tmp --tmpfs /run --remount-ro /" in joined
    for flag in (
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--new-session",
        "--die-with-parent",
        "--clearenv",
    ):
        assert flag in argv
    assert argv[argv.index("--setenv") : argv.index("--setenv") + 3] == ["--setenv", "K", "V"]
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[-3:] == ["--", f"{A}/bin/a", "x"]


def test_chroot_only_adds_nothing_but_the_closure() -> None:
    found = mounts(spec(Mode.CHROOT_ONLY))
    assert {m.kind for m in found} == {MountKind.RO_BIND, MountKind.SYMLINK, MountKind.REMOUNT_RO}
    assert sandbox(spec(Mode.CHROOT_ONLY)).unshare == {Namespace.NET}


def test_network_only_when_asked() -> None:
    for mode in Mode:
        assert Namespace.NET not in sandbox(spec(mode, network=True)).unshare
        assert Namespace.NET in sandbox(spec(mode)).unshare


def test_bin_sh_and_binds_and_root_read_only_last() -> None:
    bin_sh = BinSh("/usr/bin/dash", (), (HostFile("/usr/lib/libc.so.6", "/lib/libc.so.6"),))
    binds = (parse_bind("/srv/data:/data", writable=True), parse_bind("/etc/hosts", False))
    found = mounts(spec(bin_sh=bin_sh, binds=binds))
    argv = [arg for m in found for arg in m.argv()]
    joined = " ".join(argv)
    assert "--ro-bind /usr/bin/dash /bin/sh --ro-bind /usr/lib/libc.so.6 /lib/libc.so.6" in joined
    assert "--bind /srv/data /data --ro-bind /etc/hosts /etc/hosts --remount-ro /" in joined
    assert found[-1].kind is MountKind.REMOUNT_RO and found[-1].dest == "/"
    # binds come after /tmp and /run, so a bind below them is not covered by the tmpfs
    assert argv.index("--tmpfs") < argv.index("--bind")


@pytest.mark.parametrize("text", ["relative", "/a:relative", "/a/../b", "/x:/", "/x:/..", "/a\0b"])
def test_bad_binds(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_bind(text, writable=False)


def test_setenv() -> None:
    assert parse_setenv("A=b=c") == ("A", "b=c")
    assert parse_setenv("A=") == ("A", "")
    for bad in ("A", "=x", "A\0=x"):
        with pytest.raises(InvalidInput):
            parse_setenv(bad)
