"""Store-path parsing: a named corpus of bad roots, good forms, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nixwarden.display import escape
from nixwarden.errors import InvalidInput
from nixwarden.nix.storepath import (
    NIX32_ALPHABET,
    BadStorePath,
    StorePath,
    parse_root,
    references_in,
)

HASH = "0c0sfqxbajkf6xk7yvyjlxvr1ww4jbfq"
GOOD = f"/nix/store/{HASH}-hello-2.12"

BAD_ROOTS = {
    "root_outside_store": "/etc/shadow",
    "root_relative": f"nix/store/{HASH}-hello",
    "root_dotdot_escape": f"/nix/store/{HASH}-hello/../../../etc/shadow",
    "root_dotdot_inside": f"/nix/store/{HASH}-hello/bin/../../{HASH}-other",
    "root_store_dir_itself": "/nix/store",
    "root_store_dir_slash": "/nix/store/",
    "root_hash_too_short": f"/nix/store/{HASH[:31]}-hello",
    "root_hash_too_long": f"/nix/store/{HASH}x-hello",
    "root_hash_bad_letter_e": f"/nix/store/{'e' * 32}-hello",
    "root_hash_uppercase": f"/nix/store/{HASH.upper()}-hello",
    "root_no_dash": f"/nix/store/{HASH}",
    "root_empty_name": f"/nix/store/{HASH}-",
    "root_name_with_space": f"/nix/store/{HASH}-hello world",
    "root_name_with_colon": f"/nix/store/{HASH}-a:b",
    "root_name_dotfile": f"/nix/store/{HASH}-.hidden",
    "root_name_too_long": f"/nix/store/{HASH}-{'a' * 212}",
    "root_nul_byte": f"/nix/store/{HASH}-hello\0",
    "root_prefix_lookalike": f"/nix/storefoo/{HASH}-hello",
    "root_other_store": f"/gnu/store/{HASH}-hello",
    "root_empty": "",
}


@pytest.mark.parametrize("name", sorted(BAD_ROOTS))
def test_bad_roots_are_refused_naming_them(name: str) -> None:
    text = BAD_ROOTS[name]
    with pytest.raises(InvalidInput) as caught:
        parse_root(text)
    # Named, shortened when long, and always on one line.
    assert repr(escape(text[:100]))[:-1] in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "base", "inner"),
    [
        (GOOD, f"{HASH}-hello-2.12", ""),
        (GOOD + "/", f"{HASH}-hello-2.12", ""),
        (GOOD + "/bin/hello", f"{HASH}-hello-2.12", "bin/hello"),
        ("/nix//store/./" + f"{HASH}-x//bin/./y", f"{HASH}-x", "bin/y"),
        (f"/nix/store/{HASH}-a+b-_.?=", f"{HASH}-a+b-_.?=", ""),
        (f"/nix/store/{HASH}-{'n' * 211}", f"{HASH}-{'n' * 211}", ""),
    ],
)
def test_good_roots(text: str, base: str, inner: str) -> None:
    root = parse_root(text)
    assert root.store_path.base_name == base
    assert root.inner == inner


def test_exact_store_path() -> None:
    assert StorePath.parse(GOOD) == StorePath(HASH, "hello-2.12")
    for text in (GOOD + "/bin", GOOD + "/"):
        with pytest.raises(BadStorePath):
            StorePath.parse(text)


def test_other_store_dir() -> None:
    root = parse_root(f"/gnu/store/{HASH}-x/y", "/gnu/store")
    assert root.top == f"/gnu/store/{HASH}-x"


def test_references_in_text() -> None:
    text = f"--conf={GOOD}/etc/x.conf,{GOOD}:/nix/store/{HASH}-other;/nix/store/short-x"
    assert [p.absolute() for p in references_in(text)] == [
        GOOD,
        GOOD,
        f"/nix/store/{HASH}-other",
    ]


hashes = st.text(alphabet=NIX32_ALPHABET, min_size=32, max_size=32)
names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-._?=",
    min_size=1,
    max_size=211,
).filter(lambda n: not n.startswith("."))
inner = st.lists(
    st.text(alphabet="abcdefgh-_.", min_size=1, max_size=8).filter(lambda s: s not in (".", "..")),
    max_size=4,
)


@given(hashes, names, inner)
def test_valid_roots_round_trip(hash_part: str, name: str, parts: list[str]) -> None:
    text = "/".join([f"/nix/store/{hash_part}-{name}", *parts])
    root = parse_root(text)
    assert root.store_path == StorePath(hash_part, name)
    assert root.inner == "/".join(parts)
    assert root.path == text
    assert next(iter(references_in(text))) == root.store_path


@given(st.text(max_size=80))
def test_parser_never_crashes_and_never_escapes(text: str) -> None:
    try:
        root = parse_root(text)
    except InvalidInput:
        return
    assert root.path.startswith("/nix/store/")
    assert ".." not in root.path.split("/")
    assert "\0" not in root.path


@given(hashes, names, st.lists(st.sampled_from(["..", "a", "."]), min_size=1, max_size=5))
def test_dotdot_anywhere_is_refused(hash_part: str, name: str, parts: list[str]) -> None:
    text = "/".join([f"/nix/store/{hash_part}-{name}", *parts])
    if ".." in parts:
        with pytest.raises(InvalidInput):
            parse_root(text)
    else:
        assert parse_root(text).store_path.name == name
