"""`nixwarden provenance`: who put a store path here, per the receive service's records.

    nixwarden provenance PATH [--json]          the records that vouch for PATH
    nixwarden provenance --profile NAME [--json]  every push, switch and rollback of NAME
    nixwarden provenance verify                 recompute the hash chain (exit 1 on a break)
    nixwarden provenance --revoked [--json]     valid paths whose signers are all revoked
                                                or expired under today's [trust]

The database is `[receive] provenance` (or `--db FILE`); it is opened read-only.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nixwarden.cliutil import parser
from nixwarden.deploy import provenance
from nixwarden.display import escape
from nixwarden.errors import EXIT_OK, EXIT_REFUSED, FormatError, Refused, UsageError

if TYPE_CHECKING:
    from nixwarden.config import TrustSettings

# A lookup by path is the common question and should answer at once: the configuration,
# certificate and store modules are imported only by the commands that need them.

DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else ""


def main(command: str, argv: list[str]) -> int:
    cli = parser(command, DESCRIPTION)
    cli.add_argument("--config", help="configuration file (for [receive] provenance, [trust])")
    cli.add_argument("--db", metavar="FILE", help="the provenance database (default: [receive])")
    cli.add_argument(
        "path", nargs="?", metavar="PATH", help="a store path or a link to one; or `verify`"
    )
    cli.add_argument("--profile", metavar="NAME", help="the records of a profile")
    cli.add_argument("--revoked", action="store_true", help="paths no signer vouches for now")
    cli.add_argument("--json", action="store_true", help="JSON on stdout")
    args = cli.parse_args(argv)
    verify = args.path == "verify"  # a file named so is `./verify`
    db = args.db
    settings: TrustSettings | None = None
    if db is None or args.revoked:
        from nixwarden import config as config_module  # noqa: PLC0415

        configuration = config_module.load(args.config)
        db = db or configuration.receive.provenance
        settings = configuration.trust
    if verify:
        if args.profile or args.revoked or args.json:
            raise UsageError(f"nixwarden {command} verify: takes only --config or --db")
        return _verify(db)
    chosen = [bool(args.path), bool(args.profile), bool(args.revoked)]
    if sum(chosen) != 1:
        raise UsageError(f"nixwarden {command}: give exactly one of PATH, --profile, --revoked")
    if args.revoked:
        assert settings is not None
        return _revoked(db, settings, as_json=args.json)
    with provenance.reading(db) as connection:
        if args.profile:
            records = _query(lambda: provenance.by_profile(connection, args.profile), db)
            subject = f"profile {args.profile}"
        else:
            from nixwarden.nix.closure import resolve_root  # noqa: PLC0415

            subject = resolve_root(args.path).path
            records = _query(lambda: provenance.by_path(connection, subject), db)
    if args.json:
        print(json.dumps({"subject": subject, "records": [_json(r, subject) for r in records]}))
    else:
        _print(subject, records)
    if not records:
        raise Refused(f"no provenance record for {escape(subject)} in {db}")
    return EXIT_OK


def _query(read: object, db: str) -> tuple[provenance.Record, ...]:
    assert callable(read)
    try:
        result: tuple[provenance.Record, ...] = read()
    except sqlite3.Error as error:
        raise FormatError(f"{db}: not a provenance database ({error})") from None
    return result


def _json(record: provenance.Record, subject: str) -> dict[str, object]:
    document = record.to_json()
    # A record of a large closure lists many paths; the subject's own entry is what a
    # lookup is about.
    document["paths"] = [
        {"path": entry.path, "signers": list(entry.signers)}
        for entry in record.paths
        if entry.path == subject
    ]
    document["path_count"] = len(record.paths)
    return document


def _print(subject: str, records: Sequence[provenance.Record]) -> None:
    print(escape(subject))
    for record in records:
        by = f"{escape(record.action)} by {escape(record.principal)}"
        print(f"  record {record.seq}  {record.time}  {escape(record.outcome)}  {by}")
        details = [f"unix user {escape(record.unix_user)}"]
        if record.profile:
            generation = "" if record.generation is None else f" generation {record.generation}"
            details.append(f"profile {escape(record.profile)}{generation}")
        print("    " + "; ".join(details))
        reported = [f"ssh key {escape(key)}" for key in record.ssh_keys]
        if record.client:
            reported.append(f"from {escape(record.client)}")
        if reported:
            print("    reported by the session: " + ", ".join(reported))
        for signer in record.signers:
            print(
                f"    signer {escape(signer.key_id)} (serial {signer.serial}, "
                f"CA {escape(signer.ca_fingerprint)})"
            )
        if record.tops:
            print("    tops " + " ".join(escape(top) for top in record.tops))
        if record.closure_digest:
            count = len(record.paths)
            noun = "path" if count == 1 else "paths"
            print(f"    closure {record.closure_digest} ({count} {noun} recorded)")
        if record.reason:
            print(f"    reason: {escape(record.reason)}")


def _verify(db: str) -> int:
    with provenance.reading(db) as connection:
        try:
            state = provenance.verify(connection)
        except sqlite3.Error as error:
            raise FormatError(f"{db}: not a provenance database ({error})") from None
    print(f"{state.records} records, chain intact; head {state.head}")
    return EXIT_OK


def _revoked(db: str, settings: TrustSettings, *, as_json: bool) -> int:
    import base64  # noqa: PLC0415
    import binascii  # noqa: PLC0415
    import time  # noqa: PLC0415

    from nixwarden.ca import load  # noqa: PLC0415
    from nixwarden.ca.cert import Certificate  # noqa: PLC0415
    from nixwarden.ca.policy import Rules, certificate_problem  # noqa: PLC0415
    from nixwarden.deploy.store import TargetStore  # noqa: PLC0415
    from nixwarden.nix import commands  # noqa: PLC0415

    if not settings.ca_keys:
        raise UsageError("[trust] names no ca_keys: there is nothing to judge signers by")
    trusted = frozenset(key.key for key in load.ca_keys(settings.ca_keys))
    krls = load.krls(settings.krl)
    # Expiry and revocation are what this asks about; the principal rules applied when
    # the path was accepted and are not re-judged.
    rules = Rules(max_validity=settings.max_validity, clock_skew=settings.clock_skew)
    now = int(time.time())

    def problem(signer: provenance.Signer) -> str | None:
        try:
            blob = base64.b64decode(signer.certificate, validate=True)
            certificate = Certificate.from_blob(blob, f"certificate of {signer.key_id}")
        except (binascii.Error, ValueError, FormatError) as error:
            return f"recorded certificate unreadable ({error})"
        return certificate_problem(certificate, trusted_cas=trusted, krls=krls, rules=rules, at=now)

    with provenance.reading(db) as connection:
        try:
            found = provenance.unvouched(provenance.all_records(connection), problem)
        except sqlite3.Error as error:
            raise FormatError(f"{db}: not a provenance database ({error})") from None
    store = TargetStore.from_environment(commands.nix_env())
    gone = store.invalid([item.path for item in found])
    found = [item for item in found if item.path not in gone]
    if as_json:
        print(json.dumps([{"path": i.path, "reasons": list(i.reasons)} for i in found]))
    else:
        for item in found:
            print(f"{escape(item.path)}: " + "; ".join(escape(r) for r in item.reasons))
    if found:
        print(f"nixwarden: {len(found)} valid paths have no signer vouching now", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK
