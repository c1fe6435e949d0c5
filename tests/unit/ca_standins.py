"""Stand-ins, for the unit tests only, of two modules other helpers are writing.

`nixwarden.ca.krl` (the KRL format) and `nixwarden.trust.verify` (verification that
raises) are agreed interfaces (Krl.empty/revoking/revocation/parse/to_bytes, CertRef;
Verified, SignatureRejected). Until the real modules are on this branch, `install`
puts minimal ones in their place so the certificate policy can be tested; once they
exist it does nothing, and the same tests run against the real ones.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nixwarden.errors import FormatError

MAGIC = b"SSHKRL\n\0"


@dataclass(frozen=True)
class CertRef:
    ca_key_blob: bytes
    serial: int
    key_id: str


@dataclass(frozen=True)
class Krl:
    """Revocations by (CA, serial range), (CA, key id) and plain key; JSON, not PROTOCOL.krl."""

    version: int = 0
    ranges: tuple[tuple[bytes, int, int], ...] = ()
    key_ids: frozenset[tuple[bytes, str]] = field(default_factory=frozenset)
    keys: frozenset[bytes] = field(default_factory=frozenset)

    @classmethod
    def empty(cls, comment: str = "", *, now: int = 0) -> Krl:
        return cls()

    def revoking(
        self,
        ca_key_blob: bytes | None,
        *,
        serials: Iterable[int] = (),
        serial_ranges: Iterable[tuple[int, int]] = (),
        key_ids: Iterable[str] = (),
        keys: Iterable[bytes] = (),
        sha1: Iterable[bytes] = (),
        sha256: Iterable[bytes] = (),
        now: int,
    ) -> Krl:
        ca = ca_key_blob or b""
        ranges = [(ca, serial, serial) for serial in serials]
        ranges += [(ca, low, high) for low, high in serial_ranges]
        return Krl(
            self.version + 1,
            self.ranges + tuple(ranges),
            self.key_ids | {(ca, key_id) for key_id in key_ids},
            self.keys | frozenset(keys),
        )

    def revocation(self, key_blob: bytes, cert: CertRef | None = None) -> str | None:
        if key_blob in self.keys:
            return "revoked: key"
        if cert is None:
            return None
        for ca, low, high in self.ranges:
            if ca in (cert.ca_key_blob, b"") and low <= cert.serial <= high:
                return f"revoked: serial {cert.serial}"
        if {(cert.ca_key_blob, cert.key_id), (b"", cert.key_id)} & self.key_ids:
            return f"revoked: key id {cert.key_id}"
        return None

    def to_bytes(self) -> bytes:
        document = {
            "version": self.version,
            "ranges": [[ca.hex(), low, high] for ca, low, high in self.ranges],
            "key_ids": sorted([ca.hex(), key_id] for ca, key_id in self.key_ids),
            "keys": sorted(key.hex() for key in self.keys),
        }
        return MAGIC + json.dumps(document).encode()

    @classmethod
    def parse(cls, data: bytes) -> Krl:
        if not data.startswith(MAGIC):
            raise FormatError("KRL: wrong magic")
        try:
            document = json.loads(data[len(MAGIC) :])
            return cls(
                document["version"],
                tuple((bytes.fromhex(ca), low, high) for ca, low, high in document["ranges"]),
                frozenset((bytes.fromhex(ca), key_id) for ca, key_id in document["key_ids"]),
                frozenset(bytes.fromhex(key) for key in document["keys"]),
            )
        except (ValueError, KeyError, TypeError):
            raise FormatError("KRL: malformed") from None


@dataclass(frozen=True)
class Verified:
    signers: tuple[str, ...]


class SignatureRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _module(name: str, members: Sequence[object]) -> types.ModuleType:
    module = types.ModuleType(name)
    for member in members:
        setattr(module, member.__name__, member)  # type: ignore[attr-defined]
    return module


def install() -> None:
    if importlib.util.find_spec("nixwarden.ca.krl") is None:
        sys.modules["nixwarden.ca.krl"] = _module("nixwarden.ca.krl", [CertRef, Krl])
    if importlib.util.find_spec("nixwarden.trust.verify") is None:
        sys.modules["nixwarden.trust.verify"] = _module(
            "nixwarden.trust.verify", [Verified, SignatureRejected]
        )
