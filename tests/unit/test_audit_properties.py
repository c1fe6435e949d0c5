"""Property tests: the audit's parsers never raise on arbitrary bytes (a malformed file is a
finding, not a crash), and what they parse round-trips."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixwarden.audit import authorized_keys, machines, nixconf, sshd
from nixwarden.audit.accounts import Accounts
from nixwarden.audit.model import GlobResult

KEY_TYPE, KEY_DATA = (
    "ssh-ed25519",
    "AAAAC3NzaC1lZDI1NTE5AAAAIJO7YFVqOMh6ip3C9G5DSc6VCDHnrth/0gVEzjHJwCmY",
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes biased towards the characters these formats care about.
interesting = st.lists(
    st.one_of(
        st.binary(max_size=8),
        st.sampled_from(
            [
                b"=",
                b" ",
                b"\t",
                b"\n",
                b"\r",
                b"#",
                b";",
                b"@",
                b"include ",
                b"!include ",
                b"extra-",
                b"sandbox",
                b'"',
                b",",
                b"restrict",
                b"command=",
                b"Match ",
                b"User ",
                b"Include ",
                KEY_TYPE.encode(),
                KEY_DATA.encode(),
                b"ssh://",
                b"\x00",
                b"\xff",
            ]
        ),
    ),
    max_size=60,
).map(b"".join)
anything = st.one_of(st.binary(max_size=400), interesting)


@FAST
@given(anything)
def test_nixconf_never_raises(data: bytes) -> None:
    conf = nixconf.parse(data, read=lambda path: data)
    lines = data.count(b"\n") + 1
    for setting in conf.settings:
        assert 1 <= setting.line <= lines
        assert setting.value == setting.value.strip()


names = st.sampled_from(sorted(nixconf.KNOWN_SETTINGS))
words = st.text(
    alphabet=string.ascii_letters + string.digits + "/:.@-_?=+,", min_size=1, max_size=12
)


@FAST
@given(
    st.lists(st.tuples(names, st.lists(words, max_size=4)), max_size=12),
    st.sampled_from([" ", "\t", "  "]),
)
def test_nixconf_round_trip(pairs: list[tuple[str, list[str]]], gap: str) -> None:
    text = "".join(f"{gap}{name}{gap}={gap}{gap.join(values)}{gap}\n" for name, values in pairs)
    conf = nixconf.parse(text.encode())
    assert [p for p in conf.problems if p.kind is not nixconf.ProblemKind.BAD_VALUE] == []
    expected = [(name, " ".join(values)) for name, values in pairs]
    features = [e for e in expected if e[0] == "experimental-features"]
    others = [e for e in expected if e[0] != "experimental-features"]
    assert [(s.name, s.value) for s in conf.settings] == features + others


@FAST
@given(anything)
def test_machines_never_raise(data: bytes) -> None:
    parsed = machines.parse(data, read=lambda path: data)
    for entry in parsed.entries:
        assert entry.uri and entry.line >= 1
        machines.check_host_key_column(entry.host_key or "")


host = st.text(alphabet=string.ascii_lowercase + string.digits + ".-", min_size=1, max_size=12)
field = st.text(alphabet=string.ascii_letters + string.digits + "/_-.,", min_size=1, max_size=10)


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ssh", "ssh-ng"]),
            st.one_of(st.none(), st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6)),
            host,
            st.one_of(st.none(), field.map(lambda f: "/" + f)),
            st.one_of(st.none(), st.just(KEY_DATA)),
        ),
        max_size=6,
    )
)
def test_machines_round_trip(
    entries: list[tuple[str, str | None, str, str | None, str | None]],
) -> None:
    lines = []
    for scheme, user, name, identity, key in entries:
        uri = f"{scheme}://{user + '@' if user else ''}{name}"
        lines.append(f"{uri} x86_64-linux {identity or '-'} 1 1 - - {key or '-'}")
    parsed = machines.parse("\n".join(lines).encode())
    assert parsed.problems == ()
    assert [
        (m.scheme, m.user, m.host, m.identity_file, m.host_key) for m in parsed.entries
    ] == entries


@FAST
@given(anything)
def test_authorized_keys_never_raise(data: bytes) -> None:
    keys, problems = authorized_keys.parse(data)
    for key in keys:
        assert key.key_type == KEY_TYPE or key.key_type.startswith(("ssh-", "ecdsa-", "sk-"))
    assert all(p.line >= 1 for p in problems)


option_value = st.text(
    alphabet=st.characters(blacklist_characters='"\\\n\r', blacklist_categories=("Cs",)),
    max_size=20,
)
options = st.lists(
    st.one_of(
        st.sampled_from(sorted(authorized_keys.FLAG_OPTIONS)).map(lambda f: (f, None)),
        st.tuples(st.sampled_from(sorted(authorized_keys.VALUE_OPTIONS)), option_value),
    ),
    max_size=6,
)


@FAST
@given(options, st.text(alphabet=string.ascii_letters + "@.-", max_size=12))
def test_authorized_keys_round_trip(opts: list[tuple[str, str | None]], comment: str) -> None:
    rendered = ",".join(name if value is None else f'{name}="{value}"' for name, value in opts)
    line = f"{rendered + ' ' if rendered else ''}{KEY_TYPE} {KEY_DATA} {comment}".rstrip()
    (key,), problems = authorized_keys.parse(line.encode())
    assert problems == ()
    assert list(key.options) == opts
    assert (key.key_type, key.key_data, key.comment) == (KEY_TYPE, KEY_DATA, comment)


@FAST
@given(anything)
def test_sshd_never_raises(data: bytes) -> None:
    config = sshd.parse(data, read=lambda path: data, glob=lambda pattern: GlobResult((pattern,)))
    for unknown in (False, True):
        config.effective("builder", ("nix",), unknown_matches=unknown)


@FAST
@given(anything, anything)
def test_accounts_never_raise(passwd: bytes, group: bytes) -> None:
    accounts = Accounts.parse(passwd, group)
    for name in list(accounts.groups)[:5]:
        accounts.group_members(name)
