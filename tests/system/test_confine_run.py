"""`nixwarden confine run`: a real program in real bubblewrap sees only its closure."""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from nixwarden.confine import binsh
from testbed import confine_store, harness
from testbed.confine_store import Programs, nix_store_closure

NIXWARDEN = harness.NIXWARDEN
# The harness's environment, with plans cached in the test's own directory, not root's.
ENV = dict(confine_store.ENV)


@pytest.fixture(scope="module", autouse=True)
def private_plan_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    ENV["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("plan-cache"))


@pytest.fixture(scope="module")
def programs(nix_daemon: harness.NixDaemon) -> Programs:
    return confine_store.shared_programs()


def confine(
    *args: str, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return harness.run([NIXWARDEN, "confine", "run", *args], env=env or ENV, check=check)


def sh(programs: Programs, script: str, *options: str) -> subprocess.CompletedProcess[bytes]:
    """Run `script` with the app's own `bin/sh` (busybox, in the app's closure)."""
    return confine(*options, "--", f"{programs.app}/bin/sh", "-c", script)


def out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode()


def test_sees_exactly_its_closure(programs: Programs) -> None:
    for options in ((), ("--mode", "chroot-only"), ("--no-bin-sh",)):
        result = sh(programs, "ls /nix/store", *options)
        assert result.returncode == 0, result.stderr
        names = {f"/nix/store/{name}" for name in out(result).split()}
        assert names == nix_store_closure(programs.app), options
    with_package = sh(programs, "ls /nix/store", "--package", f"{programs.other}")
    expected = nix_store_closure(programs.app, programs.other)
    assert {f"/nix/store/{n}" for n in out(with_package).split()} == expected


def test_store_arguments_are_roots(programs: Programs) -> None:
    result = confine("--", programs.bb, "cat", programs.other)
    assert result.returncode == 0 and out(result) == f"unrelated-secret-{programs.tag}\n"
    symlinked = confine("--", f"{programs.app}/bin/app", f"cat {programs.link}")
    assert out(symlinked) == f"lib-data-{programs.tag}\n" * 2


def test_cannot_read_outside_its_closure(programs: Programs) -> None:
    outside = (
        "/etc/shadow",
        "/root",
        "/nix/var/nix/db",
        "/nix/var/nix/db/db.sqlite",
        programs.other,
        f"{programs.sibling}/lib",
        "/home",
        "/usr",
        "/proc/1/root/etc/shadow",
    )
    for path in outside:
        # Passed through the environment: a store path in the arguments would be a root.
        result = sh(programs, 'cat "$P" || ls "$P"', "--setenv", f"P={path}")
        assert result.returncode != 0, path
        assert b"No such file" in result.stderr or b"Permission denied" in result.stderr, path
    assert b"root:" not in sh(programs, "cat /etc/shadow /proc/1/root/etc/shadow").stdout


def test_cannot_write_to_the_store_or_the_root(programs: Programs) -> None:
    for target in (f"{programs.app}/new", "/nix/store/new", f"{programs.lib}/share/data", "/new"):
        result = sh(programs, f"echo x > {target}")
        assert result.returncode != 0, target
        assert b"Read-only file system" in result.stderr, result.stderr
    assert not os.path.exists(f"{programs.app}/new")
    result = sh(programs, "echo x > /tmp/a && cat /tmp/a && echo y > /run/b && cat /run/b")
    assert out(result) == "x\ny\n"


def test_no_network_unless_asked(programs: Programs) -> None:
    for mode in ("full-apivfs", "chroot-only"):
        isolated = sh(programs, "ip -o link", "--mode", mode)
        assert [line.split(":")[1].strip() for line in out(isolated).splitlines()] == ["lo"]
        shared = sh(programs, "ip -o link", "--mode", mode, "--network")
        assert len(out(shared).splitlines()) > 1


def test_modes(programs: Programs) -> None:
    chroot = sh(programs, "ls -a /; ls /proc /dev /tmp", "--mode", "chroot-only", "--no-bin-sh")
    assert out(chroot).split() == [".", "..", "nix"]
    assert chroot.returncode != 0 and b"/proc" in chroot.stderr and b"/dev" in chroot.stderr
    full = sh(programs, "ls /; ls /proc/self/exe /dev/null; echo > /dev/null", "--no-bin-sh")
    assert full.returncode == 0, full.stderr
    assert out(full).split()[:5] == ["dev", "nix", "proc", "run", "tmp"]


def test_bin_sh_present_absent_and_overridden(programs: Programs) -> None:
    host_sh = os.path.realpath("/bin/sh")
    digest = hashlib.md5(Path(host_sh).read_bytes()).hexdigest()  # noqa: S324 - identity only
    default = sh(programs, "md5sum /bin/sh; /bin/sh -c 'echo from-bin-sh'")
    assert out(default).split() == [digest, "/bin/sh", "from-bin-sh"]
    direct = confine("--", "/bin/sh", "-c", "echo $0 works")
    assert out(direct) == "/bin/sh works\n", direct.stderr
    absent = sh(programs, "ls /bin/sh", "--no-bin-sh")
    assert absent.returncode != 0 and b"No such file" in absent.stderr
    bb_digest = hashlib.md5(Path(programs.bb).read_bytes()).hexdigest()  # noqa: S324
    override = sh(programs, "md5sum /bin/sh", "--bin-sh", programs.bb)
    assert out(override).split() == [bb_digest, "/bin/sh"]
    chroot = sh(programs, "ls /; /bin/sh -c 'echo ok'", "--mode", "chroot-only")
    assert "ok" in out(chroot) and "bin" in out(chroot).split()


def test_exit_status_passes_through(programs: Programs) -> None:
    for code in (0, 1, 7, 42, 127):
        assert sh(programs, f"exit {code}").returncode == code
    assert confine("--", programs.bb, "false").returncode == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1])
