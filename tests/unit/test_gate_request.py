"""The gate's request parser and policy: exactly the allowlist, nothing else.

Bad inputs live in tests/corpus/gate/, one file per attack, named after it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.config import GateSettings, Principal
from nixwarden.gate import policy, request
from nixwarden.gate.request import RequestRefused
from nixwarden.gate.run import _client

CORPUS = Path(__file__).parents[1] / "corpus" / "gate"
GATE = GateSettings(nix_daemon="/pinned/nix-daemon", nix_store="/pinned/nix-store")
# The most permissive policy there is: whatever it refuses, every policy refuses.
EVERYTHING = Principal(
    name="everything",
    protocols=("ssh-ng", "ssh"),
    write=True,
    store="host",
    allowed_stores=("/a", "local?root=/srv/x"),
)
ALLOWED_ARGVS = {
    ("/pinned/nix-daemon", "--stdio"),
    ("/pinned/nix-store", "--serve"),
    ("/pinned/nix-store", "--serve", "--write"),
}


def decide(raw: bytes, principal: Principal = EVERYTHING) -> tuple[str, ...]:
    return policy.decide(request.parse(raw), principal, GATE)


@pytest.mark.parametrize(
    ("raw", "argv"),
    [
        (b"nix-daemon --stdio", ("/pinned/nix-daemon", "--stdio")),
        (b"exec nix-daemon --stdio", ("/pinned/nix-daemon", "--stdio")),
        (b"nix-store --serve", ("/pinned/nix-store", "--serve")),
        (b"nix-store --serve --write", ("/pinned/nix-store", "--serve", "--write")),
        (b"exec nix-store --serve --write", ("/pinned/nix-store", "--serve", "--write")),
        (
            b"/nix/store/5xd4a2r3-nix-2.18/bin/nix-daemon --stdio",
            ("/pinned/nix-daemon", "--stdio"),
        ),
        (b"/run/current-system/sw/bin/nix-store --serve", ("/pinned/nix-store", "--serve")),
        (b"  nix-daemon   --stdio  ", ("/pinned/nix-daemon", "--stdio")),
        (b"nix-daemon --stdio --store /a", ("/pinned/nix-daemon", "--stdio", "--store", "/a")),
        (
            b"nix-daemon --stdio --store 'local?root=/srv/x'",
            ("/pinned/nix-daemon", "--stdio", "--store", "local?root=/srv/x"),
        ),
    ],
)
def test_allowed_forms(raw: bytes, argv: tuple[str, ...]) -> None:
    assert decide(raw) == argv


def test_client_program_path_is_never_executed() -> None:
    parsed = request.parse(b"/home/mallory/nix-daemon --stdio")
    assert parsed.program_path == "/home/mallory/nix-daemon"
    assert policy.decide(parsed, EVERYTHING, GATE)[0] == "/pinned/nix-daemon"


def test_nix_shell_escaping_round_trips() -> None:
    parsed = request.parse(b"nix-daemon --stdio --store 'it'\\''s'")
    assert parsed.store == "it's"


CORPUS_FILES = sorted(CORPUS.glob("*.cmd"))


def test_corpus_is_there() -> None:
    assert len(CORPUS_FILES) >= 40


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda path: path.stem)
def test_corpus_is_refused(path: Path) -> None:
    with pytest.raises((RequestRefused, policy.PolicyRefused)):
        decide(path.read_bytes())


@pytest.mark.parametrize(
    ("raw", "principal", "reason"),
    [
        (b"nix-store --serve --write", Principal(name="p", protocols=("ssh",)), "write = false"),
        (b"nix-store --serve", Principal(name="p"), "protocol ssh is not allowed"),
        (b"nix-daemon --stdio", Principal(name="p", protocols=("ssh",)), "protocol ssh-ng"),
        (b"nix-daemon --stdio --store /a", Principal(name="p", store="host"), "--store '/a'"),
        (
            b"nix-daemon --stdio --store /b",
            Principal(name="p", store="host", allowed_stores=("/a",)),
            "refused: the gate chooses the store",
        ),
    ],
)
def test_policy_refusals(raw: bytes, principal: Principal, reason: str) -> None:
    with pytest.raises(policy.PolicyRefused, match=None) as raised:
        decide(raw, principal)
    assert reason in str(raised.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"a" * 4097, "too long"),
        (b"nix-daemon --stdio\0", "NUL"),
        (b"nix-daemon --stdio \xff", "UTF-8"),
        (b"nix-daemon --stdio\nid", "newline"),
        (b"nix-daemon --stdio;id", "';'"),
        (b"", "empty command"),
        (b"exec", "empty command"),
    ],
)
def test_refusal_reasons(raw: bytes, reason: str) -> None:
    with pytest.raises(RequestRefused) as raised:
        request.parse(raw)
    assert reason in str(raised.value)


@pytest.mark.parametrize("raw", [b"", b"bash", b"sh", b" bash "])
def test_line_mode_triggers(raw: bytes) -> None:
    assert request.is_line_mode(raw)


@pytest.mark.parametrize("raw", [b"bash -c id", b"/bin/bash", b"zsh", b"nix-daemon --stdio"])
def test_not_line_mode(raw: bytes) -> None:
    assert not request.is_line_mode(raw)


def test_request_is_immutable() -> None:
    parsed = request.parse(b"nix-daemon --stdio")
    with pytest.raises(AttributeError):
        parsed.write = True  # type: ignore[misc]
    assert parsed == request.parse(b"nix-daemon --stdio")
    assert isinstance(hash(parsed), int)


def test_client_address() -> None:
    assert _client(b"127.0.0.1 50000 127.0.0.1 22") == "127.0.0.1:50000"
    assert _client(b"::1 50000 ::1 22") == "[::1]:50000"
    assert _client(b"") is None


# --- properties ---------------------------------------------------------------------------

# Words a shell or Nix could plausibly put together, plus every shell metacharacter.
PIECES = [
    "exec", "nix-daemon", "nix-store", "--stdio", "--serve", "--write", "--store", "/a",
    "/nix/store/x/bin/nix-daemon", "'local?root=/srv/x'", "id", "sh", "-c", "bash", "touch",
    "M", "--option", "build-hook", ";", "&", "&&", "|", "||", "$(", ")", "`", ">", "<", "\n",
    "\t", "\\", '"', "'", "*", "?", "[", "]", "{", "}", "~", "#", "=", "!", "\0", "\r", " ",
]  # fmt: skip


def _accepted(raw: bytes) -> tuple[str, ...] | None:
    try:
        return decide(raw)
    except (RequestRefused, policy.PolicyRefused):
        return None


@settings(max_examples=3000)
@given(st.lists(st.sampled_from(PIECES), max_size=8).map(" ".join))
def test_anything_accepted_is_an_allowed_argv_and_what_a_shell_would_see(text: str) -> None:
    argv = _accepted(text.encode())
    if argv is None:
        return
    base = argv[:-2] if "--store" in argv else argv
    assert base in ALLOWED_ARGVS
    if "--store" in argv:
        assert argv[-1] in EVERYTHING.allowed_stores
    # A POSIX shell reading the same text would run the same allowed command: no hidden
    # second command, redirection or expansion slipped through.
    words = shlex.split(text, comments=False, posix=True)
    if words and words[0] == "exec":
        words = words[1:]
    assert words[0].rsplit("/", 1)[-1] == argv[0].rsplit("/", 1)[-1]
    assert tuple(words[1:]) == argv[1:]


@settings(max_examples=2000)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_the_allowlist(raw: bytes) -> None:
    argv = _accepted(raw)
    if argv is not None:
        base = argv[:-2] if "--store" in argv else argv
        assert base in ALLOWED_ARGVS


@given(
    st.sampled_from([b"nix-daemon --stdio", b"nix-store --serve --write"]),
    st.integers(min_value=0, max_value=30),
    st.sampled_from([b";", b"&", b"|", b"$", b"`", b"\n", b">", b"<", b"(", b"\\", b'"', b"*"]),
)
def test_one_inserted_metacharacter_is_refused(valid: bytes, where: int, char: bytes) -> None:
    position = min(where, len(valid))
    assert _accepted(valid[:position] + char + valid[position:]) is None
