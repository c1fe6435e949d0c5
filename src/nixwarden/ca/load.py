"""Reading the CA's files: CA public keys, certificates, KRLs, Nix keys, the CA secret.

Every file is opened without following a symlink in its last component and without
blocking (a FIFO cannot stall us), must be a regular file, and is read up to a bound;
its contents then go through the strict parsers. Errors name the file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nixwarden.ca.cert import Certificate, parse_certificates
from nixwarden.ca.sshkey import SshPublicKey, load_secret, parse_public_keys
from nixwarden.errors import FormatError, InvalidInput
from nixwarden.files import read_at_most
from nixwarden.trust import keys

if TYPE_CHECKING:
    from nixwarden.ca.krl import Krl

MAX_KEY_FILE = 64 << 10
MAX_CERT_FILE = 4 << 20
MAX_KRL_FILE = 64 << 20
MAX_CERTS = 100_000
CERT_SUFFIX = "-cert.pub"  # what ssh-keygen -s writes, and what a --certs directory holds


def read_file(path: str, limit: int, *, secret: bool = False) -> bytes:
    """The bytes of the regular file `path`, refusing anything larger than `limit`.

    A `secret` file that others may read is refused, as ssh refuses such keys.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise InvalidInput(f"{path}: {error.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InvalidInput(f"{path}: not a regular file")
        if secret and mode & 0o077:
            raise InvalidInput(
                f"{path}: permissions {stat.S_IMODE(mode):04o} are too open for a secret key"
            )
        content = read_at_most(fd, limit + 1)
        if len(content) > limit:
            raise InvalidInput(f"{path}: larger than {limit} bytes")
        return content
    finally:
        os.close(fd)


def _prefixed(path: str, error: FormatError) -> FormatError:
    return FormatError(f"{path}: {error}")


def ca_keys(paths: Sequence[str]) -> tuple[SshPublicKey, ...]:
    """Every CA key in the OpenSSH public key files `paths` (`ssh-ed25519 …` lines)."""
    found: list[SshPublicKey] = []
    for path in paths:
        found += parse_public_keys(read_file(path, MAX_KEY_FILE), path)
    return tuple(found)


def certificates(paths: Sequence[str]) -> tuple[Certificate, ...]:
    """The certificates in files, and in the `*-cert.pub` files of directories."""
    found: list[Certificate] = []
    for path in paths:
        files = [path]
        if os.path.isdir(path):
            try:
                names = sorted(os.listdir(path))
            except OSError as error:
                raise InvalidInput(f"{path}: {error.strerror}") from None
            files = [os.path.join(path, n) for n in names if n.endswith(CERT_SUFFIX)]
        for file in files:
            found += parse_certificates(read_file(file, MAX_CERT_FILE), file)
            if len(found) > MAX_CERTS:
                raise InvalidInput(f"more than {MAX_CERTS} certificates")
    return tuple(found)


def krls(paths: Sequence[str]) -> tuple[Krl, ...]:
    """Each KRL, strictly parsed: one malformed KRL refuses them all (nothing verifies)."""
    from nixwarden.ca.krl import Krl  # noqa: PLC0415  (only commands that read KRLs load it)

    found = []
    for path in paths:
        try:
            found.append(Krl.parse(read_file(path, MAX_KRL_FILE)))
        except FormatError as error:
            raise _prefixed(path, error) from None
    return tuple(found)


def nix_public_keys(path: str) -> tuple[keys.PublicKey, ...]:
    data = read_file(path, MAX_KEY_FILE)
    try:
        return tuple(keys.parse_public_keys(data.decode("ascii")))
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not ASCII text") from None
    except FormatError as error:
        raise _prefixed(path, error) from None


def nix_public_key(path: str) -> keys.PublicKey:
    """The one Nix public key (`name:base64`) in `path`."""
    found = nix_public_keys(path)
    if len(found) != 1:
        raise InvalidInput(f"{path}: holds {len(found)} public keys, expected one")
    return found[0]


def ca_secret(path: str) -> Ed25519PrivateKey:
    """The CA's secret key (mode 0600 or stricter)."""
    return load_secret(read_file(path, MAX_KEY_FILE, secret=True), path)
