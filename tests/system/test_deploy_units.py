"""contrib/systemd's receive units: loaded by the real `systemd-analyze verify`, and in
agreement with the `[receive]` defaults they run with.

systemd is not PID 1 here; `systemd-analyze verify --man=no FILE…` still loads the
units offline and prints a line naming the file for each directive it does not
understand or cannot parse (its exit status stays 0 for those, hence the assertions
on its output and the control case that proves the file was read).
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import pytest

from nixwarden.config import ReceiveSettings
from testbed import harness

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
SOCKET = "nixwarden-receive.socket"
SERVICE = "nixwarden-receive.service"
INSTALLED_PROGRAM = "/usr/bin/nixwarden"


def install(directory: Path, extra: str = "") -> list[Path]:
    """The units as an installer puts them, with nixwarden where this machine has it."""
    paths = []
    for name in (SOCKET, SERVICE):
        text = (UNITS / name).read_text()
        if name == SERVICE:
            text = text.replace(f"{INSTALLED_PROGRAM} ", f"{harness.NIXWARDEN} ") + extra
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


def verify(paths: list[Path]) -> str:
    analyze = harness.which("systemd-analyze")
    harness.need(analyze is not None, "systemd-analyze")
    assert analyze is not None
    result = harness.run(
        [analyze, "verify", "--man=no", *map(str, paths)],
        env=harness.base_env(SYSTEMD_LOG_LEVEL="info"),
        check=False,
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    return output


def test_systemd_analyze_verify_accepts_the_units(system: None) -> None:
    directory = harness.world_dir("nwt-units")
    try:
        output = verify(install(directory))
        assert SOCKET not in output and SERVICE not in output, output
        control = verify(install(directory, "NotADirective=1\n"))
        assert f"{SERVICE}:" in control and "NotADirective" in control
    finally:
        for entry in directory.iterdir():
            entry.unlink()
        os.rmdir(directory)


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


@pytest.mark.parametrize("name", [SOCKET, SERVICE])
def test_the_units_agree_with_the_receive_defaults(name: str) -> None:
    defaults = ReceiveSettings()
    if name == SOCKET:
        assert unit(SOCKET)["Socket"]["ListenStream"] == defaults.socket
        return
    service = unit(SERVICE)["Service"]
    assert service["User"] == defaults.user
    state = "/var/lib/" + service["StateDirectory"]
    for path in (defaults.signing_key, defaults.staging_dir, defaults.provenance):
        assert path.startswith(state + "/"), (path, state)
    assert service["ReadWritePaths"].removeprefix("-") == defaults.profiles_dir
    assert service["ExecStart"].split()[1:3] == ["receive-daemon", "--config"]
    assert service["SupplementaryGroups"] == harness.NIX_USERS_GROUP
