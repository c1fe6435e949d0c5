"""Config validation: every error is one line naming the file, the key and what was expected.

Hostile configs live in tests/corpus/gate/config_*.toml (made by
tests/corpus/make_gate_corpus.py), each with its reason in CONFIG_REASONS.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.cli import main
from nixwarden.config import (
    MAX_CONFIG_BYTES,
    MAX_NESTING,
    Config,
    document_problem,
    parse_duration,
    parse_size,
)
from nixwarden.config import load as load_config
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
        ("max_validity = '1y'", "trust.max_validity", "expected a duration"),
        ("max_validity = 2147483648", "trust.max_validity", "at most 2147483647"),
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


def test_parse_size_and_duration_take_ascii_digits_only() -> None:
    for text in ("\u0661\u0660", "\uff11\uff10", "1\u00a0G", " 10G", "10G ", "+10", "-1", "1_0"):
        with pytest.raises(ValueError, match="expected a size"):
            parse_size(text)
    for text in ("\u0661\u0662\u0660", "\uff13\uff10m", "30\u3000m", " 30m", "1.5h", "-5"):
        with pytest.raises(ValueError, match="expected a duration"):
            parse_duration(text)


# --- the corpus: hostile configs, each refused for its reason -----------------------------

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "gate"
CONFIG_REASONS = {
    "config_allowed_store_escape": r"principals.alice.allowed_stores[0]: must not contain control",
    "config_choice_next_line": r"principals.alice.store: must not contain control",
    "config_deep_array": "line 1: arrays and inline tables nest deeper than 16",
    "config_deep_array_after_strings": "line 2: arrays and inline tables nest deeper than 16",
    "config_deep_inline_table": "line 1: arrays and inline tables nest deeper than 16",
    "config_duration_arabic_digits": "expected a duration such as 90, 30m",
    "config_duration_digits_overflow": "expected a duration such as 90, 30m",
    "config_duration_fullwidth_digits": "expected a duration such as 90, 30m",
    "config_duration_ideographic_space": r"got '30\u3000m'",
    "config_duration_too_long": "session_timeout: at most 31622400, got '400d'",
    "config_integer_5000_digits": "not a usable TOML value: 'Exceeds the limit",
    "config_long_dotted_key": "line 1: more than 32 dots outside strings",
    "config_path_bidi_override": r"tenants.root: must not contain control or invisible "
    r"characters (found \u202e)",
    "config_path_newline": r"gate.audit_log: must not contain control or invisible "
    r"characters (found \x0a)",
    "config_principal_name_bidi": r"principals.alice\u202e: a principal name is",
    "config_principal_name_newline": r"principals.alice\x0abob: a principal name is",
    "config_size_devanagari_digits": "expected a size such as 4096, 512M or 10G",
    "config_size_too_large": "disk_quota: at most 1152921504606846976",
    "config_substituter_empty": "substituters[0]: expected one word without spaces or '#'",
    "config_substituter_hash": "substituters[0]: expected one word without spaces or '#'",
    "config_substituter_newline": r"substituters[0]: must not contain control or invisible "
    r"characters (found \x0a)",
    "config_substituter_two_words": "substituters[0]: expected one word without spaces or '#'",
    "config_too_many_list_items": "allowed_stores: more than 256 items",
    "config_trusted_key_nbsp": r"trusted_public_keys[0]: must not contain control or invisible "
    r"characters (found \u00a0)",
    "config_trusted_key_newline": r"trusted_public_keys[0]: must not contain control",
    "config_unknown_key_with_newline": r"gate.audit\x0alog: unknown key",
}
CONFIG_FILES = {path.stem: path for path in sorted(CORPUS.glob("config_*.toml"))}


def test_every_config_case_has_a_reason_and_vice_versa() -> None:
    assert set(CONFIG_FILES) == set(CONFIG_REASONS)


def _one_line_refusal(data: bytes) -> str:
    with pytest.raises(ConfigError) as refused:
        Config.from_toml(data, PATH)
    message = str(refused.value)
    assert message.startswith(f"{PATH}: ")
    assert message.isprintable(), message  # one line: no newline, nothing invisible
    assert len(message) < 400  # a bad value is quoted back cut short
    return message


@pytest.mark.parametrize("name", sorted(CONFIG_REASONS))
def test_config_corpus_is_refused_with_its_reason(name: str) -> None:
    assert CONFIG_REASONS[name] in _one_line_refusal(CONFIG_FILES[name].read_bytes())


def test_oversized_config_is_refused_before_parsing() -> None:
    data = b"# " + b"x" * MAX_CONFIG_BYTES + b"\n"
    assert "larger than 1048576 bytes" in _one_line_refusal(data)


def test_load_refuses_a_fifo_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(str(fifo))


def test_load_reads_at_most_the_bound(tmp_path: Path) -> None:
    big = tmp_path / "config.toml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 10))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(str(big))


def test_brackets_and_dots_inside_strings_and_comments_do_not_count() -> None:
    deep = "[[[[[[[[[[[[[[[[[[[[[[[[..................................."
    config = load(
        f"# {deep}\n[principals.alice]\nstore = 'host'\n"
        f'allowed_stores = ["{deep}", \'{deep}\', """{deep}""", \'\'\'{deep}\'\'\', "\\"{deep}"]\n'
        f'protocols = ["ssh-ng"] # {deep}\n'
    )
    assert config.principal("alice").allowed_stores == (deep, deep, deep, deep, '"' + deep)


def test_nix_conf_words_are_kept() -> None:
    alice = load(
        "[principals.alice]\nsubstituters = ['https://cache.nixos.org', 'file:///srv/c?a=b']\n"
        "trusted_public_keys = ['cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=']\n"
    ).principal("alice")
    assert alice.substituters == ("https://cache.nixos.org", "file:///srv/c?a=b")
    assert len(alice.trusted_public_keys) == 1


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=256))
def test_any_bytes_give_a_config_or_a_one_line_config_error(data: bytes) -> None:
    try:
        Config.from_toml(data, PATH)
    except ConfigError as error:
        assert str(error).isprintable()


# Pieces of TOML that reach every state of the pre-scan and of the validation.
TOML_PIECES = st.sampled_from(
    [
        "[", "]", "{", "}", "[principals.alice]", "[gate]", "[principals.\"a\\nb\"]", "\n",
        " = ", "=", ",", ".", "#", '"', "'", '"""', "'''", "\\", "x", "1", "true", "store",
        "substituters", "audit_log", "session_timeout", '"host"', '"/a b"', '"\\u202e"',
        '"\\n"', "\u0661", "\x00", "\x1b", "\u2028", "9" * 30, '"1d"',
    ]
)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.lists(TOML_PIECES, max_size=40).map("".join))
def test_toml_like_text_gives_a_config_or_a_one_line_config_error(text: str) -> None:
    try:
        config = Config.from_toml(text.encode("utf-8", "surrogatepass"), PATH)
    except ConfigError as error:
        assert str(error).isprintable()
        return
    for principal in config.principals.values():
        for word in (*principal.substituters, *principal.trusted_public_keys):
            assert word and not any(char.isspace() or char == "#" for char in word)


