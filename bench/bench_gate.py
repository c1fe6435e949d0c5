"""The gate's per-connection cost, against the same sshd without it.

Three keys on one loopback sshd, each a different unix user:
  direct   restrict,command="nix-daemon --stdio"
  wrapper  the usual shell `case "$SSH_ORIGINAL_COMMAND"` dispatcher (as builder guides write it)
  gate     nixwarden's authorized-keys-line (python -I nixwarden-gate)
Each round runs `nix store ping --store ssh-ng://…` once per key, in turn, so drift
on this shared machine hits all three alike. Also: the gate's own start-to-exec time
(exec'ing /bin/true) against running /bin/true directly, and its peak resident memory.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

from testbed import harness
from testbed.gate_setup import GatedBuilder, gated_builder

ROUNDS = int(os.environ.get("NIXWARDEN_BENCH_ROUNDS", "30"))

WRAPPER = """#!/bin/sh
case "$SSH_ORIGINAL_COMMAND" in
  "nix-daemon --stdio") exec /usr/bin/nix-daemon --stdio ;;
  "nix-store --serve --write") exec /usr/bin/nix-store --serve --write ;;
  *) echo "Access only allowed for using the nix remote builder" >&2; exit 1 ;;
esac
"""


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return (time.perf_counter() - start) * 1000


def _median_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    return statistics.median(_timed(argv, env) for _ in range(runs))


def _peak_rss_kib(argv: list[str], env: dict[str, str]) -> int:
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *argv], env=env, capture_output=True, check=True
    )
    return int(result.stderr.decode().strip().splitlines()[-1])


def run() -> None:
    harness.require_system()
    harness.ensure_nix_daemon()
    users = harness.Users()
    with harness.started_sshd() as sshd, gated_builder(sshd, users) as builder:
        try:
            _measure(sshd, users, builder)
        finally:
            users.cleanup()


def _plain_alias(sshd: harness.Sshd, users: harness.Users, name: str, command: str) -> str:
    user = users.create()
    key = sshd.client_key(name)
    public = key.with_suffix(".pub").read_text().strip()
    harness.install_authorized_key(user, f'restrict,command="{command}" {public}')
    return sshd.add_alias(f"{name}-{user.name}", user, key)


def _measure(sshd: harness.Sshd, users: harness.Users, builder: GatedBuilder) -> None:
    wrapper = builder.directory / "wrapper.sh"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    aliases = {
        "direct": _plain_alias(sshd, users, "direct", "/usr/bin/nix-daemon --stdio"),
        "wrapper": _plain_alias(sshd, users, "wrapper", str(wrapper)),
        "gate": builder.add("bench", store="host", max_sessions=8).alias,
    }
    harness.run([harness.NIXWARDEN, "gate", "--compile", "--config", str(builder.config)])
    env = sshd.client_env()
    samples: dict[str, list[float]] = {name: [] for name in aliases}
    for alias in aliases.values():  # warm-up: caches, sshd's first fork
        _timed(["nix", "store", "ping", "--store", f"ssh-ng://{alias}"], env)
    for _ in range(ROUNDS):
        for name, alias in aliases.items():
            samples[name].append(
                _timed(["nix", "store", "ping", "--store", f"ssh-ng://{alias}"], env)
            )
    median = {name: statistics.median(values) for name, values in samples.items()}
    p90 = {name: statistics.quantiles(values, n=10)[-1] for name, values in samples.items()}

    # The gate alone: start to exec, with /bin/true as the pinned program.
    alone = builder.directory / "alone.toml"
    alone.write_text(
        f'[gate]\naudit_log = "{builder.directory}/alone.jsonl"\n'
        f'state_dir = "{builder.state_dir}"\nnix_daemon = "/bin/true"\n'
        '[principals.bench]\nstore = "host"\nmax_sessions = 64\n'
    )
    harness.run([harness.NIXWARDEN, "gate", "--compile", "--config", str(alone)])
    launcher = str(Path(harness.NIXWARDEN).with_name("nixwarden-gate"))
    python = str(Path(harness.NIXWARDEN).with_name("python3"))
    gate_argv = [python, "-I", launcher, "--principal", "bench", "--config", str(alone)]
    gate_env = harness.base_env(SSH_ORIGINAL_COMMAND="nix-daemon --stdio")
    runs = max(ROUNDS, 30)
    true_ms = _median_ms(["/bin/true"], gate_env, runs)
    gate_ms = _median_ms(gate_argv, gate_env, runs)
    bare_ms = _median_ms([python, "-I", "-c", "pass"], gate_env, runs)
    peak = _peak_rss_kib(gate_argv, gate_env)

    print(f"nix store ping over ssh-ng, {ROUNDS} interleaved rounds (ms)")
    print(f"{'path':<10} {'median':>8} {'p90':>8} {'vs direct':>10} {'added':>8}")
    for name in aliases:
        print(
            f"{name:<10} {median[name]:8.1f} {p90[name]:8.1f} "
            f"{median[name] / median['direct']:9.2f}x {median[name] - median['direct']:+8.1f}"
        )
    print()
    print("the gate alone (pinned program /bin/true), median of", runs, "runs")
    print(f"  /bin/true directly             {true_ms:7.1f} ms")
    print(f"  python3 -I -c pass             {bare_ms:7.1f} ms")
    print(f"  gate: start → decision → exec  {gate_ms:7.1f} ms  (+{gate_ms - true_ms:.1f} ms)")
    print(f"  gate peak resident memory      {peak / 1024:7.1f} MiB")
    print()
    print("targets: gate ≤ 1.10x direct end to end, ≤ 15 ms added at the median, < 30 MiB")
