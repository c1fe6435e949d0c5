"""bin/nixwarden started lean (`python3 -IS`), and what a cached `confine run` imports.

The launcher puts the virtual environment's packages on sys.path itself, since `-S`
skips `site`; the modules a cached `confine run` goes through import neither `os` nor
anything else that costs more than the run's own work (see confine.plans).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "bin" / "nixwarden"
SRC = REPO / "src"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def _venv_python() -> str:
    # sys.executable is the venv's interpreter (its pyvenv.cfg one directory up).
    assert (Path(sys.executable).parent.parent / "pyvenv.cfg").is_file()
    return sys.executable


def test_the_launcher_without_site_finds_nixwarden_and_its_dependencies(tmp_path: Path) -> None:
    # `key generate` needs cryptography, from the venv's site-packages; nixwarden
    # itself comes from there or from an editable install's .pth file.
    secret = tmp_path / "k.sec"
    files = ["--secret", str(secret), "--public", str(tmp_path / "k.pub")]
    result = subprocess.run(
        [_venv_python(), "-IS", str(LAUNCHER), "key", "generate", "--name", "t-1", *files],
        env=ENV,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert secret.read_text().startswith("t-1:")


def test_the_launcher_without_site_runs_no_pth_code() -> None:
    """What `site` would execute from a .pth file (`import …` lines) is not run: the
    launcher's set-up (all before its import of nixwarden.cli) leaves out `site` and
    setuptools' distutils-precedence.pth hook, yet nixwarden and cryptography import."""
    setup = LAUNCHER.read_text().split("from nixwarden.cli import main")[0]
    probe = (
        f"{setup}\nimport nixwarden.cli, cryptography\n"
        "print('_distutils_hack' in sys.modules, 'site' in sys.modules)"
    )
    result = subprocess.run(
        [_venv_python(), "-IS", "-c", probe], env=ENV, capture_output=True, text=True, check=False
    )
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_the_launcher_started_with_site_works_as_before() -> None:
    result = subprocess.run(
        [_venv_python(), "-I", str(LAUNCHER), "--version"],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("nixwarden ")


CACHED_PATH = """
import sys
sys.path.append(sys.argv[1])
import nixwarden.cli, nixwarden.confine.cli, nixwarden.confine.plans, nixwarden.confine.launch
import nixwarden.process, nixwarden.nix.probes
print(" ".join(sorted(m for m in ("os", "posixpath", "typing", "re", "argparse", "json",
    "dataclasses", "subprocess", "signal", "enum", "threading") if m in sys.modules)))
"""


def test_a_cached_confine_run_imports_neither_os_nor_heavier_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-IS", "-c", CACHED_PATH, str(SRC)],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []
