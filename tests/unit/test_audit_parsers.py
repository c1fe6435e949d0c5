"""The machines file, sshd_config, authorized_keys, passwd/group and the advisory table."""

from __future__ import annotations

import base64

import pytest

from nixwarden.audit import authorized_keys, gatecmd, machines, rules_version, sshd
from nixwarden.audit.accounts import Accounts
from nixwarden.audit.model import GlobResult

KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJO7YFVqOMh6ip3C9G5DSc6VCDHnrth/0gVEzjHJwCmY "
    "builder@example"
)
HOST_KEY_COLUMN = base64.b64encode(KEY.encode() + b"\n").decode()


# --- machines ---------------------------------------------------------------------------


def test_machines_columns_dash_and_defaults() -> None:
    parsed = machines.parse(
        f"ssh-ng://nix@b1 x86_64-linux,aarch64-linux /etc/nix/id 8 2 kvm,big-parallel - "
        f"{HOST_KEY_COLUMN}\nb2 - - - - - - -\n".encode()
    )
    first, second = parsed.entries
    assert (first.scheme, first.user, first.host) == ("ssh-ng", "nix", "b1")
    assert first.identity_file == "/etc/nix/id" and first.host_key == HOST_KEY_COLUMN
    assert (second.scheme, second.host, second.identity_file, second.host_key) == (
        "ssh",
        "b2",
        None,
        None,
    )
    assert parsed.problems == ()
    assert machines.check_host_key_column(HOST_KEY_COLUMN) is None


def test_machines_semicolons_comments_and_lines() -> None:
    parsed = machines.parse(b"# builders\nb1 x86_64-linux; b2 x86_64-linux # tail\n\n b3\n")
    assert [(m.host, m.line) for m in parsed.entries] == [("b1", 2), ("b2", 2), ("b3", 4)]


def test_machines_comment_does_not_protect_a_semicolon() -> None:
    # Nix splits on ';' before removing comments.
    parsed = machines.parse(b"b1 # old; b2\n")
    assert [m.host for m in parsed.entries] == ["b1", "b2"]


def test_machines_at_file_missing_cycle_and_nested() -> None:
    files = {"/etc/nix/more": b"b2\n@/etc/nix/machines\n"}

    def read(path: str) -> bytes:
        if path in files:
            return files[path]
        raise FileNotFoundError(path)

    parsed = machines.parse(b"b1\n@/etc/nix/more\n@/etc/nix/gone\n", "/etc/nix/machines", read)
    assert [m.host for m in parsed.entries] == ["b1", "b2"]
    assert [p.detail for p in parsed.problems] == ["@/etc/nix/machines: include cycle"]
    assert parsed.files == ("/etc/nix/machines", "/etc/nix/more")


def test_builders_setting_inline_entries_keep_the_settings_location() -> None:
    parsed = machines.parse_builders(
        "ssh://b1 x86_64-linux ; ssh-ng://b2", "/etc/nix/nix.conf", 7, lambda p: b""
    )
    assert [(m.host, m.file, m.line) for m in parsed.entries] == [
        ("b1", "/etc/nix/nix.conf", 7),
        ("b2", "/etc/nix/nix.conf", 7),
    ]


@pytest.mark.parametrize(
    ("column", "problem"),
    [
        ("!!!", "not valid base64"),
        (base64.b64encode(b"ssh-ed25519").decode(), "not a public key line"),
        (base64.b64encode(b"ssh-foo AAAA").decode(), "unknown key type"),
        (base64.b64encode(b"ssh-rsa " + KEY.split()[1].encode()).decode(), "does not match"),
        (base64.b64encode(b"\xff\xfe").decode(), "does not decode"),
    ],
)
def test_bad_host_key_columns(column: str, problem: str) -> None:
    found = machines.check_host_key_column(column)
    assert found is not None and problem in found


def test_machines_bad_numbers_are_problems() -> None:
    parsed = machines.parse(b"b1 x86_64-linux - four -1\n")
    assert [p.detail for p in parsed.problems] == [
        "max jobs 'four' is not a number",
        "speed factor '-1' is not a number",
    ]


# --- sshd_config --------------------------------------------------------------------------


