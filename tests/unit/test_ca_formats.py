"""Certificates, CA keys and validity specs, without OpenSSH (tests/system has it)."""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from nixwarden.ca import cert, sshkey
from nixwarden.ca.validity import (
    FOREVER,
    format_interval,
    format_time,
    parse_instant,
    parse_interval,
    parse_validity,
)
from nixwarden.errors import FormatError, InvalidInput
from nixwarden.trust.keys import SecretKey

NOW = calendar.timegm((2026, 6, 1, 12, 0, 30))


def utc(*fields: int) -> int:
    return calendar.timegm((*fields, *[0] * (6 - len(fields))))


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A time zone with daylight-saving time, to see how times without Z are read."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


# --- validity (ssh-keygen -V) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("8h", 8 * 3600),
        ("1h30m", 5400),
        ("52w1d", 52 * 7 * 86400 + 86400),
        ("2W", 14 * 86400),
        ("2147483647", 2**31 - 1),
    ],
)
def test_intervals_as_sshd_reads_them(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "h", "1y", "-5", " 5", "5 h", "1h-", "2147483648", "99999w", "\u0661h", "\uff18h"]
)
def test_bad_intervals(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_interval(text)


def test_relative_validity_is_backdated_to_the_minute_like_ssh_keygen() -> None:
    validity = parse_validity("+8h", NOW)
    assert validity.valid_after == ((NOW - 59) // 60) * 60 == utc(2026, 6, 1, 11, 59)
    assert validity.valid_before == NOW + 8 * 3600


@pytest.mark.parametrize(
    ("spec", "after", "before"),
    [
        ("-1d:+52w", NOW - 86400, NOW + 52 * 7 * 86400),
        ("+1d:+2d", NOW + 86400, NOW + 2 * 86400),
        ("always:forever", 0, FOREVER),
        ("20261201Z:20261231Z", utc(2026, 12, 1), utc(2026, 12, 31)),
        ("202612011230UTC:20261201123045Z", utc(2026, 12, 1, 12, 30), utc(2026, 12, 1, 12, 30, 45)),
        ("0x10:0xffffffffffffffff", 16, FOREVER),
        ("always:+1h", 0, NOW + 3600),
    ],
)
def test_validity_specs(spec: str, after: int, before: int) -> None:
    validity = parse_validity(spec, NOW)
    assert (validity.valid_after, validity.valid_before) == (after, before)


def test_times_without_z_are_in_the_system_zone_as_standard_time(local_zone: None) -> None:
    # ssh-keygen zeroes its struct tm, so mktime reads the time with tm_isdst = 0: in
    # Paris that is UTC+1 even in July.
    assert parse_validity("20260101:20260701", NOW).valid_after == utc(2025, 12, 31, 23)
    assert parse_validity("20260101:20260701", NOW).valid_before == utc(2026, 6, 30, 23)
    assert parse_validity("20260101Z:20260701Z", NOW).valid_after == utc(2026, 1, 1)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "8h",  # a lone time must be relative, with +
        "-1d",
        "20261201123000",  # ssh-keygen refuses a lone absolute time too
        ":+1h",
        "+1h:",
        "forever:always",
        "always:always",
        "+2d:+1d",
        "20261301:20261401",
        "20260230:20260301",
        "2026120:20261231",
        "20261201X:20261231",
        "0x:forever",
        "0x1ffffffffffffffff:forever",
        "-99999999999w:forever",
        "\u0662\u0660\u0662\u0666\u0661\u0662\u0660\u0661Z:forever",  # Arabic-Indic digits
    ],
)
def test_bad_validity_specs(spec: str) -> None:
    with pytest.raises(InvalidInput):
        parse_validity(spec, NOW)


def test_instants_for_at() -> None:
    assert parse_instant("now", NOW) == NOW
    assert parse_instant("2026-11-20T10:00Z", NOW) == utc(2026, 11, 20, 10)
    assert parse_instant("2026-11-20T10:00", NOW) == utc(2026, 11, 20, 10)
    assert parse_instant("2026-11-20T12:00+02:00", NOW) == utc(2026, 11, 20, 10)
    assert parse_instant("20261120Z", NOW) == utc(2026, 11, 20)
    assert parse_instant("+1w", NOW) == NOW + 7 * 86400
    assert parse_instant("-1d", NOW) == NOW - 86400
    for bad in ("yesterday", "2026-13-01", "+", "", "always", "forever"):
        with pytest.raises(InvalidInput):
            parse_instant(bad, NOW)


def test_times_and_intervals_are_shown_in_utc() -> None:
    assert format_time(utc(2026, 11, 20, 10)) == "2026-11-20T10:00Z"
    assert format_time(utc(2026, 11, 20, 10, 0, 5)) == "2026-11-20T10:00:05Z"
    assert (format_time(0), format_time(FOREVER)) == ("always", "forever")
    assert format_time(2**62) == f"@{2**62}"
    assert format_interval(52 * 7 * 86400 + 86400 + 30) == "52w1d30s"
    assert format_interval(0) == "0s"


# --- keys ------------------------------------------------------------------------------


