"""Trust core against Nix: NAR hashing and restore speed and memory, signature checks.

Builds a tree of mixed files under /tmp (NIXWARDEN_BENCH_TRUST_MIB, default 1024 MiB),
measures `nixwarden nar hash` against `nix-store --dump | sha256sum` and `nix-hash`,
`nixwarden nar restore` against `nix-store --restore`, the resident memory of our
child processes, and signature verification per second on one core. Every number
is measured in this run (speeds: best of three); nothing is asserted.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NIXWARDEN = str(REPO / ".venv" / "bin" / "nixwarden")
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": os.environ.get("HOME", "/root"),
    "LANG": "C.UTF-8",
}
MIB = 1 << 20
TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Measured:
    seconds: float
    max_rss_kib: int


def _timed(argv: list[str], *, stdin_path: str | None = None) -> Measured:
    """Run argv with stdout discarded: wall time and the child's own peak RSS.

    The peak comes from /usr/bin/time: a child forked from this (large) Python process
    would report our own peak, which Linux carries over across fork and exec.
    """
    with tempfile.NamedTemporaryFile("r", prefix="nwt-bench-rss-") as report:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            start = time.perf_counter()
            subprocess.run(
                [TIME, "-f", "%M", "-o", report.name, *argv],
                env=ENV,
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                check=True,
            )
            elapsed = time.perf_counter() - start
        finally:
            if stdin_path:
                stdin.close()  # type: ignore[union-attr]
        return Measured(elapsed, int(report.read().split()[-1]))


def _timed_pipeline(first: list[str], second: list[str]) -> Measured:
    start = time.perf_counter()
    producer = subprocess.Popen(first, env=ENV, stdout=subprocess.PIPE)
    consumer = subprocess.Popen(second, env=ENV, stdin=producer.stdout, stdout=subprocess.DEVNULL)
    assert producer.stdout is not None
    producer.stdout.close()
    if consumer.wait() != 0 or producer.wait() != 0:
        raise RuntimeError(f"{first[0]} | {second[0]} failed")
    return Measured(time.perf_counter() - start, 0)


def _build_tree(root: Path, total: int) -> tuple[int, int]:
    """Mixed files: a few large, many medium, very many small; some symlinks, some +x."""
    rng = random.Random(4)
    pool = os.urandom(8 * MIB)
    written = files = 0

    def blob(size: int) -> bytes:
        offset = rng.randrange(0, len(pool) - size) if size < len(pool) else 0
        data = pool[offset : offset + size]
        while len(data) < size:
            data += pool[: size - len(data)]
        return data

    def put(directory: Path, size: int) -> None:
        nonlocal written, files
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"f{files:06d}"
        path.write_bytes(blob(size))
        if files % 7 == 0:
            path.chmod(0o755)
        if files % 50 == 0:
            (directory / f"l{files:06d}").symlink_to(path.name)
        written += size
        files += 1

    for index in range(4):  # 40 % in four large files
        put(root / "large", int(total * 0.10) + index)
    while written < total * 0.8:  # 40 % in 64 KiB .. 1 MiB files
        put(root / "medium" / f"d{files // 100:03d}", rng.randrange(64 << 10, MIB))
    while written < total:  # 20 % in 1 .. 16 KiB files, 100 per directory
        put(root / "small" / f"d{files // 100:04d}", rng.randrange(1 << 10, 16 << 10))
    return written, files


def _verify_rate(paths: int) -> tuple[float, float]:
    """Paths verified per second through TrustedKeys.check, and raw Ed25519 verifies."""
    from nixwarden.nix import nix32  # noqa: PLC0415
    from nixwarden.trust.hashes import Hash, HashAlgorithm  # noqa: PLC0415
    from nixwarden.trust.keys import SecretKey, TrustedKeys, fingerprint  # noqa: PLC0415

    key = SecretKey.generate("bench-1")
    trusted = TrustedKeys.of([key.public(), SecretKey.generate("other-1").public()])
    cases = []
    for index in range(paths):
        path = f"/nix/store/{nix32.encode(os.urandom(20))}-bench-{index}"
        message = fingerprint(path, Hash(HashAlgorithm.SHA256, os.urandom(32)), 1000 + index, [])
        cases.append((message, [key.sign(message)]))
    start = time.perf_counter()
    passed = sum(len(trusted.check(message, sigs).signers) for message, sigs in cases)
    rate = paths / (time.perf_counter() - start)
    assert passed == paths
    public = key.public()
    start = time.perf_counter()
    for message, sigs in cases:
        public.verify(message, sigs[0])
    raw = paths / (time.perf_counter() - start)
    return rate, raw


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))


def run() -> None:
    mib = int(os.environ.get("NIXWARDEN_BENCH_TRUST_MIB", "1024"))
    for tool in ("nix-store", "nix-hash", "sha256sum", TIME):
        if shutil.which(tool, path=ENV["PATH"]) is None:
            print(f"skipped: {tool} not found")
            return
    base = Path(tempfile.mkdtemp(prefix="nwt-bench-trust-", dir="/tmp"))
    try:
        tree = base / "tree"
        size, files = _build_tree(tree, mib * MIB)
        print(f"tree: {size / MIB:.0f} MiB in {files} files under {tree}", flush=True)
        _timed([NIXWARDEN, "nar", "hash", str(tree)])  # warm the page cache for everyone

        # Best of three, alternating tools, so a noisy neighbour skews both sides alike.
        ours_hash, nix_pipe, nix_hash, ours_dump, nix_dump = (
            min(runs, key=lambda m: m.seconds)
            for runs in zip(
                *(
                    (
                        _timed([NIXWARDEN, "nar", "hash", str(tree)]),
                        _timed_pipeline(["nix-store", "--dump", str(tree)], ["sha256sum"]),
                        _timed(["nix-hash", "--type", "sha256", "--base32", str(tree)]),
                        _timed([NIXWARDEN, "nar", "dump", str(tree)]),
                        _timed(["nix-store", "--dump", str(tree)]),
                    )
                    for _ in range(3)
                ),
                strict=True,
            )
        )

        archive = base / "tree.nar"
        with open(archive, "wb") as out:
            dump = ["nix-store", "--dump", str(tree)]  # PATH is ENV's fixed system PATH
            subprocess.run(dump, env=ENV, stdout=out, check=True)
        nar_size = archive.stat().st_size
        ours_restore = _timed(
            [NIXWARDEN, "nar", "restore", str(base / "ours")], stdin_path=str(archive)
        )
        nix_restore = _timed(["nix-store", "--restore", str(base / "nix")], stdin_path=str(archive))
        shutil.rmtree(base / "ours")
        shutil.rmtree(base / "nix")

        paths = int(os.environ.get("NIXWARDEN_BENCH_VERIFY_PATHS", "20000"))
        rate, raw = _verify_rate(paths)

        def throughput(measured: Measured) -> str:
            return f"{nar_size / MIB / measured.seconds:7.0f} MiB/s ({measured.seconds:5.2f} s)"

        widths = [44, 28, 28, 7, 9]
        print(_row(["measure", "nixwarden", "nix", "ratio", "target"], widths))
        print(_row(["-" * w for w in widths], widths))
        rows = [
            ("nar hash vs nix-store --dump | sha256sum", ours_hash, nix_pipe, "≥ 0.80"),
            ("nar hash vs nix-hash --type sha256", ours_hash, nix_hash, "≥ 0.80"),
            ("nar dump >/dev/null vs nix-store --dump", ours_dump, nix_dump, ""),
            ("nar restore vs nix-store --restore", ours_restore, nix_restore, ""),
        ]
        for label, ours, theirs, target in rows:
            ratio = theirs.seconds / ours.seconds
            print(
                _row([label, throughput(ours), throughput(theirs), f"{ratio:.2f}", target], widths)
            )
        for label, measured in (("nar hash", ours_hash), ("nar restore", ours_restore)):
            print(
                _row(
                    [
                        f"{label}: max RSS of the child",
                        f"{measured.max_rss_kib / 1024:.1f} MiB",
                        f"{nix_hash.max_rss_kib / 1024:.1f} MiB (nix-hash)"
                        if label == "nar hash"
                        else f"{nix_restore.max_rss_kib / 1024:.1f} MiB (nix-store)",
                        "",
                        "< 64 MiB",
                    ],
                    widths,
                )
            )
        print(
            _row(
                ["signature checks, one core (paths/s)", f"{rate:,.0f}", "", "", "≥ 20,000"], widths
            )
        )
        print(
            _row(["raw Ed25519 verify (cryptography/OpenSSL)", f"{raw:,.0f}", "", "", ""], widths)
        )
        print(f"NAR size {nar_size / MIB:.0f} MiB; ratio = nix time / nixwarden time (>1: faster)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
