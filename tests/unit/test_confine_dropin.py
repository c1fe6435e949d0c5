"""Drop-in rendering and the unit checks (pure)."""

from __future__ import annotations

import pytest

from nixwarden.confine.dropin import (
    DropIn,
    check_unit,
    exec_roots,
    full_unit_roots,
    parse_unit_name,
    render,
)
from nixwarden.confine.plan import BinSh, HostFile, Mode
from nixwarden.confine.unitfile import parse_unit
from nixwarden.errors import InvalidInput, Refused

A = "/nix/store/" + "a" * 32 + "-a"
B = "/nix/store/" + "b" * 32 + "-b"
LINK = "/nix/store/" + "c" * 32 + "-link"
SECRET = "/nix/store/" + "d" * 32 + "-secrets"


def settings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def drop_in(mode: Mode = Mode.FULL_APIVFS, **kwargs: object) -> DropIn:
    return DropIn(
        unit=parse_unit_name("web"),
        mode=mode,
        closure=frozenset({A, B, LINK}),
        links={LINK: f"{A}/data"},
        bin_sh=BinSh(f"{A}/bin/sh", (A,)),
        **kwargs,  # type: ignore[arg-type]
    )


def test_full_apivfs() -> None:
    lines = settings(render(drop_in()))
    assert lines[:7] == [
        "[Service]",
        "RuntimeDirectory=confinement/web",
        "RootDirectory=/run/confinement/web",
        "InaccessiblePaths=-+/run/confinement/web",
        "ReadOnlyPaths=+/",
        "PrivateMounts=yes",
        f"BindReadOnlyPaths={A}/bin/sh:/bin/sh",
    ]
    binds = [line for line in lines if line.startswith("BindReadOnlyPaths=/nix/store/")]
    assert binds[1:] == [
        f"BindReadOnlyPaths={A}",
        f"BindReadOnlyPaths={B}",
        f"BindReadOnlyPaths={A}/data:{LINK}",
    ]
    for setting in (
        "MountAPIVFS=yes",
        "PrivateDevices=yes",
        "PrivateTmp=yes",
        "PrivateUsers=yes",
        "ProtectControlGroups=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelTunables=yes",
        "NoNewPrivileges=yes",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ):
        assert setting in lines
    assert "InaccessiblePaths=-+/tmp" not in lines


def test_chroot_only() -> None:
    lines = settings(render(drop_in(Mode.CHROOT_ONLY)))
    assert "MountAPIVFS=no" in lines and "PrivateUsers=no" in lines
    assert "ProtectProc=invisible" not in lines and "ProcSubset=pid" not in lines
    assert "NoNewPrivileges=yes" in lines and "LockPersonality=yes" in lines
    assert "InaccessiblePaths=-+/tmp" in lines and "InaccessiblePaths=-+/var/tmp" in lines


def test_unit_keeps_its_own_settings() -> None:
    text = render(drop_in(unit_settings={"PrivateTmp": "no", "NoNewPrivileges": "no"}))
    lines = settings(text)
    assert not any(line.startswith(("PrivateTmp=", "NoNewPrivileges=")) for line in lines)
    assert "# PrivateTmp= kept as the unit sets it (no)." in text
    assert "InaccessiblePaths=-+/tmp" in lines
    dynamic = settings(render(drop_in(Mode.CHROOT_ONLY, unit_settings={"DynamicUser": "yes"})))
    assert "InaccessiblePaths=-+/tmp" not in dynamic


def test_no_bin_sh_and_host_bin_sh() -> None:
    none = DropIn(parse_unit_name("x"), Mode.FULL_APIVFS, frozenset({A}))
    assert not any("/bin/sh" in line for line in settings(render(none)))
    host = BinSh("/usr/bin/dash", (), (HostFile("/usr/lib/libc.so.6", "/lib/libc.so.6"),))
    lines = settings(
        render(DropIn(parse_unit_name("x"), Mode.FULL_APIVFS, frozenset(), bin_sh=host))
    )
    assert "BindReadOnlyPaths=/usr/bin/dash:/bin/sh" in lines
    assert "BindReadOnlyPaths=/usr/lib/libc.so.6:/lib/libc.so.6" in lines


def test_bad_bind_values_are_refused() -> None:
    odd = BinSh("/usr/bin/my shell", ())
    with pytest.raises(InvalidInput):
        render(DropIn(parse_unit_name("x"), Mode.FULL_APIVFS, frozenset(), bin_sh=odd))


@pytest.mark.parametrize(
    ("text", "name", "runtime"),
    [
        ("web", "web.service", "confinement/web"),
        ("web.service", "web.service", "confinement/web"),
        ("getty@.service", "getty@.service", "confinement/getty-%i"),
        ("getty@tty1", "getty@tty1.service", "confinement/getty-%i"),
        ("a:b\\x2dc", "a:b\\x2dc.service", "confinement/a-b-x2dc"),
    ],
)
def test_unit_names(text: str, name: str, runtime: str) -> None:
    parsed = parse_unit_name(text)
    assert (parsed.name, parsed.runtime_dir) == (name, runtime)


@pytest.mark.parametrize("text", ["web.socket", "", "@x", "a b", "../x", "x/y"])
def test_bad_unit_names(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_unit_name(text)


def test_root_directory_start_only_is_refused() -> None:
    unit = parse_unit("[Service]\nExecStart=/bin/x\nRootDirectoryStartOnly=yes\n")
    with pytest.raises(Refused, match="RootDirectoryStartOnly"):
        check_unit(unit, "x.service")
    check_unit(parse_unit("[Service]\nRootDirectoryStartOnly=no\n"), "x.service")
    with pytest.raises(Refused, match="RootDirectory="):
        check_unit(parse_unit("[Service]\nRootDirectory=/srv\n"), "x.service")


UNIT = f"""\
[Unit]
Description=uses {B}/share/doc
# a comment naming /nix/store/{"f" * 32}-commented is not a root

[Service]
ExecStartPre=+{A}/bin/setup
ExecStart=@{A}/bin/a a --conf={LINK} \\
    --flag
ExecReload=
Environment=PATH={B}/bin
EnvironmentFile={SECRET}
"""


def test_roots_from_exec_lines() -> None:
    unit = parse_unit(UNIT, "x.service")
    roots = exec_roots(unit, "x.service")
    assert roots.store_paths == (A, LINK)
    assert len(roots.warnings) == 1 and "x.service:6" in roots.warnings[0]
    assert "'+' prefix" in roots.warnings[0]


def test_full_unit_roots_and_secret_warnings() -> None:
    unit = parse_unit(UNIT, "x.service")
    roots = full_unit_roots(unit, "x.service")
    assert set(roots.store_paths) == {A, B, LINK, SECRET}  # not the commented one
    assert len(roots.warnings) == 2
    assert any(
        "EnvironmentFile=" in w and SECRET in w and "x.service:11" in w for w in roots.warnings
    )
    assert any("Environment=" in w and B in w for w in roots.warnings)


def test_commands_outside_the_store_are_warned_about() -> None:
    unit = parse_unit("[Service]\nExecStart=/usr/bin/env true\nExecStop=/bin/sh -c true\n")
    roots = exec_roots(unit, "x.service")
    assert roots.store_paths == ()
    assert len(roots.warnings) == 1 and "/usr/bin/env is not in the store" in roots.warnings[0]
