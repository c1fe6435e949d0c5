"""Tenant stores: a remote build against a trusted host principal's, and `tenant list`.

A chain of 50 small derivations (each reads the previous one's output), built with
`--max-jobs 0` from a client with a store of its own, so every step is a remote build
with its input copied over and its output copied back. Each round uses fresh
derivations; rounds alternate tenant and host so drift hits both. The tenant store's
first initialisation (an empty tenant's first session) is timed on its own.

Then `nixwarden tenant list` over 50 tenants of 10,000 valid paths each (databases
written directly in Nix's schema, store paths as empty files, all owned by one unix
user per tenant), against the real tools doing the same counting the unsafe way: `du
-s -x -B1` and `nix path-info --all` on each tenant's directory, as its unix user,
without a sandbox or a time limit. Those tenants live on a tmpfs (/dev/shm).
"""

from __future__ import annotations

import os
import platform
import random
import secrets
import sqlite3
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed import harness
from testbed.gate_setup import client_store, gated_builder

CHAIN = int(os.environ.get("NIXWARDEN_BENCH_CHAIN", "50"))
ROUNDS = int(os.environ.get("NIXWARDEN_BENCH_ROUNDS_TENANTS", "2"))
TENANTS = int(os.environ.get("NIXWARDEN_BENCH_TENANTS", "50"))
TENANT_PATHS = int(os.environ.get("NIXWARDEN_BENCH_TENANT_PATHS", "10000"))
LIST_ROUNDS = int(os.environ.get("NIXWARDEN_BENCH_ROUNDS_LIST", "3"))
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
# Nix's schema.sql (schema version 10), as Nix creates a new store's database.
NIX_SCHEMA = """
create table if not exists ValidPaths (
    id integer primary key autoincrement not null, path text unique not null,
    hash text not null, registrationTime integer not null, deriver text, narSize integer,
    ultimate integer, sigs text, ca text);
create table if not exists Refs (
    referrer integer not null, reference integer not null, primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict);
create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin delete from Refs where referrer = old.id and reference = old.id; end;
create table if not exists DerivationOutputs (
    drv integer not null, id text not null, path text not null, primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade);
create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
"""

SYSTEM = f"{platform.machine()}-linux"


def chain(tag: str, length: int) -> str:
    steps = [
        f'd0 = derivation {{ name = "bench-{tag}-0"; system = "{SYSTEM}"; builder = "/bin/sh"; '
        f'args = [ "-c" "echo 0 > $out" ]; }};'
    ]
    for index in range(1, length):
        steps.append(
            f'd{index} = derivation {{ name = "bench-{tag}-{index}"; system = "{SYSTEM}"; '
            f'builder = "/bin/sh"; args = [ "-c" "read x < ${{d{index - 1}}}; '
            f'echo {index} $x > $out" ]; }};'
        )
    return "let " + " ".join(steps) + f" in d{length - 1}"


def run() -> None:
    harness.require_system()
    harness.ensure_nix_daemon()
    remote_builds()
    print()
    tenant_list()


def remote_builds() -> None:
    users = harness.Users()
    root = harness.world_dir("nwt-bench-tenants")
    root.chmod(0o711)
    try:
        with harness.started_sshd() as sshd, gated_builder(sshd, users) as builder:
            builder.tenants["root"] = str(root)
            tenant = builder.add("bench-tenant", groups=(), store="tenant", max_sessions=8)
            host = builder.add(
                "bench-host",
                groups=(harness.NIX_USERS_GROUP, harness.TRUSTED_GROUP),
                store="host",
                max_sessions=8,
            )
            harness.run([harness.NIXWARDEN, "gate", "--compile", "--config", str(builder.config)])
            env = sshd.client_env()
            start = time.perf_counter()
            harness.run(["nix", "store", "ping", "--store", f"ssh-ng://{tenant.alias}"], env=env)
            first_init = time.perf_counter() - start
            start = time.perf_counter()
            harness.run(["nix", "store", "ping", "--store", f"ssh-ng://{tenant.alias}"], env=env)
            warm_ping = time.perf_counter() - start
            times: dict[str, list[float]] = {"tenant": [], "host (trusted)": []}
            for _ in range(ROUNDS):
                for label, principal in (("tenant", tenant), ("host (trusted)", host)):
                    with client_store(sshd) as client:
                        argv = client.argv(
                            "nix-build", "--no-out-link", "--max-jobs", "0",
                            "--builders", f"ssh-ng://{principal.alias} {SYSTEM} - 1 1",
                            "-E", chain(secrets.token_hex(4), CHAIN),
                        )  # fmt: skip
                        start = time.perf_counter()
                        subprocess.run(argv, env=env, check=True, capture_output=True)
                        times[label].append(time.perf_counter() - start)
    finally:
        users.cleanup()
        subprocess.run(["chmod", "-R", "u+w", str(root)], check=False)
        subprocess.run(["rm", "-rf", str(root)], check=False)
    tenant_s = statistics.median(times["tenant"])
    host_s = statistics.median(times["host (trusted)"])
    print(f"remote build of a chain of {CHAIN} derivations over ssh-ng, median of {ROUNDS} (s)")
    print(f"{'principal':<16} {'wall':>8} {'per drv':>9} {'ratio':>7}")
    print(f"{'host (trusted)':<16} {host_s:8.2f} {host_s / CHAIN * 1000:7.0f}ms {1:6.2f}x")
    print(
        f"{'tenant':<16} {tenant_s:8.2f} {tenant_s / CHAIN * 1000:7.0f}ms {tenant_s / host_s:6.2f}x"
    )
    print(f"tenant store first initialisation (first session): {first_init * 1000:.0f} ms "
          f"(a warm session: {warm_ping * 1000:.0f} ms)")  # fmt: skip
    print("target: tenant ≤ 1.3x the trusted host principal")


