"""OpenSSH user certificates for Nix signing keys (PROTOCOL.certkeys).

A certificate is `ssh-ed25519-cert-v01@openssh.com` whose key is the Nix key's 32
bytes and whose key id is the Nix key's name; the serial is the handle to revoke it
by, the principals are the scopes it may sign for, and critical options restrict
it. nixwarden accepts only what it can use, and refuses with one line:

- only `ssh-ed25519-cert-v01@openssh.com`, only user certificates (type 1), only
  Ed25519 CA keys (RSA, ECDSA, DSA and security-key CA keys are refused, so are
  chained certificates, which OpenSSH does not support either);
- the key id and principals must be UTF-8 without NUL (OpenSSH reads them as C
  strings), non-empty; at most 256 principals (OpenSSH's own limit);
- critical options and extensions must be sorted by name, each name once;
- no byte may follow the signature, in the blob or in its signature fields;
- the signature must verify under the CA key the certificate names (whether that
  CA is trusted is the policy's question, see policy.py).

Every field is read with a bound (`wire.Reader`), then the certificate goes through
`cryptography`'s parser as well, which verifies the signature.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateBuilder,
    SSHCertificateType,
    load_ssh_public_identity,
)

from nixwarden.ca import wire
from nixwarden.ca.sshkey import ED25519, PUBLIC_KEY_SIZE, ed25519_blob, fingerprint
from nixwarden.ca.validity import FOREVER
from nixwarden.display import escape
from nixwarden.errors import FormatError, InvalidInput

CERT_TYPE = "ssh-ed25519-cert-v01@openssh.com"
USER_CERT = 1
HOST_CERT = 2
SIGNATURE_SIZE = 64

MAX_CERT_LINE = 256 << 10
MAX_BLOB = 128 << 10
MAX_NONCE = 256
MAX_KEY_ID = 1024
MAX_PRINCIPALS = 256  # SSHKEY_CERT_MAX_PRINCIPALS
MAX_PRINCIPAL = 1024
MAX_OPTIONS = 64
MAX_OPTION_NAME = 256
MAX_OPTION_DATA = 8 << 10
MAX_SECTION = 64 << 10
MAX_RESERVED = 1024
MAX_CA_KEY = 1024
MAX_SIGNATURE = 1024


@dataclass(frozen=True)
class Option:
    """A critical option or an extension: its name and its raw data field."""

    name: str
    data: bytes

    @property
    def value(self) -> str | None:
        """The data as one string (as `force-command` holds it), "" for a flag, else None."""
        if not self.data:
            return ""
        reader = wire.Reader(self.data, "option")
        try:
            text = reader.text("value", limit=MAX_OPTION_DATA)
            reader.end()
        except FormatError:
            return None
        return text

    def describe(self) -> str:
        value = self.value
        if value is None:
            return f"{escape(self.name)} (data {self.data.hex()})"
        return escape(self.name) + (f" '{escape(value)}'" if value else "")

    @classmethod
    def of(cls, name: str, value: str | None) -> Option:
        """An option as `--option NAME[=VALUE]` gives it: a flag, or one string."""
        return cls(name, b"" if value is None else wire.string(value))


@dataclass(frozen=True)
class Certificate:
    key: bytes  # the certified Ed25519 key: the Nix public key
    serial: int
    key_id: str  # the Nix key's name
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: tuple[Option, ...]
    extensions: tuple[Option, ...]
    ca_key: bytes  # the CA's 32-byte Ed25519 key
    nonce: bytes
    blob: bytes  # the whole certificate, as signed
    comment: str = ""

    @property
    def key_blob(self) -> bytes:
        """The certified key as a plain public key blob (what KRLs list keys by)."""
        return ed25519_blob(self.key)

    @property
    def ca_blob(self) -> bytes:
        return ed25519_blob(self.ca_key)

    @property
    def key_fingerprint(self) -> str:
        return fingerprint(self.key_blob)

    @property
    def ca_fingerprint(self) -> str:
        return fingerprint(self.ca_blob)

    @property
    def span(self) -> int:
        return self.valid_before - self.valid_after

    def render(self) -> str:
        line = f"{CERT_TYPE} {base64.b64encode(self.blob).decode()}"
        return f"{line} {self.comment}" if self.comment else line

    @classmethod
    def parse(cls, data: bytes, what: str = "certificate") -> Certificate:
        """A certificate file: exactly one certificate line."""
        certificates = parse_certificates(data, what)
        if len(certificates) != 1:
            raise FormatError(f"{what}: holds {len(certificates)} certificates, expected one")
        return certificates[0]

    @classmethod
    def from_blob(cls, blob: bytes, what: str = "certificate", comment: str = "") -> Certificate:
        if len(blob) > MAX_BLOB:
            raise FormatError(f"{what}: {len(blob)} bytes, more than the {MAX_BLOB} allowed")
        certificate = _walk(wire.Reader(blob, what), blob, comment)
        _agree_with_cryptography(certificate, what)
        return certificate


def parse_certificates(data: bytes, what: str) -> tuple[Certificate, ...]:
    """Every certificate line of a file (blank lines and `#` comments skipped)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"{what}: not ASCII text") from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{what}: line {number}" if number > 1 or len(text.splitlines()) > 1 else what
        if len(stripped) > MAX_CERT_LINE:
            raise FormatError(f"{where}: line longer than {MAX_CERT_LINE} bytes")
        found.append(_parse_line(stripped, where))
    if not found:
        raise FormatError(f"{what}: no certificate found")
    return tuple(found)


