"""Audit: the real machine's trust model, checked (Debian's Nix 2.8 runs without a sandbox)."""

from __future__ import annotations

import json

from demo.framework import Demo

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
        from demo.framework import DemoFailed  # noqa: PLC0415

        raise DemoFailed("the audit did not report Debian's sandbox = false")
    demo.nixwarden("what one rule means", "audit", "--explain", "nix-sandbox-disabled", env=env)
