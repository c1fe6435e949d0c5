"""The installed Nix or Lix against a table of published advisories.

A version is affected when its release series has a fixed release newer than it, or when
its series got no fix at all and is older than the newest fixed series (an unmaintained
series keeps the bug). `introduced` bounds advisories that only concern newer releases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nixwarden.audit.facts import Facts
from nixwarden.audit.model import Finding, Rule, Severity

FAMILY = "version"
Version = tuple[int, int, int]

ADVISORY = Rule(
    "nix-version-advisory",
    Severity.HIGH,
    "the installed Nix or Lix has a published security advisory",
    "Published daemon and sandbox flaws are exploitable by any user allowed to reach the "
    "daemon, usually up to root.",
    "# upgrade Nix or Lix to a fixed release of its series",
    FAMILY,
)
UNKNOWN = Rule(
    "nix-version-unknown",
    Severity.INFO,
    "the installed Nix or Lix version could not be determined",
    "Without the version the advisory table cannot be checked.",
    "nix --version",
    FAMILY,
)
RULES = (ADVISORY, UNKNOWN)


@dataclass(frozen=True)
class Advisory:
    ids: str
    product: str  # "nix" or "lix"
    severity: Severity
    summary: str
    fixed: tuple[str, ...]
    source: str
    introduced: str | None = None


# Sources, checked for this table (November 2026):
# - CVE-2024-27297 / GHSA-2ffj-w4mj-pg37 (fixed-output derivations could pass file
#   descriptors and modify registered outputs): fixed in 2.3.18, 2.18.2, 2.19.4, 2.20.5
#   (NixOS/nixpkgs#294030, #296709; 2.16.3 and 2.17.2 got the patch too per #296670). Lix
#   was forked after the fix.
# - CVE-2024-38531 / GHSA-q82p-44mg-mgh5 (world-accessible build directory): Nix 2.24.0
#   release notes; backports listed by the advisory (2.23.1 confirmed by NixOS/nix#11002,
#   the 2.18-2.22 backport labels by NixOS/nix#11031). nixpkgs marks 2.3.18 vulnerable.
# - CVE-2025-46415, -46416, -52991, -52992, -52993 (build directory and FOD privilege
#   escalations): Nix 2.24.15, 2.26.4, 2.28.4, 2.29.1; Lix 2.91.2, 2.92.2, 2.93.1
#   (lix.systems/blog/2025-06-24-lix-cves, NixOS Discourse "Security advisory: privilege
#   escalations in Nix, Lix and Guix" 2025-06-24, NixOS/nixpkgs#419575, CVE record text).
# - CVE-2026-39860 / GHSA-g3g9-5vj6-r3gj (symlink following while registering FOD outputs,
#   root file overwrite; introduced with 2.21): Nix 2.28.6, 2.29.3, 2.30.4, 2.31.4, 2.32.7,
#   2.33.4, 2.34.5; Lix not affected (advisory, 2026-04-07; NixOS/nixpkgs#507681).
TABLE_VERSION = 1
ADVISORIES = (
    Advisory(
        "CVE-2024-27297",
        "nix",
        Severity.HIGH,
        "fixed-output derivations can alter registered store paths",
        ("2.3.18", "2.16.3", "2.17.2", "2.18.2", "2.19.4", "2.20.5"),
        "https://github.com/NixOS/nix/security/advisories/GHSA-2ffj-w4mj-pg37",
    ),
    Advisory(
        "CVE-2024-38531",
        "nix",
        Severity.MEDIUM,
        "the build directory is reachable from outside the sandbox",
        ("2.18.4", "2.19.5", "2.20.7", "2.21.3", "2.22.2", "2.23.1", "2.24.0"),
        "https://github.com/NixOS/nix/security/advisories/GHSA-q82p-44mg-mgh5",
    ),
    Advisory(
        "CVE-2025-46415, CVE-2025-46416, CVE-2025-52991, CVE-2025-52992, CVE-2025-52993",
        "nix",
        Severity.CRITICAL,
        "a user allowed to build can escalate to the daemon's user (root)",
        ("2.24.15", "2.26.4", "2.28.4", "2.29.1"),
        "https://discourse.nixos.org/t/security-advisory-privilege-escalations-in-nix-lix-and-guix/66017",
    ),
    Advisory(
        "CVE-2025-46415, CVE-2025-46416, CVE-2025-52991, CVE-2025-52992, CVE-2025-52993",
        "lix",
        Severity.CRITICAL,
        "a user allowed to build can escalate to the daemon's user (root)",
        ("2.91.2", "2.92.2", "2.93.1"),
        "https://lix.systems/blog/2025-06-24-lix-cves/",
    ),
    Advisory(
        "CVE-2026-39860",
        "nix",
        Severity.CRITICAL,
        "a build can overwrite files as root while its output is registered",
        ("2.28.6", "2.29.3", "2.30.4", "2.31.4", "2.32.7", "2.33.4", "2.34.5"),
        "https://github.com/NixOS/nix/security/advisories/GHSA-g3g9-5vj6-r3gj",
        introduced="2.21.0",
    ),
)

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> Version | None:
    match = _VERSION.match(text)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def identify(output: str) -> tuple[str, Version] | None:
    """(product, version) from `nix --version` output: 'nix (Nix) 2.8.0',
    'nix (Lix, like Nix) 2.91.1', 'nix (Determinate Nix 3.6.2) 2.29.0'."""
    first = output.strip().splitlines()[0] if output.strip() else ""
    product = "lix" if "lix" in first.lower() else "nix"
    candidates = re.findall(r"(?<![\w.])(\d+\.\d+(?:\.\d+)?)[\w.+-]*\s*$", first)
    if not candidates:
        return None
    version = parse_version(candidates[-1])
    return None if version is None else (product, version)


def affected(version: Version, advisory: Advisory) -> bool:
    if advisory.introduced is not None:
        start = parse_version(advisory.introduced)
        if start is not None and version < start:
            return False
    fixes = sorted(v for v in (parse_version(f) for f in advisory.fixed) if v is not None)
    if not fixes:
        return True
    same_series = [fix for fix in fixes if fix[:2] == version[:2]]
    if same_series:
        return version < same_series[0]
    return version[:2] < fixes[-1][:2]


def _show(version: Version) -> str:
    return ".".join(map(str, version))


def fixed_for(version: Version, advisory: Advisory) -> str:
    """The fix of the version's own series, else the newest fixed release."""
    fixes = sorted(v for v in (parse_version(f) for f in advisory.fixed) if v is not None)
    same = [v for v in fixes if v[:2] == version[:2] and v > version]
    if same:
        return _show(same[0])
    return _show(fixes[-1]) if fixes else "a fixed release"


def check(facts: Facts) -> list[Finding]:
    if not facts.nix_version:
        return [UNKNOWN.finding(evidence=f"no version found ({facts.version_source})")]
    identified = identify(facts.nix_version)
    if identified is None:
        return [
            UNKNOWN.finding(
                evidence=f"{facts.version_source} said {facts.nix_version.strip()[:80]!r}"
            )
        ]
    product, version = identified
    name = "Lix" if product == "lix" else "Nix"
    findings = []
    for advisory in ADVISORIES:
        if advisory.product != product or not affected(version, advisory):
            continue
        upgrade = fixed_for(version, advisory)
        findings.append(
            ADVISORY.finding(
                severity=advisory.severity,
                evidence=(
                    f"{name} {_show(version)} ({facts.version_source}): {advisory.ids}: "
                    f"{advisory.summary}; fixed in {', '.join(advisory.fixed)} "
                    f"({advisory.source})"
                ),
                setting=None,
                fix=f"# upgrade {name} to {upgrade} or later",
            )
        )
    return findings
