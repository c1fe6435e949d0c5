"""Escaping untrusted text before a person reads it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nixwarden.display import escape, escape_bytes

# Each attack: text that would mislead a reader if printed verbatim.
ATTACKS = {
    "newline_forges_line": "a\nb",
    "carriage_return_overwrites": "good\rbad",
    "c1_next_line": "a\x85b",
    "c1_csi": "a\x9b31mred",
    "ansi_escape": "\x1b[2Jclear",
    "line_separator": "a\u2028b",
    "paragraph_separator": "a\u2029b",
    "bidi_override_reorders": "abc\u202edcb",
    "bidi_isolate": "a\u2066b\u2069",
    "zero_width_joiner_hidden": "a\u200db",
    "nul": "a\x00b",
    "delete": "a\x7fb",
    "backslash_forges_escape": "a\\x0ab",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_become_one_printable_line(name: str) -> None:
    shown = escape(ATTACKS[name])
    assert shown.isprintable()
    assert shown != ATTACKS[name]


def test_plain_text_is_unchanged() -> None:
    assert escape("hello-1.0 /nix/store/é ü 漢字") == "hello-1.0 /nix/store/é ü 漢字"


def test_escapes() -> None:
    assert escape("a\nb") == "a\\x0ab"
    assert escape("\u202e") == "\\u202e"
    assert escape("\\") == "\\\\"
    assert escape_bytes(b"\xff\xfe") == "\\xff\\xfe"
    assert escape_bytes("é".encode()) == "é"


@given(st.text())
def test_always_printable(text: str) -> None:
    assert escape(text).isprintable()


@given(st.binary())
def test_bytes_always_printable(data: bytes) -> None:
    assert escape_bytes(data).isprintable()


@given(st.text(), st.text())
def test_injective_on_pairs(a: str, b: str) -> None:
    if a != b:
        assert escape(a) != escape(b)


def test_undecodable_byte_differs_from_its_code_point() -> None:
    assert escape_bytes(b"\x85") != escape_bytes("\x85".encode())


@given(st.binary(), st.binary())
def test_bytes_injective_on_pairs(a: bytes, b: bytes) -> None:
    if a != b:
        assert escape_bytes(a) != escape_bytes(b)
