"""Provenance lookups on a database of 100,000 records (issue 12: "by path in well under a
second on 100,000 records").

The database holds NIXWARDEN_BENCH_PROVENANCE_RECORDS (default 100,000) hash-chained
records of ten paths each (a million path rows), written as the service writes them
(`provenance.append_in`), in one transaction for speed. Measured, best of five:
`nixwarden provenance PATH --json` as a whole process (start, open, index lookup,
print) for a path in the oldest, a middle and the newest record; the same lookup in
this process (`provenance.by_path`); `nixwarden provenance --profile` of a profile
with 1,000 records; and `nixwarden provenance verify` over the whole chain. The yardstick is
`nix path-info PATH` (a real tool answering about one path, process and all) on a
path of the host store. Nothing is asserted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from testbed import harness

RECORDS = int(os.environ.get("NIXWARDEN_BENCH_PROVENANCE_RECORDS", "100000"))
PATHS_PER_RECORD = 10
ENV = harness.base_env()


def _path(record: int, index: int) -> str:
    digits = f"{record:010d}{index:02d}"  # digits are nix32 characters
    return f"/nix/store/{digits.rjust(32, '0')}-bench-{record}-{index}"


def _best_ms(action: Callable[[], object], runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def _run(*argv: str) -> None:
    result = subprocess.run(list(argv), env=ENV, capture_output=True, check=False)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"{argv[:3]}: {result.stderr.decode(errors='replace')[-500:]}")


def _build(db: str) -> None:
    from nixwarden.deploy import provenance  # noqa: PLC0415

    provenance.create(db)
    signer = provenance.Signer("alice-1", 42, "SHA256:bench", "QUxJQ0U=")
    with provenance.writing(db) as connection:
        for number in range(RECORDS):
            paths = [_path(number, index) for index in range(PATHS_PER_RECORD)]
            provenance.append_in(
                connection,
                provenance.Record(
                    time="2026-11-22T10:00:00Z",
                    principal="alice",
                    unix_user="deploy",
                    action="push",
                    outcome="deployed",
                    ssh_keys=("ssh-ed25519 SHA256:bench",),
                    client="127.0.0.1:5000",
                    signers=(signer,),
                    tops=(paths[0],),
                    closure_digest=provenance.closure_digest(paths),
                    profile=f"p{number % (RECORDS // 1000 or 1)}",
                    generation=number,
                    paths=tuple(provenance.PathEntry(p, ("alice-1",)) for p in paths),
                ),
            )


def run() -> None:
    from nixwarden.deploy import provenance  # noqa: PLC0415

    base = Path(tempfile.mkdtemp(prefix="nwt-bench-provenance-", dir="/tmp"))
    try:
        db = str(base / "provenance.db")
        start = time.perf_counter()
        _build(db)
        built = time.perf_counter() - start
        size = os.path.getsize(db) >> 20
        paths = RECORDS * PATHS_PER_RECORD
        print(f"{RECORDS} records, {paths} paths, {size} MiB, built in {built:.1f} s")
        nixwarden = harness.NIXWARDEN
        rows: list[tuple[str, float]] = []
        for label, record in (("oldest", 0), ("middle", RECORDS // 2), ("newest", RECORDS - 1)):
            path = _path(record, 5)
            rows.append(
                (
                    f"nixwarden provenance PATH --json ({label})",
                    _best_ms(lambda p=path: _run(nixwarden, "provenance", "--db", db, p, "--json")),
                )
            )
        with provenance.reading(db) as connection:
            rows.append(
                (
                    "provenance.by_path, in process",
                    _best_ms(lambda: provenance.by_path(connection, _path(RECORDS // 2, 5)), 50),
                )
            )
        rows.append(
            (
                "nixwarden provenance --profile p1 --json",
                _best_ms(
                    lambda: _run(nixwarden, "provenance", "--db", db, "--profile", "p1", "--json")
                ),
            )
        )
        rows.append(
            (
                "nixwarden provenance verify (whole chain)",
                _best_ms(lambda: _run(nixwarden, "provenance", "--db", db, "verify"), 1),
            )
        )
        some_path = next(name for name in sorted(os.listdir("/nix/store")) if name[0] != ".")
        yardstick = _best_ms(
            lambda: _run(
                "nix",
                *("--extra-experimental-features", "nix-command", "path-info"),
                f"/nix/store/{some_path}",
            )
        )
        width = max(len(name) for name, _ in rows) + 2
        print(f"{'measure':<{width}}{'ms':>10}{'x nix path-info':>18}")
        for name, ms in rows:
            print(f"{name:<{width}}{ms:>10.1f}{ms / yardstick:>18.2f}")
        print(f"{'nix path-info PATH (yardstick)':<{width}}{yardstick:>10.1f}{1:>18.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
