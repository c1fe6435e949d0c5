"""A remote build through a tenant store against the same through a trusted host principal.

A chain of 50 small derivations (each reads the previous one's output), built with
`--max-jobs 0` from a client with a store of its own, so every step is a remote build
with its input copied over and its output copied back. Each round uses fresh
derivations; rounds alternate tenant and host so drift hits both. The tenant store's
first initialisation (an empty tenant's first session) is timed on its own.
"""

from __future__ import annotations

import os
import platform
import secrets
import statistics
import subprocess
import time

from testbed import harness
from testbed.gate_setup import client_store, gated_builder

CHAIN = int(os.environ.get("NIXWARDEN_BENCH_CHAIN", "50"))
ROUNDS = int(os.environ.get("NIXWARDEN_BENCH_ROUNDS_TENANTS", "2"))
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
    users = harness.Users()
    root = harness.world_dir("nwt-bench-tenants")
    root.chmod(0o1733)
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