def effective(
    text: str, user: str, groups: tuple[str, ...] = (), files: dict[str, str] | None = None
) -> dict[str, str]:
    table = {name: content.encode() for name, content in (files or {}).items()}

    def read(path: str) -> bytes:
        if path in table:
            return table[path]
        raise FileNotFoundError(path)

    def glob(pattern: str) -> GlobResult:
        import fnmatch  # noqa: PLC0415

        return GlobResult(tuple(sorted(p for p in table if fnmatch.fnmatch(p, pattern))))

    config = sshd.parse(text.encode(), read=read, glob=glob)
    decided = config.effective(user, groups, unknown_matches=False)
    return {
        key: sshd.value(decided, key)[0] for key in ("permittty", "forcecommand", "x11forwarding")
    }


def test_sshd_first_value_wins_and_match_overrides_global() -> None:
    text = "PermitTTY no\nPermitTTY yes\nMatch User builder\n  PermitTTY yes\n  PermitTTY no\n"
    assert effective(text, "alice")["permittty"] == "no"
    assert effective(text, "builder")["permittty"] == "yes"


def test_sshd_match_negation_groups_and_all() -> None:
    text = "Match User *,!admin Group nix\n  ForceCommand /bin/gate\nMatch all\n  PermitTTY no\n"
    assert effective(text, "bob", ("nix",))["forcecommand"] == "/bin/gate"
    assert effective(text, "admin", ("nix",))["forcecommand"] == ""
    assert effective(text, "bob", ("users",))["forcecommand"] == ""
    assert effective(text, "anyone")["permittty"] == "no"


def test_sshd_include_relative_sorted_and_match_leaks_like_sshd() -> None:
    text = "Include sshd_config.d/*.conf\nX11Forwarding yes\n"
    files = {
        "/etc/ssh/sshd_config.d/20-b.conf": "Match User builder\n  X11Forwarding no\n",
        "/etc/ssh/sshd_config.d/10-a.conf": "PermitTTY no\n",
    }
    result = effective(text, "builder", files=files)
    assert result == {"permittty": "no", "forcecommand": "", "x11forwarding": "no"}
    # The main file's X11Forwarding line sits inside the included Match block, as in sshd.
    assert effective(text, "alice", files=files)["x11forwarding"] == "no"


def test_sshd_keyword_equals_quotes_and_trailing_comment() -> None:
    text = 'Match User builder\n  ForceCommand="/usr/bin/nixwarden gate --principal b" # pinned\n'
    assert effective(text, "builder")["forcecommand"] == "/usr/bin/nixwarden gate --principal b"


def test_sshd_unknown_criteria_are_evaluated_both_ways() -> None:
    config = sshd.parse(b"Match Address 10.0.0.0/8 User builder\n  PermitTTY no\n")
    strict = config.effective("builder", (), unknown_matches=False)
    loose = config.effective("builder", (), unknown_matches=True)
    assert sshd.value(strict, "permittty")[0] == "yes"
    assert sshd.value(loose, "permittty")[0] == "no"


def test_sshd_include_cycles_and_fan_out_are_bounded() -> None:
    data = b"Include a b c d\nPermitTTY no\n"
    config = sshd.parse(data, "/etc/ssh/a", read=lambda path: data, glob=lambda p: GlobResult((p,)))
    assert any("cycle" in p.detail for p in config.problems)
    assert len(config.files) <= sshd.MAX_FILES + 1


def test_sshd_include_fan_out_stops_at_the_file_bound_and_says_so() -> None:
    matched = tuple(f"/etc/ssh/d/{index:04d}.conf" for index in range(sshd.MAX_FILES + 50))
    config = sshd.parse(
        b"Include d/*.conf\n",
        read=lambda path: b"PermitTTY no\n",
        glob=lambda pattern: GlobResult(matched),
    )
    assert len(config.files) == sshd.MAX_FILES + 1
    (cut,) = config.cuts
    assert "more than 256 included files" in cut.detail and "(49 more)" in cut.detail
    assert (cut.file, cut.line) == ("/etc/ssh/sshd_config", 1)


def test_sshd_include_lines_beyond_the_bound_are_one_cut() -> None:
    config = sshd.parse(
        b"Include inc.conf\n" * (sshd.MAX_INCLUDES + 500),
        read=lambda path: b"PermitTTY no\n",
        glob=lambda pattern: GlobResult((pattern,)),
    )
    (cut,) = [cut for cut in config.cuts if "Include lines" in cut.detail]
    assert "more than 1024 Include lines" in cut.detail and "(499 more)" in cut.detail
    assert cut.line == sshd.MAX_INCLUDES + 1


