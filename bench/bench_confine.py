"""confine: `nixwarden closure` against `nix-store -qR`, `confine run` against plain bwrap.

Builds its own store contents (a tagged synthetic chain of 5,000 paths and a few small
programs; nothing is deleted), then times each command in the same run: warm-up runs,
then the median of repeated runs. Ratios below 1 mean nixwarden is faster.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from demo.framework import NIXWARDEN
from nixwarden.confine import run as confine_run
from nixwarden.confine.plan import Mode, sandbox
from nixwarden.nix.programs import find_nix_program
from testbed import confine_store

CHAIN = 5000
WARMUP = 3
RUNS = 21
NIX_STORE = find_nix_program("nix-store")
CACHE = Path(f"/run/nixwarden-test/confine-bench-chain-{CHAIN}")


def median_ms(argv: Sequence[str], env: dict[str, str], runs: int = RUNS) -> float:
    samples = []
    for index in range(WARMUP + runs):
        started = time.perf_counter()
        result = subprocess.run(list(argv), env=env, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"bench: {argv[:3]} failed: {result.stderr.decode()[-500:]}")
        if index >= WARMUP:
            samples.append(elapsed * 1000)
    return statistics.median(samples)


def reuse_or_build_chain(env: dict[str, str]) -> str:
    """The synthetic chain's root; reused between runs so the shared store grows once."""
    if CACHE.exists():
        root = CACHE.read_text().strip()
        valid = subprocess.run(
            [NIX_STORE, "--check-validity", root], env=env, capture_output=True, check=False
        )
        if valid.returncode == 0:
            return root
    root = confine_store.synthetic_chain(CHAIN)[-1]
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_text(root + "\n")
    return root


def row(what: str, ours: float, theirs: float, tool: str, target: str) -> str:
    ratio = ours / theirs
    return (
        f"| {what:<38} | {ours:>9.1f} | {tool:<30} | {theirs:>9.1f} | {ratio:>5.2f}x | "
        f"{target:<7} |"
    )


def run() -> None:
    env = dict(confine_store.ENV)
    local = {k: v for k, v in env.items() if k != "NIX_REMOTE"}
    print(f"building a {CHAIN}-path synthetic closure and test programs …", flush=True)
    root = reuse_or_build_chain(env)
    programs = confine_store.build_programs()

    lines = [
        f"| {'measurement (median of ' + str(RUNS) + ' runs, ms)':<38} | nixwarden | "
        f"{'real tool':<30} | real (ms) | ratio  | target  |",
        f"|{'-' * 40}|{'-' * 11}|{'-' * 32}|{'-' * 11}|{'-' * 8}|{'-' * 9}|",
    ]
    ours = median_ms([NIXWARDEN, "closure", root], env)
    direct = median_ms([NIX_STORE, "-qR", root], local)
    daemon = median_ms([NIX_STORE, "-qR", root], env)
    lines.append(
        row(f"closure, {CHAIN} paths", ours, direct, "nix-store -qR (root, local DB)", "≤0.5x")
    )
    lines.append(
        row(f"closure, {CHAIN} paths", ours, daemon, "nix-store -qR (via daemon)", "≤0.5x")
    )

    command = [f"{programs.app}/bin/sh", "-c", "true"]
    request = confine_run.Request(command=tuple(command))
    spec, command_line = confine_run.prepare(request, os.environ)
    bwrap_argv = sandbox(spec).argv(confine_run.BWRAP, command_line)
    ours = median_ms([NIXWARDEN, "confine", "run", "--no-bin-sh", "--", *command], env)
    plain = median_ms(bwrap_argv, env)
    lines.append(
        row("confine run (full-apivfs), sh -c true", ours, plain, "bwrap, same binds", "≤1.2x")
    )
    spec_chroot, _ = confine_run.prepare(
        confine_run.Request(command=tuple(command), mode=Mode.CHROOT_ONLY), os.environ
    )
    ours = median_ms(
        [NIXWARDEN, "confine", "run", "--mode", "chroot-only", "--no-bin-sh", "--", *command], env
    )
    plain = median_ms(sandbox(spec_chroot).argv(confine_run.BWRAP, command_line), env)
    lines.append(
        row("confine run (chroot-only), sh -c true", ours, plain, "bwrap, same binds", "≤1.2x")
    )
    started = time.perf_counter()
    subprocess.run([NIXWARDEN, "--version"], env=env, capture_output=True, check=True)
    startup = (time.perf_counter() - started) * 1000
    print("\n".join(lines))
    print(f"\n(one `nixwarden --version`, i.e. Python start-up alone: {startup:.1f} ms)")
