"""Config validation: every error names the file, the key and what was expected."""

from __future__ import annotations

import pytest

from nixwarden.config import Config, parse_duration, parse_size
from nixwarden.errors import ConfigError

PATH = "/etc/nixwarden/config.toml"


def load(text: str) -> Config:
    return Config.from_toml(text.encode(), PATH)


def test_defaults_are_least_privilege() -> None:
    config = load("[principals.alice]\n")
    alice = config.principal("alice")
    assert alice.protocols == ("ssh-ng",)
    assert alice.write is False
    assert alice.store == "tenant"
    assert alice.network is False
    assert alice.allowed_stores == ()


def test_full_principal() -> None:
    config = load(
        """
[gate]
audit_log = "/var/log/nw/audit.jsonl"
nix_daemon = "/usr/bin/nix-daemon"
[tenants]
root = "/srv/tenants"
[principals.alice]
protocols = ["ssh-ng", "ssh"]
write = true
store = "tenant"
max_sessions = 2
disk_quota = "10G"
session_timeout = "2h"
"""
    )
    alice = config.principal("alice")
    assert alice.protocols == ("ssh-ng", "ssh")
    assert alice.disk_quota == 10 << 30
    assert alice.session_timeout == 7200
    assert config.tenants.root == "/srv/tenants"


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[principals.alice]\nwirte = true\n", "principals.alice.wirte", "unknown key"),
        ("[principals.alice]\nwrite = 'yes'\n", "principals.alice.write", "true or false"),
        ("[principals.alice]\nprotocols = ['ftp']\n", "principals.alice.protocols[0]", '"ssh-ng"'),
        ("[principals.alice]\nprotocols = []\n", "principals.alice.protocols", "at least one"),
        ("[principals.alice]\nstore = 'shared'\n", "principals.alice.store", '"tenant" or "host"'),
        ("[principals.alice]\nmax_sessions = 0\n", "principals.alice.max_sessions", "from 1"),
        ("[principals.alice]\nwrite = true\n", "principals.alice.write", '"ssh" in protocols'),
        (
            "[principals.alice]\nallowed_stores = ['/x']\n",
            "principals.alice.allowed_stores",
            "tenant",
        ),
        (
            "[principals.alice]\nstore = 'host'\nnetwork = true\n",
            "principals.alice.network",
            "tenant",
        ),
        ("[principals.Alice]\n", "principals.Alice", "principal name"),
        ("[gate]\naudit_log = 'relative.log'\n", "gate.audit_log", "absolute path"),
        ("[gate]\nbogus = 1\n", "gate.bogus", "unknown key"),
        ("extra = 1\n", "extra", "unknown key"),
        ("principals = 3\n", "principals", "expected a table"),
        ("[principals.alice]\ndisk_quota = '10 parsecs'\n", "principals.alice.disk_quota", "size"),
    ],
)
def test_bad_config_names_file_key_and_expectation(text: str, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(text)
    message = str(raised.value)
    assert message.startswith(f"{PATH}: {key}: ")
    assert expected in message


def test_not_toml_and_not_utf8() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load("[principals\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        Config.from_toml(b"\xff\xfe", PATH)


def test_unknown_principal() -> None:
    with pytest.raises(ConfigError, match=r"principals\.bob: no such principal"):
        load("[principals.alice]\n").principal("bob")


@pytest.mark.parametrize(
    ("text", "value"), [("4096", 4096), ("512M", 512 << 20), ("10GiB", 10 << 30), ("1T", 1 << 40)]
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("text", "value"), [("90", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400)]
)
def test_parse_duration(text: str, value: int) -> None:
    assert parse_duration(text) == value


def test_trust_table() -> None:
    config = load(
        """
[trust]
ca_keys = ["/etc/nixwarden/ca.pub", "/etc/nixwarden/ca.pub"]
krl = "/etc/nixwarden/revoked.krl"
principals = ["deploy", "deploy:web"]
max_validity = "52w"
clock_skew = "5m"
min_signers = 2
"""
    )
    trust = config.trust
    assert trust.ca_keys == ("/etc/nixwarden/ca.pub",)
    assert trust.krl == ("/etc/nixwarden/revoked.krl",)
    assert trust.principals == ("deploy", "deploy:web")
    assert (trust.max_validity, trust.clock_skew, trust.min_signers) == (52 * 7 * 86400, 300, 2)
    defaults = load("").trust
    assert (defaults.ca_keys, defaults.max_validity, defaults.min_signers) == ((), None, 1)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("ca_key = []", "trust.ca_key", "unknown key"),
        ("ca_keys = ['ca.pub']", "trust.ca_keys", "absolute path"),
        ("krl = [1]", "trust.krl[0]", "expected a string"),
        ("principals = ['']", "trust.principals", "must not be empty"),
        ("max_validity = '0s'", "trust.max_validity", "longer than 0"),
        ("max_validity = '1y'", "trust.max_validity", "52w"),
        ("clock_skew = '2d'", "trust.clock_skew", "at most 86400"),
        ("min_signers = 0", "trust.min_signers", "from 1 to 64"),
        ("min_signers = '2'", "trust.min_signers", "an integer"),
    ],
)
def test_trust_table_errors(text: str, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(f"[trust]\n{text}\n")
    assert error.value.key == key
    assert expected in str(error.value)
