"""The bootstrap's check against this machine, and the tool → package map against dpkg."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest

from testbed import harness, requirements

BOOTSTRAP = harness.BOOTSTRAP


def test_the_bootstrap_check_passes_here() -> None:
    result = harness.run([str(BOOTSTRAP), "--check"], check=False)
    assert result.returncode == 0, result.stderr.decode()


def test_the_bootstrap_check_names_each_missing_piece(tmp_path: Path) -> None:
    # A copy of the bootstrap whose manifest states what this machine lacks.
    (tmp_path / "scripts").mkdir()
    copy = tmp_path / "scripts" / "bootstrap.sh"
    stated = (
        "    # group: nwt-no-such-group\n"
        "    # user: nwtnouser1 … nwtnouser2\n"
        "    # directory: /proc 0755 nobody:nogroup\n"
        "    # directory: /nonexistent-nwt 0755\n"
        "    # daemon: nwt-no-such-daemon\n"
    )
    copy.write_text(BOOTSTRAP.read_text().replace("    # group: nix-users", stated, 1))
    copy.chmod(0o755)
    shutil.copy(BOOTSTRAP.parents[1] / "requirements.lock", tmp_path / "requirements.lock")
    result = harness.run([str(copy), "--check"], check=False)
    assert result.returncode == 1
    report = result.stderr.decode()
    for missing in (
        "group nwt-no-such-group does not exist",
        "user nwtnouser1 does not exist",
        "user nwtnouser2 does not exist",
        "directory /proc is owned by root:root, not nobody:nogroup",
        "directory /nonexistent-nwt does not exist",
        "daemon nwt-no-such-daemon is not installed",
        ".venv is not installed from requirements.lock",
    ):
        assert missing in report
    assert "group nix-users" not in report  # what exists is not reported


@functools.cache
def owners() -> dict[str, set[str]]:
    """Each tool's Debian packages: those that ship a `…bin/<tool>` (one dpkg query;
    dpkg knows /bin/x, not the /usr/bin/x of the /usr merge, hence the pattern)."""
    patterns = [f"*bin/{tool}" for tool in requirements.TOOLS]
    result = harness.run(["dpkg-query", "-S", *patterns], check=False)
    found: dict[str, set[str]] = {tool: set() for tool in requirements.TOOLS}
    for line in result.stdout.decode().splitlines():
        names, _, path = line.partition(": ")
        tool = path.rsplit("/", 1)[-1]
        if tool in found and not line.startswith("diversion "):
            found[tool] |= {name.strip() for name in names.split(",")}
    return found


@pytest.mark.parametrize("tool", sorted(requirements.TOOLS))
def test_each_tool_ships_in_its_declared_package(tool: str) -> None:
    harness.need(harness.which("dpkg-query") is not None, "dpkg-query (Debian)")
    assert harness.which(tool) is not None, f"{tool} is not installed"
    package = requirements.TOOLS[tool]
    assert package in owners()[tool], f"{tool} is not shipped by {package}: {owners()[tool]}"
