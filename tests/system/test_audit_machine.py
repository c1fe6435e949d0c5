"""`nixwarden audit` on the real machine: Debian's Nix 2.8 (sandbox = false, an advisory),
the real daemon socket, real users and homes, and sshd's own view of Match blocks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testbed import harness

KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJO7YFVqOMh6ip3C9G5DSc6VCDHnrth/0gVEzjHJwCmY "
    "builder@example"
)


def audit(*args: str) -> subprocess.CompletedProcess[bytes]:
    return harness.run([harness.NIXWARDEN, "audit", *args], env=harness.base_env(), check=False)


def test_the_real_machine(system: None) -> None:
    result = audit("--format", "json")
    assert result.returncode == 1, result.stderr.decode()
    findings = json.loads(result.stdout)["findings"]
    by_rule = {f["rule"]: f for f in findings}
    # Debian's packaged nix.conf says `sandbox = false` (with a comment explaining why).
    sandbox = by_rule["nix-sandbox-disabled"]
    assert sandbox["file"] == "/etc/nix/nix.conf" and sandbox["evidence"] == "sandbox = false"
    assert (
        Path("/etc/nix/nix.conf")
        .read_text()
        .splitlines()[sandbox["line"] - 1]
        .startswith("sandbox")
    )
    # Nix 2.8 predates every fix in the advisory table.
    advisories = [f for f in findings if f["rule"] == "nix-version-advisory"]
    assert any("Nix 2.8" in f["evidence"] and f["severity"] == "critical" for f in advisories)
    socket = by_rule.get("nix-daemon-socket-access")
    if Path("/nix/var/nix/daemon-socket").exists():
        assert socket is not None and "can connect" in socket["evidence"]


def test_text_report_on_the_real_machine(system: None) -> None:
    result = audit()
    assert result.returncode == 1
    out = result.stdout.decode()
    assert "[nix-sandbox-disabled]" in out and "\033[" not in out
    assert result.stderr == b""


def test_a_real_builder_user(system: None, users: harness.Users, tmp_path: Path) -> None:
    builder = users.create()
    harness.install_authorized_key(builder, KEY)
    nix_conf = tmp_path / "nix.conf"
    nix_conf.write_text(f"sandbox = true\ntrusted-users = root {builder.name}\n")
    result = audit("--nix-conf", str(nix_conf), "--format", "json", "--fail-on", "critical")
    findings = json.loads(result.stdout)["findings"]
    keys = [f for f in findings if f["rule"] == "ssh-key-unrestricted"]
    assert [f["file"] for f in keys] == [str(builder.home / ".ssh/authorized_keys")]
    assert any(f["rule"] == "nix-trusted-users" and builder.name in f["evidence"] for f in findings)

    gated = f'restrict,command="/usr/bin/nixwarden gate --principal {builder.name}" {KEY}'
    harness.install_authorized_key(builder, gated)
    result = audit("--nix-conf", str(nix_conf), "--format", "json", "--fail-on", "critical")
    rules = {f["rule"] for f in json.loads(result.stdout)["findings"]}
    assert "ssh-key-unrestricted" not in rules


def test_match_evaluation_agrees_with_sshd(
    system: None, users: harness.Users, tmp_path: Path
) -> None:
    """Our reading of Include/Match against `sshd -T -C` for the same user."""
    from nixwarden.audit import sshd as sshd_parser  # noqa: PLC0415

    builder = users.create(groups=("nix-users",))
    other = users.create(groups=())
    host_key = tmp_path / "host_key"
    harness.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
    included = tmp_path / "builders.conf"
    included.write_text(
        f"Match User {builder.name}\n  PermitTTY no\n  AllowTcpForwarding no\n"
        "  ForceCommand /usr/bin/nixwarden gate --principal b\n"
    )
    config = tmp_path / "sshd_config"
    config.write_text(
        f"HostKey {host_key}\nX11Forwarding yes\nInclude {included}\n"
        "Match Group nix-users\n  AllowAgentForwarding no\n  PermitTTY yes\n"
    )
    parsed = sshd_parser.parse(config.read_bytes(), str(config), lambda p: Path(p).read_bytes())
    sshd = harness.which("sshd")
    assert sshd is not None
    for user, groups in ((builder.name, ("nix-users",)), (other.name, ())):
        shown = harness.run(
            [sshd, "-T", "-f", str(config), "-C", f"user={user},host=h,addr=127.0.0.1"]
        ).stdout.decode()
        theirs = dict(line.split(" ", 1) for line in shown.splitlines() if " " in line)
        decided = parsed.effective(user, (user, *groups), unknown_matches=False)
        for keyword in ("permittty", "allowtcpforwarding", "allowagentforwarding", "x11forwarding"):
            ours, _ = sshd_parser.value(decided, keyword)
            assert ours == theirs[keyword], (user, keyword, ours, theirs[keyword])
        ours_fc, _ = sshd_parser.value(decided, "forcecommand")
        assert (ours_fc or "none") == theirs.get("forcecommand", "none"), user
