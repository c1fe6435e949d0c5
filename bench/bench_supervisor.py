"""What the gate's supervisor of a limited session costs, against exec'ing the session.

A session of SESSION_SECONDS (`/bin/sleep`) is started by a fresh interpreter the way
the gate starts it: exec'd (a principal without limits), or under gate.supervisor with
the counters of a limited principal (memory.oom_control and pids.events, here copies in
a scratch directory, and statvfs of a tenant directory) read every 0.1 s. Measured with
wait4(2): the CPU time of the whole tree (sleep uses none: the rest is the gate and its
supervisor) and, halfway, the resident memory of the tree. Nothing here asserts on time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

SESSION_SECONDS = float(os.environ.get("NIXWARDEN_BENCH_SESSION", "10"))
ROUNDS = int(os.environ.get("NIXWARDEN_BENCH_ROUNDS", "3"))

SOURCE = str(Path(__file__).resolve().parent.parent / "src")
# -I as the gate runs (bin/nixwarden-gate): no PYTHONPATH, the package put on sys.path.
EXEC = """
import os, sys
sys.path.insert(0, sys.argv[3])
from nixwarden import process
process.exec_replace(["/bin/sleep", sys.argv[1]], {})
"""
SUPERVISED = """
import os, sys
sys.path.insert(0, sys.argv[3])
from nixwarden.gate import supervisor
d = sys.argv[2]
counters = [
    supervisor.Counter("memory", os.path.join(d, "memory.oom_control"), "128 MiB"),
    supervisor.Counter("tasks", os.path.join(d, "pids.events"), "64"),
    supervisor.Counter("disk", d, "64 MiB"),
]
sys.exit(supervisor.run(["/bin/sleep", sys.argv[1]], {}, counters, lambda line: None, "bench"))
"""


def _resident_kib(pid: int) -> int:
    """VmRSS of `pid` and its children, in KiB (what stays in memory while it runs)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for each in [pid, *map(int, children)]:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _measure(script: str, scratch: str) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the tree, resident KiB halfway) of one session."""
    argv = [sys.executable, "-I", "-S", "-c", script, str(SESSION_SECONDS), scratch, SOURCE]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, {})
    time.sleep(SESSION_SECONDS / 2)
    resident = _resident_kib(pid)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the session ended with {status}")
    return wall, usage.ru_utime + usage.ru_stime, resident


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="nwt-bench-supervisor-") as scratch:
        Path(scratch, "memory.oom_control").write_text(
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"
        )
        Path(scratch, "pids.events").write_text("max 0\n")
        results: dict[str, list[tuple[float, float, int]]] = {"exec": [], "supervised": []}
        for _round in range(ROUNDS):  # in turn, so drift on a shared machine hits both
            results["exec"].append(_measure(EXEC, scratch))
            results["supervised"].append(_measure(SUPERVISED, scratch))
    print(f"a session of {SESSION_SECONDS:g} s, {ROUNDS} rounds, medians:")
    print(f"{'mode':<12} {'wall s':>8} {'cpu ms':>8} {'cpu ms/s':>9} {'resident KiB':>13}")
    rows = {}
    for mode, samples in results.items():
        wall = sorted(s[0] for s in samples)[len(samples) // 2]
        cpu = sorted(s[1] for s in samples)[len(samples) // 2]
        rss = sorted(s[2] for s in samples)[len(samples) // 2]
        rows[mode] = (wall, cpu, rss)
        print(f"{mode:<12} {wall:>8.2f} {cpu * 1000:>8.1f} {cpu * 1000 / wall:>9.2f} {rss:>13}")
    extra = rows["supervised"][1] - rows["exec"][1]
    print(
        f"supervising costs {extra * 1000:.1f} ms of CPU over the session "
        f"({extra / SESSION_SECONDS * 100:.3f}% of one core), "
        f"and keeps {rows['supervised'][2] - rows['exec'][2]} KiB more resident"
    )
