"""The lean launcher (`python3 -IS`, `site`'s paths written in), and what a cached
`confine run` imports.

The launcher written by nixwarden.launcher puts the virtual environment's packages on
sys.path without `site`; the modules a cached `confine run` goes through import neither
`os` nor anything else that costs more than the run's own work (see confine.plans).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from nixwarden import cli, launcher

REPO = Path(__file__).resolve().parents[2]
PIP_LAUNCHER = REPO / "bin" / "nixwarden"
SRC = REPO / "src"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def _venv_python() -> str:
    # sys.executable is the venv's interpreter (its pyvenv.cfg one directory up).
    assert (Path(sys.executable).parent.parent / "pyvenv.cfg").is_file()
    return sys.executable


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("launcher") / "nixwarden"
    launcher.write(str(target), _venv_python())
    return target


def test_the_lean_launcher_starts_isolated_without_site(lean: Path) -> None:
    lines = lean.read_text().splitlines()
    assert lines[0] == f"#!{_venv_python()} -IS"
    assert lines[1].startswith(launcher.MARKER)  # what bootstrap.sh --check looks for
    assert lean.stat().st_mode & 0o777 == 0o755


def test_the_lean_launcher_finds_nixwarden_and_its_dependencies(lean: Path, tmp_path: Path) -> None:
    # `key generate` needs cryptography, from the venv's site-packages; nixwarden
    # itself comes from there or from an editable install's .pth file.
    secret = tmp_path / "k.sec"
    files = ["--secret", str(secret), "--public", str(tmp_path / "k.pub")]
    result = subprocess.run(
        [str(lean), "key", "generate", "--name", "t-1", *files],
        env=ENV,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert secret.read_text().startswith("t-1:")


def test_the_lean_launcher_runs_no_pth_code(lean: Path) -> None:
    """What `site` would execute from a .pth file (`import …` lines) is not run: the
    launcher's set-up (all before its import of nixwarden.cli) leaves out `site` and
    setuptools' distutils-precedence.pth hook, yet nixwarden and cryptography import."""
    setup = lean.read_text().split("from nixwarden.cli import main")[0]
    probe = (
        f"{setup}\nimport nixwarden.cli, cryptography\n"
        "print('_distutils_hack' in sys.modules, 'site' in sys.modules)"
    )
    result = subprocess.run(
        [_venv_python(), "-IS", "-c", probe], env=ENV, capture_output=True, text=True, check=False
    )
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_the_lean_launcher_has_what_site_adds_and_nothing_else() -> None:
    prefix, paths = launcher.site_paths(_venv_python())
    assert prefix == sys.prefix
    assert [entry for entry in sys.path if entry in paths] == paths  # site's own order
    assert not any(entry.startswith(sys.base_prefix + "/lib/python") for entry in paths)


def test_launcher_text_writes_paths_as_python_literals() -> None:
    odd = ["/opt/it's here/site-packages", '/src/"quoted"\\dir']
    lines = launcher.text("/opt/nw/bin/python3", "/opt/nw", odd).splitlines()
    assert lines[0] == "#!/opt/nw/bin/python3 -IS"
    assert ast.literal_eval(lines[5].removeprefix("sys.path += ")) == odd
    assert ast.literal_eval(lines[4].removeprefix("sys.prefix = sys.exec_prefix = ")) == "/opt/nw"


def test_the_launcher_pip_installs_works_with_site() -> None:
    result = subprocess.run(
        [_venv_python(), "-I", str(PIP_LAUNCHER), "--version"],
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
import nixwarden.cli, nixwarden.confine.plans, nixwarden.confine.launch
import nixwarden.process, nixwarden.probes
print(" ".join(sorted(m for m in ("os", "posixpath", "typing", "re", "argparse", "json",
    "dataclasses", "subprocess", "signal", "enum", "threading", "__future__",
    "nixwarden.errors", "nixwarden.confine.cli", "nixwarden.nix") if m in sys.modules)))
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


def test_confine_run_is_served_by_the_plans_module_first() -> None:
    assert cli.SUBCOMMANDS[("confine", "run")] == "nixwarden.confine.plans"