def test_sshd_lines_beyond_the_bound_stop_the_parse() -> None:
    config = sshd.parse(b"PermitTTY no\n" * (sshd.MAX_LINES + 10))
    assert len(config.lines) == sshd.MAX_LINES
    (cut,) = config.cuts
    assert cut.line == sshd.MAX_LINES + 1 and "the rest was not read" in cut.detail


def test_authorized_keys_problems_never_quote_the_file() -> None:
    _, problems = authorized_keys.parse(b"root:$6$secret$hash:19000:0:99999:7:::\n")
    assert problems and "secret" not in problems[0].detail and "root" not in problems[0].detail


def test_sshd_garbage_is_a_problem_not_a_crash() -> None:
    config = sshd.parse(b'PermitTTY "unterminated\nMatch\n\xff\xfe\x00\n')
    # An unterminated quote, and two keywords without an argument (sshd refuses all three).
    assert [p.line for p in config.problems] == [1, 2, 3]


# --- authorized_keys ----------------------------------------------------------------------


def test_authorized_keys_options_and_quotes() -> None:
    line = 'restrict,command="/bin/gate --say \\"hi, there\\"",from="10.0.0.1" ' + KEY
    (key,), problems = authorized_keys.parse(line.encode())
    assert problems == ()
    assert key.restricted and key.command == '/bin/gate --say "hi, there"'
    assert key.option("from") == "10.0.0.1" and key.comment == "builder@example"


def test_authorized_keys_plain_key_comments_blank_lines_and_case() -> None:
    data = f"# admins\n\n{KEY}\nRESTRICT,PTY {KEY}\n".encode()
    keys, problems = authorized_keys.parse(data)
    assert problems == ()
    assert [k.line for k in keys] == [3, 4]
    assert not keys[0].options and keys[1].reopened == ("pty",)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("bogus " + KEY, "unknown option"),
        ("command=/bin/x " + KEY, "double quotes"),
        ('command="/bin/x ' + KEY, "closing quote"),
        ("restrict ssh-foo AAAA", "unknown key type"),
        ("ssh-ed25519 !!!", "not base64"),
        ("ssh-rsa " + KEY.split()[1], "does not match"),
    ],
)
def test_authorized_keys_lines_sshd_ignores(line: str, problem: str) -> None:
    keys, problems = authorized_keys.parse(line.encode())
    assert keys == ()
    assert problem in problems[0].detail


def test_gate_command_forms() -> None:
    parse = gatecmd.parse
    assert parse("/usr/bin/nixwarden gate --principal alice --config /x") == gatecmd.GateCommand(
        "alice", "/x"
    )
    assert parse("nixwarden gate --principal=bob") == gatecmd.GateCommand("bob", None)
    assert parse("nix-daemon --stdio") is None
    assert parse("nixwarden audit") is None
    assert parse("python3 -c 'import nixwarden' nixwarden-gate --principal a") is None
    gate = parse("/v/bin/python3.11 -I -s /v/bin/nixwarden-gate --principal a --config /c.toml")
    assert gate == gatecmd.GateCommand("a", "/c.toml")
    assert parse("/v/bin/python3 -I /v/bin/nixwarden --debug gate --principal a") == (
        gatecmd.GateCommand("a", None)
    )


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("nixwarden gate", "--principal is required"),
        ("nixwarden gate --principal a --principal b", "given twice"),
        ("nixwarden-gate --principal a --frobnicate", "unknown argument"),
        ("nixwarden gate --check --principal a --command x", "gate --check"),
        ("nixwarden gate --help", "--help"),
        ('nixwarden gate --principal "unbalanced', "unterminated quote"),
    ],
)
def test_gate_lines_the_gate_refuses(command: str, problem: str) -> None:
    gate = gatecmd.parse(command)
    assert gate is not None and gate.problem is not None and problem in gate.problem


