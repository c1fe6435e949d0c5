"""confine: a program and a service that see only their closure."""

from __future__ import annotations

import secrets
import shutil

from demo.framework import NIXWARDEN, Demo

TITLE = "confine: a program sees only its closure"

EXPRESSION = """
{ store_path, tag }:
let bb = builtins.storePath store_path; in
derivation {
  name = "hello-confined-${tag}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    ${bb}/bin/busybox mkdir -p $out/bin
    ${bb}/bin/busybox ln -s ${bb}/bin/busybox $out/bin/sh
    printf '#!${bb}/bin/busybox sh\\necho hello from the confinement\\n' > $out/bin/hello
    ${bb}/bin/busybox chmod +x $out/bin/hello
  '' ];
}
"""


def run(demo: Demo) -> None:
    tag = secrets.token_hex(4)
    demo.section("Two programs in the store: busybox, and a wrapper that refers to it")
    top = demo.scratch / f"busybox-{tag}"
    (top / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", top / "bin" / "busybox")
    busybox = demo.step("add Debian's static busybox", ["nix-store", "--add", str(top)])
    bb = busybox.stdout.decode().strip()
    expression = demo.scratch / "hello.nix"
    expression.write_text(EXPRESSION)
    built = demo.step(
        "build a wrapper whose closure is itself and busybox",
        [
            "nix-build",
            "--no-out-link",
            str(expression),
            "--argstr",
            "store_path",
            bb,
            "--argstr",
            "tag",
            tag,
        ],
    )
    hello = built.stdout.decode().strip().splitlines()[-1]

    demo.section("The closure, from the store database (read-only)")
    demo.nixwarden("nixwarden closure reads the store DB", "closure", f"{hello}/bin/hello")
    demo.step("the same set from nix-store -qR", ["nix-store", "-qR", hello])

    demo.section("confine run: the program's /nix/store is its closure")
    demo.nixwarden(
        "list /nix/store from inside",
        "confine",
        "run",
        "--",
        f"{hello}/bin/sh",
        "-c",
        "ls /nix/store; ls /",
    )
    demo.nixwarden("run the wrapper itself", "confine", "run", "--", f"{hello}/bin/hello")
    demo.nixwarden(
        "the host's secrets are not there (exit status passes through)",
        "confine",
        "run",
        "--",
        f"{hello}/bin/sh",
        "-c",
        "cat /etc/shadow",
        expect_exit=1,
    )
    demo.nixwarden(
        "nor is the network",
        "confine",
        "run",
        "--",
        f"{hello}/bin/sh",
        "-c",
        "ip -o link",
    )

    demo.section("confine unit: the same confinement for a systemd service")
    unit = demo.scratch / f"hello-{tag}.service"
    unit.write_text(
        "[Unit]\nDescription=confined hello\n\n"
        f"[Service]\nExecStart={hello}/bin/hello\nDynamicUser=yes\n"
    )
    result = demo.nixwarden(
        "a drop-in for the unit (its Exec*= lines are the roots)",
        "confine",
        "unit",
        "--name",
        unit.name,
        "--unit-file",
        str(unit),
        show_lines=60,
    )
    drop_ins = demo.scratch / f"{unit.name}.d"
    drop_ins.mkdir()
    (drop_ins / "confinement.conf").write_bytes(result.stdout)
    demo.step(
        "systemd checks unit and drop-in together",
        ["systemd-analyze", "verify", "--man=no", str(unit)],
    )
    demo.say(f"\n(the demo used {NIXWARDEN.rsplit('/', 1)[-1]} on paths tagged {tag})")
