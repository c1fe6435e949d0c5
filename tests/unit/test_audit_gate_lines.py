"""The audit reads the key lines `nixwarden authorized-keys-line` writes, in both forms it
writes them, and checks each against the configuration the line names."""

from __future__ import annotations

import io
import json
import os
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from nixwarden import cli
from nixwarden.audit import gatecmd
from nixwarden.gate import keyline
from tests.unit.audit_helpers import write

KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJO7YFVqOMh6ip3C9G5DSc6VCDHnrth/0gVEzjHJwCmY "
    "builder@example"
)
OTHER = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQbHF8Kz+OXVg0M9/NuYN2XgOfq8+Hc+yFwfHUVZbXi other@example"
)
POLICY = "/etc/nixwarden/policy.toml"


def tree(tmp_path: Path, lines: list[str]) -> Path:
    """`builder` is a builder user only through its key lines: not in trusted-users, not a
    principal's name, no machines entry."""
    root = tmp_path / "image"
    write(root, "/etc/passwd", "root:x:0:0::/root:/bin/sh\nbuilder:x:1001:1001::/home/b:/bin/sh\n")
    write(root, "/etc/group", "root:x:0:\nbuilder:x:1001:\n")
    write(root, POLICY, "[principals.ci]\n")
    write(root, "/etc/nixwarden/config.toml", "[principals.somebody-else]\n")
    write(root, "/home/b/.ssh/authorized_keys", "\n".join(lines) + "\n")
    return root


def audit(root: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    code = cli.main(["audit", "--root", str(root), "--format", "json"])
    findings: list[dict[str, object]] = json.loads(capsys.readouterr().out)["findings"]
    assert code == (1 if any(f["severity"] in ("high", "critical") for f in findings) else 0)
    return findings


def installation(tmp_path: Path, *, launcher: bool) -> str:
    """A nixwarden executable, with the lean launcher beside it or not."""
    bin_dir = tmp_path / ("with" if launcher else "without") / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "nixwarden").write_text("#!/bin/sh\n")
    if launcher:
        (bin_dir / "nixwarden-gate").write_text("#!/bin/sh\n")
    return str(bin_dir / "nixwarden")


def assert_only_the_unrestricted_key_is_flagged(findings: list[dict[str, object]]) -> None:
    flagged = [f for f in findings if f["rule"] == "ssh-key-unrestricted"]
    assert len(flagged) == 1, findings
    assert flagged[0]["severity"] == "high" and flagged[0]["line"] == 2
    assert "builder (runs nixwarden gate)" in str(flagged[0]["evidence"])
    assert "other@example" in str(flagged[0]["evidence"])
    rules = {f["rule"] for f in findings}
    assert not rules & {
        "nixwarden-unknown-principal",
        "nixwarden-config-invalid",
        "nixwarden-gate-line-invalid",
    }


@pytest.mark.parametrize("launcher", [True, False], ids=["nixwarden-gate", "nixwarden gate"])
def test_rendered_lines_make_a_builder_user(
    launcher: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = keyline.gate_command(installation(tmp_path, launcher=launcher), "/usr/bin/python3")
    assert (command[-1] == "gate") != launcher  # both forms authorized-keys-line writes
    key_type, blob, comment = KEY.split(" ", 2)
    if launcher:
        line = keyline.render(command, "ci", POLICY, (key_type, blob, comment))
    else:
        # render() refuses this command today (it checks the word `gate` as a path), so the
        # line is put together exactly as render() would write it.
        words = [*command, "--principal", "ci", "--config", POLICY,
                 "--key", f"{key_type}:{keyline.fingerprint(blob)}"]  # fmt: skip
        line = f'restrict,command="{" ".join(words)}" {KEY}'
    gate = gatecmd.parse(line.split('command="', 1)[1].split('"', 1)[0])
    assert gate is not None and (gate.principal, gate.config, gate.problem) == ("ci", POLICY, None)
    findings = audit(tree(tmp_path, [line, OTHER]), capsys)
    assert_only_the_unrestricted_key_is_flagged(findings)


def test_the_line_the_cli_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The real command's output: its --config is the absolute host path of the file given,
    # so the tree gets the same file at that path (the audit resolves it inside the root).
    host_config = tmp_path / "host" / "policy.toml"
    host_config.parent.mkdir()
    host_config.write_text("[principals.ci]\n")
    public = tmp_path / "client.pub"
    public.write_text(KEY + "\n")
    nixwarden = installation(tmp_path, launcher=True)
    output = io.StringIO()
    with redirect_stdout(output):
        code = cli.main(
            ["authorized-keys-line", "--principal", "ci", "--key", str(public),
             "--config", str(host_config), "--nixwarden", nixwarden,
             "--python", "/usr/bin/python3"]
        )  # fmt: skip
    assert code == 0
    line = output.getvalue().strip()
    assert line.startswith('restrict,command="/usr/bin/python3 -I ') and "nixwarden-gate" in line
    root = tree(tmp_path, [line, OTHER])
    inside = root / str(host_config).lstrip("/")
    inside.parent.mkdir(parents=True)
    shutil.copy(host_config, inside)
    assert_only_the_unrestricted_key_is_flagged(audit(root, capsys))


def test_the_config_the_line_names_not_the_audits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = f'restrict,command="/usr/bin/nixwarden gate --principal ci --config {POLICY}" {KEY}'
    root = tree(tmp_path, [line])
    # The audit's own --config lacks `ci`; the line's own configuration has it.
    code = cli.main(["audit", "--root", str(root), "--format", "json",
                     "--config", "/etc/nixwarden/config.toml"])  # fmt: skip
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert code in (0, 1)
    assert "nixwarden-unknown-principal" not in {f["rule"] for f in findings}
    # …and a principal missing from the line's own configuration is found there.
    write(root, POLICY, "[principals.somebody-else]\n")
    findings = audit(root, capsys)
    (unknown,) = [f for f in findings if f["rule"] == "nixwarden-unknown-principal"]
    assert f"not in {POLICY}" in str(unknown["evidence"])
    assert unknown["file"] == "/home/b/.ssh/authorized_keys" and unknown["line"] == 1


def test_a_line_without_config_reads_the_gates_default_never_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    line = f'restrict,command="/usr/bin/nixwarden gate --principal ci" {KEY}'
    root = tree(tmp_path, [line])
    monkeypatch.setenv("NIXWARDEN_CONFIG", POLICY)  # the live gate ignores it
    findings = audit(root, capsys)
    (unknown,) = [f for f in findings if f["rule"] == "nixwarden-unknown-principal"]
    assert "not in /etc/nixwarden/config.toml" in str(unknown["evidence"])
    assert os.environ["NIXWARDEN_CONFIG"] == POLICY