def test_death_by_signal_passes_through(programs: Programs, signum: signal.Signals) -> None:
    for mode in ("full-apivfs", "chroot-only"):
        result = sh(programs, f"kill -{signum.name[3:]} $$", "--mode", mode)
        assert result.returncode == -signum, (mode, result.returncode, result.stderr)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
@pytest.mark.parametrize("mode", ["full-apivfs", "chroot-only"])
def test_signals_reach_the_program(programs: Programs, signum: signal.Signals, mode: str) -> None:
    script = (
        f"trap 'echo got-{signum.name}; exit 42' {signum.name[3:]}; echo ready; "
        f"while :; do {programs.bb} sleep 0.05; done"
    )  # no /proc in chroot-only: busybox runs its applets by path only
    process = subprocess.Popen(
        [NIXWARDEN, "confine", "run", "--mode", mode, "--", f"{programs.app}/bin/sh", "-c", script],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        process.send_signal(signum)
        stdout, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert stdout == f"got-{signum.name}\n".encode()
    assert process.returncode == 42


def test_environment_is_cleared(programs: Programs) -> None:
    env = dict(ENV, NWT_SECRET="leak")
    result = confine(
        "--setenv",
        "GREETING=hi there",
        "--setenv",
        "EMPTY=",
        "--",
        f"{programs.app}/bin/sh",
        "-c",
        "env",
        env=env,
    )
    variables = dict(line.split("=", 1) for line in out(result).splitlines())
    assert variables.pop("GREETING") == "hi there" and variables.pop("EMPTY") == ""
    assert "NWT_SECRET" not in variables and "NIX_REMOTE" not in variables
    assert set(variables) <= {"PWD", "SHLVL", "PATH"}  # what busybox sh sets itself


def test_binds_and_chdir(programs: Programs, tmp_path: Path) -> None:
    (tmp_path / "rw").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "file").write_text("readonly\n")
    result = sh(
        programs,
        "pwd; echo written > /data/out; cat /conf/file; echo x > /conf/file",
        "--bind",
        f"{tmp_path / 'rw'}:/data",
        "--ro-bind",
        f"{tmp_path / 'ro'}:/conf",
        "--chdir",
        "/data",
    )
    assert out(result) == "/data\nreadonly\n"
    assert b"Read-only file system" in result.stderr
    assert (tmp_path / "rw" / "out").read_text() == "written\n"
    assert (tmp_path / "ro" / "file").read_text() == "readonly\n"


