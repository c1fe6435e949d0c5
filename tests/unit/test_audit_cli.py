"""`nixwarden audit` end to end over fake system trees: formats, exit codes, --explain,
--root, SARIF against the OASIS schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from nixwarden import cli
from nixwarden.audit import render
from nixwarden.audit.catalog import RULES
from nixwarden.audit.model import Finding, Severity
from tests.unit.audit_helpers import write

REPO = Path(__file__).resolve().parents[2]
# The OASIS schema, kept with the tests (see tests/schemas/README.md for source and licence).
SARIF_SCHEMA = REPO / "tests" / "schemas" / "sarif-schema-2.1.0.json"
KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJO7YFVqOMh6ip3C9G5DSc6VCDHnrth/0gVEzjHJwCmY "
    "builder@example"
)


@pytest.fixture
def system_tree(tmp_path: Path) -> Path:
    """A builder image with many things wrong."""
    root = tmp_path / "image"
    write(
        root,
        "/etc/passwd",
        "root:x:0:0::/root:/bin/sh\nbuilder:x:1001:1001::/home/builder:/bin/sh\n",
    )
    write(root, "/etc/group", "root:x:0:\nbuilder:x:1001:\nwheel:x:10:builder\n")
    write(
        root,
        "/etc/nix/nix.conf",
        "# the image's Nix\n"
        "sandbox = false   # trailing comment\n"
        "trusted-users = root @wheel\n"
        "include nix.d/extra.conf\n"
        "!include nix.d/absent.conf\n"
        "substituters = https://cache.nixos.org\n",
    )
    write(
        root,
        "/etc/nix/nix.d/extra.conf",
        "extra-trusted-substituters = http://cache.lan?trusted=1\n"
        "require-sigs = false\n"
        "frobnicate = 1\n",
    )
    write(root, "/etc/nix/machines", "ssh-ng://builder@b1 x86_64-linux - 2\n")
    write(root, "/etc/ssh/sshd_config", "PasswordAuthentication no\n")
    write(root, "/home/builder/.ssh/authorized_keys", KEY + "\n")
    write(
        root,
        "/etc/nixwarden/config.toml",
        '[principals.builder]\nprotocols = ["ssh"]\nstore = "host"\nwrite = true\n',
    )
    write(
        root,
        "/var/lib/dpkg/status",
        "Package: nix-bin\nStatus: install ok installed\nVersion: 2.8.0-1\n",
    )
    return root


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["audit", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_root_tree_json(system_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--root", str(system_tree), "--format", "json")
    assert code == 1
    document = json.loads(out)
    assert document["version"] == 1
    fields = {"rule", "severity", "title", "file", "line", "setting", "evidence", "why", "fix"}
    assert all(set(f) == fields for f in document["findings"])
    rules = {f["rule"] for f in document["findings"]}
    assert {
        "nix-sandbox-disabled",
        "nix-trusted-users",
        "nix-substituter-trusted-flag",
        "nix-trusted-substituter-http",
        "nix-require-sigs-off",
        "nixconf-unknown-setting",
        "nixconf-include-optional-missing",
        "machines-no-host-key",
        "ssh-key-unrestricted",
        "sshd-builder-forwarding",
        "nixwarden-host-write",
        "nix-version-advisory",
    } <= rules
    sandbox = next(f for f in document["findings"] if f["rule"] == "nix-sandbox-disabled")
    assert (sandbox["file"], sandbox["line"], sandbox["setting"]) == (
        "/etc/nix/nix.conf",
        2,
        "sandbox",
    )
    trusted = next(f for f in document["findings"] if f["rule"] == "nix-trusted-users")
    assert trusted["evidence"] == "trusted-users contains @wheel (builder)"
    flagged = next(f for f in document["findings"] if f["rule"] == "nix-substituter-trusted-flag")
    assert (flagged["file"], flagged["line"]) == ("/etc/nix/nix.d/extra.conf", 1)
    summary = document["summary"]
    assert summary["total"] == len(document["findings"]) and summary["failed"] is True
    assert summary["fail_on"] == "high" and summary["by_severity"]["critical"] >= 2
    severities = [Severity(f["severity"]).rank for f in document["findings"]]
    assert severities == sorted(severities, reverse=True)


def test_root_tree_text_grouped_without_colour(
    system_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--root", str(system_tree))
    assert code == 1
    assert "\033[" not in out
    assert out.index("CRITICAL (") < out.index("HIGH (") < out.index("MEDIUM (")
    assert "    fix:  sandbox = true" in out
    assert "at:   /etc/nix/nix.conf:2" in out
    assert "fails --fail-on high" in out.splitlines()[-1]


def test_fail_on_threshold(system_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(system_tree, "/etc/nix/nix.conf", "sandbox = true\nsandbox-fallback = false\n")
    (system_tree / "var/lib/dpkg/status").unlink()
    (system_tree / "etc/nixwarden/config.toml").unlink()
    (system_tree / "home/builder/.ssh/authorized_keys").unlink()
    code, out, _ = run(capsys, "--root", str(system_tree), "--format", "json")
    worst = max(Severity(f["severity"]) for f in json.loads(out)["findings"])
    assert worst == Severity.MEDIUM and code == 0
    assert run(capsys, "--root", str(system_tree), "--fail-on", "medium")[0] == 1
    assert run(capsys, "--root", str(system_tree), "--fail-on", "critical")[0] == 0


def test_sarif_validates_against_the_oasis_schema(
    system_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--root", str(system_tree), "--format", "sarif")
    assert code == 1
    document = json.loads(out)
    schema = json.loads(SARIF_SCHEMA.read_text())
    jsonschema.validate(document, schema)
    run_ = document["runs"][0]
    assert [r["id"] for r in run_["tool"]["driver"]["rules"]] == [r.id for r in RULES]
    result = next(r for r in run_["results"] if r["ruleId"] == "nix-sandbox-disabled")
    assert result["level"] == "error"
    location = result["locations"][0]["physicalLocation"]
    assert location == {
        "artifactLocation": {"uri": "file:///etc/nix/nix.conf"},
        "region": {"startLine": 2},
    }
    assert run_["tool"]["driver"]["rules"][result["ruleIndex"]]["id"] == "nix-sandbox-disabled"


def test_sarif_without_findings_validates(tmp_path: Path) -> None:
    jsonschema.validate(
        json.loads(render.sarif_report([], RULES)), json.loads(SARIF_SCHEMA.read_text())
    )


def test_binary_garbage_everywhere_is_findings_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "garbage"
    noise = bytes(range(256)) * 8
    for path in (
        "/etc/nix/nix.conf",
        "/etc/nix/machines",
        "/etc/ssh/sshd_config",
        "/etc/passwd",
        "/etc/group",
        "/etc/nixwarden/config.toml",
        "/var/lib/dpkg/status",
    ):
        write(root, path, noise)
    code, out, _ = run(capsys, "--root", str(root), "--format", "json")
    rules = {f["rule"] for f in json.loads(out)["findings"]}
    assert code in (0, 1)
    assert {"nixconf-invalid", "nixwarden-config-invalid"} <= rules


def test_include_of_a_device_or_fifo_does_not_hang(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "image"
    write(root, "/etc/nix/nix.conf", "include /dev/zero\ninclude fifo\n")
    os.mkfifo(root / "etc/nix/fifo")
    (root / "dev").mkdir()
    os.symlink("/dev/zero", root / "dev/zero")  # resolved inside the tree: dangling
    _, out, _ = run(capsys, "--root", str(root), "--format", "json")
    findings = json.loads(out)["findings"]
    assert any(
        f["rule"] == "nixconf-include-unreadable" and "fifo" in f["evidence"] for f in findings
    )


def test_symlinks_stay_inside_the_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "image"
    write(root, "/etc/static/nix/nix.conf", "require-sigs = false\n")
    (root / "etc/nix").mkdir(parents=True)
    os.symlink("/etc/static/nix/nix.conf", root / "etc/nix/nix.conf")  # absolute: NixOS style
    _, out, _ = run(capsys, "--root", str(root), "--format", "json")
    assert any(f["rule"] == "nix-require-sigs-off" for f in json.loads(out)["findings"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--root", "/nonexistent-nixwarden"], "not a directory"),
        (["--nix-conf", "/nonexistent/nix.conf"], "cannot read"),
        (["--machines", "/nonexistent/machines"], "cannot read"),
        (["--sshd-config", "/nonexistent/sshd_config"], "cannot read"),
        (["--config", "/nonexistent/config.toml"], "cannot read"),
        (["--format", "xml"], "invalid choice"),
        (["--fail-on", "severe"], "invalid choice"),
    ],
)
def test_bad_usage_and_unreadable_main_files_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if args[0] != "--root":
        args = ["--root", str(tmp_path), *args]
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("nixwarden: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--explain", "nix-sandbox-disabled")
    assert code == 0
    assert out.splitlines()[0] == "nix-sandbox-disabled (high, nix.conf)"
    assert "why:" in out and "fix:   sandbox = true" in out


def test_explain_unknown_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--explain", "no-such-rule")
    assert code == 2 and out == "" and "unknown rule 'no-such-rule'" in err


def test_every_rule_is_well_formed() -> None:
    for rule in RULES:
        assert rule.id == rule.id.lower() and " " not in rule.id
        assert rule.why.endswith(".") and rule.why.count(". ") == 0, rule.id
        assert rule.fix and rule.title


def test_text_colour_only_when_asked_and_control_characters_escaped() -> None:
    finding = Finding(
        "nix-sandbox-disabled",
        Severity.HIGH,
        "t",
        "/etc/nix/nix.conf",
        1,
        "sandbox",
        "sandbox = \x1b[31mfalse",
        "w.",
        "sandbox = true",
    )
    plain = render.text([finding], Severity.HIGH, colour=False)
    assert "\x1b" not in plain and "\\x1b[31mfalse" in plain
    assert "\x1b[" in render.text([finding], Severity.HIGH, colour=True)


def test_docs_describe_every_rule() -> None:
    docs = (REPO / "docs" / "audit.md").read_text()
    for rule in RULES:
        assert f"#### {rule.id}\n" in docs, rule.id
        assert f"**{rule.severity.value}** · {rule.title}." in docs, rule.id


def test_every_machine_string_is_escaped_for_a_person_and_kept_exact_in_json() -> None:
    hostile = "a\nCRITICAL (1)\u2028\u202eevil\x85\x1b[2J\\"
    finding = Finding(
        "ssh-key-unrestricted",
        Severity.HIGH,
        "a builder user's key is not pinned to a command with `restrict`",
        f"/home/{hostile}/.ssh/authorized_keys",
        3,
        None,
        f"builder: ssh-ed25519 …AAAA {hostile}: no `restrict`",
        "w.",
        # Values in a fix come from line-based files (no \n); every other character can.
        f"Match User {hostile.replace(chr(10), '')}\n  PermitTTY no",
    )
    text = render.text([finding], Severity.HIGH, colour=False)
    assert all(c == "\n" or c.isprintable() for c in text)
    assert text.count("\n") == 9  # heading, 6 lines of the finding (fix on 2), blank, summary
    assert "\\u202eevil\\u0085\\x1b[2J\\\\" in text and "a\\x0aCRITICAL (1)\\u2028" in text
    assert "\n            PermitTTY no" in text  # the fix's own line break stays a line break
    document = json.loads(render.json_report([finding], Severity.HIGH))
    assert document["findings"][0]["evidence"] == finding.evidence  # exact, JSON-escaped
    sarif = json.loads(render.sarif_report([finding], RULES))["runs"][0]["results"][0]
    message = sarif["message"]["text"]
    assert all(c == "\n" or c.isprintable() for c in message) and "\\u202e" in message
    assert sarif["properties"]["evidence"] == finding.evidence
