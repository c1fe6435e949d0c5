"""The gate's request parser and policy: exactly the allowlist, nothing else.

Bad inputs live in tests/corpus/gate/, one file per attack, named after it, each with
the reason it must be refused for in REQUEST_REASONS (checked both ways).
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


REQUEST_REASONS = {
    "cmd_and_chain": "character '&' is not allowed",
    "cmd_background_amp": "character '&' is not allowed",
    "cmd_backslash_escape": "character '\\\\' is not allowed",
    "cmd_backticks": "character '`' is not allowed",
    "cmd_bash_c": "program 'bash' is not nix-daemon or nix-store",
    "cmd_brace_expansion": "character '{' is not allowed",
    "cmd_carriage_return": "character carriage return is not allowed",
    "cmd_comment_hash": "character '#' is not allowed",
    "cmd_daemon_without_stdio": "only allowed as 'nix-daemon --stdio', not with no arguments",
    "cmd_dollar_only_subshell": "character '$' is not allowed",
    "cmd_dollar_subshell": "character '$' is not allowed",
    "cmd_dot_relative_program": "program './nix-daemon' is not nix-daemon or nix-store",
    "cmd_dotdot_program_path": "program '/nix/store/x/../../../tmp/nix-daemon' is not",
    "cmd_double_exec": "program 'exec' is not nix-daemon or nix-store",
    "cmd_double_quoted": "character '\"' is not allowed",
    "cmd_empty_store_url": "--store with an empty URL",
    "cmd_env_assignment": "program 'NIX_REMOTE=local' is not nix-daemon or nix-store",
    "cmd_env_prefix": "program 'env' is not nix-daemon or nix-store",
    "cmd_fullwidth_semicolon": "character U+FF1B is not allowed",
    "cmd_glob_star": "character '*' is not allowed",
    "cmd_lookalike_program": "program '/tmp/evil-nix-daemon' is not nix-daemon or nix-store",
    "cmd_newline_second_command": "character newline is not allowed",
    "cmd_non_utf8": "request is not valid UTF-8",
    "cmd_nul_byte": "request contains a NUL byte",
    "cmd_option_before_stdio": "not with '--option build-hook /tmp/evil --stdio'",
    "cmd_option_build_hook": "not with '--stdio --option build-hook /tmp/evil'",
    "cmd_or_chain": "character '|' is not allowed",
    "cmd_overlong": "request too long (5027 bytes; the limit is 4096)",
    "cmd_pipe_to_shell": "character '|' is not allowed",
    "cmd_plain_id": "program 'id' is not nix-daemon or nix-store",
    "cmd_process_ops": "not with '--stdio --process-ops'",
    "cmd_program_suffix": "program 'nix-daemon.sh' is not nix-daemon or nix-store",
    "cmd_quoted_bidi_override": "character U+202E is not allowed, even quoted",
    "cmd_quoted_c1_next_line": "character U+0085 is not allowed, even quoted",
    "cmd_quoted_escape_sequence": "character U+001B is not allowed, even quoted",
    "cmd_quoted_homoglyph": "character U+043E is not allowed, even quoted",
    "cmd_quoted_line_separator": "character U+2028 is not allowed, even quoted",
    "cmd_quoted_newline": "character newline is not allowed, even quoted",
    "cmd_quoted_program_with_escape": "character U+001B is not allowed, even quoted",
    "cmd_quoted_tab": "character tab is not allowed, even quoted",
    "cmd_redirect_in": "character '<' is not allowed",
    "cmd_redirect_out": "character '>' is not allowed",
    "cmd_relative_program": "program 'bin/nix-daemon' is not nix-daemon or nix-store",
    "cmd_semicolon_chain": "character ';' is not allowed",
    "cmd_serve_write_reordered": "not with '--write --serve'",
    "cmd_sh_login": "program 'sh' is not nix-daemon or nix-store",
    "cmd_store_not_last": "--store may appear once, at the end",
    "cmd_store_realise": "not with '--realise /nix/store/00000000000000000000000000000000-x'",
    "cmd_store_twice": "--store may appear once, at the end",
    "cmd_tab_separator": "character tab is not allowed",
    "cmd_tilde_home": "character '~' is not allowed",
    "cmd_unicode_space": "character U+00A0 is not allowed",
    "cmd_unterminated_quote": "unterminated quote",
}
CORPUS_FILES = {path.stem: path for path in sorted(CORPUS.glob("cmd_*.cmd"))}


def test_every_request_case_has_a_reason_and_vice_versa() -> None:
    assert set(CORPUS_FILES) == set(REQUEST_REASONS)


@pytest.mark.parametrize("name", sorted(REQUEST_REASONS))
def test_corpus_is_refused_with_its_reason(name: str) -> None:
    with pytest.raises((RequestRefused, policy.PolicyRefused)) as refused:
        decide(CORPUS_FILES[name].read_bytes())
    message = str(refused.value)
    assert REQUEST_REASONS[name] in message
    assert message.isascii() and message.isprintable()


def test_quoted_store_url_is_printable_ascii_or_refused() -> None:
    """docs/gate.md: control and non-ASCII characters are refused, quoted or not."""
    store = "local?root=/srv/x"
    allowed = Principal(name="p", store="host", allowed_stores=(store,))
    assert decide(f"nix-daemon --stdio --store '{store}'".encode(), allowed)[-1] == store
    for char in ("\x7f", "\u00e9", "\u200b", "\ufeff", "\U0001f600"):
        text = f"nix-daemon --stdio --store 'local?root=/srv/{char}'"
        with pytest.raises(RequestRefused, match="even quoted"):
            request.parse(text.encode())


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


# Words with every kind of character a message could carry back to a person.
HOSTILE_TEXT = st.text(
    st.sampled_from(
        ["a", "/", "'", " ", "\\", "\n", "\x1b", "\u0085", "\u202e", "\u2028", "\x00", "é"]
    ),
    max_size=12,
)


@settings(max_examples=500)
@given(
    st.lists(st.sampled_from(["nix-daemon", "nix-store", "--stdio", "--store"]) | HOSTILE_TEXT)
    .map(" ".join)
    .map(lambda text: text.encode("utf-8", "surrogatepass"))
)
def test_every_refusal_is_one_printable_ascii_line(raw: bytes) -> None:
    try:
        decide(raw, Principal(name="p", store="host"))
    except (RequestRefused, policy.PolicyRefused) as refused:
        message = str(refused)
        assert message.isascii() and message.isprintable(), message


@given(
    st.sampled_from([b"nix-daemon --stdio", b"nix-store --serve --write"]),
    st.integers(min_value=0, max_value=30),
    st.sampled_from([b";", b"&", b"|", b"$", b"`", b"\n", b">", b"<", b"(", b"\\", b'"', b"*"]),
)
def test_one_inserted_metacharacter_is_refused(valid: bytes, where: int, char: bytes) -> None:
    position = min(where, len(valid))
    assert _accepted(valid[:position] + char + valid[position:]) is None
