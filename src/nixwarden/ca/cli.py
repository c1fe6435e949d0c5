"""`nixwarden ca init|issue|revoke|show`: a team CA for Nix signing keys."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from nixwarden.ca import cert, load, sshkey
from nixwarden.ca.validity import format_time, parse_validity
from nixwarden.cliutil import parser
from nixwarden.display import escape
from nixwarden.errors import FormatError, InvalidInput, UsageError

if TYPE_CHECKING:
    from nixwarden.ca.krl import Krl

KRL_MAGIC = b"SSHKRL\n\0"


def main(command: str, argv: list[str]) -> int:
    top = parser(
        "ca",
        "A team CA for Nix signing keys, in OpenSSH's formats: an Ed25519 CA key pair,\n"
        "user certificates (key id = the Nix key's name, principals = scopes) and KRLs.\n"
        "ssh-keygen -s signs with the same CA key; ssh-keygen -k/-Q read the same KRLs.",
        epilog="Exit status: 0 done, 1 refused (e.g. a serial already issued), "
        "2 bad usage or malformed input.",
    )
    commands = top.add_subparsers(dest="action", required=True, metavar="ACTION")

    init = commands.add_parser("init", help="generate the CA key pair (secret mode 0600)")
    init.add_argument("--secret", required=True, metavar="FILE", help="CA secret key file")
    init.add_argument("--public", required=True, metavar="FILE", help="CA public key file")
    init.add_argument("--comment", default="", metavar="TEXT", help="key comment")

    issue = commands.add_parser("issue", help="certify a Nix public key")
    issue.add_argument("--ca", required=True, metavar="FILE", help="CA secret key file")
    issue.add_argument("--key", required=True, metavar="NIXPUB", help="Nix public key file")
    issue.add_argument("--serial", required=True, type=_serial, metavar="N", help="1 to 2^64-1")
    issue.add_argument(
        "--principal",
        action="append",
        required=True,
        metavar="P",
        help="a scope the key may sign for (repeatable, or comma-separated as ssh-keygen -n)",
    )
    issue.add_argument(
        "--validity",
        required=True,
        metavar="SPEC",
        help="as ssh-keygen -V: +8h, -1d:+52w, 20261201:20261231Z, always:forever …",
    )
    issue.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="a critical option (verifiers refuse certificates with options they do not know)",
    )
    issue.add_argument("--out", required=True, metavar="CERT", help="certificate file to write")
    issue.add_argument(
        "--ledger", metavar="FILE", help="append-only record of issued serials; refuses reuse"
    )

    revoke = commands.add_parser("revoke", help="add revocations to a KRL (created if missing)")
    revoke.add_argument("--ca-public", required=True, metavar="FILE", help="CA public key file")
    revoke.add_argument("--krl", required=True, metavar="FILE", help="the KRL to update")
    revoke.add_argument(
        "--serial", action="append", default=[], metavar="N|A-B", help="serial or range"
    )
    revoke.add_argument("--key-id", action="append", default=[], metavar="ID", help="key id")
    revoke.add_argument(
        "--key", action="append", default=[], metavar="NIXPUB", help="Nix public key file"
    )

    show = commands.add_parser("show", help="print what a certificate or KRL holds")
    show.add_argument("file", metavar="CERT|KRL")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")

    args = top.parse_args(glue_values(argv, ("--validity",)))
    match args.action:
        case "init":
            return _init(args.secret, args.public, args.comment)
        case "issue":
            return _issue(args)
        case "revoke":
            return _revoke(args)
        case "show":
            return _show(args.file, as_json=args.json)
    raise UsageError(f"unknown ca action {args.action!r}")  # pragma: no cover


def glue_values(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """`--validity -1d:+52w` as `--validity=-1d:+52w`: argparse would take the value,
    which starts with `-`, for an option; ssh-keygen's getopt does not."""
    glued: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        if argument == "--":
            glued += [argument, *arguments]
            break
        if argument in options:
            value = next(arguments, None)
            glued.append(argument if value is None else f"{argument}={value}")
        else:
            glued.append(argument)
    return glued