def fake_store(base: Path, count: int, seed: int) -> None:
    """`count` valid paths in base/nix: empty files in the store, rows in Nix's database,
    each path referring to up to three earlier ones."""
    generator = random.Random(seed)
    store = base / "nix" / "store"
    database = base / "nix" / "var" / "nix" / "db"
    store.mkdir(parents=True)
    database.mkdir(parents=True)
    (database / "schema").write_text("10")
    paths = [
        f"/nix/store/{''.join(generator.choice(NIX32) for _ in range(32))}-bench-{n}"
        for n in range(count)
    ]
    for path in paths:
        os.close(os.open(store / path[11:], os.O_WRONLY | os.O_CREAT, 0o444))
    connection = sqlite3.connect(database / "db.sqlite")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(NIX_SCHEMA)
    connection.executemany(
        "INSERT INTO ValidPaths (id, path, hash, registrationTime, narSize) VALUES (?, ?, ?, 0, ?)",
        [
            (n + 1, path, "sha256:" + "0" * 52, generator.randrange(120, 1 << 20))
            for n, path in enumerate(paths)
        ],
    )
    connection.executemany(
        "INSERT OR IGNORE INTO Refs VALUES (?, ?)",
        [
            (n + 1, generator.randrange(1, n + 1))
            for n in range(1, count)
            for _ in range(generator.randrange(0, 4))
        ],
    )
    connection.commit()
    connection.close()


def _as(user: harness.User, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", *argv]


def _real_tools(base: Path, user: harness.User) -> int:
    """What the real tools say, the unsafe way: valid paths (nix path-info --all)."""
    env = harness.base_env(HOME=str(user.home))
    subprocess.run(_as(user, ["du", "-s", "-x", "-B1", str(base)]), check=True, capture_output=True)
    listed = subprocess.run(
        _as(user, ["nix", "--extra-experimental-features", "nix-command", "path-info", "--all",
                   "--store", f"local?root={base}"]),
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    return len(listed.stdout.splitlines())


def tenant_list() -> None:
    users = harness.Users()
    # On a tmpfs: 500,000 files are made in seconds, not minutes of a shared disk, and
    # both sides walk the same tree from memory.
    root = Path(f"/dev/shm/nwt-bench-list-{secrets.token_hex(4)}")
    root.mkdir(mode=0o711)
    root.chmod(0o711)
    directory = harness.world_dir("nwt-bench-list-config")
    config = directory / "config.toml"
    names = [f"t{n:03d}" for n in range(TENANTS)]
    try:
        lines = [f'[gate]\nstate_dir = "{directory}/state"\n[tenants]\nroot = "{root}"']
        lines += [f'[principals.{name}]\nstore = "tenant"\ndisk_quota = "1G"' for name in names]
        config.write_text("\n".join(lines) + "\n")
        tenants = {name: users.create(groups=()) for name in names}
        started = time.perf_counter()
        for number, (name, user) in enumerate(tenants.items()):
            harness.run([harness.NIXWARDEN, "tenant", "create", name, "--user", user.name,
                         "--config", str(config)])  # fmt: skip
            fake_store(root / name, TENANT_PATHS, number)
            harness.run(["chown", "-R", f"{user.uid}:{user.gid}", str(root / name)])
        setup = time.perf_counter() - started
        listing = [harness.NIXWARDEN, "tenant", "list", "--config", str(config)]
        harness.run(listing)  # warm-up: page cache, bytecode
        ours = []
        for _ in range(LIST_ROUNDS):
            started = time.perf_counter()
            output = harness.run(listing).stdout.decode()
            ours.append(time.perf_counter() - started)
        rows = [line.split() for line in output.splitlines()[1:]]
        assert len(rows) == TENANTS and all(row[2] == str(TENANT_PATHS) for row in rows), output
        started = time.perf_counter()
        counts = [_real_tools(root / name, user) for name, user in tenants.items()]
        sequential = time.perf_counter() - started
        assert counts == [TENANT_PATHS] * TENANTS, counts
        workers = os.cpu_count() or 1
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda item: _real_tools(root / item[0], item[1]), tenants.items()))
        parallel = time.perf_counter() - started
    finally:
        users.cleanup()
        subprocess.run(["rm", "-rf", str(root), str(directory)], check=False)
    mine = statistics.median(ours)
    fastest = min(parallel, sequential)  # the machine's other load hits the real tools too
    print(f"tenant list: {TENANTS} tenants of {TENANT_PATHS} valid paths, {os.cpu_count()} cores "
          f"(set-up {setup:.0f} s); median of {LIST_ROUNDS} (s)")  # fmt: skip
    print(f"{'':<58} {'wall':>7} {'per tenant':>11} {'vs fastest real':>7}")
    for label, seconds in (
        (f"du -sx + nix path-info --all, unsandboxed, {workers} at a time", parallel),
        ("du -sx + nix path-info --all, unsandboxed, one at a time", sequential),
        (f"nixwarden tenant list (probe in each sandbox, {workers} at a time)", mine),
    ):
        print(
            f"{label:<58} {seconds:7.2f} {seconds / TENANTS * 1000:9.0f}ms "
            f"{seconds / fastest:6.2f}x"
        )
