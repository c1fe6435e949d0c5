"""`nixwarden audit --root` on a large builder machine, and on hostile trees.

The builder tree: NIXWARDEN_BENCH_AUDIT_PRINCIPALS (default 200) principals, each a local
user with NIXWARDEN_BENCH_AUDIT_KEYS / principals keys (default 1,000 lines in all) in
its authorized_keys, written as `nixwarden authorized-keys-line` writes them, plus an
sshd_config with a Match block per ten users, a nix.conf, a machines file and 2,000
other accounts. The hostile trees are the review's classes (an Include glob through
symlinks to `.`, a 6 MB token, 200,000 Include lines); they must end quickly with a
finding, not hang. Beside them: the interpreter's bare start and `nixwarden --version`
(the floor any audit pays), and the real tool on the part it reads, `sshd -T` evaluating
the same sshd_config for one user. Median of NIXWARDEN_BENCH_ROUNDS_AUDIT runs (default
5), the child's own peak memory from /usr/bin/time. Nothing is asserted.
"""

from __future__ import annotations

import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NIXWARDEN = str(REPO / ".venv" / "bin" / "nixwarden")
PYTHON = str(REPO / ".venv" / "bin" / "python3")
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
TIME = "/usr/bin/time"
SSHD = "/usr/sbin/sshd"
PRINCIPALS = int(os.environ.get("NIXWARDEN_BENCH_AUDIT_PRINCIPALS", "200"))
KEYS = int(os.environ.get("NIXWARDEN_BENCH_AUDIT_KEYS", "1000"))
ROUNDS = int(os.environ.get("NIXWARDEN_BENCH_ROUNDS_AUDIT", "5"))
OTHER_USERS = 2000
GATE = "/usr/bin/python3 -I /usr/lib/nixwarden/bin/nixwarden-gate"


@dataclass(frozen=True)
class Measured:
    seconds: float
    cpu_seconds: float  # user + system: what a loaded, shared machine distorts least
    max_rss_kib: int
    exit_code: int


def _run(argv: list[str]) -> Measured:
    with tempfile.NamedTemporaryFile("r", prefix="nwt-bench-rss-") as report:
        start = time.perf_counter()
        result = subprocess.run(
            [TIME, "-f", "%M %U %S", "-o", report.name, *argv],
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=600,
        )
        elapsed = time.perf_counter() - start
        rss, user, system = report.read().split()[-3:]
        return Measured(elapsed, float(user) + float(system), int(rss), result.returncode)


def _median(argv: list[str], rounds: int) -> Measured:
    runs = [_run(argv) for _ in range(rounds)]
    return Measured(
        statistics.median(r.seconds for r in runs),
        statistics.median(r.cpu_seconds for r in runs),
        max(r.max_rss_kib for r in runs),
        runs[-1].exit_code,
    )


def _write(root: Path, path: str, content: str) -> None:
    (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / path.lstrip("/")).write_text(content)


