"""`nixwarden key|sign|verify|cache`: the trust core on the command line (`nar`: narcli)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from nixwarden.cliutil import parser
from nixwarden.display import escape
from nixwarden.errors import FormatError, InvalidInput, Refused, UsageError
from nixwarden.trust.failures import from_os_error

if TYPE_CHECKING:
    import argparse

    from nixwarden.nix.storepath import StorePath
    from nixwarden.trust import pathinfo
    from nixwarden.trust.keys import SecretKey, TrustedKeys
    from nixwarden.trust.verify import KeyPolicy, PathFailure

# Each command imports only what it uses, when it runs.

MAX_KEY_FILE = 64 << 10


def main(command: str, argv: list[str]) -> int:
    handlers: dict[str, Callable[[list[str]], int]] = {
        "key": _key,
        "sign": _sign,
        "verify": verify,
        "cache": _cache,
    }
    return handlers[command](argv)


# --- keys ------------------------------------------------------------------------------


def _key(argv: list[str]) -> int:
    top = parser("key", "Nix signing keys (name:base64, as nix key generate-secret writes them).")
    commands = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = commands.add_parser(
        "generate",
        help="generate a key pair; the secret file is mode 0600 and never overwritten",
    )
    generate.add_argument("--name", required=True, help="key name, e.g. builder1.example.org-1")
    generate.add_argument("--secret", required=True, metavar="FILE", help="secret key file")
    generate.add_argument("--public", required=True, metavar="FILE", help="public key file")
    ssh_public = commands.add_parser(
        "ssh-public",
        help="print a Nix public key as an OpenSSH public key line (for ssh-keygen -s)",
    )
    ssh_public.add_argument("--public", required=True, metavar="NIXPUB", help="public key file")
    args = top.parse_args(argv)
    if args.action == "ssh-public":
        return _ssh_public(args.public)
    from nixwarden.files import write_atomic  # noqa: PLC0415
    from nixwarden.trust.keys import SecretKey  # noqa: PLC0415

    for path in (args.secret, args.public):
        if os.path.lexists(path):
            raise InvalidInput(f"{path}: already exists; not overwriting it")
    secret = SecretKey.generate(args.name)
    write_atomic(args.secret, secret.render().encode(), mode=0o600, replace=False)
    write_atomic(args.public, (secret.public().render() + "\n").encode(), mode=0o644, replace=False)
    print(secret.public().render())
    return 0


def _ssh_public(path: str) -> int:
    """`ssh-ed25519 BASE64 NAME`: the same 32 bytes, so a CA can certify the Nix key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
        Encoding,
        PublicFormat,
    )

    for key in read_public_keys([path]).by_name.values():
        line = Ed25519PublicKey.from_public_bytes(key.key).public_bytes(
            Encoding.OpenSSH, PublicFormat.OpenSSH
        )
        print(f"{line.decode()} {key.name}")
    return 0


