"""Runs every `bench/bench_*.py` (or the ones named on the command line) in turn.

Each module has `run() -> None`, which measures against the real tool in the same
run and prints a table of ratios. Nothing here asserts on time.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from testbed.errors import TestbedError


def main(names: list[str]) -> int:
    here = Path(__file__).parent
    available = sorted(
        m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_")
    )
    chosen = [f"bench_{name}" if not name.startswith("bench_") else name for name in names]
    for name in chosen or available:
        if name not in available:
            print(f"bench: no module {name} (have: {', '.join(available)})", file=sys.stderr)
            return 2
        print(f"\n### {name.removeprefix('bench_')}", flush=True)
        try:
            importlib.import_module(f"bench.{name}").run()
        except TestbedError as error:
            print(f"bench: {name}: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
