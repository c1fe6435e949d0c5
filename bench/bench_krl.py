"""KRLs against ssh-keygen: loading a KRL of 100,000 revoked serials, and lookups in it.

Three KRLs, each revoking NIXWARDEN_BENCH_KRL_SERIALS (default 100,000) serials of one CA:
  sparse   random serials below 2^40, written by `ssh-keygen -k` (serial lists)
  dense    random serials in a span 1.5 times their number, written by nixwarden
           (ssh-keygen -k would write one bitmap that it then refuses to read back)
  ranges   runs of 100 consecutive serials, written by `ssh-keygen -k` (ranges)
For each: nixwarden's `Krl.parse` (best of seven, in this process) against
`ssh-keygen -Q -f KRL key.pub` (best of five, a whole process: start, load, one check),
and against `ssh-keygen -Q` on an empty KRL (the process alone). Then lookups: a million
`Krl.revocation` calls on certificates with random serials, half of them revoked, next to
a linear scan of the same serials (what "not a linear scan" saves). Nothing is asserted.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
SERIALS = int(os.environ.get("NIXWARDEN_BENCH_KRL_SERIALS", "100000"))
LOOKUPS = 1_000_000


def _keygen(*argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ssh-keygen", *argv], env=ENV, capture_output=True, check=check)


def _best_ms(action: object, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        action()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best * 1000


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))


def run() -> None:
    from nixwarden.ca.krl import CertRef, Krl  # noqa: PLC0415

    if shutil.which("ssh-keygen", path=ENV["PATH"]) is None:
        print("skipped: ssh-keygen not found")
        return
    base = Path(tempfile.mkdtemp(prefix="nwt-bench-krl-", dir="/tmp"))
    try:
        ENV["HOME"] = str(base)
        for name in ("ca", "user"):
            _keygen("-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(base / name))
        ca = _blob(base / "ca.pub")
        user = _blob(base / "user.pub")
        rng = random.Random(11)

        krls: dict[str, tuple[Path, list[int]]] = {}
        sparse = sorted(rng.sample(range(1, 1 << 40), SERIALS))
        krls["sparse"] = (_ssh_keygen_krl(base, "sparse", sparse, 1), sparse)
        dense = sorted(rng.sample(range(1, SERIALS * 3 // 2), SERIALS))
        path = base / "dense.krl"
        path.write_bytes(Krl.empty().revoking(ca, serials=dense, now=int(time.time())).to_bytes())
        krls["dense"] = (path, dense)
        ranges = [start for start in range(1, SERIALS * 3, 300)][: SERIALS // 100]
        krls["ranges"] = (_ssh_keygen_krl(base, "ranges", ranges, 100), ranges)
        empty = base / "empty.krl"
        empty.write_bytes(Krl.empty().to_bytes())
        process_ms = _best_ms(
            lambda: _keygen("-Q", "-f", str(empty), str(base / "user.pub")), runs=5
        )

        widths = [8, 10, 10, 16, 20, 9, 8]
        print(
            _row(
                ["KRL", "size", "intervals", "nixwarden load", "ssh-keygen -Q", "ratio", "target"],
                widths,
            )
        )
        print(_row(["-" * width for width in widths], widths))
        loaded: dict[str, Krl] = {}
        for name, (path, _) in krls.items():
            data = path.read_bytes()
            ours = _best_ms(lambda data=data: Krl.parse(data), runs=7)  # type: ignore[misc]
            loaded[name] = krl = Krl.parse(data)
            check = ["-Q", "-f", str(path), str(base / "user.pub")]
            if _keygen(*check, check=False).returncode != 0:
                raise RuntimeError(f"ssh-keygen cannot read the {name} KRL")
            theirs = _best_ms(lambda check=check: _keygen(*check), runs=5)  # type: ignore[misc]
            print(
                _row(
                    [
                        name,
                        f"{len(data) / 1024:.0f} KiB",
                        f"{len(krl.certificates[0].serials):,}",
                        f"{ours:7.1f} ms",
                        f"{theirs:7.1f} ms",
                        f"{theirs / ours:.2f}",
                        "< 50 ms",
                    ],
                    widths,
                )
            )
        print(
            f"ssh-keygen -Q on an empty KRL (process start alone): {process_ms:.1f} ms; "
            "ratio = ssh-keygen time / nixwarden time (>1: faster)"
        )

        print()
        widths = [8, 24, 26, 10]
        print(_row(["KRL", "Krl.revocation", "linear scan of serials", "revoked"], widths))
        print(_row(["-" * width for width in widths], widths))
        for name, krl in loaded.items():
            serials = sorted(krl.certificates[0].serials.intervals())
            top = serials[-1][1]
            probes = [rng.randrange(1, top + 2) for _ in range(LOOKUPS // 2)]
            probes += [start for start, _ in rng.choices(serials, k=LOOKUPS // 2)]
            certs = [CertRef(ca, serial, "bench") for serial in probes]
            start = time.perf_counter()
            revoked = sum(krl.revocation(user, cert) is not None for cert in certs)
            per_lookup = (time.perf_counter() - start) / LOOKUPS * 1e6
            scan_probes = probes[:200]
            start = time.perf_counter()
            for serial in scan_probes:
                any(low <= serial <= high for low, high in serials)
            per_scan = (time.perf_counter() - start) / len(scan_probes) * 1e6
            print(
                _row(
                    [
                        name,
                        f"{per_lookup:6.2f} µs ({1e6 / per_lookup:,.0f}/s)",
                        f"{per_scan:9.1f} µs ({per_scan / per_lookup:,.0f}x slower)",
                        f"{revoked / LOOKUPS:.0%}",
                    ],
                    widths,
                )
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _blob(pub: Path) -> bytes:
    import base64  # noqa: PLC0415

    return base64.b64decode(pub.read_text().split()[1])


def _ssh_keygen_krl(base: Path, name: str, starts: list[int], run_length: int) -> Path:
    spec = base / f"{name}.spec"
    with spec.open("w") as out:
        for start in starts:
            end = start + run_length - 1
            out.write(f"serial: {start}-{end}\n" if end > start else f"serial: {start}\n")
    path = base / f"{name}.krl"
    _keygen("-q", "-k", "-f", str(path), "-s", str(base / "ca.pub"), str(spec))
    return path
