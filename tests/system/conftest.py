"""Fixtures for the system tests: see testbed/harness.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import harness
from testbed.gate_setup import ClientStore, GatedBuilder, client_store, gated_builder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/system/" in str(item.fspath):
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session")
def system() -> None:
    harness.require_system()


@pytest.fixture(scope="session")
def nix_daemon(system: None) -> harness.NixDaemon:
    return harness.ensure_nix_daemon()


@pytest.fixture(scope="session")
def sshd(system: None) -> Iterator[harness.Sshd]:
    with harness.started_sshd() as server:
        yield server


@pytest.fixture
def users(system: None) -> Iterator[harness.Users]:
    made = harness.Users()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def builder(
    sshd: harness.Sshd, users: harness.Users, nix_daemon: harness.NixDaemon
) -> Iterator[GatedBuilder]:
    with gated_builder(sshd, users) as made:
        yield made


@pytest.fixture
def client(sshd: harness.Sshd) -> Iterator[ClientStore]:
    with client_store(sshd) as made:
        yield made


@pytest.fixture
def tenants_root() -> Iterator[Path]:
    """A tenants root as `nixwarden tenant create` makes it: root's, mode 0711."""
    root = harness.world_dir("nwt-tenants")
    root.chmod(0o711)
    try:
        yield root
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(root)], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def tenant_builder(builder: GatedBuilder, tenants_root: Path) -> GatedBuilder:
    builder.tenants["root"] = str(tenants_root)
    builder.write_config()
    return builder