def _parse_line(line: str, what: str) -> Certificate:
    words = line.split(None, 2)
    if len(words) < 2:
        raise FormatError(f"{what}: expected '{CERT_TYPE} BASE64 [comment]'")
    key_type, encoded = words[0], words[1]
    if key_type != CERT_TYPE:
        if key_type.endswith("-cert-v01@openssh.com"):
            raise FormatError(
                f"{what}: {escape(key_type)} certificates are not accepted (only {CERT_TYPE})"
            )
        raise FormatError(f"{what}: {escape(key_type)} is not a certificate type")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{what}: certificate data is not base64") from None
    return Certificate.from_blob(blob, what, words[2] if len(words) == 3 else "")


def _walk(reader: wire.Reader, blob: bytes, comment: str) -> Certificate:
    inner_type = reader.string("type", limit=64)
    if inner_type != CERT_TYPE.encode():
        raise reader.fail(f"inner type '{escape(inner_type.decode('latin-1'))}' is not {CERT_TYPE}")
    nonce = reader.string("nonce", limit=MAX_NONCE)
    key = reader.string("public key", limit=PUBLIC_KEY_SIZE)
    if len(key) != PUBLIC_KEY_SIZE:
        raise reader.fail(f"public key of {len(key)} bytes, expected {PUBLIC_KEY_SIZE}")
    serial = reader.u64("serial")
    kind = reader.u32("certificate type")
    if kind == HOST_CERT:
        raise reader.fail("host certificate; Nix keys are certified by user certificates")
    if kind != USER_CERT:
        raise reader.fail(f"unknown certificate type {kind}")
    key_id = reader.text("key id", limit=MAX_KEY_ID)
    if not key_id:
        raise reader.fail("empty key id (it must be the Nix key's name)")
    principals = _principals(reader)
    valid_after = reader.u64("valid after")
    valid_before = reader.u64("valid before")
    if valid_before <= valid_after:
        raise reader.fail("valid before is not after valid after: never valid")
    critical = _options(reader, "critical options")
    extensions = _options(reader, "extensions")
    reader.string("reserved", limit=MAX_RESERVED)  # ignored, as PROTOCOL.certkeys says
    ca_key = _ca_key(reader)
    _signature(reader)  # its shape here; whether it verifies, in _agree_with_cryptography
    reader.end("the signature")
    return Certificate(
        key=key,
        serial=serial,
        key_id=key_id,
        principals=principals,
        valid_after=valid_after,
        valid_before=valid_before,
        critical_options=critical,
        extensions=extensions,
        ca_key=ca_key,
        nonce=nonce,
        blob=blob,
        comment=comment,
    )


def _principals(reader: wire.Reader) -> tuple[str, ...]:
    section = wire.Reader(reader.string("principals", limit=MAX_SECTION), reader.what)
    principals: list[str] = []
    while section.remaining:
        if len(principals) == MAX_PRINCIPALS:
            raise section.fail(f"more than {MAX_PRINCIPALS} principals")
        principal = section.text("principal", limit=MAX_PRINCIPAL)
        if not principal:
            raise section.fail("empty principal")
        principals.append(principal)
    return tuple(principals)


def _options(reader: wire.Reader, section_name: str) -> tuple[Option, ...]:
    section = wire.Reader(reader.string(section_name, limit=MAX_SECTION), reader.what)
    kind = section_name.removesuffix("s")  # "critical option", "extension"
    options: list[Option] = []
    while section.remaining:
        if len(options) == MAX_OPTIONS:
            raise section.fail(f"more than {MAX_OPTIONS} {section_name}")
        name = section.text(f"{kind} name", limit=MAX_OPTION_NAME)
        if not name:
            raise section.fail(f"empty {kind} name")
        data = section.string(f"{kind} data", limit=MAX_OPTION_DATA)
        if options:
            previous = options[-1].name.encode()
            if name.encode() == previous:
                raise section.fail(f"duplicate {kind} '{escape(name)}'")
            if name.encode() < previous:
                after = escape(options[-1].name)
                raise section.fail(f"{section_name} not sorted ('{escape(name)}' after '{after}')")
        options.append(Option(name, data))
    return tuple(options)


