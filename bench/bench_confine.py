"""confine: `nixwarden closure` against `nix-store -qR`, `confine run` against plain bwrap.

Builds its own store contents (a tagged synthetic chain of 5,000 paths and a few small
programs; nothing is deleted), then times each command in the same run, interleaved:
each round runs every command once, in turn, so drift on a shared machine hits them
alike; the table shows medians. Ratios below 1 mean nixwarden is faster.

`confine run` is measured with its plan cached (the usual case: the same command line
run again while nothing it depends on changed) and with the cache off. The cached runs
report on stderr (NIXWARDEN_DEBUG=1) whether they used the plan; the table says how
many did, since a store database written to by others makes the plan stale.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from demo.framework import NIXWARDEN
from nixwarden.nix.programs import find_nix_program
from testbed import confine_store, harness

CHAIN = 5000
WARMUP = 3
RUNS = int(os.environ.get("NIXWARDEN_BENCH_ROUNDS", "21"))
NIX_STORE = find_nix_program("nix-store")
CACHE = Path(f"/run/nixwarden-test/confine-bench-chain-{CHAIN}")
USED = b"confine run: cached plan used"
SETTLE_WAIT = 15.0  # seconds to wait for a quiet store database before giving up


def timed_ms(argv: Sequence[str], env: dict[str, str]) -> tuple[float, bytes]:
    started = time.perf_counter()
    result = subprocess.run(list(argv), env=env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        raise SystemExit(f"bench: {argv[:3]} failed: {result.stderr.decode()[-500:]}")
    return elapsed, result.stderr


Commands = dict[str, tuple[Sequence[str], dict[str, str]]]


def interleaved(commands: Commands) -> dict[str, list[tuple[float, bytes]]]:
    """Each command's (ms, stderr) samples: every round runs each command once, in turn,
    after warm-up rounds."""
    samples: dict[str, list[tuple[float, bytes]]] = {name: [] for name in commands}
    for index in range(WARMUP + RUNS):
        for name, (argv, env) in commands.items():
            sample = timed_ms(argv, env)
            if index >= WARMUP:
                samples[name].append(sample)
    return samples


def median(samples: list[tuple[float, bytes]]) -> float:
    return statistics.median(ms for ms, _ in samples)


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


def until_cached(argv: Sequence[str], env: dict[str, str]) -> bool:
    """Run until a run uses its cached plan (the database must be quiet for 2 s first)."""
    deadline = time.monotonic() + SETTLE_WAIT
    while time.monotonic() < deadline:
        if USED in timed_ms(argv, env)[1]:
            return True
        time.sleep(0.5)
    return False


def row(what: str, ours: float, theirs: float, tool: str, target: str) -> str:
    ratio = ours / theirs
    return (
        f"| {what:<40} | {ours:>9.1f} | {tool:<30} | {theirs:>9.1f} | {ratio:>5.2f}x | "
        f"{target:<7} |"
    )


def _shebang(script: str) -> list[str]:
    with open(script, "rb") as handle:
        first = handle.readline().decode()
    words = first.removeprefix("#!").split()
    if words[:1] == ["/usr/bin/env"]:
        words = words[1:]
    return words


def run() -> None:
    harness.ensure_nix_daemon()  # the test programs are built through it
    env = dict(confine_store.ENV)
    local = {k: v for k, v in env.items() if k != "NIX_REMOTE"}
    print(f"building a {CHAIN}-path synthetic closure and test programs …", flush=True)
    root = reuse_or_build_chain(env)
    programs = confine_store.build_programs()
    lines = [
        f"| {'measurement (median of ' + str(RUNS) + ' rounds, ms)':<40} | nixwarden | "
        f"{'real tool':<30} | real (ms) | ratio  | target  |",
        f"|{'-' * 42}|{'-' * 11}|{'-' * 32}|{'-' * 11}|{'-' * 8}|{'-' * 9}|",
    ]

    closures = interleaved(
        {
            "ours": ([NIXWARDEN, "closure", root], env),
            "direct": ([NIX_STORE, "-qR", root], local),
            "daemon": ([NIX_STORE, "-qR", root], env),
        }
    )
    for name, tool in (
        ("direct", "nix-store -qR (root, local DB)"),
        ("daemon", "nix-store -qR (daemon)"),
    ):
        lines.append(
            row(
                f"closure, {CHAIN} paths",
                median(closures["ours"]),
                median(closures[name]),
                tool,
                "≤0.30x",
            )
        )

    notes = []
    with tempfile.TemporaryDirectory(prefix="nwt-bench-plans-") as plans:
        cached_env = dict(env, XDG_CACHE_HOME=plans, NIXWARDEN_DEBUG="1")
        cold_env = dict(env, NIXWARDEN_CONFINE_CACHE="off")
        command = [f"{programs.app}/bin/sh", "-c", "true"]
        # The launcher's own interpreter and flags (its shebang), doing nothing: what any
        # Python program pays before its first line, so no cached run can be faster
        # than this plus bubblewrap.
        interpreter = [*_shebang(NIXWARDEN), "-c", "pass"]
        for mode in ("full-apivfs", "chroot-only"):
            options = ["--mode", mode, "--no-bin-sh", "--"]
            ours_argv = [NIXWARDEN, "confine", "run", *options, *command]
            printed = subprocess.run(
                [NIXWARDEN, "confine", "run", "--print-argv", *options, *command],
                env=cold_env,
                capture_output=True,
                check=True,
            )
            bwrap_argv = shlex.split(printed.stdout.decode())
            if not until_cached(ours_argv, cached_env):
                notes.append(f"{mode}: the store database never stayed quiet for 2 s")
            samples = interleaved(
                {
                    "cached": (ours_argv, cached_env),
                    "cold": (ours_argv, cold_env),
                    "bwrap": (bwrap_argv, env),
                    "interpreter": (interpreter, env),
                }
            )
            used = sum(USED in err for _, err in samples["cached"])
            plain = median(samples["bwrap"])
            lines.append(
                row(
                    f"confine run ({mode}), plan cached",
                    median(samples["cached"]),
                    plain,
                    "bwrap, same binds",
                    "≤3.5x",
                )
            )
            lines.append(
                row(
                    f"confine run ({mode}), cache off",
                    median(samples["cold"]),
                    plain,
                    "bwrap, same binds",
                    "",
                )
            )
            floor = median(samples["interpreter"]) + plain
            lines.append(
                row(
                    f"floor ({mode}): python start + bwrap",
                    floor,
                    plain,
                    "bwrap, same binds",
                    "",
                )
            )
            notes.append(f"{mode}: {used} of {RUNS} cached runs used the plan")
    startup = statistics.median(timed_ms([NIXWARDEN, "--version"], env)[0] for _ in range(RUNS))
    print("\n".join(lines))
    print(f"\n({'; '.join(notes)}; {os.cpu_count()} cores)")
    print(f"(`nixwarden --version`, i.e. Python start-up alone, median: {startup:.1f} ms)")
