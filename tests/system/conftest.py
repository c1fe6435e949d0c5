"""Fixtures for the system tests: see testbed/harness.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from testbed import harness
from testbed.deploy_setup import CertifiedKey, CountersignDaemon, TeamCa, countersign_daemon
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


# --- deploy targets (tests/system/test_deploy_*.py) --------------------------------------


@pytest.fixture(scope="session")
def countersign(system: None) -> Iterator[CountersignDaemon]:
    """A nix-daemon of the tests' own on the host store, trusting a fresh countersigning
    key (see testbed/deploy_setup.py): the shared daemon's settings stay untouched."""
    with countersign_daemon() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def team_ca(system: None) -> Iterator[TeamCa]:
    directory = harness.world_dir("nwt-deploy-ca")
    ca = TeamCa(directory / "ca")
    ca.create()
    try:
        yield ca
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def alice_key(team_ca: TeamCa) -> CertifiedKey:
    return team_ca.certify("alice")


@pytest.fixture(scope="module")
def module_users(system: None) -> Iterator[harness.Users]:
    made = harness.Users()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(scope="module")
def module_client(sshd: harness.Sshd) -> Iterator[ClientStore]:
    with client_store(sshd) as made:
        yield made
