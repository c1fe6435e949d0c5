"""`nixwarden push` against `nix copy --to ssh://` as a trusted user, on one closure.

The closure: PATHS store paths (most small, some large, random contents) and a top
path referring to all of them, MIB of NAR in all, built and signed (by a certified
key) in a client store of its own. Each round pushes it over loopback ssh into two
empty stores of their own (bubblewrap namespaces), in alternating order:

  nix copy        `nix copy --no-check-sigs --to ssh://…` to a principal whose gate
                  session runs `nix-store --serve --write` over its own store (a tenant
                  store: it owns it, so nothing is checked): the trusted baseline
  nixwarden push  through the gate and its relay to a receive service whose nix-daemon
                  serves an empty store: verified against [trust] (certificate, KRL)
                  before any NAR byte, staged, countersigned, imported, a profile set

Then each tool again with nothing to send. Throughput is NAR bytes over wall time.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable

from testbed import harness
from testbed.deploy_gate import add_deployer, gate_on, machine_daemon
from testbed.deploy_setup import TeamCa, receive_host
from testbed.gate_setup import ClientStore, client_store, gated_builder

PATHS = int(os.environ.get("NIXWARDEN_BENCH_DEPLOY_PATHS", "1000"))
MIB = int(os.environ.get("NIXWARDEN_BENCH_DEPLOY_MIB", "520"))
ROUNDS = int(os.environ.get("NIXWARDEN_BENCH_ROUNDS_DEPLOY", "2"))
LARGE_SHARE = 0.1  # a tenth of the paths hold ~85 % of the bytes, as in real closures
BATCH = 200
TIMEOUT = 1800.0


def make_closure(client: ClientStore) -> tuple[str, int, int]:
    """The top path, the number of paths in its closure and their NAR bytes in all."""
    tag = secrets.token_hex(4)
    source = client.root.parent / f"bench-src-{tag}"
    source.mkdir()
    large = max(1, int(PATHS * LARGE_SHARE))
    small_size = 64 << 10
    large_size = max(small_size, ((MIB << 20) - (PATHS - large) * small_size) // large)
    files = []
    for index in range(PATHS):
        path = source / f"bench-deploy-{tag}-{index}"
        size = large_size if index < large else small_size // 2 + (index * 7919) % small_size
        path.write_bytes(os.urandom(size))
        files.append(str(path))
    added: list[str] = []
    for start in range(0, len(files), BATCH):
        output = client.run("nix-store", "--add", *files[start : start + BATCH], timeout=TIMEOUT)
        added += output.stdout.decode().split()
    shutil.rmtree(source)
    mentions = " ".join(f'${{builtins.storePath "{path}"}}' for path in added)
    expression = client.root.parent / f"bench-top-{tag}.nix"
    expression.write_text(
        f'derivation {{ name = "bench-deploy-top-{tag}"; system = builtins.currentSystem; '
        f'builder = "/bin/sh"; args = [ "-c" "echo {mentions} > $out" ]; }}\n'
    )
    top = client.run("nix-build", "--no-out-link", str(expression)).stdout.decode().split()[-1]
    infos = json.loads(client.run("nix", "path-info", "--json", "--recursive", top).stdout)
    return top, len(infos), sum(int(info["narSize"]) for info in infos)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, timeout=TIMEOUT, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv[-6:])} exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace')[-3000:]}"
        )
    return elapsed, result.stderr.decode(errors="replace")


def run() -> None:
    harness.require_system()
    harness.ensure_nix_daemon()
    users = harness.Users()
    tenants_root = harness.world_dir("nwt-bench-deploy-tenants")
    tenants_root.chmod(0o711)  # root-owned, not writable by others (the gate refuses that)
    work = harness.world_dir("nwt-bench-deploy")
    times: dict[str, list[float]] = {"copy": [], "push": [], "copy again": [], "push again": []}
    rss_kib: list[int] = []
    service_lines: list[str] = []  # where the service's time went, as it logs each push
    try:
        with (
            harness.started_sshd() as sshd,
            gated_builder(sshd, users) as builder,
            client_store(sshd) as client,
        ):
            ca = TeamCa(work / "ca")
            ca.create()
            key = ca.certify("bench")
            top, count, size = make_closure(client)
            client.run("nix", "store", "sign", "--key-file", str(key.secret), "-r", top)
            builder.tenants["root"] = str(tenants_root)
            env = sshd.client_env()
            time_tool = harness.which("time")
            assert time_tool is not None
            for round_number in range(ROUNDS):
                copy_to = builder.add(
                    f"copy{round_number}",
                    groups=(),
                    store="tenant",
                    protocols=["ssh"],
                    write=True,
                    max_sessions=4,
                )

                def copy(alias: str = copy_to.alias) -> float:
                    argv = client.argv(
                        "nix", "copy", "--no-check-sigs", "--to", f"ssh://{alias}", top
                    )
                    return timed(argv, env)[0]

                with (
                    machine_daemon(work / f"target-{round_number}") as daemon,
                    receive_host(users, daemon, ca) as host,
                ):
                    host.own_store = daemon.own_store
                    gate_on(host)
                    alias = add_deployer(host, sshd, "bench", profiles=["bench"]).alias
                    host.start()

                    def push(alias: str = alias) -> float:
                        argv = client.argv(
                            time_tool, "-f", "%M", harness.NIXWARDEN, "push",
                            "--to", alias, "--certs", str(key.certificate),
                            "--profile", "bench", top,
                        )  # fmt: skip
                        elapsed, stderr = timed(argv, env)
                        rss_kib.append(int(stderr.strip().splitlines()[-1]))
                        return elapsed

                    order: list[tuple[str, Callable[[], float]]] = [("copy", copy), ("push", push)]
                    if round_number % 2:
                        order.reverse()
                    try:
                        for label, measure in order:
                            times[label].append(measure())
                        for label, measure in order:  # the same again: nothing to send
                            times[f"{label} again"].append(measure())
                    except AssertionError as error:
                        raise AssertionError(
                            f"{error}\nthe receive service's log ends:\n"
                            f"{host.log_text()[-2000:]}\nits nix-daemon's log ends:\n"
                            f"{daemon.log.read_text(errors='replace')[-2000:]}"
                        ) from None
                    assert not host.invalid([top]), "the push left the top path invalid"
                    service_lines += [
                        line.split(": ", 2)[-1]
                        for line in host.log_text().splitlines()
                        if ": deployed: " in line or ": up-to-date: " in line or "warning" in line
                    ]
    finally:
        users.cleanup()
        for directory in (tenants_root, work):
            subprocess.run(["chmod", "-R", "u+w", str(directory)], check=False)
            shutil.rmtree(directory, ignore_errors=True)
    report(count, size, times, rss_kib)
    print("the receive service's log, per push (wall time per step):")
    for line in service_lines:
        print(f"  {line}")


def report(count: int, size: int, times: dict[str, list[float]], rss_kib: list[int]) -> None:
    copy_s = statistics.median(times["copy"])
    push_s = statistics.median(times["push"])
    mib = size / (1 << 20)
    print(
        f"closure of {count} paths, {mib:.0f} MiB of NAR, over loopback ssh into an empty "
        f"store of its own; median of {ROUNDS} rounds"
    )
    print(f"{'tool':<46} {'wall s':>8} {'MiB/s':>8} {'ratio':>7}")
    print(
        f"{'nix copy --to ssh:// (trusted, no sig checks)':<46} "
        f"{copy_s:8.2f} {mib / copy_s:8.1f} {1:6.2f}x"
    )
    print(
        f"{'nixwarden push (verified, countersigned)':<46} "
        f"{push_s:8.2f} {mib / push_s:8.1f} {copy_s / push_s:6.2f}x"
    )
    print(
        f"again, nothing to send: nixwarden push {statistics.median(times['push again']):.2f} s, "
        f"nix copy {statistics.median(times['copy again']):.2f} s"
    )
    print(f"nixwarden push peak RSS: {max(rss_kib) / 1024:.0f} MiB (client, whole run)")
    print("targets: push ≥ 0.8x nix copy's throughput; a push with nothing to send < 1 s")
    print("(a shared, loaded machine: compare ratios within one run, not across runs)")