def read_key_file(path: str) -> bytes:
    """A key file's bytes, at most `MAX_KEY_FILE` of them.

    A regular file or a pipe (`--key <(pass show nix-key)`); a device, directory or
    socket is refused, and a FIFO nobody writes to ends at once instead of hanging.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise from_os_error(path, error) from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        os.close(fd)
        raise InvalidInput(f"{escape(path)}: not a regular file or a pipe")
    with os.fdopen(fd, "rb", buffering=0) as handle:
        os.set_blocking(fd, True)
        parts: list[bytes] = []
        size = 0
        while size <= MAX_KEY_FILE and (part := handle.read(MAX_KEY_FILE + 1 - size)):
            parts.append(part)
            size += len(part)
    if size > MAX_KEY_FILE:
        raise InvalidInput(f"{escape(path)}: larger than {MAX_KEY_FILE} bytes; not a key file")
    return b"".join(parts)


def read_secret_key(path: str) -> SecretKey:
    from nixwarden.trust.keys import decode_secret_key  # noqa: PLC0415

    try:
        return decode_secret_key(read_key_file(path))
    except FormatError as error:
        raise FormatError(f"{escape(path)}: {error}") from None


def read_public_keys(paths: Sequence[str]) -> TrustedKeys:
    from nixwarden.trust.keys import PublicKey, TrustedKeys, parse_public_keys  # noqa: PLC0415

    keys: list[PublicKey] = []
    for path in paths:
        try:
            text = read_key_file(path).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidInput(f"{escape(path)}: not ASCII text") from None
        try:
            keys += parse_public_keys(text)
        except FormatError as error:
            raise FormatError(f"{escape(path)}: {error}") from None
    return TrustedKeys.of(keys)


# --- sign and verify -------------------------------------------------------------------


def _store_paths(arguments: Sequence[str]) -> list[StorePath]:
    from nixwarden.trust import pathinfo  # noqa: PLC0415

    paths = [pathinfo.resolve(argument) for argument in arguments]
    return list(dict.fromkeys(paths))


def _known(query: pathinfo.Query) -> None:
    if query.invalid:
        names = ", ".join(path.absolute() for path in query.invalid)
        raise Refused(f"not valid in the store: {names}")


def _sign(argv: list[str]) -> int:
    command = parser(
        "sign",
        "Sign store paths with a Nix secret key; prints 'PATH SIGNATURE' per path.\n"
        "The signature covers the path's fingerprint (path, NAR hash and size, references)\n"
        "as the store records it; add it with nix store sign or ship it in a narinfo.",
    )
    command.add_argument("--key", required=True, metavar="SECFILE", help="secret key file")
    command.add_argument("paths", nargs="+", metavar="PATH")
    args = command.parse_args(argv)
    from nixwarden.trust import pathinfo  # noqa: PLC0415
    from nixwarden.trust.keys import fingerprint  # noqa: PLC0415

    key = read_secret_key(args.key)
    paths = _store_paths(args.paths)
    query = pathinfo.query(paths)
    _known(query)
    for path in paths:
        info = query.infos[path]
        signed = fingerprint(info.absolute, info.nar_hash, info.nar_size, info.reference_paths())
        print(f"{info.absolute} {key.sign(signed).render()}")
    return 0


class PolicyOptions(Protocol):
    """More ways to decide which signatures count, that a part above this layer plugs
    into `verify` (certified keys: nixwarden.ca.options.CertificateOptions)."""

    def add_arguments(self, command: argparse.ArgumentParser) -> None: ...

    def policy(self, args: argparse.Namespace, trusted: TrustedKeys | None) -> KeyPolicy | None:
        """The policy the options ask for, or None when none of them was given."""
        ...


def verify(argv: list[str], options: PolicyOptions | None = None) -> int:
    command = parser(
        "verify",
        "Check that every PATH carries a valid signature by a trusted key, as\n"
        "`nix store verify --sigs-needed 1` does: being built locally does not count,\n"
        "and neither does being content-addressed. Exit 1 names each failing path.",
    )
    command.add_argument(
        "--trusted-key",
        action="append",
        required=options is None,
        default=[],
        metavar="PUBFILE",
        help="file of public keys (name:base64, whitespace-separated); repeatable",
    )
    command.add_argument(
        "--check-contents",
        action="store_true",
        help="also re-hash each path's contents and compare with its recorded NAR hash",
    )
    if options is not None:
        options.add_arguments(command)
    command.add_argument("paths", nargs="+", metavar="PATH")
    args = command.parse_args(argv)
    from nixwarden.trust import pathinfo  # noqa: PLC0415
    from nixwarden.trust.verify import PathFailure, VerificationFailed  # noqa: PLC0415

    trusted = read_public_keys(args.trusted_key) if args.trusted_key else None
    policy = (options.policy(args, trusted) if options is not None else None) or trusted
    if policy is None:
        raise UsageError("nothing to trust: give --trusted-key, or --ca and --certs")
    store_paths = _store_paths(args.paths)
    query = pathinfo.query(store_paths)
    paths = [path.absolute() for path in store_paths]
    infos = {info.absolute: info for info in query.infos.values()}
    reasons: dict[str, str] = {}  # the first problem found with each failing path
    for path in paths:
        info = infos.get(path)
        if info is None:
            reasons[path] = "not valid in the store"
        elif args.check_contents:
            mismatch = _contents_mismatch(info)
            if mismatch is not None:
                reasons[path] = mismatch
    for failure in _signature_failures([infos[path] for path in paths if path in infos], policy):
        reasons.setdefault(failure.path, failure.reason)
    if reasons:
        failures = [PathFailure(path, reasons[path]) for path in paths if path in reasons]
        raise VerificationFailed(failures, checked=len(paths))
    print(f"{len(paths)} paths verified", file=sys.stderr)
    return 0


def _contents_mismatch(info: pathinfo.PathInfo) -> str | None:
    from nixwarden.trust import nar  # noqa: PLC0415

    digest = nar.hash_path(info.absolute)
    if (digest.hash, digest.size) == (info.nar_hash, info.nar_size):
        return None
    return (
        f"contents hash to {digest.hash.to_nix32()} ({digest.size} bytes), "
        f"the store records {info.nar_hash.to_nix32()} ({info.nar_size} bytes)"
    )


def _signature_failures(
    infos: Sequence[pathinfo.PathInfo], policy: KeyPolicy
) -> tuple[PathFailure, ...]:
    """The paths whose signatures the policy refuses, and why.

    A signature the store holds but that does not parse counts as absent; the reason
    says how many there were, so a garbled signature is not mistaken for none.
    """
    from nixwarden.trust.keys import Signature, fingerprint  # noqa: PLC0415
    from nixwarden.trust.verify import PathFailure, VerificationFailed, verify_paths  # noqa: PLC0415

    items = []
    malformed: dict[str, int] = {}
    for info in infos:
        signatures: list[Signature] = []
        for text in info.signatures:
            try:
                signatures.append(Signature.parse(text))
            except FormatError:
                malformed[info.absolute] = malformed.get(info.absolute, 0) + 1
        message = fingerprint(info.absolute, info.nar_hash, info.nar_size, info.reference_paths())
        items.append((info.absolute, message, signatures))
    try:
        verify_paths(items, policy)
    except VerificationFailed as failed:
        return tuple(
            PathFailure(f.path, f"{f.reason} ({malformed[f.path]} malformed signatures ignored)")
            if f.path in malformed
            else f
            for f in failed.failures
        )
    return ()


# --- cache -----------------------------------------------------------------------------


def _cache(argv: list[str]) -> int:
    from nixwarden.nix import closure as nix_closure  # noqa: PLC0415
    from nixwarden.nix.storepath import StorePath  # noqa: PLC0415
    from nixwarden.trust import cache, pathinfo  # noqa: PLC0415

    top = parser("cache", "file:// binary caches that nix copy and substituters accept.")
    commands = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = commands.add_parser(
        "export", help="write the closure of PATHs as a signed binary cache in DIR"
    )
    export.add_argument("--key", required=True, metavar="SECFILE", help="secret key file")
    export.add_argument("--to", required=True, metavar="DIR", help="cache directory")
    export.add_argument(
        "--compression",
        choices=[cache.Compression.NONE.value, cache.Compression.XZ.value],
        default=cache.Compression.XZ.value,
        help="NAR compression (default: xz)",
    )
    export.add_argument("paths", nargs="+", metavar="PATH")
    args = top.parse_args(argv)
    if args.action != "export":  # pragma: no cover - argparse allows only export
        raise UsageError(f"unknown cache action {args.action!r}")
    key = read_secret_key(args.key)
    paths = _store_paths(args.paths)
    _known(pathinfo.query(paths))
    everything = nix_closure.closure(path.absolute() for path in paths).paths
    closure = pathinfo.query(sorted(StorePath.parse(path) for path in everything))
    _known(closure)
    cache.init(args.to)
    compression = cache.Compression(args.compression)
    for info in sorted(closure.infos.values(), key=lambda item: item.path.base_name):
        source = cache.CacheSource(
            path=info.path,
            references=info.references,
            deriver=info.deriver,
            ca=info.ca,
            nar_hash=info.nar_hash,
            nar_size=info.nar_size,
            tree=info.absolute,
        )
        cache.add(args.to, source, key, compression)
    print(
        f"{len(closure.infos)} paths written to {args.to} "
        f"({compression.value}, signed by {key.name})",
        file=sys.stderr,
    )
    return 0
