"""`nixwarden confine unit`: drop-ins checked by the real `systemd-analyze verify`.

systemd is not PID 1 here; `systemd-analyze verify --man=no FILE` still loads the unit
and every drop-in in `FILE.d/` beside it offline, and prints a line naming the file
for each directive it does not understand or cannot parse (its exit status stays 0
for those: hence the assertions on its output, and the control case that proves the
drop-in was read).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testbed import confine_store, harness
from testbed.confine_store import Programs, nix_store_closure

NIXWARDEN = harness.NIXWARDEN


@pytest.fixture(scope="module")
def programs(nix_daemon: harness.NixDaemon) -> Programs:
    need_analyze()
    return confine_store.shared_programs()


def need_analyze() -> None:
    harness.need(harness.which("systemd-analyze") is not None, "systemd-analyze")


def unit_text(p: Programs, extra: str = "") -> str:
    return (
        "[Unit]\n"
        f"Description=confined demo {p.tag}\n"
        "\n"
        "[Service]\n"
        f"ExecStartPre=-{p.tool}/bin/tool\n"
        f"ExecStart=@{p.app}/bin/app app \\\n"
        '    "echo hello; sleep 1"\n'
        f"ExecStopPost=:{p.bb} true ; {p.bb} echo done\n"
        f"Environment=DATA={p.other}\n"
        f"EnvironmentFile=-{p.sibling}/lib/share/data\n"
        f"{extra}"
    )


def confine_unit(*args: str) -> subprocess.CompletedProcess[bytes]:
    return harness.run([NIXWARDEN, "confine", "unit", *args], env=confine_store.ENV, check=False)


def install(directory: Path, name: str, unit: str, drop_in: bytes) -> Path:
    path = directory / name
    path.write_text(unit)
    (directory / f"{name}.d").mkdir(exist_ok=True)
    (directory / f"{name}.d" / "confinement.conf").write_bytes(drop_in)
    return path


def verify(path: Path) -> str:
    result = harness.run(
        ["systemd-analyze", "verify", "--man=no", str(path)], env=confine_store.ENV, check=False
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    return output


def binds(drop_in: str) -> dict[str, str]:
    """BindReadOnlyPaths= lines: destination -> source."""
    found = {}
    for line in drop_in.splitlines():
        if line.startswith("BindReadOnlyPaths="):
            source, _, dest = line.removeprefix("BindReadOnlyPaths=").partition(":")
            found[dest or source] = source
    return found


def store_binds(drop_in: str) -> set[str]:
    return {dest for dest in binds(drop_in) if dest.startswith("/nix/store/")}


def test_drop_in_passes_verify_and_binds_the_closure(programs: Programs, tmp_path: Path) -> None:
    name = f"nwt-confine-{programs.tag}.service"
    unit = tmp_path / "source.service"
    unit.write_text(unit_text(programs))
    result = confine_unit("--name", name, "--unit-file", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""  # no '+' lines, no --full-unit: nothing to warn about
    drop_in = result.stdout.decode()
    path = install(tmp_path, name, unit_text(programs), result.stdout)
    assert "confinement.conf" not in verify(path)
    # The bind set is the closure of the Exec*= lines; symlinks are bound at their target.
    expected = nix_store_closure(programs.app, programs.tool, programs.bb)
    assert store_binds(drop_in) == expected
    assert binds(drop_in)[programs.link] == f"{programs.lib}/share/data"
    assert programs.other not in drop_in and programs.sibling not in drop_in
    # The host's /bin/sh (dash, outside the store) with its loader and libraries.
    assert binds(drop_in)["/bin/sh"] == str(Path("/bin/sh").resolve())
    assert any("ld-linux" in dest for dest in binds(drop_in))
    for setting in (
        f"RootDirectory=/run/confinement/nwt-confine-{programs.tag}",
        "MountAPIVFS=yes",
        "PrivateUsers=yes",
        "ProtectProc=invisible",
        "NoNewPrivileges=yes",
    ):
        assert setting in drop_in.splitlines()


def test_verify_reads_the_drop_in(programs: Programs, tmp_path: Path) -> None:
    """The control: a broken drop-in is reported, so a silent verify means it was read."""
    name = f"nwt-control-{programs.tag}.service"
    result = confine_unit("--name", name, "--exec", f"{programs.bb} true")
    broken = result.stdout + b"ProtectProc=sideways\nNotADirective=1\n"
    output = verify(install(tmp_path, name, unit_text(programs), broken))
    assert "confinement.conf" in output and "NotADirective" in output
    assert output.count("confinement.conf:") >= 2  # the bad value and the unknown key


def test_chroot_only_exec_form_and_packages(programs: Programs, tmp_path: Path) -> None:
    name = f"nwt-chroot-{programs.tag}"
    result = confine_unit(
        "--name",
        name,
        "--mode",
        "chroot-only",
        "--bin-sh",
        programs.bb,
        "--package",
        programs.other,
        "--exec",
        f"{programs.tool}/bin/tool",
        f"-{programs.bb} echo {programs.link}",
    )
    assert result.returncode == 0, result.stderr
    drop_in = result.stdout.decode()
    lines = drop_in.splitlines()
    assert store_binds(drop_in) == nix_store_closure(programs.tool, programs.link, programs.other)
    assert binds(drop_in)["/bin/sh"] == programs.bb
    assert "MountAPIVFS=no" in lines and "PrivateDevices=no" in lines
    assert "ProtectProc=invisible" not in lines and "ProcSubset=pid" not in lines
    assert "InaccessiblePaths=-+/tmp" in lines
    path = install(tmp_path, f"{name}.service", unit_text(programs), result.stdout)
    assert "confinement.conf" not in verify(path)


def test_full_unit_warns_about_environment(programs: Programs, tmp_path: Path) -> None:
    unit = tmp_path / "full.service"
    unit.write_text(unit_text(programs))
    result = confine_unit("--name", "nwt-full", "--unit-file", str(unit), "--full-unit")
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.decode().splitlines()
    assert len(warnings) == 2
    assert any("Environment=" in w and programs.other in w and ":9:" in w for w in warnings)
    assert any("EnvironmentFile=" in w and programs.sibling in w for w in warnings)
    assert all(w.startswith("nixwarden: warning:") for w in warnings)
    expected = nix_store_closure(
        programs.app, programs.tool, programs.bb, programs.other, programs.sibling
    )
    assert store_binds(result.stdout.decode()) == expected


def test_refusals_and_warnings(programs: Programs, tmp_path: Path) -> None:
    unit = tmp_path / "start-only.service"
    unit.write_text(unit_text(programs, "RootDirectoryStartOnly=yes\n"))
    refused = confine_unit("--name", "nwt-so", "--unit-file", str(unit))
    assert refused.returncode == 1 and refused.stdout == b""
    assert b"RootDirectoryStartOnly=yes cannot be confined" in refused.stderr
    plus = tmp_path / "plus.service"
    plus.write_text(unit_text(programs, f"ExecStartPost=+{programs.bb} true\n"))
    warned = confine_unit("--name", "nwt-plus", "--unit-file", str(plus))
    assert warned.returncode == 0
    assert b"outside the confinement" in warned.stderr and b"plus.service:11" in warned.stderr
    missing = "/nix/store/" + "0" * 32 + f"-nwt-never-built-{programs.tag}"
    invalid = confine_unit("--name", "nwt-bad", "--exec", f"{missing}/bin/x")
    assert invalid.returncode == 2 and missing.encode() in invalid.stderr
    both = confine_unit("--name", "x", "--exec", "/bin/true", "--unit-file", str(unit))
    assert both.returncode == 2


def test_unit_settings_win_and_templates(programs: Programs, tmp_path: Path) -> None:
    text = unit_text(programs, "PrivateTmp=no\nNoNewPrivileges=no\n")
    unit = tmp_path / "own.service"
    unit.write_text(text)
    result = confine_unit("--name", "nwt-own@", "--unit-file", str(unit))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert "InaccessiblePaths=-+/tmp" in lines
    assert not any(line.startswith(("PrivateTmp=", "NoNewPrivileges=")) for line in lines)
    assert "RootDirectory=/run/confinement/nwt-own-%i" in lines
    install(tmp_path, "nwt-own@.service", text, result.stdout)
    assert "confinement.conf" not in verify(tmp_path / "nwt-own@one.service")


def test_store_symlinks_out_of_the_store_are_not_bound(programs: Programs) -> None:
    escape = confine_store.add_escaping_link(programs.tag)
    result = confine_unit(
        "--name", "nwt-esc", "--no-bin-sh", "--exec", f"{programs.bb} cat {escape}"
    )
    assert result.returncode == 0, result.stderr
    assert "/etc/passwd" not in result.stdout.decode()
    assert store_binds(result.stdout.decode()) == nix_store_closure(programs.bb)
    assert f"{escape} is a symlink to /etc/passwd, outside the store: not bound" in (
        result.stderr.decode()
    )
