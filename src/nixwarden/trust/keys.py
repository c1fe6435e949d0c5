"""Nix signing keys, path fingerprints and Ed25519 signatures.

Keys and signatures are `name:base64` (libutil's local-keys): a secret key is the
64-byte libsodium form (32-byte seed, then the 32-byte public key), a public key is
32 bytes, a signature is 64. A signature covers the path's fingerprint,
`1;<path>;<narHash as sha256:nix32>;<narSize>;<sorted full reference paths joined by ,>`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nixwarden.errors import FormatError
from nixwarden.trust.hashes import Hash, HashAlgorithm
from nixwarden.trust.verify import SignatureRejected, Verified

SECRET_KEY_SIZE = 64
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
# Names are what trusted-public-keys matches on; keep them plain so they print safely.
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@=-]{0,127}")


def _split(text: str, what: str, size: int) -> tuple[str, bytes]:
    """`name:base64` → (name, raw bytes). Messages never repeat the base64 part."""
    name, colon, encoded = text.strip().partition(":")
    if not colon:
        raise FormatError(f"{what} is not of the form name:base64")
    if not _KEY_NAME.fullmatch(name):
        raise FormatError(f"{what} has an invalid key name (letters, digits, ._+@=- allowed)")
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise FormatError(f"{what} '{name}' is not valid base64") from None
    if len(raw) != size:
        raise FormatError(f"{what} '{name}' has {len(raw)} bytes, expected {size}")
    return name, raw


def _join(name: str, raw: bytes) -> str:
    return f"{name}:{base64.b64encode(raw).decode()}"


@dataclass(frozen=True)
class Signature:
    key_name: str
    signature: bytes

    @classmethod
    def parse(cls, text: str) -> Signature:
        return cls(*_split(text, "signature", SIGNATURE_SIZE))

    def render(self) -> str:
        return _join(self.key_name, self.signature)


@dataclass(frozen=True)
class PublicKey:
    name: str
    key: bytes

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        return cls(*_split(text, "public key", PUBLIC_KEY_SIZE))

    def render(self) -> str:
        return _join(self.name, self.key)

    @functools.cached_property
    def _verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.key)

    def __getstate__(self) -> dict[str, object]:
        # Pickle the key, not the cached OpenSSL object (which does not pickle), so a
        # policy holding keys can be sent to another process.
        return {"name": self.name, "key": self.key}

    def verify(self, fingerprint: bytes, signature: Signature) -> bool:
        """True iff `signature` is this key's (same name) valid signature of `fingerprint`."""
        if signature.key_name != self.name:
            return False
        try:
            self._verifier.verify(signature.signature, fingerprint)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class SecretKey:
    name: str
    key: bytes = field(repr=False)  # never printed: seed followed by public key

    @classmethod
    def parse(cls, text: str) -> SecretKey:
        name, raw = _split(text, "secret key", SECRET_KEY_SIZE)
        derived = _public_bytes(Ed25519PrivateKey.from_private_bytes(raw[:32]))
        if derived != raw[32:]:
            raise FormatError(f"secret key '{name}': its public half does not match its seed")
        return cls(name, raw)

    @classmethod
    def generate(cls, name: str) -> SecretKey:
        if not _KEY_NAME.fullmatch(name):
            raise FormatError(f"invalid key name {name!r} (letters, digits, ._+@=- allowed)")
        private = Ed25519PrivateKey.generate()
        seed = private.private_bytes_raw()
        return cls(name, seed + _public_bytes(private))

    def render(self) -> str:
        return _join(self.name, self.key)

    def public(self) -> PublicKey:
        return PublicKey(self.name, self.key[32:])

    def sign(self, fingerprint: bytes) -> Signature:
        private = Ed25519PrivateKey.from_private_bytes(self.key[:32])
        return Signature(self.name, private.sign(fingerprint))


def _public_bytes(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def fingerprint(path: str, nar_hash: Hash, nar_size: int, references: Iterable[str]) -> bytes:
    """What a path's signature covers (path-info.cc `fingerprint`); paths are full paths."""
    if nar_hash.algorithm is not HashAlgorithm.SHA256:
        raise FormatError("a fingerprint needs a sha256 NAR hash")
    if nar_size <= 0:
        raise FormatError(f"{path}: cannot fingerprint a path whose NAR size is {nar_size}")
    refs = ",".join(sorted(set(references)))
    return f"1;{path};{nar_hash.to_nix32()};{nar_size};{refs}".encode()


@dataclass(frozen=True)
class TrustedKeys:
    """The keys a verifier accepts, by name, as Nix's trusted-public-keys selects them.

    A `KeyPolicy` (see `nixwarden.trust.verify`): a path passes with at least one
    valid signature by a trusted key, as `nix store verify --sigs-needed 1`.
    """

    by_name: Mapping[str, PublicKey]

    @classmethod
    def of(cls, keys: Iterable[PublicKey]) -> TrustedKeys:
        by_name: dict[str, PublicKey] = {}
        for key in keys:
            known = by_name.setdefault(key.name, key)
            if known.key != key.key:
                # Nix silently keeps the first; two different keys under one name is a mistake.
                raise FormatError(f"two different trusted keys are named '{key.name}'")
        return cls(by_name)

    def check(self, fingerprint: bytes, signatures: Sequence[Signature]) -> Verified:
        """The names of the trusted keys whose signatures verify (`KeyPolicy`).

        Raises `SignatureRejected` when none does, saying what was wrong.
        """
        valid: list[str] = []
        invalid: list[str] = []
        untrusted: list[str] = []
        for signature in signatures:
            key = self.by_name.get(signature.key_name)
            if key is None:
                untrusted.append(signature.key_name)
            elif key.verify(fingerprint, signature):
                valid.append(signature.key_name)
            else:
                invalid.append(signature.key_name)
        if valid:
            return Verified(tuple(valid))
        raise SignatureRejected(_rejection(invalid, untrusted))


def _rejection(invalid: Sequence[str], untrusted: Sequence[str]) -> str:
    """Why no signature counted; key names are plain (`_KEY_NAME`), safe to print."""
    if invalid and untrusted:
        return (
            f"signature by {', '.join(invalid)} does not verify "
            f"(also signed by untrusted keys {', '.join(untrusted)})"
        )
    if invalid:
        return f"signature by {', '.join(invalid)} does not verify"
    if untrusted:
        return f"signed only by untrusted keys {', '.join(untrusted)}"
    return "no signatures"


def parse_public_keys(text: str) -> list[PublicKey]:
    """Whitespace-separated public keys, as in a key file or trusted-public-keys."""
    keys = [PublicKey.parse(word) for word in text.split()]
    if not keys:
        raise FormatError("no public key found")
    return keys


def decode_secret_key(data: bytes) -> SecretKey:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("secret key is not ASCII text") from None
    return SecretKey.parse(text)
