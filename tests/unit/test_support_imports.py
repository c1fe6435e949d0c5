"""demo/, bench/ and testbed/ run without pytest installed and never import tests/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# In a fresh interpreter, pytest and tests/ cannot be imported (a None in sys.modules
# makes `import` raise); then every module of the three packages is imported.
IMPORT_ALL = """
import importlib, pkgutil, sys
sys.modules["pytest"] = None
sys.modules["_pytest"] = None
sys.modules["tests"] = None
for package in ("testbed", "demo", "bench"):
    root = importlib.import_module(package)
    for module in pkgutil.iter_modules(root.__path__):
        importlib.import_module(f"{package}.{module.name}")
        print(f"{package}.{module.name}")
"""


def test_demo_bench_and_testbed_import_without_pytest_or_tests() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    assert {"demo.__main__", "bench.__main__", "testbed.harness"} <= imported
