"""OpenSSH Ed25519 keys: the CA's key pair, and Nix keys written as OpenSSH keys.

A Nix public key is 32 raw Ed25519 bytes, exactly what an OpenSSH `ssh-ed25519` key
holds, so the same key can be certified by `ssh-keygen -s` (from the line
`key ssh-public` prints) and used by Nix to sign paths. The CA secret is written in
OpenSSH's own `openssh-key-v1` format, unencrypted (as `ssh-keygen -N ''` writes it),
so `ssh-keygen -s` can sign with it too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import textwrap
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_ssh_private_key,
)

from nixwarden.ca import wire
from nixwarden.display import escape
from nixwarden.errors import FormatError, InvalidInput

ED25519 = "ssh-ed25519"
PUBLIC_KEY_SIZE = 32
# One public key line; an OpenSSH key file with a long comment is still far below this.
MAX_KEY_LINE = 8 << 10
_PEM_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
_PEM_END = "-----END OPENSSH PRIVATE KEY-----"
_SECRET_MAGIC = b"openssh-key-v1\0"


def ed25519_blob(key: bytes) -> bytes:
    """The wire form of an Ed25519 public key: `string "ssh-ed25519", string key`."""
    return wire.string(ED25519) + wire.string(key)


def fingerprint(blob: bytes) -> str:
    """`SHA256:…` of a wire-format key, as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_ed25519_blob(blob: bytes, what: str) -> bytes:
    """The 32 key bytes of a wire-format `ssh-ed25519` key; any other type is refused."""
    reader = wire.Reader(blob, what)
    key_type = reader.string("key type", limit=64)
    if key_type != ED25519.encode():
        shown = key_type.decode("ascii", "replace")
        if shown.endswith("-cert-v01@openssh.com"):
            raise reader.fail("is a certificate; chained certificates are not supported")
        raise reader.fail(f"key type '{escape(shown)}' is not accepted (only {ED25519})")
    key = reader.string("Ed25519 key", limit=PUBLIC_KEY_SIZE)
    if len(key) != PUBLIC_KEY_SIZE:
        raise reader.fail(f"Ed25519 key of {len(key)} bytes, expected {PUBLIC_KEY_SIZE}")
    reader.end("the key")
    return key


@dataclass(frozen=True)
class SshPublicKey:
    """One `ssh-ed25519 BASE64 [comment]` line."""

    key: bytes
    comment: str = ""

    @property
    def blob(self) -> bytes:
        return ed25519_blob(self.key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    def render(self) -> str:
        line = f"{ED25519} {base64.b64encode(self.blob).decode()}"
        return f"{line} {self.comment}" if self.comment else line

    @classmethod
    def parse_line(cls, line: str, what: str) -> SshPublicKey:
        words = line.split(None, 2)
        if len(words) < 2:
            raise FormatError(f"{what}: expected 'ssh-ed25519 BASE64 [comment]'")
        key_type, encoded = words[0], words[1]
        if key_type != ED25519:
            raise FormatError(
                f"{what}: key type '{escape(key_type)}' is not accepted (only {ED25519})"
            )
        try:
            blob = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise FormatError(f"{what}: key data is not base64") from None
        return cls(parse_ed25519_blob(blob, what), words[2] if len(words) == 3 else "")


def parse_public_keys(data: bytes, what: str) -> tuple[SshPublicKey, ...]:
    """The keys of an OpenSSH public key file: one per line, `#` comments and blanks skipped."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"{what}: not ASCII text") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            if len(stripped) > MAX_KEY_LINE:
                raise FormatError(f"{what}: line {number} is longer than {MAX_KEY_LINE} bytes")
            keys.append(SshPublicKey.parse_line(stripped, f"{what}: line {number}"))
    if not keys:
        raise FormatError(f"{what}: no ssh-ed25519 public key found")
    return tuple(keys)


# --- the CA's secret key ---------------------------------------------------------------


def check_comment(comment: str) -> str:
    if not comment.isprintable() or len(comment) > 1024:
        raise InvalidInput("the comment must be one line of printable text, at most 1024 chars")
    return comment


def generate_ca() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_of(private: Ed25519PrivateKey, comment: str = "") -> SshPublicKey:
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SshPublicKey(raw, comment)


def render_secret(private: Ed25519PrivateKey, comment: str) -> bytes:
    """`openssh-key-v1`, unencrypted, with the comment (cryptography's writer has none)."""
    public = public_of(private).key
    seed = private.private_bytes_raw()
    check = os.urandom(4)
    section = (
        check
        + check
        + wire.string(ED25519)
        + wire.string(public)
        + wire.string(seed + public)
        + wire.string(check_comment(comment))
    )
    section += bytes(range(1, 1 + (-len(section) % 8)))  # padding 1, 2, 3 … to a block of 8
    body = (
        _SECRET_MAGIC
        + wire.string("none")
        + wire.string("none")
        + wire.string(b"")
        + wire.u32(1)
        + wire.string(ed25519_blob(public))
        + wire.string(section)
    )
    lines = textwrap.wrap(base64.b64encode(body).decode(), 70)
    return "\n".join([_PEM_BEGIN, *lines, _PEM_END, ""]).encode()


def load_secret(data: bytes, what: str) -> Ed25519PrivateKey:
    """An unencrypted OpenSSH Ed25519 secret key (ours, or `ssh-keygen -t ed25519 -N ''`)."""
    try:
        private = load_ssh_private_key(data, password=None)
    except TypeError:
        # cryptography's word for "encrypted, and no passphrase was given"
        raise InvalidInput(
            f"{what}: the CA key is encrypted; nixwarden reads only unencrypted CA keys "
            "(keep it offline, or sign with ssh-keygen -s)"
        ) from None
    except (ValueError, UnicodeError) as error:
        raise FormatError(f"{what}: not an OpenSSH private key ({error})") from None
    except Exception as error:  # UnsupportedAlgorithm and friends: still one line
        raise FormatError(f"{what}: unsupported OpenSSH private key ({error})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise FormatError(f"{what}: the CA key must be ssh-ed25519")
    return private
