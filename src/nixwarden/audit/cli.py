"""`nixwarden audit`: check a machine's Nix, SSH and nixwarden trust settings."""

from __future__ import annotations

import argparse
import os
import sys

from nixwarden.cliutil import parser
from nixwarden.errors import EXIT_OK, EXIT_REFUSED, UsageError

DESCRIPTION = """\
Reads the effective Nix configuration (includes, extra- settings, root's user layers),
the machines file, sshd's configuration and the authorized_keys of builder users, the
daemon socket, the installed Nix or Lix version and nixwarden's own policy, and reports
findings with a severity, a location, the reason and a fix.

exit status: 0 no finding at or above --fail-on, 1 at least one, 2 bad usage or a main
file that cannot be read. Rules and formats: docs/audit.md; one rule: --explain RULE.
"""

SEVERITY_CHOICES = ("critical", "high", "medium", "low", "info")


def _arguments(argv: list[str]) -> argparse.Namespace:
    p = parser("audit", DESCRIPTION)
    p.add_argument("--root", metavar="DIR", help="audit a tree (an image) instead of /")
    p.add_argument("--nix-conf", metavar="FILE", help="nix.conf (default $NIX_CONF_DIR/nix.conf)")
    p.add_argument("--machines", metavar="FILE", help="machines file (default from `builders`)")
    p.add_argument("--sshd-config", metavar="FILE", help="default /etc/ssh/sshd_config")
    p.add_argument("--config", metavar="FILE", help="nixwarden policy (default as the gate's)")
    p.add_argument(
        "--format", choices=("text", "json", "sarif"), default="text", help="default text"
    )
    p.add_argument(
        "--fail-on",
        choices=SEVERITY_CHOICES,
        default="high",
        metavar="SEVERITY",
        help="exit 1 from this severity up: critical, high (default), medium, low, info",
    )
    p.add_argument("--explain", metavar="RULE", help="describe one rule and exit")
    return p.parse_args(argv)


def explain(rule_id: str) -> str:
    from nixwarden.audit.catalog import BY_ID  # noqa: PLC0415

    rule = BY_ID.get(rule_id)
    if rule is None:
        raise UsageError(f"unknown rule {rule_id!r} (docs/audit.md lists them all)")
    fix = rule.fix.replace("\n", "\n       ")
    return (
        f"{rule.id} ({rule.severity.value}, {rule.family})\n"
        f"  {rule.title}\n"
        f"why:   {rule.why}\n"
        f"fix:   {fix}\n"
    )


def main(command: str, argv: list[str]) -> int:
    args = _arguments(argv)
    if args.explain is not None:
        sys.stdout.write(explain(args.explain))
        return EXIT_OK

    from nixwarden.audit import catalog, gather, render  # noqa: PLC0415
    from nixwarden.audit.model import Severity  # noqa: PLC0415

    options = gather.Options(
        root=args.root,
        nix_conf=args.nix_conf,
        machines=args.machines,
        sshd_config=args.sshd_config,
        config=args.config,
    )
    fail_on = Severity.parse(args.fail_on)
    facts = gather.gather(options, os.environ)
    findings = catalog.run(facts)
    match args.format:
        case "json":
            output = render.json_report(findings, fail_on)
        case "sarif":
            output = render.sarif_report(findings, catalog.RULES)
        case _:
            colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
            output = render.text(findings, fail_on, colour=colour)
    sys.stdout.write(output)
    sys.stdout.flush()
    return EXIT_REFUSED if render.failing(findings, fail_on) else EXIT_OK