STRING_SETTINGS = [
    ("gate", "audit_log"), ("gate", "state_dir"), ("gate", "nix_daemon"), ("tenants", "root"),
    ("principals.alice", "store"), ("principals.alice", "session_timeout"),
    ("principals.alice", "disk_quota"),
]  # fmt: skip
LIST_SETTINGS = ["substituters", "trusted_public_keys", "protocols"]


def _toml_string(text: str) -> str:
    return '"' + "".join(f"\\U{ord(char):08x}" for char in text) + '"'


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(STRING_SETTINGS), st.text(max_size=20))
def test_any_string_setting_is_printable_or_refused(setting: tuple[str, str], value: str) -> None:
    table, key = setting
    text = f"[{table}]\n{key} = {_toml_string(value)}\n"
    try:
        Config.from_toml(text.encode("utf-8", "surrogatepass"), PATH)
    except ConfigError as error:
        assert str(error).isprintable()
        return
    assert value.isprintable()
    if key in ("session_timeout", "disk_quota"):
        assert value.isascii()


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(LIST_SETTINGS), st.lists(st.text(max_size=12), max_size=4))
def test_any_list_item_is_one_printable_word_or_refused(key: str, items: list[str]) -> None:
    text = f"[principals.alice]\n{key} = [{', '.join(_toml_string(item) for item in items)}]\n"
    try:
        config = Config.from_toml(text.encode("utf-8", "surrogatepass"), PATH)
    except ConfigError as error:
        assert str(error).isprintable()
        return
    for item in getattr(config.principal("alice"), key):
        assert item and item.isprintable() and not any(char.isspace() for char in item)