def _ca_key(reader: wire.Reader) -> bytes:
    section = wire.Reader(reader.string("signature key", limit=MAX_CA_KEY), reader.what)
    key_type = section.string("CA key type", limit=64).decode("latin-1")
    if key_type.endswith("-cert-v01@openssh.com"):
        raise section.fail("the CA key is a certificate: chained certificates are not supported")
    if key_type != ED25519:
        raise section.fail(f"CA key type '{escape(key_type)}' is not accepted (only {ED25519})")
    key = section.string("CA key", limit=PUBLIC_KEY_SIZE)
    if len(key) != PUBLIC_KEY_SIZE:
        raise section.fail(f"CA key of {len(key)} bytes, expected {PUBLIC_KEY_SIZE}")
    section.end("the CA key")
    return key


def _signature(reader: wire.Reader) -> None:
    section = wire.Reader(reader.string("signature", limit=MAX_SIGNATURE), reader.what)
    kind = section.string("signature type", limit=64)
    if kind != ED25519.encode():
        raise section.fail(
            f"signature type '{escape(kind.decode('latin-1'))}' does not match the {ED25519} CA key"
        )
    signature = section.string("signature bytes", limit=SIGNATURE_SIZE)
    if len(signature) != SIGNATURE_SIZE:
        raise section.fail(f"signature of {len(signature)} bytes, expected {SIGNATURE_SIZE}")
    section.end("the signature bytes")


def _agree_with_cryptography(ours: Certificate, what: str) -> None:
    """Parse again with `cryptography`, verify the signature, and compare the fields."""
    line = f"{CERT_TYPE} {base64.b64encode(ours.blob).decode()}".encode()
    try:
        theirs = load_ssh_public_identity(line)
        if not isinstance(theirs, SSHCertificate):
            raise FormatError(f"{what}: not a certificate")
        theirs.verify_cert_signature()
    except InvalidSignature:
        raise FormatError(f"{what}: the CA's signature does not verify") from None
    except (ValueError, UnsupportedAlgorithm) as error:
        raise FormatError(f"{what}: refused by the SSH certificate parser ({error})") from None
    public = theirs.public_key()
    if not (
        isinstance(public, Ed25519PublicKey)
        and public.public_bytes_raw() == ours.key
        and theirs.serial == ours.serial
        and theirs.type is SSHCertificateType.USER
        and theirs.key_id == ours.key_id.encode()
        and [bytes(p) for p in theirs.valid_principals] == [p.encode() for p in ours.principals]
        and (theirs.valid_after, theirs.valid_before) == (ours.valid_after, ours.valid_before)
        and list(theirs.critical_options) == [o.name.encode() for o in ours.critical_options]
    ):
        raise FormatError(f"{what}: the two certificate parsers disagree; refusing it")


def issue(
    ca: Ed25519PrivateKey,
    *,
    key: bytes,
    key_id: str,
    serial: int,
    principals: Sequence[str],
    valid_after: int,
    valid_before: int,
    critical_options: Sequence[Option] = (),
) -> Certificate:
    """Sign a user certificate for the Nix key `key` named `key_id`.

    The result is read back through `Certificate.from_blob`, so what we issue is what
    we would accept.
    """
    if not 1 <= serial < 2**64:
        raise InvalidInput(f"serial {serial} is out of range (1 to 2^64-1; 0 means no serial)")
    if not principals:
        raise InvalidInput("at least one principal is needed (a certificate without matches none)")
    if len(principals) > MAX_PRINCIPALS:
        raise InvalidInput(f"more than {MAX_PRINCIPALS} principals")
    for principal in principals:
        if not principal or not principal.isprintable() or "," in principal:
            raise InvalidInput(f"invalid principal '{escape(principal)}'")
    if not 0 <= valid_after < valid_before <= FOREVER:
        raise InvalidInput("the validity window is empty or out of range")
    names = [option.name for option in critical_options]
    if len(set(names)) != len(names):
        raise InvalidInput("a critical option is given twice")
    builder = (
        SSHCertificateBuilder()
        .public_key(Ed25519PublicKey.from_public_bytes(key))
        .serial(serial)
        .type(SSHCertificateType.USER)
        .key_id(key_id.encode())
        .valid_principals([principal.encode() for principal in principals])
        .valid_after(valid_after)
        .valid_before(valid_before)
    )
    for option in critical_options:
        value = option.value
        if value is None:
            raise InvalidInput(f"critical option '{escape(option.name)}': unsupported data")
        builder = builder.add_critical_option(option.name.encode(), value.encode())
    signed = builder.sign(ca)
    encoded = signed.public_bytes().split(b" ")[1]
    plain = key_id.isprintable() and not any(char.isspace() for char in key_id)
    comment = key_id if plain else ""  # the comment is part of a one-line file
    return Certificate.from_blob(base64.b64decode(encoded), "issued certificate", comment)
