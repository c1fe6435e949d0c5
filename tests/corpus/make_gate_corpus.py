"""Writes the gate's generated corpus cases: hostile configs and quoted request bytes.

Run from the repository: `.venv/bin/python -m tests.corpus.make_gate_corpus`. One file
per attack, named after it; the hand-written `cmd_*.cmd` cases sit beside them.
`CONFIG_REASONS` in tests/unit/test_config_corpus.py and `REQUEST_REASONS` in
tests/unit/test_gate_request.py list the reason each must be refused with.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent / "gate"
TENANT = "[principals.alice]\n"
HOST = '[principals.alice]\nstore = "host"\n'

REQUESTS: dict[str, str] = {
    # Inside Nix's single quotes, a byte that is neither plain nor printable ASCII.
    "cmd_quoted_newline": "nix-daemon --stdio --store 'local\ntouch M'",
    "cmd_quoted_escape_sequence": "nix-daemon --stdio --store '\x1b[2J\x1b[Hlocal'",
    "cmd_quoted_bidi_override": "nix-daemon --stdio --store '\u202elacol'",
    "cmd_quoted_homoglyph": "nix-daemon --stdio --store 'l\u043ecal'",
    "cmd_quoted_line_separator": "nix-daemon --stdio --store 'local\u2028x'",
    "cmd_quoted_c1_next_line": "nix-daemon --stdio --store 'local\u0085x'",
    "cmd_quoted_tab": "nix-daemon --stdio --store 'local\tx'",
    "cmd_quoted_program_with_escape": "'/nix/store/x/bin/nix-daemon\x1b[1A' --stdio",
}

CONFIGS: dict[str, str] = {
    "config_principal_name_newline": '[principals."alice\\nbob"]\n',
    "config_principal_name_bidi": '[principals."alice\\u202e"]\n',
    "config_unknown_key_with_newline": '[gate]\n"audit\\nlog" = "/x"\n',
    "config_substituter_newline": TENANT
    + 'substituters = ["https://cache.example\\nsandbox = false"]\n',
    "config_substituter_two_words": TENANT
    + 'substituters = ["https://cache.example https://evil.example"]\n',
    "config_substituter_hash": TENANT + 'substituters = ["https://cache.example#"]\n',
    "config_substituter_empty": TENANT + 'substituters = [""]\n',
    "config_trusted_key_newline": TENANT
    + 'trusted_public_keys = ["k:AAAA\\nrequire-sigs = false"]\n',
    "config_trusted_key_nbsp": TENANT + 'trusted_public_keys = ["k:AAAA\\u00a0k2:BBBB"]\n',
    "config_allowed_store_escape": HOST + 'allowed_stores = ["local\\u001b[2J"]\n',
    "config_path_newline": '[gate]\naudit_log = "/var/log/a\\n/b"\n',
    "config_path_bidi_override": '[tenants]\nroot = "/srv/\\u202etenants"\n',
    "config_choice_next_line": '[principals.alice]\nstore = "host\\u0085"\n',
    "config_duration_arabic_digits": TENANT + 'session_timeout = "\u0661\u0662\u0660"\n',
    "config_duration_fullwidth_digits": TENANT + 'session_timeout = "\uff13\uff10m"\n',
    "config_duration_ideographic_space": TENANT + 'session_timeout = "30\u3000m"\n',
    "config_duration_too_long": TENANT + 'session_timeout = "400d"\n',
    "config_duration_digits_overflow": TENANT + f'session_timeout = "{"9" * 40}d"\n',
    "config_size_devanagari_digits": TENANT + 'disk_quota = "\u0967\u0966G"\n',
    "config_size_too_large": TENANT + "disk_quota = 9223372036854775807\n",
    "config_integer_5000_digits": TENANT + f"max_sessions = {'9' * 5000}\n",
    "config_deep_array": "x = " + "[" * 5000 + "]" * 5000 + "\n",
    "config_deep_inline_table": "x = " + "{a = " * 5000 + "1" + " }" * 5000 + "\n",
    "config_deep_array_after_strings": 'x = ["]]]", \'\'\'\n]]\'\'\', """]"""", '
    + "[" * 40
    + "]" * 40
    + "]\n",
    "config_long_dotted_key": "a" + ".a" * 5000 + " = 1\n",
    "config_too_many_list_items": HOST
    + "allowed_stores = ["
    + ", ".join(f'"/s{index}"' for index in range(300))
    + "]\n",
}


def main() -> None:
    for name, text in REQUESTS.items():
        (HERE / f"{name}.cmd").write_bytes(text.encode())
    for name, text in CONFIGS.items():
        (HERE / f"{name}.toml").write_bytes(text.encode())


if __name__ == "__main__":
    main()
