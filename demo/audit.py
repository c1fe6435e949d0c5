"""Audit: the real machine's trust model, checked (Debian's Nix 2.8 runs without a sandbox),
then an image: a key line authorized-keys-line printed beside an unrestricted key, and an
Include glob through links to `.` that would never finish expanding."""

from __future__ import annotations

import json
import os
from pathlib import Path

from demo.framework import Demo, DemoFailed

TITLE = "audit: a machine's Nix, SSH and nixwarden trust settings, checked"


def run(demo: Demo) -> None:
    # The machine's own configuration, not whatever NIX_CONF_DIR the demo's clients use.
    env = {name: value for name, value in demo.env.items() if name != "NIX_CONF_DIR"}
    demo.say(
        "Debian's packaged nix.conf sets `sandbox = false`, and Nix 2.8 predates several\n"
        "security fixes: the audit finds both and exits 1 (the default --fail-on is high)."
    )
    demo.nixwarden("audit this machine", "audit", expect_exit=1, env=env, show_lines=40, timeout=60)
    result = demo.nixwarden(
        "the same as JSON (the summary shown)",
        "audit",
        "--format",
        "json",
        expect_exit=1,
        env=env,
        show_lines=0,
        timeout=60,
    )
    summary = json.loads(result.stdout)["summary"]
    demo.say("  summary: " + json.dumps(summary))
    if not any(f["rule"] == "nix-sandbox-disabled" for f in json.loads(result.stdout)["findings"]):
        raise DemoFailed("the audit did not report Debian's sandbox = false")
    demo.nixwarden("what one rule means", "audit", "--explain", "nix-sandbox-disabled", env=env)
    _image(demo, env)


def _write(root: Path, path: str, text: str) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def _image(demo: Demo, env: dict[str, str]) -> None:
    image = demo.scratch / "audit-image"
    config = _write(image, "/etc/nixwarden/config.toml", "[principals.ci]\n")
    key = demo.scratch / "audit-client"
    demo.step("a client key", ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci",
                               "-f", str(key)], env=env)  # fmt: skip
    line = demo.nixwarden(
        "the key line for principal ci, as the docs say to make it",
        "authorized-keys-line", "--principal", "ci", "--key", f"{key}.pub",
        "--config", str(config), env=env,
    ).stdout.decode().strip()  # fmt: skip
    # The line names the config by its path on this host; the image holds it there too.
    _write(image, str(config), config.read_text())
    other = demo.scratch / "audit-other"
    demo.step("a second key, left unrestricted", ["ssh-keygen", "-q", "-t", "ed25519", "-N", "",
              "-C", "forgotten", "-f", str(other)], env=env)  # fmt: skip
    _write(
        image, "/etc/passwd", "root:x:0:0::/root:/bin/sh\nbuilder:x:1001:1001::/home/b:/bin/sh\n"
    )
    _write(image, "/home/b/.ssh/authorized_keys", f"{line}\n{Path(f'{other}.pub').read_text()}")
    ssh = image / "etc/ssh"
    _write(image, "/etc/ssh/sshd_config", "Include " + "*/" * 10 + "*.conf\n")
    for index in range(10):
        os.symlink(".", ssh / f"loop{index}")
    demo.say(
        "An image whose builder has the generated gate line and, beside it, a key anyone\n"
        "forgot to restrict; its sshd_config includes */*/…/*.conf through ten links to `.`\n"
        "(10^10 paths): the audit flags the second key, and says where it stopped expanding."
    )
    result = demo.nixwarden(
        "audit the image", "audit", "--root", str(image), "--format", "json",
        expect_exit=1, env=env, show_lines=0,
    )  # fmt: skip
    findings = json.loads(result.stdout)["findings"]
    for finding in findings:
        if finding["rule"] in ("ssh-key-unrestricted", "audit-glob-cut"):
            where = f"{finding['file']}:{finding['line']}"
            demo.say(f"  [{finding['rule']}] {where}: {finding['evidence'][:90]}")
    flagged = [f for f in findings if f["rule"] == "ssh-key-unrestricted"]
    if [f["line"] for f in flagged] != [2] or not any(
        f["rule"] == "audit-glob-cut" for f in findings
    ):
        raise DemoFailed("the audit did not flag exactly the unrestricted key and the glob")
