"""Trust core against Nix: NAR hash, dump and restore speed and memory, signature checks.

Builds a tree of mixed files under /tmp (NIXWARDEN_BENCH_TRUST_MIB, default 1024 MiB),
measures `nixwarden nar hash` against `nix-store --dump | sha256sum` and `nix-hash`,
`nar dump` against `nix-store --dump`, `nar restore` against `nix-store --restore`
(onto the disk under /tmp, and into a tmpfs when /dev/shm has room: that row shows
the tools' own cost rather than the disk's), the peak resident memory of each child,
and `verify_paths` against raw Ed25519 verification on one core, for batches of 10,
1,000 and 20,000 paths (NIXWARDEN_BENCH_VERIFY_PATHS). Every number is measured in
this run (speeds: best of three, restores best of two); nothing is asserted.
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


@dataclass(frozen=True)
class VerifyRates:
    """Paths per second: raw Ed25519 on one core, and verify_paths by batch size."""

    raw: float
    by_batch: dict[int, float]


def _verify_rates(batches: tuple[int, ...], rounds: int = 3) -> VerifyRates:
    """Raw `Ed25519PublicKey.verify` on one core against `verify_paths` with TrustedKeys
    (which fans out over the cores for large batches); best of `rounds` each."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PublicKey,
    )

    from nixwarden.nix import nix32  # noqa: PLC0415
    from nixwarden.trust.hashes import Hash, HashAlgorithm  # noqa: PLC0415
    from nixwarden.trust.keys import SecretKey, TrustedKeys, fingerprint  # noqa: PLC0415
    from nixwarden.trust.verify import verify_paths  # noqa: PLC0415

    key = SecretKey.generate("bench-1")
    trusted = TrustedKeys.of([key.public(), SecretKey.generate("other-1").public()])
    items = []
    for index in range(max(batches)):
        path = f"/nix/store/{nix32.encode(os.urandom(20))}-bench-{index}"
        message = fingerprint(path, Hash(HashAlgorithm.SHA256, os.urandom(32)), 1000 + index, [])
        items.append((path, message, [key.sign(message)]))
    raw_key = Ed25519PublicKey.from_public_bytes(key.public().key)
    raw = 0.0
    by_batch = dict.fromkeys(batches, 0.0)
    for _ in range(rounds):
        start = time.perf_counter()
        for _path, message, signatures in items:
            raw_key.verify(signatures[0].signature, message)
        raw = max(raw, len(items) / (time.perf_counter() - start))
        for batch in batches:
            start = time.perf_counter()
            for first in range(0, len(items) - batch + 1, batch):
                assert len(verify_paths(items[first : first + batch], trusted)) == batch
            done = len(items) // batch * batch
            by_batch[batch] = max(by_batch[batch], done / (time.perf_counter() - start))
    return VerifyRates(raw, by_batch)


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

        def restores(directory: Path) -> tuple[Measured, Measured]:
            """Best of two each, alternating; into `directory` (a disk or a tmpfs)."""
            ours: list[Measured] = []
            theirs: list[Measured] = []
            for _ in range(2):
                for tool, runs in (("nixwarden", ours), ("nix", theirs)):
                    target = directory / f"restored-{tool}"
                    argv = (
                        [NIXWARDEN, "nar", "restore", str(target)]
                        if tool == "nixwarden"
                        else ["nix-store", "--restore", str(target)]
                    )
                    runs.append(_timed(argv, stdin_path=str(archive)))
                    shutil.rmtree(target)
            return min(ours, key=lambda m: m.seconds), min(theirs, key=lambda m: m.seconds)

        ours_restore, nix_restore = restores(base)
        memory = Path("/dev/shm")
        in_memory = memory.is_dir() and shutil.disk_usage(memory).free > 3 * nar_size
        if in_memory:
            shm = Path(tempfile.mkdtemp(prefix="nwt-bench-trust-", dir=memory))
            try:
                ours_tmpfs, nix_tmpfs = restores(shm)
            finally:
                shutil.rmtree(shm, ignore_errors=True)

        batches = (10, 1000, int(os.environ.get("NIXWARDEN_BENCH_VERIFY_PATHS", "20000")))
        rates = _verify_rates(batches)
        cores = len(os.sched_getaffinity(0))

        def throughput(measured: Measured) -> str:
            return f"{nar_size / MIB / measured.seconds:7.0f} MiB/s ({measured.seconds:5.2f} s)"

        widths = [44, 28, 28, 7, 11]
        print(_row(["measure", "nixwarden", "nix", "ratio", "target"], widths))
        print(_row(["-" * w for w in widths], widths))
        rows = [
            ("nar hash vs nix-store --dump | sha256sum", ours_hash, nix_pipe, "≥ 0.80"),
            ("nar hash vs nix-hash --type sha256", ours_hash, nix_hash, "≥ 1.0"),
            ("nar dump >/dev/null vs nix-store --dump", ours_dump, nix_dump, "≥ 1.0"),
            ("nar restore vs nix-store --restore", ours_restore, nix_restore, "≥ 1.0"),
        ]
        if in_memory:
            rows.append(("nar restore, into tmpfs (/dev/shm)", ours_tmpfs, nix_tmpfs, "≥ 1.0"))
        for label, ours, theirs, target in rows:
            ratio = theirs.seconds / ours.seconds
            print(
                _row([label, throughput(ours), throughput(theirs), f"{ratio:.2f}", target], widths)
            )
        for label, ours, theirs, tool in (
            ("nar hash", ours_hash, nix_hash, "nix-hash"),
            ("nar dump", ours_dump, nix_dump, "nix-store"),
            ("nar restore", ours_restore, nix_restore, "nix-store"),
        ):
            print(
                _row(
                    [
                        f"{label}: max RSS of the child",
                        f"{ours.max_rss_kib / 1024:.1f} MiB",
                        f"{theirs.max_rss_kib / 1024:.1f} MiB ({tool})",
                        "",
                        "< 64 MiB",
                    ],
                    widths,
                )
            )
        print(
            _row(
                ["raw Ed25519 verify, one core (paths/s)", f"{rates.raw:,.0f}", "", "1.00", ""],
                widths,
            )
        )
        for batch, rate in rates.by_batch.items():
            target = f"≥ {0.8 * cores:.1f}" if batch >= 1000 else ""
            print(
                _row(
                    [
                        f"verify_paths, batches of {batch:,} (paths/s)",
                        f"{rate:,.0f}",
                        "",
                        f"{rate / rates.raw:.2f}",
                        target,
                    ],
                    widths,
                )
            )
        print(
            f"NAR size {nar_size / MIB:.0f} MiB; {cores} cores; ratio = nix time / nixwarden "
            "time (>1: faster); verify ratios are against raw Ed25519 on one core"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
