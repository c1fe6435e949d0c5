"""The certificate policy from the command line (`nixwarden verify`) or the `[trust]` table.

Every file is read and every certificate and KRL decided before the first path is
checked, so a malformed KRL or certificate stops verification with exit 2 and
nothing verifies.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from nixwarden.ca import load
from nixwarden.ca.cert import Certificate
from nixwarden.ca.policy import MAX_MIN_SIGNERS, CertificatePolicy, Rules
from nixwarden.ca.validity import parse_instant, parse_interval
from nixwarden.config import TrustSettings
from nixwarden.errors import InvalidInput, UsageError

if TYPE_CHECKING:
    from nixwarden.trust.keys import TrustedKeys

# Options whose value may start with `-` (`--at -1d`); see cli.glue_values.
VALUE_OPTIONS = ("--at",)


class CertificateOptions:
    """What `nixwarden verify` adds for certified keys (trust/cli.py's PolicyOptions)."""

    def add_arguments(self, command: argparse.ArgumentParser) -> None:
        add_arguments(command)

    def policy(
        self, args: argparse.Namespace, trusted: TrustedKeys | None
    ) -> CertificatePolicy | None:
        """None when no certificate option was given: plain trusted keys decide."""
        if not wanted(args):
            return None
        plain = [] if trusted is None else [(k.name, k.key) for k in trusted.by_name.values()]
        return policy_from_arguments(args, plain)


def _min_signers(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_MIN_SIGNERS:
        raise ValueError(text)
    return int(text)


def add_arguments(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group(
        "certified keys",
        "Keys certified by a team CA (OpenSSH user certificates; see docs/ca.md). "
        "A signature counts when its key name is a certificate's key id, the certificate "
        "is by a --ca, valid --at the time, not revoked by a --krl, and lists a --principal.",
    )
    group.add_argument(
        "--ca", action="append", default=[], metavar="CAPUB", help="CA public key file"
    )
    group.add_argument(
        "--certs",
        action="append",
        default=[],
        metavar="FILE_OR_DIR",
        help="certificate file, or directory of *-cert.pub files",
    )
    group.add_argument(
        "--krl", action="append", default=[], metavar="FILE", help="OpenSSH KRL (ssh-keygen -k)"
    )
    group.add_argument(
        "--principal",
        action="append",
        default=[],
        metavar="P",
        help="a certificate must list one of these (default: any principal)",
    )
    group.add_argument(
        "--min-signers",
        type=_min_signers,
        metavar="N",
        help="distinct certified signers every path needs (default 1)",
    )
    group.add_argument(
        "--at", metavar="TIME", help="check validity at TIME (2026-11-20T10:00Z, +1d …; UTC)"
    )
    group.add_argument(
        "--max-validity", metavar="INTERVAL", help="refuse certificates valid longer (e.g. 52w)"
    )
    group.add_argument(
        "--clock-skew", metavar="INTERVAL", help="leeway at both ends of validity (e.g. 5m)"
    )


def wanted(args: argparse.Namespace) -> bool:
    """Whether any certificate option was given (else plain trusted keys decide)."""
    return bool(
        args.ca
        or args.certs
        or args.krl
        or args.principal
        or args.min_signers
        or args.at
        or args.max_validity
        or args.clock_skew
    )


def policy_from_arguments(
    args: argparse.Namespace, trusted_keys: Iterable[tuple[str, bytes]] = ()
) -> CertificatePolicy:
    """The policy the options describe; `trusted_keys` are the `--trusted-key` keys."""
    if bool(args.ca) != bool(args.certs):
        raise UsageError("--ca and --certs go together: the CA keys, and the certificates")
    settings = TrustSettings(
        ca_keys=tuple(args.ca),
        krl=tuple(args.krl),
        principals=tuple(dict.fromkeys(p for text in args.principal for p in text.split(",") if p)),
        max_validity=parse_interval(args.max_validity) if args.max_validity else None,
        clock_skew=parse_interval(args.clock_skew) if args.clock_skew else 0,
        min_signers=args.min_signers or 1,
    )
    at = parse_instant(args.at, int(time.time())) if args.at else None
    return _build(settings, args.certs, at, trusted_keys)


def policy_from_settings(
    settings: TrustSettings,
    certificates: Sequence[str],
    *,
    at: int | None = None,
    trusted_keys: Iterable[tuple[str, bytes]] = (),
) -> CertificatePolicy:
    """The `[trust]` table's policy over the certificates in `certificates` (paths)."""
    if not settings.ca_keys:
        raise InvalidInput("[trust] names no ca_keys: no certificate can be accepted")
    return _build(settings, certificates, at, trusted_keys)


def _build(
    settings: TrustSettings,
    certificates: Sequence[str],
    at: int | None,
    trusted_keys: Iterable[tuple[str, bytes]],
) -> CertificatePolicy:
    return trust_policy(
        settings,
        load.certificates(certificates),
        int(time.time()) if at is None else at,
        trusted_keys,
    )


def trust_policy(
    settings: TrustSettings,
    certificates: Sequence[Certificate],
    at: int,
    trusted_keys: Iterable[tuple[str, bytes]] = (),
) -> CertificatePolicy:
    """The `[trust]` policy at time `at` over parsed `certificates`: its CA keys and KRLs
    are read now, so a KRL updated since a service started counts."""
    rules = Rules(
        principals=settings.principals,
        max_validity=settings.max_validity,
        clock_skew=settings.clock_skew,
        min_signers=settings.min_signers,
    )
    return CertificatePolicy.build(
        ca_keys=[key.key for key in load.ca_keys(settings.ca_keys)],
        certificates=certificates,
        krls=load.krls(settings.krl),
        rules=rules,
        at=at,
        trusted_keys=trusted_keys,
    )