def test_new_session(programs: Programs) -> None:
    process = subprocess.Popen(
        [
            NIXWARDEN,
            "confine",
            "run",
            "--mode",
            "chroot-only",
            "--",
            f"{programs.app}/bin/sh",
            "-c",
            f"echo $$; {programs.bb} sleep 5",
        ],
        env=ENV,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        pid = int(process.stdout.readline())  # no pid namespace in chroot-only: a host pid
        assert os.getsid(pid) == pid != os.getsid(0)
        assert os.getsid(pid) != os.getsid(process.pid)
    finally:
        process.kill()
        process.wait()


def test_usage_errors(programs: Programs) -> None:
    missing = "/nix/store/" + "0" * 32 + f"-nwt-never-built-{programs.tag}"
    for args, message in (
        (["--", "/usr/bin/id"], "not in the store"),
        (["--", "no-such-program-nwt"], "not found in PATH"),
        (["--", programs.bb, "cat", missing], missing),
        (["--package", "/etc", "--", programs.bb], "not in the store"),
        (["--bin-sh", "/usr/bin/dash", "--", programs.bb], "not in the store"),
        ([programs.bb], "after --"),
        (["--bind", "relative", "--", programs.bb], "absolute"),
    ):
        result = confine(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr.decode(), result.stderr


def test_print_argv_is_what_runs(programs: Programs) -> None:
    """--print-argv shows the exact bubblewrap command line, for review or for reuse."""
    printed = confine("--print-argv", "--", f"{programs.app}/bin/sh", "-c", "ls /nix/store")
    assert printed.returncode == 0, printed.stderr
    argv = shlex.split(out(printed))
    assert argv[0] == "/usr/bin/bwrap" and argv[-3:] == [
        f"{programs.app}/bin/sh",
        "-c",
        "ls /nix/store",
    ]
    assert "--clearenv" in argv and "--unshare-net" in argv and argv.count("--remount-ro") == 1
    direct = harness.run(argv, env=ENV)
    assert {f"/nix/store/{n}" for n in out(direct).split()} == nix_store_closure(programs.app)


def test_store_symlinks_out_of_the_store_stay_dangling(programs: Programs) -> None:
    escape = confine_store.add_escaping_link(programs.tag)
    result = confine("--", programs.bb, "cat", escape)
    assert result.returncode == 1 and b"No such file" in result.stderr
    assert b"root:" not in result.stdout


def test_bin_sh_from_the_store_brings_its_closure(programs: Programs, tmp_path: Path) -> None:
    """NixOS: /bin/sh is a symlink into the store; the shell's closure joins the sandbox."""
    (tmp_path / "sh").symlink_to(f"{programs.app}/bin/sh")  # -> busybox, via the app
    bin_sh = binsh.from_host(str(tmp_path / "sh"))
    assert bin_sh.source == programs.bb and bin_sh.host_files == ()
    assert bin_sh.store_roots == (programs.busybox,)


def test_no_descriptor_of_ours_reaches_the_program(programs: Programs) -> None:
    """A descriptor nixwarden inherited (open on /etc/hostname) is not passed on: the
    program sees its standard streams and the one `ls` opens itself."""
    fd = os.open("/etc/hostname", os.O_RDONLY)
    try:
        for _ in range(2):  # a fresh plan, then (the store permitting) a cached one
            result = subprocess.run(
                [
                    NIXWARDEN,
                    "confine",
                    "run",
                    "--",
                    f"{programs.app}/bin/sh",
                    "-c",
                    "ls /proc/self/fd",
                ],
                env=ENV,
                capture_output=True,
                pass_fds=(fd,),
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert sorted(int(n) for n in result.stdout.split()) == [0, 1, 2, 3]
    finally:
        os.close(fd)