def test_ca_secret_round_trips_through_cryptography_with_its_comment() -> None:
    private = sshkey.generate_ca()
    data = sshkey.render_secret(private, "team CA")
    assert data.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert all(len(line) <= 70 for line in data.splitlines())
    loaded = sshkey.load_secret(data, "ca")
    assert loaded.private_bytes_raw() == private.private_bytes_raw()
    assert load_ssh_private_key(data, None) is not None
    assert sshkey.public_of(private, "team CA").render().endswith(" team CA")


def test_ca_secret_refusals() -> None:
    with pytest.raises(FormatError, match="not an OpenSSH private key"):
        sshkey.load_secret(b"garbage", "ca")
    with pytest.raises(InvalidInput, match="comment"):
        sshkey.render_secret(sshkey.generate_ca(), "two\nlines")


def test_public_key_files() -> None:
    key = sshkey.public_of(sshkey.generate_ca(), "a comment")
    text = f"# CA keys\n\n{key.render()}\n".encode()
    assert sshkey.parse_public_keys(text, "f") == (key,)
    assert key.fingerprint.startswith("SHA256:") and "=" not in key.fingerprint
    for bad, reason in (
        (b"", "no ssh-ed25519 public key"),
        (b"ssh-rsa AAAA x\n", "'ssh-rsa' is not accepted"),
        (b"ssh-ed25519 !!!\n", "not base64"),
        (b"ssh-ed25519\n", "expected"),
        (b"\xff\n", "not ASCII"),
        (b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAAQA=\n", "1 bytes, expected 32"),
    ):
        with pytest.raises(FormatError, match=reason):
            sshkey.parse_public_keys(bad, "f")


# --- certificates ----------------------------------------------------------------------


def _issue(**overrides: object) -> tuple[cert.Certificate, SecretKey]:
    ca = overrides.pop("ca", None) or sshkey.generate_ca()
    nix = SecretKey.generate("alice-1")
    fields: dict[str, object] = {
        "key": nix.public().key,
        "key_id": nix.name,
        "serial": 42,
        "principals": ["deploy", "build"],
        "valid_after": utc(2026, 1, 1),
        "valid_before": utc(2027, 1, 1),
    }
    fields.update(overrides)
    return cert.issue(ca, **fields), nix  # type: ignore[arg-type]


def test_issued_certificates_read_back_identically() -> None:
    ca = sshkey.generate_ca()
    options = [cert.Option.of("force-command", "ls"), cert.Option.of("x@y", None)]
    issued, nix = _issue(ca=ca, critical_options=options)
    assert issued.key == nix.public().key
    assert (issued.serial, issued.key_id, issued.principals) == (42, "alice-1", ("deploy", "build"))
    assert (issued.valid_after, issued.valid_before) == (utc(2026, 1, 1), utc(2027, 1, 1))
    assert issued.ca_key == sshkey.public_of(ca).key
    assert issued.ca_fingerprint == sshkey.public_of(ca).fingerprint
    assert [o.describe() for o in issued.critical_options] == ["force-command 'ls'", "x@y"]
    assert issued.extensions == ()
    again = cert.Certificate.parse((issued.render() + "\n").encode())
    assert again == issued
    assert issued.render().split()[2] == "alice-1"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"serial": 0}, "0 means no serial"),
        ({"serial": 2**64}, "out of range"),
        ({"principals": []}, "at least one principal"),
        ({"principals": ["a b\n"]}, "invalid principal"),
        ({"principals": ["a,b"]}, "invalid principal"),
        ({"principals": [f"p{i}" for i in range(257)]}, "more than 256"),
        ({"valid_after": 5, "valid_before": 5}, "validity window"),
        (
            {"critical_options": [cert.Option.of("a", "1"), cert.Option.of("a", "2")]},
            "given twice",
        ),
    ],
)
def test_issue_refusals(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        _issue(**overrides)


def test_certificate_files_hold_lines() -> None:
    first, _ = _issue()
    second, _ = _issue(serial=43)
    data = f"# two\n{first.render()}\n\n{second.render()}\n".encode()
    assert cert.parse_certificates(data, "f") == (first, second)
    with pytest.raises(FormatError, match="holds 2 certificates"):
        cert.Certificate.parse(data)
    with pytest.raises(FormatError, match=r"line 5: .*not base64"):
        cert.parse_certificates(data + f"{cert.CERT_TYPE} !!\n".encode(), "f")
    with pytest.raises(FormatError, match="not ASCII"):
        cert.parse_certificates(b"\xff", "f")
    with pytest.raises(FormatError, match="longer than"):
        cert.parse_certificates(b"x" * (cert.MAX_CERT_LINE + 1), "f")


def test_option_values() -> None:
    assert cert.Option("flag", b"").value == ""
    assert cert.Option.of("force-command", "ls -l").value == "ls -l"
    odd = cert.Option("two", b"\0\0\0\x01a\0\0\0\x01b")
    assert odd.value is None
    assert odd.describe() == f"two (data {odd.data.hex()})"
    assert cert.Option("esc", b"\0\0\0\x02\x1b[").describe() == "esc '\\x1b['"


def test_oversized_blob_is_refused_before_parsing() -> None:
    with pytest.raises(FormatError, match="more than"):
        cert.Certificate.from_blob(os.urandom(cert.MAX_BLOB + 1))