@pytest.mark.parametrize(
    ("command", "syntax"),
    [
        ("nixwarden gate --principal a; bash", ";"),
        ("nixwarden gate --principal a && sh", "&"),
        ("nixwarden gate --principal $(id -un)", "$"),
        ("nixwarden gate --principal `id`", "`"),
        ("nixwarden gate --principal a\nbash".replace("\\n", "\n"), "\n"),
        ("nixwarden gate --principal a | tee /tmp/x", "|"),
    ],
)
def test_gate_lines_wrapped_in_shell_syntax(command: str, syntax: str) -> None:
    gate = gatecmd.parse(command)
    assert gate is not None and gate.shell == syntax


def test_shell_words_quotes_escapes_and_comments() -> None:
    words, syntax = gatecmd.shell_words(
        """nixwarden gate --principal 'al ice' --config "/etc/a b.toml" x\\ y # c; d"""
    )
    assert words == [
        "nixwarden",
        "gate",
        "--principal",
        "al ice",
        "--config",
        "/etc/a b.toml",
        "x y",
    ]
    assert syntax is None


# --- passwd / group -------------------------------------------------------------------------


def test_accounts_members_include_primary_group_users() -> None:
    accounts = Accounts.parse(
        b"root:x:0:0::/root:/bin/sh\nalice:x:1000:100::/home/alice:/bin/sh\nbroken\n",
        b"users:x:100:\nwheel:x:10:bob,alice\n# comment\nbad:x:notanumber:\n",
    )
    assert accounts.group_members("users") == ("alice",)
    assert accounts.group_members("wheel") == ("alice", "bob")
    assert accounts.group_members("nope") is None
    assert accounts.groups_of("alice") == ("users", "wheel")
    assert accounts.user_name(1000) == "alice" and accounts.user_name(5) == "5"


# --- advisory table --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("nix (Nix) 2.8.0\n", ("nix", (2, 8, 0))),
        ("nix (Lix, like Nix) 2.91.1\n", ("lix", (2, 91, 1))),
        ("nix (Determinate Nix 3.6.2) 2.29.0", ("nix", (2, 29, 0))),
        ("nix (Nix) 2.25.0pre20240920_ca3fc16", ("nix", (2, 25, 0))),
        ("", None),
        ("something else", None),
    ],
)
def test_identify_version(output: str, expected: object) -> None:
    assert rules_version.identify(output) == expected


def _affected(product: str, version: tuple[int, int, int]) -> set[str]:
    return {
        advisory.ids
        for advisory in rules_version.ADVISORIES
        if advisory.product == product and rules_version.affected(version, advisory)
    }


def test_nix_2_8_is_affected() -> None:
    assert any("CVE-2025-52992" in ids for ids in _affected("nix", (2, 8, 0)))
    assert "CVE-2024-27297" in _affected("nix", (2, 8, 0))


@pytest.mark.parametrize(
    ("product", "version", "cve", "hit"),
    [
        ("nix", (2, 3, 17), "CVE-2024-27297", True),
        ("nix", (2, 3, 18), "CVE-2024-27297", False),
        ("nix", (2, 21, 0), "CVE-2024-27297", False),
        ("nix", (2, 28, 3), "CVE-2025-52992", True),
        ("nix", (2, 28, 4), "CVE-2025-52992", False),
        ("nix", (2, 25, 9), "CVE-2025-52992", True),  # a series without a fix
        ("nix", (2, 30, 0), "CVE-2025-52992", False),
        ("nix", (2, 20, 9), "CVE-2026-39860", False),  # before it was introduced
        ("nix", (2, 31, 3), "CVE-2026-39860", True),
        ("nix", (2, 34, 5), "CVE-2026-39860", False),
        ("lix", (2, 90, 0), "CVE-2025-52992", True),
        ("lix", (2, 93, 1), "CVE-2025-52992", False),
    ],
)
def test_advisory_ranges(product: str, version: tuple[int, int, int], cve: str, hit: bool) -> None:
    assert any(cve in ids for ids in _affected(product, version)) is hit


def test_accounts_lines_end_at_newline_only() -> None:
    # str.splitlines() would cut at \x1c, \x85 or \u2028 and see a user the system does not.
    accounts = Accounts.parse(
        "alice:x:1000:1000:A\x1cmallory:x:0:0::/root:/bin/sh\u2028:/home/alice:/bin/sh\n".encode(),
        b"wheel:x:10:alice\x85mallory\n",
    )
    assert "mallory" not in accounts.users
    assert accounts.groups_of("mallory") == ()
