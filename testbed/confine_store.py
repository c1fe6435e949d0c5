"""Real store contents for the confine tests, demo and benchmark.

Everything gets a random tag in its name, so concurrent runs (and other engineers
sharing the host store) never collide; nothing here deletes or collects store paths.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "/bin/busybox"
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "NIX_REMOTE": "daemon",  # builds go through the harness's daemon, like a real client's
}

# Derivations whose builder is the host's /bin/sh (the daemon runs with sandbox = false).
# app -> tool -> lib -> busybox: a closure four levels deep, with a symlink store path.
EXPRESSION = r"""
{ bb, tag }:
let
  busybox = builtins.storePath bb;
  b = "${busybox}/bin/busybox";
  mk = name: script: derivation {
    name = "${name}-${tag}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
in rec {
  lib = mk "nwt-lib" ''
    ${b} mkdir -p $out/bin $out/share
    ${b} ln -s ${b} $out/bin/busybox
    echo lib-data-${tag} > $out/share/data
  '';
  link = mk "nwt-link" ''
    ${b} ln -s ${lib}/share/data $out
  '';
  tool = mk "nwt-tool" ''
    ${b} mkdir -p $out/bin
    printf '#!${b} sh\n${b} cat ${lib}/share/data\n' > $out/bin/tool
    ${b} chmod +x $out/bin/tool
  '';
  app = mk "nwt-app" ''
    ${b} mkdir -p $out/bin
    printf '#!${b} sh\n# uses ${link}\n${tool}/bin/tool\nexec ${b} sh -c "$@"\n' > $out/bin/app
    ${b} chmod +x $out/bin/app
    ${b} ln -s ${b} $out/bin/sh
  '';
  other = mk "nwt-other" ''
    echo unrelated-secret-${tag} > $out
  '';
  sibling = mk "nwt-sibling" ''
    ${b} mkdir -p $out
    ${b} ln -s ${lib} $out/lib
  '';
}
"""


def new_tag() -> str:
    return secrets.token_hex(4)


def run(argv: list[str], *, input: bytes | None = None) -> str:
    result = subprocess.run(
        argv, env=ENV, input=input, capture_output=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv[:4])} … exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace')[-2000:]}"
        )
    return result.stdout.decode()


def add_busybox(tag: str) -> str:
    """Debian's static busybox as a store path `…-busybox-<tag>/bin/busybox`."""
    with tempfile.TemporaryDirectory(prefix="nwt-bb-") as scratch:
        top = Path(scratch) / f"busybox-{tag}"
        (top / "bin").mkdir(parents=True)
        shutil.copy2(BUSYBOX, top / "bin" / "busybox")
        return run(["nix-store", "--add", str(top)]).strip()


@dataclass(frozen=True)
class Programs:
    tag: str
    busybox: str  # store path (directory); the binary is busybox + "/bin/busybox"
    lib: str
    link: str  # a store path that is a symlink
    tool: str
    app: str
    other: str  # unrelated: not in app's closure
    sibling: str  # unrelated to app, shares lib

    @property
    def bb(self) -> str:
        return f"{self.busybox}/bin/busybox"


def build_programs(tag: str | None = None) -> Programs:
    tag = tag or new_tag()
    busybox = add_busybox(tag)
    with tempfile.NamedTemporaryFile("w", suffix=".nix", prefix="nwt-", delete=False) as handle:
        handle.write(EXPRESSION)
    try:
        built = {}
        for attr in ("lib", "link", "tool", "app", "other", "sibling"):
            out = run(
                [
                    "nix-build",
                    "--no-out-link",
                    handle.name,
                    "-A",
                    attr,
                    "--argstr",
                    "bb",
                    busybox,
                    "--argstr",
                    "tag",
                    tag,
                ]
            )
            built[attr] = out.strip().splitlines()[-1]
    finally:
        os.unlink(handle.name)
    return Programs(tag=tag, busybox=busybox, **built)


def synthetic_chain(count: int, tag: str | None = None) -> list[str]:
    """`count` small store paths, each referring to the one or two before it (root last).

    Added with one `nix-store --add`, then given references with
    `nix-store --register-validity --reregister` (root only).
    """
    tag = tag or new_tag()
    with tempfile.TemporaryDirectory(prefix="nwt-syn-") as scratch:
        files = []
        for index in range(count):
            source = Path(scratch) / f"syn-{tag}-{index:05d}"
            source.write_text(f"{tag} {index}\n")
            files.append(str(source))
        paths = run(["nix-store", "--add", *files]).split()
    assert len(paths) == count
    records: list[str] = []
    for index, path in enumerate(paths):
        refs = paths[max(0, index - 2) : index]
        records += [path, "", str(len(refs)), *refs]
    local = dict(ENV)
    local.pop("NIX_REMOTE")  # registering validity is a local-store operation
    result = subprocess.run(
        ["nix-store", "--register-validity", "--reregister"],
        env=local,
        input=("\n".join(records) + "\n").encode(),
        capture_output=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"register-validity: {result.stderr.decode(errors='replace')}")
    return paths


def nix_store_closure(*roots: str) -> set[str]:
    return set(run(["nix-store", "--query", "--requisites", *roots]).split())


BUSY_EXPRESSION = r"""
{ bb, tag, count }:
let
  b = "${builtins.storePath bb}/bin/busybox";
  one = n: derivation {
    name = "nwt-busy-${tag}-${toString n}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "${b} sleep 0.05; echo ${toString n} > $out" ];
  };
in map one (builtins.genList (n: n) count)
"""


def start_busy_build(busybox: str, count: int = 60) -> tuple[subprocess.Popen[bytes], str]:
    """A background `nix-build` of `count` small derivations: the daemon writes the DB
    again and again while it runs. Returns the process and the expression file."""
    with tempfile.NamedTemporaryFile(
        "w", suffix=".nix", prefix="nwt-busy-", delete=False
    ) as handle:
        handle.write(BUSY_EXPRESSION)
    process = subprocess.Popen(
        [
            "nix-build",
            "--no-out-link",
            "--max-jobs",
            "2",
            handle.name,
            "--argstr",
            "bb",
            busybox,
            "--argstr",
            "tag",
            new_tag(),
            "--arg",
            "count",
            str(count),
        ],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return process, handle.name


@functools.cache
def shared_programs() -> Programs:
    """One set of programs per test session."""
    return build_programs()


@functools.cache
def shared_chain(count: int) -> tuple[str, ...]:
    return tuple(synthetic_chain(count))


def add_escaping_link(tag: str) -> str:
    """A store path that is a symlink to a host file (/etc/passwd)."""
    with tempfile.TemporaryDirectory(prefix="nwt-ln-") as scratch:
        link = Path(scratch) / f"nwt-escape-{tag}"
        link.symlink_to("/etc/passwd")
        return run(["nix-store", "--add", str(link)]).strip()
