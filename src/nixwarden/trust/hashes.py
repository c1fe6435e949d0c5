"""Hashes as Nix writes them: `algo:base16`, `algo:nix32`, `algo:base64` and SRI `algo-base64`.

Nix tells the encodings after `algo:` apart by length alone, which is unambiguous for
every digest size it supports; this module does the same and refuses anything else.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
from dataclasses import dataclass

from nixwarden.errors import FormatError
from nixwarden.nix import nix32
from nixwarden.trust.failures import shown


class HashAlgorithm(enum.Enum):
    MD5 = "md5"
    SHA1 = "sha1"
    SHA256 = "sha256"
    SHA512 = "sha512"

    @property
    def size(self) -> int:
        match self:
            case HashAlgorithm.MD5:
                return 16
            case HashAlgorithm.SHA1:
                return 20
            case HashAlgorithm.SHA256:
                return 32
            case HashAlgorithm.SHA512:
                return 64

    def new(self) -> hashlib._Hash:
        return hashlib.new(self.value)

    @classmethod
    def parse(cls, name: str) -> HashAlgorithm:
        try:
            return cls(name)
        except ValueError:
            raise FormatError(f"unknown hash algorithm {shown(name)}") from None


class HashFormat(enum.Enum):
    """The ways of printing a hash that the command line offers."""

    NIX32 = "nix32"
    BASE16 = "base16"
    BASE64 = "base64"
    SRI = "sri"


def _strict_b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise FormatError("invalid base64") from None


@dataclass(frozen=True)
class Hash:
    algorithm: HashAlgorithm
    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != self.algorithm.size:
            raise FormatError(
                f"{self.algorithm.value} digest has {len(self.digest)} bytes, "
                f"expected {self.algorithm.size}"
            )

    @classmethod
    def parse(cls, text: str, *, default: HashAlgorithm | None = None) -> Hash:
        """Any form Nix prints: `algo:{base16,nix32,base64}`, SRI, or bare with `default`."""
        if ":" in text:
            name, _, encoded = text.partition(":")
            return cls.decode(HashAlgorithm.parse(name), encoded)
        if "-" in text:
            name, _, encoded = text.partition("-")
            if name in {a.value for a in HashAlgorithm}:
                return cls.from_sri(text)
        if default is None:
            raise FormatError(f"hash {shown(text)} does not name its algorithm")
        return cls.decode(default, text)

    @classmethod
    def from_sri(cls, text: str) -> Hash:
        name, dash, encoded = text.partition("-")
        if not dash:
            raise FormatError(f"SRI hash {shown(text)} lacks 'algo-'")
        algorithm = HashAlgorithm.parse(name)
        if len(encoded) != _base64_length(algorithm.size):
            raise FormatError(f"SRI hash {shown(text)} has the wrong length")
        return cls(algorithm, _strict_b64decode(encoded))

    @classmethod
    def decode(cls, algorithm: HashAlgorithm, encoded: str) -> Hash:
        """The digest in whichever encoding its length says it is in."""
        size = algorithm.size
        try:
            if len(encoded) == size * 2:
                if encoded != encoded.lower():
                    raise FormatError(f"base16 hash {shown(encoded)} is not lower case")
                return cls(algorithm, bytes.fromhex(encoded))
            if len(encoded) == nix32.encoded_length(size):
                return cls(algorithm, nix32.decode(encoded, size))
            if len(encoded) == _base64_length(size):
                return cls(algorithm, _strict_b64decode(encoded))
        except ValueError:
            raise FormatError(f"hash {shown(encoded)} is not valid base16") from None
        raise FormatError(
            f"{algorithm.value} hash {shown(encoded)} has a length of none of its encodings"
        )

    @classmethod
    def of_bytes(cls, algorithm: HashAlgorithm, data: bytes) -> Hash:
        hasher = algorithm.new()
        hasher.update(data)
        return cls(algorithm, hasher.digest())

    def to_nix32(self) -> str:
        return f"{self.algorithm.value}:{nix32.encode(self.digest)}"

    def to_base16(self) -> str:
        return f"{self.algorithm.value}:{self.digest.hex()}"

    def to_base64(self) -> str:
        return f"{self.algorithm.value}:{base64.b64encode(self.digest).decode()}"

    def to_sri(self) -> str:
        return f"{self.algorithm.value}-{base64.b64encode(self.digest).decode()}"

    def render(self, form: HashFormat) -> str:
        match form:
            case HashFormat.NIX32:
                return self.to_nix32()
            case HashFormat.BASE16:
                return self.to_base16()
            case HashFormat.BASE64:
                return self.to_base64()
            case HashFormat.SRI:
                return self.to_sri()

    def __str__(self) -> str:
        return self.to_nix32()


def _base64_length(size: int) -> int:
    return (size + 2) // 3 * 4