def _serial(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**64:
        raise ValueError(text)
    return int(text)


# --- init ------------------------------------------------------------------------------


def _init(secret: str, public: str, comment: str) -> int:
    from nixwarden.files import write_atomic  # noqa: PLC0415

    sshkey.check_comment(comment)
    for path in (secret, public):
        if os.path.lexists(path):
            raise InvalidInput(f"{path}: already exists; not overwriting it")
    private = sshkey.generate_ca()
    write_atomic(secret, sshkey.render_secret(private, comment), mode=0o600, replace=False)
    line = sshkey.public_of(private, comment).render()
    try:
        write_atomic(public, (line + "\n").encode(), mode=0o644, replace=False)
    except BaseException:
        os.unlink(secret)  # a key pair or nothing
        raise
    print(line)
    print(f"CA key {sshkey.public_of(private).fingerprint} written to {secret}", file=sys.stderr)
    return 0


# --- issue -----------------------------------------------------------------------------


def _principals(values: Sequence[str]) -> tuple[str, ...]:
    found = [part for value in values for part in value.split(",")]
    if any(not part for part in found):
        raise UsageError("an empty principal")
    return tuple(dict.fromkeys(found))


def _option(text: str) -> cert.Option:
    name, equals, value = text.partition("=")
    if not name or not name.isprintable() or " " in name:
        raise UsageError(f"invalid --option '{escape(text)}': expected NAME or NAME=VALUE")
    return cert.Option.of(name, value if equals else None)


def _issue(args: argparse.Namespace) -> int:
    from nixwarden.ca import ledger  # noqa: PLC0415
    from nixwarden.files import write_atomic  # noqa: PLC0415

    now = int(time.time())
    validity = parse_validity(args.validity, now)
    principals = _principals(args.principal)
    options = [_option(text) for text in args.option]
    key = load.nix_public_key(args.key)
    ca = load.ca_secret(args.ca)
    serial: int = args.serial
    out: str = args.out
    ledger_path: str | None = args.ledger

    with contextlib.ExitStack() as stack:
        record_in = stack.enter_context(ledger.opened(ledger_path)) if ledger_path else None
        if record_in is not None:
            record_in.refuse_reuse(serial)
        issued = cert.issue(
            ca,
            key=key.key,
            key_id=key.name,
            serial=serial,
            principals=principals,
            valid_after=validity.valid_after,
            valid_before=validity.valid_before,
            critical_options=options,
        )
        if record_in is not None:
            record_in.append(
                ledger.Record(
                    serial=serial,
                    key_id=issued.key_id,
                    key=issued.key_fingerprint,
                    principals=issued.principals,
                    valid_after=issued.valid_after,
                    valid_before=issued.valid_before,
                    ca=issued.ca_fingerprint,
                    issued=now,
                )
            )
        write_atomic(out, (issued.render() + "\n").encode(), mode=0o644, replace=True)
    print(
        f"issued {out}: key id {issued.key_id} serial {serial} for {', '.join(principals)} "
        f"valid {format_time(issued.valid_after)} to {format_time(issued.valid_before)}",
        file=sys.stderr,
    )
    return 0


# --- revoke ----------------------------------------------------------------------------


def _serial_or_range(text: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    try:
        low = _serial(first)
        high = _serial(last) if dash else low
    except ValueError:
        raise UsageError(f"invalid --serial '{escape(text)}': expected N or A-B, from 1") from None
    if high < low:
        raise UsageError(f"invalid --serial {text}: the range is empty")
    return low, high


@contextlib.contextmanager
def _directory_locked(path: str) -> Iterator[None]:
    """Serialize updates of the files in `path`'s directory (the file itself is replaced)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise InvalidInput(f"{directory}: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _revoke(args: argparse.Namespace) -> int:
    from nixwarden.ca.krl import Krl  # noqa: PLC0415
    from nixwarden.files import write_atomic  # noqa: PLC0415

    ranges = [_serial_or_range(text) for text in args.serial]
    key_ids: list[str] = args.key_id
    keys = [load.nix_public_key(path) for path in args.key]
    if not (ranges or key_ids or keys):
        raise UsageError("nothing to revoke: give --serial, --key-id or --key")
    if any(not key_id for key_id in key_ids):
        raise UsageError("an empty --key-id")
    authorities = load.ca_keys([args.ca_public])
    if len(authorities) != 1:
        raise InvalidInput(f"{args.ca_public}: holds {len(authorities)} keys, expected one")
    path: str = args.krl
    with _directory_locked(path):
        now = int(time.time())
        current = load.krls([path])[0] if os.path.lexists(path) else Krl.empty(now=now)
        updated = current.revoking(
            authorities[0].blob,
            serials=tuple(low for low, high in ranges if low == high),
            serial_ranges=tuple((low, high) for low, high in ranges if low != high),
            key_ids=tuple(key_ids),
            keys=tuple(sshkey.ed25519_blob(key.key) for key in keys),
            now=now,
        )
        write_atomic(path, updated.to_bytes(), mode=0o644, replace=True)
    what = [f"serial {low}" if low == high else f"serials {low}-{high}" for low, high in ranges]
    what += [f"key id {escape(key_id)}" for key_id in key_ids]
    what += [f"key {key.name}" for key in keys]
    print(f"{path}: revoked {', '.join(what)}", file=sys.stderr)
    return 0


# --- show ------------------------------------------------------------------------------


def _show(path: str, *, as_json: bool) -> int:
    data = load.read_file(path, max(load.MAX_CERT_FILE, load.MAX_KRL_FILE))
    if data.startswith(KRL_MAGIC):
        return _show_krl(path, data, as_json=as_json)
    certificates = cert.parse_certificates(data, path)
    if as_json:
        document = {"certificates": [_certificate_json(c) for c in certificates]}
        print(json.dumps(document, indent=2, ensure_ascii=True))
    else:
        print(f"{escape(path)}:")
        for certificate in certificates:
            print("\n".join(f"  {line}" for line in _certificate_lines(certificate)))
    return 0


def _option_json(option: cert.Option) -> dict[str, object]:
    value = option.value
    if value is None:
        return {"name": option.name, "data": option.data.hex()}
    return {"name": option.name, "value": value}


def _nix_public_key(certificate: cert.Certificate) -> str:
    from nixwarden.trust.keys import PublicKey  # noqa: PLC0415

    return PublicKey(certificate.key_id, certificate.key).render()


def _certificate_json(certificate: cert.Certificate) -> dict[str, object]:
    return {
        "type": cert.CERT_TYPE,
        "certificate_type": "user",
        "key_id": certificate.key_id,
        "serial": certificate.serial,
        "nix_public_key": _nix_public_key(certificate),
        "key_fingerprint": certificate.key_fingerprint,
        "ca_fingerprint": certificate.ca_fingerprint,
        "valid_after": certificate.valid_after,
        "valid_before": certificate.valid_before,
        "valid_from": format_time(certificate.valid_after),
        "valid_to": format_time(certificate.valid_before),
        "principals": list(certificate.principals),
        "critical_options": [_option_json(option) for option in certificate.critical_options],
        "extensions": [_option_json(option) for option in certificate.extensions],
        "comment": certificate.comment,
    }


def _certificate_lines(certificate: cert.Certificate) -> Iterator[str]:
    yield f"Type: {cert.CERT_TYPE} user certificate"
    yield f"Key ID: {escape(certificate.key_id)}"
    yield f"Serial: {certificate.serial}"
    yield f"Public key: {certificate.key_fingerprint} (Nix: {escape(_nix_public_key(certificate))})"
    yield f"Signing CA: {certificate.ca_fingerprint}"
    valid_to = format_time(certificate.valid_before)
    yield f"Valid: from {format_time(certificate.valid_after)} to {valid_to}"
    principals = ", ".join(escape(principal) for principal in certificate.principals)
    yield f"Principals: {principals or '(none: matches nothing)'}"
    options = ", ".join(option.describe() for option in certificate.critical_options)
    yield f"Critical options: {options or '(none)'}"
    extensions = ", ".join(option.describe() for option in certificate.extensions)
    yield f"Extensions: {extensions or '(none)'}"


MAX_SHOWN = 20  # intervals, key ids or keys listed per section in the text form


def _show_krl(path: str, data: bytes, *, as_json: bool) -> int:
    from nixwarden.ca.krl import Krl  # noqa: PLC0415

    try:
        krl = Krl.parse(data)
    except FormatError as error:
        raise FormatError(f"{path}: {error}") from None
    if as_json:
        print(json.dumps(_krl_json(krl), indent=2, ensure_ascii=True))
    else:
        print(f"{escape(path)}:")
        print("\n".join(f"  {line}" for line in _krl_lines(krl)))
    return 0


def _ca_name(blob: bytes | None) -> str:
    return sshkey.fingerprint(blob) if blob else "any CA"


def _krl_json(krl: Krl) -> dict[str, object]:
    return {
        "krl_version": krl.version,
        "generated": krl.generated_date,
        "comment": krl.comment,
        "certificates": [
            {
                "ca": _ca_name(section.ca_key_blob),
                "serials": [[start, end] for start, end in section.serials.intervals()],
                "serial_count": section.serials.count(),
                "key_ids": sorted(section.key_ids),
            }
            for section in krl.certificates
        ],
        "keys": sorted(sshkey.fingerprint(blob) for blob in krl.keys),
        "sha1": sorted(digest.hex() for digest in krl.sha1),
        "sha256": sorted(digest.hex() for digest in krl.sha256),
        "signed_by": [sshkey.fingerprint(signature.key_blob) for signature in krl.signatures],
    }


def _krl_lines(krl: Krl) -> Iterator[str]:
    yield f"KRL version {krl.version}, generated {format_time(krl.generated_date)}"
    if krl.comment:
        yield f"Comment: {escape(krl.comment)}"
    for section in krl.certificates:
        yield f"Certificates by {_ca_name(section.ca_key_blob)}:"
        intervals = [
            str(start) if start == end else f"{start}-{end}"
            for start, end in section.serials.intervals()
        ]
        if intervals:
            yield f"  serials ({section.serials.count()}): {_listed(intervals)}"
        if section.key_ids:
            yield f"  key ids: {_listed([escape(key_id) for key_id in sorted(section.key_ids)])}"
    if krl.keys:
        yield f"Keys: {_listed(sorted(sshkey.fingerprint(blob) for blob in krl.keys))}"
    for name, digests in (("SHA1", krl.sha1), ("SHA256", krl.sha256)):
        if digests:
            yield f"{name} fingerprints: {_listed(sorted(digest.hex() for digest in digests))}"
    if krl.signatures:
        signers = [sshkey.fingerprint(signature.key_blob) for signature in krl.signatures]
        yield f"Signed by (verified): {_listed(signers)}"


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_SHOWN])
    return shown + (f", … ({len(items) - MAX_SHOWN} more)" if len(items) > MAX_SHOWN else "")