# Array items that hide brackets, braces and quotes from a careless scanner.
HIDING_ITEMS = [
    '"]"', '"[[["', "']]'", "'{{'", '"""\n]]"""', "'''}\n'''", '"\\"]"', '""""]"""', "1",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=400), st.lists(st.sampled_from(HIDING_ITEMS)))
def test_nesting_is_bounded_before_tomllib_whatever_hides_in_strings(
    depth: int, items: list[str]
) -> None:
    """The pre-scan counts exactly tomllib's nesting: strings and comments hide nothing,
    so a deep document is refused in one line and a shallow one parses."""
    inner = "".join(f"{item}, # ]]}}\n" for item in items)
    text = "x = " + "[" * depth + inner + "]" * depth + "\n"
    if depth > MAX_NESTING:
        assert "line 1: arrays and inline tables nest deeper" in _one_line_refusal(text.encode())
    else:
        assert document_problem(text) is None
        tomllib.loads(text)


@pytest.mark.parametrize("case", ["config_deep_array", "config_deep_inline_table"])
@pytest.mark.parametrize(
    "command",
    [
        ["gate", "--compile", "--config", "{config}"],
        ["gate", "--check", "--principal", "alice", "--command", "x", "--config", "{config}"],
        ["tenant", "list", "--config", "{config}"],
    ],
    ids=["gate-compile", "gate-check", "tenant-list"],
)
def test_every_command_that_reads_the_config_fails_in_one_line(
    case: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Once a RecursionError ("internal error", exit 1); now bad input, exit 2, one line."""
    config = str(CONFIG_FILES[case])
    assert main([word.replace("{config}", config) for word in command]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"nixwarden: error: {config}: line 1: arrays and inline tables nest deeper than 16\n"
    )


def test_audit_reports_a_deep_config_as_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "etc" / "nixwarden").mkdir(parents=True)
    (tmp_path / "etc" / "nixwarden" / "config.toml").write_bytes(
        CONFIG_FILES["config_deep_inline_table"].read_bytes()
    )
    main(["audit", "--root", str(tmp_path), "--format", "json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    (invalid,) = [f for f in findings if f["rule"] == "nixwarden-config-invalid"]
    assert "nest deeper than 16" in json.dumps(invalid)


def test_deploy_principal() -> None:
    config = load(
        """
[principals.alice]
role = "deploy"
user = "deploy"
profiles = ["web", "db", "web"]
max_sessions = 2
[principals.builder]
"""
    )
    alice = config.principal("alice")
    assert (alice.role, alice.user, alice.profiles, alice.max_sessions) == (
        "deploy",
        "deploy",
        ("web", "db"),
        2,
    )
    builder = config.principal("builder")
    assert (builder.role, builder.user, builder.profiles) == ("build", None, ())


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('role = "admin"', "principals.a.role", 'expected "build" or "deploy"'),
        ('role = "deploy"', "principals.a.user", "needs the unix user"),
        ('role = "deploy"\nuser = "Deploy"', "principals.a.user", "is not a unix user name"),
        ('role = "deploy"\nuser = "d"\nprotocols = ["ssh"]', "principals.a.protocols", "deploy"),
        ('role = "deploy"\nuser = "d"\nwrite = true', "principals.a.write", "deploy"),
        ('role = "deploy"\nuser = "d"\nstore = "host"', "principals.a.store", "deploy"),
        ('role = "deploy"\nuser = "d"\nnetwork = true', "principals.a.network", "deploy"),
        ('role = "deploy"\nuser = "d"\nprofiles = ["../x"]', "principals.a.profiles[0]", "1-64"),
        ('role = "deploy"\nuser = "d"\nprofiles = [".web"]', "principals.a.profiles[0]", "1-64"),
        ('user = "d"', "principals.a.user", 'only applies to role = "deploy"'),
        ('profiles = ["web"]', "principals.a.profiles", 'only applies to role = "deploy"'),
    ],
)
def test_deploy_principal_errors(text: str, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(f"[principals.a]\n{text}\n")
    assert error.value.key == key
    assert expected in str(error.value)