def _ed25519(index: int) -> str:
    import base64  # noqa: PLC0415

    def field(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    blob = field(b"ssh-ed25519") + field(index.to_bytes(4, "big") * 8)
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def builder_tree(root: Path, principals: int, keys: int) -> None:
    """A builder machine the size the issue names, written as the docs say to."""
    names = [f"p{index:04d}" for index in range(principals)]
    passwd = ["root:x:0:0:root:/root:/bin/bash"]
    passwd += [
        f"{name}:x:{2000 + index}:{2000 + index}::/home/{name}:/bin/sh"
        for index, name in enumerate(names)
    ]
    passwd += [f"u{i:05d}:x:{10000 + i}:100::/home/u{i:05d}:/bin/sh" for i in range(OTHER_USERS)]
    group = ["root:x:0:", "users:x:100:", "nix-users:x:995:" + ",".join(names)]
    group += [f"{name}:x:{2000 + i}:" for i, name in enumerate(names)]
    _write(root, "/etc/passwd", "\n".join(passwd) + "\n")
    _write(root, "/etc/group", "\n".join(group) + "\n")
    config = ['[gate]\naudit_log = "/var/log/nixwarden/audit.jsonl"\n']
    for index, name in enumerate(names):
        store = "host" if index % 50 == 0 else "tenant"
        config.append(f'[principals.{name}]\nprotocols = ["ssh-ng"]\nstore = "{store}"\n')
    _write(root, "/etc/nixwarden/config.toml", "\n".join(config))
    for index, name in enumerate(names):
        share = keys // principals + (1 if index < keys % principals else 0)
        lines = [
            f'restrict,command="{GATE} --principal {name} --config /etc/nixwarden/config.toml" '
            f"{_ed25519(index * 64 + k)} {name}-{k}@client"
            for k in range(share)
        ]
        _write(root, f"/home/{name}/.ssh/authorized_keys", "\n".join(lines) + "\n")
    sshd = ["PasswordAuthentication no", "AuthorizedKeysFile .ssh/authorized_keys"]
    for start in range(0, principals, 10):
        users = ",".join(names[start : start + 10])
        sshd += [f"Match User {users}", "  DisableForwarding yes", "  PermitTTY no"]
    _write(root, "/etc/ssh/sshd_config", "\n".join(sshd) + "\n")
    _write(
        root,
        "/etc/nix/nix.conf",
        "build-users-group = nixbld\ntrusted-users = root\nsandbox = true\n"
        "sandbox-fallback = false\nrequire-sigs = true\n",
    )
    _write(root, "/etc/nix/machines", "ssh-ng://p0000@b1 x86_64-linux - 4 1\n")


def glob_loop_tree(root: Path) -> None:
    _write(root, "/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    ssh = root / "etc/ssh"
    ssh.mkdir(parents=True)
    for index in range(10):
        (ssh / f"loop{index}").symlink_to(".")
    _write(root, "/etc/ssh/sshd_config", "Include " + "*/" * 10 + "*.conf\n")
    _write(root, "/etc/ssh/a.conf", "PermitTTY no\n")


def token_tree(root: Path) -> None:
    _write(root, "/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    _write(root, "/etc/ssh/sshd_config", "Banner " + "a" * 6_000_000 + "\n")


def include_lines_tree(root: Path) -> None:
    _write(root, "/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    _write(root, "/etc/ssh/inc.conf", "PermitTTY no\n")
    _write(root, "/etc/ssh/sshd_config", "Include inc.conf\n" * 200_000)


def _sshd_reference(base: Path, root: Path) -> Measured | None:
    """`sshd -T` on the builder tree's sshd_config for one user, with a throwaway host key."""
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
        return None
    host_key = base / "host_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
        env=ENV,
        check=True,
        capture_output=True,
    )
    argv = [SSHD, "-T", "-f", str(root / "etc/ssh/sshd_config"), "-h", str(host_key)]
    return _median([*argv, "-C", "user=p0000,host=h,addr=127.0.0.1"], ROUNDS)


def _row(label: str, measured: Measured, floor: Measured, exit_code: str = "") -> str:
    wall = f"{measured.seconds * 1000:7.0f}ms"
    cpu = f"{measured.cpu_seconds * 1000:7.0f}ms"
    ratio = f"{measured.seconds / floor.seconds:7.1f}x"
    peak = f"{measured.max_rss_kib / 1024:7.1f}Mi"
    return f"{label:<36} {wall} {cpu} {ratio} {peak} {exit_code:>5}"


def run() -> None:
    base = Path(tempfile.mkdtemp(prefix="nwt-bench-audit-"))
    trees = {
        f"{KEYS} keys, {PRINCIPALS} principals": builder_tree_default,
        "Include through 10 links to .": glob_loop_tree,
        "one 6 MB token": token_tree,
        "200,000 Include lines": include_lines_tree,
    }
    rows: list[tuple[str, Measured]] = []
    try:
        floor = _median([PYTHON, "-I", "-c", "pass"], ROUNDS)
        imports = _median([NIXWARDEN, "--version"], ROUNDS)
        for index, (label, build) in enumerate(trees.items()):
            root = base / f"tree{index}"
            build(root)
            argv = [NIXWARDEN, "audit", "--root", str(root), "--format", "json"]
            rows.append((label, _median(argv, ROUNDS if index == 0 else 1)))
        sshd = _sshd_reference(base, base / "tree0")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"nixwarden audit --root, median of {ROUNDS} (hostile trees: one run); "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; ratio: wall against the bare "
        "interpreter start"
    )
    print(f"{'tree':<36} {'wall':>9} {'cpu':>9} {'ratio':>8} {'peak':>9} {'exit':>5}")
    print(_row("python3 -I -c pass", floor, floor))
    print(_row("nixwarden --version", imports, floor))
    if sshd is not None:
        print(_row("sshd -T, one user, same sshd_config", sshd, floor))
    for label, measured in rows:
        print(_row(label, measured, floor, str(measured.exit_code)))
    print("target: the builder tree under 1 s; every hostile tree ends (exit 0 or 1) in seconds")


def builder_tree_default(root: Path) -> None:
    builder_tree(root, PRINCIPALS, KEYS)


if __name__ == "__main__":
    run()
    sys.exit(0)
