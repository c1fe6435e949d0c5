"""Hostile machine trees: every one ends quickly, in one report, and says what it cut.

tests/corpus/audit/_hostile/<case>/ is a tree named after what it attacks (AUDIT-CASE
generates what git should not hold: big files, FIFOs, links, odd names); `HOSTILE`
maps each case to what the audit must report, and the map is checked both ways. Every
case also holds to what any audit must: exit 0 or 1, nothing on stderr, a bounded
report, a text report whose every character is printable and whose every unindented
line is a heading the JSON report agrees with, and no host file name from a tree that
links out of its root.

A SIGALRM guard stops a case that runs away (a hang, not a speed target: the cases
take well under a second each; `python -m bench audit` measures time).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

from nixwarden import cli
from tests.unit.audit_helpers import CORPUS, build_tree

HOSTILE_DIR = CORPUS / "_hostile"
HANG_GUARD_SECONDS = 120
MAX_FINDINGS = 250
# Names every Debian host has in /etc and the corpus trees never do.
HOST_ONLY = ("hostname", "os-release", "fstab", "nsswitch.conf", "shells", "login.defs", "hosts")


@dataclass(frozen=True)
class Expect:
    present: tuple[tuple[str, str], ...] = ()  # (rule, text in "file:line evidence")
    absent: tuple[str, ...] = ()
    leak_check: bool = False  # the tree links out of its root: no host name may show


HOSTILE: dict[str, Expect] = {
    # sshd: globs, tokens and Include lines (bounded, linear, reported)
    "sshd_include_glob_link_loop": Expect((("audit-glob-cut", "matches more than 256"),)),
    "sshd_include_glob_too_deep": Expect((("audit-glob-cut", "path components"),)),
    "sshd_include_glob_wide_directory": Expect((("audit-glob-cut", "matches more than 256"),)),
    "sshd_token_6mb": Expect((("ssh-config-invalid", "no argument after keyword 'Match'"),)),
    "sshd_token_6mb_unterminated_quote": Expect(
        (("ssh-config-invalid", "invalid quotes after keyword 'Banner'"),)
    ),
    "sshd_quoted_pieces_3mb": Expect((("audit-input-cut", "tokens"),)),
    "sshd_include_200k_lines": Expect(
        (("audit-input-cut", "Include lines"), ("audit-input-cut", "included files"))
    ),
    "sshd_include_file_over_8mib": Expect((("audit-input-cut", "larger than 8 MiB"),)),
    "sshd_include_fifo": Expect((("ssh-config-invalid", "not a regular file"),)),
    "sshd_include_link_cycle": Expect((("ssh-config-invalid", "include cycle"),)),
    "sshd_match_blocks_times_users": Expect(
        (("audit-input-cut", "Match blocks evaluated for users"),)
    ),
    "sshd_authorized_keys_file_huge": Expect(
        (("audit-input-cut", "AuthorizedKeysFile names 1001 files"),)
    ),
    # sshd: paths stay inside the root
    "sshd_include_absolute_link_out_of_root": Expect(
        (("ssh-config-invalid", "/etc/ssh/host/passwd:1"),), leak_check=True
    ),
    "sshd_include_dotdot_above_root": Expect(
        (("ssh-config-invalid", "/etc/passwd:1"),), leak_check=True
    ),
    "sshd_include_relative_link_climbs_out": Expect(
        (("ssh-config-invalid", "/etc/ssh/up/etc/passwd:1"),), leak_check=True
    ),
    # authorized_keys, homes
    "home_ssh_absolute_link_out_of_root": Expect(
        (("ssh-key-unrestricted", "/home/builder/.ssh/authorized_keys:1"),), leak_check=True
    ),
    "home_dotdot_above_root": Expect((("ssh-key-unrestricted", "authorized_keys:1"),)),
    "authorized_keys_over_bound": Expect((("audit-input-cut", "more than 10000 keys"),)),
    "authorized_keys_fifo": Expect(
        (("nix-trusted-users", "builder"),), absent=("ssh-key-unrestricted",)
    ),
    # nix.conf and machines: the same walk
    "nixconf_include_absolute_link_out_of_root": Expect(
        (("nix-require-sigs-off", "/etc/nix/conf.d/extra.conf:1"),), leak_check=True
    ),
    "nixconf_include_link_cycle": Expect((("nixconf-include-cycle", "cycle"),)),
    "nixconf_settings_over_bound": Expect(
        (("audit-input-cut", "more than 20000 lines of Nix configuration"),),
        absent=("nix-require-sigs-off",),
    ),
    "machines_at_file_absolute_link": Expect(
        (("machines-scheme", "http://builder@b1"),), leak_check=True
    ),
    "machines_at_file_link_cycle": Expect((("machines-invalid", "include cycle"),)),
    "nixconf_paths_1500_deep": Expect(
        (("nix-hook-outside-store", "/d/d/d"), ("nix-secret-readable", "/d/d/d"))
    ),
    # nixwarden's configuration
    "nixwarden_config_nested_array": Expect((("nixwarden-config-invalid", "config.toml"),)),
    "nixwarden_config_nested_inline_table": Expect((("nixwarden-config-invalid", "config.toml"),)),
    # gate lines as the project writes them, and the configuration each one names
    "gate_line_launcher_beside_unrestricted_key": Expect(
        (("ssh-key-unrestricted", "other@example"),)
    ),
    "gate_line_fallback_beside_unrestricted_key": Expect(
        (("ssh-key-unrestricted", "other@example"),)
    ),
    "gate_line_own_config": Expect(
        absent=("nixwarden-unknown-principal", "nixwarden-config-invalid")
    ),
    "gate_line_own_config_lacks_principal": Expect(
        (("nixwarden-unknown-principal", "not in /etc/nixwarden/ci.toml"),)
    ),
    "gate_line_config_absolute_link": Expect(
        (("nixwarden-host-write", "principals.ci"),),
        absent=("nixwarden-unknown-principal", "nixwarden-config-invalid"),
        leak_check=True,
    ),
    "gate_line_config_missing": Expect(
        (("nixwarden-config-invalid", "/etc/nixwarden/gone.toml"),),
        absent=("nixwarden-unknown-principal",),
    ),
    "gate_line_config_relative_to_home": Expect(
        absent=("nixwarden-unknown-principal", "nixwarden-config-invalid")
    ),
    "gate_line_shell_syntax": Expect((("ssh-key-unrestricted", "shell syntax"),)),
    "gate_line_without_principal": Expect(
        (("nixwarden-gate-line-invalid", "--principal is required"),)
    ),
    # what reaches a person is escaped
    "escape_key_comment_controls": Expect((("ssh-key-unrestricted", "evil"),)),
    "escape_file_name_newline": Expect((("ssh-config-invalid", "CRITICAL"),)),
}

CASES = sorted(HOSTILE)
HEADING = re.compile(r"(CRITICAL|HIGH|MEDIUM|LOW|INFO) \((\d+)\)")


@contextmanager
def hang_guard(seconds: int) -> Iterator[None]:
    def expired(signum: int, frame: FrameType | None) -> None:
        raise AssertionError(f"the audit did not finish in {seconds} s (hang guard)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def audit(capsys: pytest.CaptureFixture[str], root: Path, form: str) -> tuple[int, str]:
    with hang_guard(HANG_GUARD_SECONDS):
        code = cli.main(["audit", "--root", str(root), "--format", form])
    captured = capsys.readouterr()
    assert captured.err == "", captured.err
    return code, captured.out


def test_every_case_is_mapped_and_every_mapping_has_a_case() -> None:
    assert {path.name for path in HOSTILE_DIR.iterdir()} == set(HOSTILE)


@pytest.mark.parametrize("case", CASES)
def test_hostile_tree(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    expect = HOSTILE[case]
    # Deeper than Python's recursion limit: pytest's own clean-up could not remove it.
    request.addfinalizer(lambda: subprocess.run(["rm", "-rf", "--", str(tmp_path)], check=False))
    root = build_tree(HOSTILE_DIR / case, tmp_path)
    code, out = audit(capsys, root, "json")
    document = json.loads(out)
    findings = document["findings"]
    assert code in (0, 1) and document["summary"]["failed"] == (code == 1)
    assert len(findings) <= MAX_FINDINGS
    seen = [(f["rule"], f"{f['file']}:{f['line']} {f['evidence']}") for f in findings]
    for rule, text in expect.present:
        assert any(r == rule and text in where for r, where in seen), (rule, text, seen)
    for rule in expect.absent:
        assert rule not in {r for r, _ in seen}, (rule, seen)

    text_code, text = audit(capsys, root, "text")
    assert text_code == code
    assert all(c == "\n" or c.isprintable() for c in text), "unescaped character in the report"
    counts = document["summary"]["by_severity"]
    lines = text.splitlines()
    for line in lines[:-1]:
        if line and not line.startswith(" "):
            heading = HEADING.fullmatch(line)
            assert heading, f"a line that is not a heading starts at the margin: {line!r}"
            assert counts[heading[1].lower()] == int(heading[2])
    assert lines[-1].startswith(f"{len(findings)} findings")

    if expect.leak_check:
        names = [name for name in HOST_ONLY if os.path.exists(f"/etc/{name}")]
        assert names, "the host has none of the names the leak check looks for"
        for name in names:
            assert not (root / "etc" / name).exists()
            assert f"/{name}" not in out and f"/{name}" not in text, name
