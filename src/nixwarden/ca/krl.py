"""OpenSSH key revocation lists (KRLs): read strictly, look up fast, write what ssh-keygen reads.

The format is OpenSSH's PROTOCOL.krl; where the text leaves a choice, OpenSSH 9.2's
krl.c (the version `ssh-keygen -Q` here runs) decides. All integers are big-endian,
a string is a u32 length and its bytes:

    header       = "SSHKRL\\n\\0" u32(1) u64(krl_version) u64(generated_date) u64(flags)
                   string(reserved) string(comment)
    section      = byte(type) string(body)          -- except the signature section:
    signature    = byte(4) string(key) string(signature over everything before it)
    certificates = string(CA key, empty: any CA) string(reserved) { byte(type) string(body) }
                   0x20 serial list   u64...            (ascending)
                   0x21 serial range  u64(min) u64(max)
                   0x22 serial bitmap u64(offset) mpint(bits: bit N revokes offset + N)
                   0x23 key ids       string(key id)...
    explicit keys (2)  string(plain public key blob)...
    SHA1 (3) / SHA256 (5) fingerprints  string(hash of a plain key blob)...  (ascending)

Stricter than OpenSSH, on purpose, where ssh-keygen never writes what is refused (so a
refusal means corruption or a hand-made file, and a verification fails closed): serial
lists must ascend without repeats, hashes too (PROTOCOL.krl says "must"); no section or
subsection may be empty; mpints must be minimal; key ids and the comment must be UTF-8;
every key blob must be a well-formed plain key of a type OpenSSH knows. Extension
sections (types 255 and 0x39, newer than 9.2, which refuses them) are refused. Refused
like OpenSSH: bad magic or version, truncation, leftover bytes, unknown types, serial 0,
inverted ranges, a bitmap longer than 2048 bytes (which `ssh-keygen -k` can write but not
read back: the writer here never does), a bitmap past 2^64-1, a section after a signature,
a key that signs twice, a signature that does not verify and a KRL whose every signer it
revokes. Signatures are verified (Ed25519, ECDSA, RSA with SHA-2; others are refused as
unverifiable) and exposed, never written: OpenSSH >= 9.4 refuses signed KRLs altogether
and recommends signing the file with `ssh-keygen -Y sign` instead.

Lookups never scan: serials of each CA are merged into sorted disjoint intervals found
by bisection, key ids, keys and hashes are sets.
"""

from __future__ import annotations

import bisect
import hashlib
import operator
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import compress, islice, repeat

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from nixwarden.ca.sshkey import fingerprint
from nixwarden.display import escape
from nixwarden.errors import FormatError, InvalidInput
from nixwarden.sshkeys import KEY_TYPES, wire_key_type

MAGIC = b"SSHKRL\n\0"
FORMAT_VERSION = 1
U64_MAX = (1 << 64) - 1

# Bounds on what one KRL may hold. OpenSSH has none but its memory; these are far above
# any real revocation list (a CA that revoked a million certificates would use a quarter
# of the interval budget) and keep a hostile file from costing more than ~200 MB.
MAX_KRL_SIZE = 64 << 20
MAX_SERIAL_INTERVALS = 1 << 22
MAX_KEY_IDS = 1 << 20
MAX_BLOBS = 1 << 20  # explicit keys plus SHA1 plus SHA256 fingerprints
MAX_CA_KEYS = 1 << 12
MAX_SIGNATURES = 16
# sshbuf's SSHBUF_MAX_BIGNUM: the longest mpint, hence bitmap, OpenSSH reads.
MAX_MPINT_BYTES = 2048
MAX_BITMAP_BITS = MAX_MPINT_BYTES * 8
# ssh-keygen refuses RSA moduli below 1024 bits; none above the mpint limit exists.
MIN_RSA_BITS = 1024

SHA1_SIZE = 20
SHA256_SIZE = 32


class Section(IntEnum):
    CERTIFICATES = 1
    EXPLICIT_KEY = 2
    FINGERPRINT_SHA1 = 3
    SIGNATURE = 4
    FINGERPRINT_SHA256 = 5


class CertSection(IntEnum):
    SERIAL_LIST = 0x20
    SERIAL_RANGE = 0x21
    SERIAL_BITMAP = 0x22
    KEY_ID = 0x23


_SECTION_NAMES: dict[int, str] = {
    Section.CERTIFICATES: "certificates",
    Section.EXPLICIT_KEY: "explicit key",
    Section.FINGERPRINT_SHA1: "SHA1 fingerprint",
    Section.SIGNATURE: "signature",
    Section.FINGERPRINT_SHA256: "SHA256 fingerprint",
}
# key type → (curve name in the blob, curve, uncompressed point size, signature hash)
_ECDSA_CURVES: dict[str, tuple[str, ec.EllipticCurve, int, hashes.HashAlgorithm]] = {
    "ecdsa-sha2-nistp256": ("nistp256", ec.SECP256R1(), 65, hashes.SHA256()),
    "ecdsa-sha2-nistp384": ("nistp384", ec.SECP384R1(), 97, hashes.SHA384()),
    "ecdsa-sha2-nistp521": ("nistp521", ec.SECP521R1(), 133, hashes.SHA512()),
    "sk-ecdsa-sha2-nistp256@openssh.com": ("nistp256", ec.SECP256R1(), 65, hashes.SHA256()),
}
# RSA signature types accepted on a KRL: not "ssh-rsa" (SHA-1).
_RSA_SIGNATURE_HASHES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}
_CERT_SUFFIX = "-cert-v01@openssh.com"
# bin() digits '0'/'1' → bytes 0/1, the selectors of itertools.compress.
_BIT_SELECTORS = bytes.maketrans(b"01", b"\0\1")


def _fail(problem: str, at: int | None = None) -> FormatError:
    return FormatError(f"KRL: {problem}" + (f" at byte {at}" if at is not None else ""))


# --- reading -------------------------------------------------------------------------------


class _Reader:
    """Big-endian SSH wire values from data[pos:end]; positions stay those of the file."""

    __slots__ = ("data", "end", "origin", "pos")

    def __init__(
        self, data: memoryview, pos: int = 0, end: int | None = None, *, origin: int | None = 0
    ) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.origin = origin  # where data[0] is in the file, for messages; None: unknown

    def at(self) -> int | None:
        return None if self.origin is None else self.origin + self.pos

    def left(self) -> int:
        return self.end - self.pos

    def _take(self, size: int, what: str) -> int:
        if size > self.left():
            raise _fail(f"truncated {what}: {size} bytes needed, {self.left()} left", self.at())
        start = self.pos
        self.pos += size
        return start

    def u8(self, what: str) -> int:
        return self.data[self._take(1, what)]

    def u32(self, what: str) -> int:
        start = self._take(4, what)
        return int.from_bytes(self.data[start : start + 4], "big")

    def u64(self, what: str) -> int:
        start = self._take(8, what)
        return int.from_bytes(self.data[start : start + 8], "big")

    def sub(self, what: str) -> _Reader:
        """The next string, as a reader of its own."""
        at = self.at()
        length = self.u32(f"{what} length")
        if length > MAX_KRL_SIZE:
            raise _fail(f"absurd {what} length {length}", at)
        start = self._take(length, what)
        return _Reader(self.data, start, start + length, origin=self.origin)

    def string(self, what: str) -> bytes:
        inner = self.sub(what)
        return bytes(self.data[inner.pos : inner.end])

    def text(self, what: str) -> str:
        """A string OpenSSH reads as a C string: no NUL; here also valid UTF-8."""
        at = self.at()
        raw = self.string(what)
        if b"\0" in raw:
            raise _fail(f"{what} contains NUL", at)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(f"{what} is not UTF-8", at) from None

    def mpint(self, what: str, max_bytes: int) -> int:
        """A non-negative mpint in its one minimal encoding, at most max_bytes long."""
        at = self.at()
        raw = self.string(what)
        if raw and raw[0] & 0x80:
            raise _fail(f"{what} is negative", at)
        if len(raw) > max_bytes + 1 or (len(raw) == max_bytes + 1 and raw[0] != 0):
            raise _fail(f"{what} of {len(raw)} bytes is larger than {max_bytes} bytes", at)
        if raw[:1] == b"\0" and (len(raw) == 1 or not raw[1] & 0x80):
            raise _fail(f"{what} has a superfluous leading zero byte", at)
        return int.from_bytes(raw, "big")

    def expect_end(self, what: str) -> None:
        if self.pos != self.end:
            left = self.left()
            raise _fail(f"{left} trailing byte{'s' if left > 1 else ''} in {what}", self.at())


def _check_public_key(blob: bytes, what: str, at: int | None = None) -> str:
    """The type of `blob`, a well-formed plain (not certificate) public key; else refused.

    Structure only, as OpenSSH's sshkey_from_blob checks it (plus minimal mpints, so that
    equal keys have equal blobs); ECDSA points must lie on their curve.
    """
    reader = _Reader(memoryview(blob), origin=at)
    name = reader.string(f"{what} type")
    key_type = name.decode("ascii", "replace")
    if key_type.endswith(_CERT_SUFFIX):
        raise _fail(f"{what} is a certificate ({escape(key_type)}), not a plain key", at)
    if key_type not in KEY_TYPES or name != key_type.encode():
        raise _fail(f"{what} has an unexpected type '{escape(key_type)}'", at)
    match key_type:
        case "ssh-ed25519" | "sk-ssh-ed25519@openssh.com":
            if len(reader.string(f"{what} public key")) != 32:
                raise _fail(f"{what}: an Ed25519 public key must be 32 bytes", at)
        case "ssh-rsa":
            reader.mpint(f"{what} RSA exponent", MAX_MPINT_BYTES)
            modulus = reader.mpint(f"{what} RSA modulus", MAX_MPINT_BYTES)
            if modulus.bit_length() < MIN_RSA_BITS:
                raise _fail(f"{what}: RSA modulus shorter than {MIN_RSA_BITS} bits", at)
        case "ssh-dss":
            for part in ("p", "q", "g", "y"):
                reader.mpint(f"{what} DSA {part}", MAX_MPINT_BYTES)
        case _:
            curve_name, curve, point_size, _ = _ECDSA_CURVES[key_type]
            if reader.string(f"{what} curve") != curve_name.encode():
                raise _fail(f"{what}: curve does not match the key type {key_type}", at)
            point = reader.string(f"{what} ECDSA point")
            if len(point) != point_size or point[0] != 4:
                raise _fail(f"{what}: not an uncompressed {curve_name} point", at)
            try:
                ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
            except ValueError:
                raise _fail(f"{what}: ECDSA point is not on {curve_name}", at) from None
    if key_type.startswith("sk-"):
        reader.string(f"{what} application")
    reader.expect_end(what)
    return key_type


# --- the revoked serials of one CA -----------------------------------------------------------


@dataclass(frozen=True, eq=True)
class SerialSet:
    """Revoked serials as sorted, disjoint, non-adjacent closed intervals [start, end]."""

    starts: array[int] = field(default_factory=lambda: array("Q"), repr=False)
    ends: array[int] = field(default_factory=lambda: array("Q"), repr=False)

    def __repr__(self) -> str:
        return f"SerialSet({len(self)} intervals, {self.count()} serials)"

    def __hash__(self) -> int:  # arrays are not hashable; equal sets agree on these
        return hash((len(self.starts), self.starts[:1].tobytes(), self.ends[-1:].tobytes()))

    @classmethod
    def of(cls, intervals: Iterable[tuple[int, int]]) -> SerialSet:
        """Intervals in any order, overlapping or touching, merged."""
        starts: array[int] = array("Q")
        ends: array[int] = array("Q")
        for start, end in sorted(intervals):
            if ends and start <= ends[-1] + 1:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        return cls(starts, ends)

    def find(self, serial: int) -> tuple[int, int] | None:
        """The interval holding `serial`, if any: one bisection."""
        if not 0 <= serial <= U64_MAX:
            return None
        index = bisect.bisect_right(self.starts, serial) - 1
        if index >= 0 and serial <= self.ends[index]:
            return self.starts[index], self.ends[index]
        return None

    def __contains__(self, serial: object) -> bool:
        return isinstance(serial, int) and self.find(serial) is not None

    def intervals(self) -> Iterator[tuple[int, int]]:
        return zip(self.starts, self.ends, strict=True)

    def __len__(self) -> int:
        """How many intervals (not serials: one interval can hold 2^64 - 1)."""
        return len(self.starts)

    def count(self) -> int:
        """How many serials."""
        return sum(self.ends) - sum(self.starts) + len(self.starts)


class _SerialsBuilder:
    """Accumulates intervals in file order; merges only when they arrive out of order."""

    __slots__ = ("ends", "in_order", "starts")

    def __init__(self) -> None:
        self.starts: array[int] = array("Q")
        self.ends: array[int] = array("Q")
        self.in_order = True

    def add(self, starts: Iterable[int], ends: Iterable[int], first: int) -> None:
        """Append a run of sorted, disjoint, non-adjacent intervals beginning at `first`."""
        if self.ends and first <= self.ends[-1] + 1:
            self.in_order = False
        self.starts.extend(starts)
        self.ends.extend(ends)

    def build(self) -> SerialSet:
        if self.in_order:
            return SerialSet(self.starts, self.ends)
        return SerialSet.of(zip(self.starts, self.ends, strict=True))


def _list_intervals(serials: array[int], at: int) -> tuple[array[int], array[int]]:
    """A serial list subsection as intervals; it must ascend strictly and not hold 0."""
    if serials[0] == 0:
        raise _fail("serial list revokes serial 0", at)
    # Common case, decided in C: every serial at least 2 above the one before it.
    if all(map(operator.lt, map(operator.add, serials, repeat(1)), islice(serials, 1, None))):
        return serials, serials
    starts: array[int] = array("Q")
    ends: array[int] = array("Q")
    previous = -1
    for serial in serials:
        if serial <= previous:
            raise _fail(f"serial list is not ascending ({serial} after {previous})", at)
        if serial == previous + 1:
            ends[-1] = serial
        else:
            starts.append(serial)
            ends.append(serial)
        previous = serial
    return starts, ends


def _set_bits(value: int, offset: int, nbits: int) -> array[int]:
    """offset + N for every bit N set in value (nbits long), ascending, decided in C."""
    selectors = bin(value)[:1:-1].encode("ascii").translate(_BIT_SELECTORS)
    return array("Q", compress(range(offset, offset + nbits), selectors))


# --- the parsed KRL ------------------------------------------------------------------------


@dataclass(frozen=True)
class CertRef:
    """What a revocation check needs of a certificate."""

    ca_key_blob: bytes  # the wire-format public key of the CA that signed it
    serial: int
    key_id: str


@dataclass(frozen=True)
class RevokedCertificates:
    """The certificates revoked for one CA (ca_key_blob None: for any CA)."""

    ca_key_blob: bytes | None
    serials: SerialSet = field(default_factory=SerialSet)
    key_ids: frozenset[str] = frozenset()

    def revocation(self, serial: int, key_id: str) -> str | None:
        """As krl.c's is_cert_revoked: the key id first; serial 0 means "none"."""
        if key_id in self.key_ids:
            return f"revoked: key id {key_id}"
        if serial == 0:
            return None
        interval = self.serials.find(serial)
        if interval is None:
            return None
        start, end = interval
        return (
            f"revoked: serial {start}" if start == end else f"revoked: serial range {start}-{end}"
        )


@dataclass(frozen=True)
class KrlSignature:
    """A KRL_SECTION_SIGNATURE, verified when the KRL was parsed (as OpenSSH 9.2 does).

    The signature covers the KRL's first `signed_length` bytes (from the magic through
    this section's key). Which keys may sign a KRL is the caller's policy.
    """

    key_blob: bytes
    signature: bytes
    signed_length: int


@dataclass(frozen=True)
class Krl:
    version: int = 0
    generated_date: int = 0
    comment: str = ""
    flags: int = 0
    certificates: tuple[RevokedCertificates, ...] = ()
    keys: frozenset[bytes] = frozenset()
    sha1: frozenset[bytes] = frozenset()
    sha256: frozenset[bytes] = frozenset()
    signatures: tuple[KrlSignature, ...] = ()
    _by_ca: dict[bytes, RevokedCertificates] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        by_ca = {section.ca_key_blob or b"": section for section in self.certificates}
        if len(by_ca) != len(self.certificates):
            raise ValueError("a KRL holds one certificates section per CA")
        object.__setattr__(self, "_by_ca", by_ca)

    # --- constructors ---

    @classmethod
    def parse(cls, data: bytes) -> Krl:
        """The KRL in `data`; FormatError (one line) on anything OpenSSH 9.2 would not read
        or ssh-keygen would never write (see the module's docstring)."""
        if len(data) > MAX_KRL_SIZE:
            raise _fail(f"larger than {MAX_KRL_SIZE >> 20} MiB")
        return _Parser(memoryview(data)).parse()

    @classmethod
    def empty(cls, comment: str = "", *, now: int = 0) -> Krl:
        _check_text(comment, "comment")
        return cls(version=0, generated_date=_u64(now, "date"), comment=comment)

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
        """This KRL plus the given revocations, version + 1, generated at `now` (seconds).

        Serials and key ids are revoked for certificates of `ca_key_blob` (None: of any
        CA); keys are plain public key blobs; sha1/sha256 are raw digests of key blobs.
        Signatures are dropped: they cannot cover the new content.
        """
        if self.version >= U64_MAX:
            raise InvalidInput("KRL: version cannot be incremented past 2^64-1")
        if ca_key_blob is not None:
            _check_public_key(ca_key_blob, "CA key")
        intervals = [(_serial(serial), serial) for serial in serials]
        for start, end in serial_ranges:
            if not 0 < _serial(start) <= _serial(end):
                raise InvalidInput(f"KRL: invalid serial range {start}-{end}")
            intervals.append((start, end))
        new_ids = frozenset(key_ids)
        for key_id in new_ids:
            _check_text(key_id, "key id")
        new_keys = frozenset(keys)
        for blob in new_keys:
            _check_public_key(blob, "revoked key")
        new_sha1, new_sha256 = frozenset(sha1), frozenset(sha256)
        for digests, size, name in ((new_sha1, SHA1_SIZE, "SHA1"), (new_sha256, 32, "SHA256")):
            if any(len(digest) != size for digest in digests):
                raise InvalidInput(f"KRL: a {name} fingerprint must be {size} bytes")

        certificates = list(self.certificates)
        if intervals or new_ids:
            old = self._by_ca.get(ca_key_blob or b"")
            merged = RevokedCertificates(
                ca_key_blob,
                SerialSet.of([*(old.serials.intervals() if old else ()), *intervals]),
                (old.key_ids if old else frozenset()) | new_ids,
            )
            if old is None:
                certificates.append(merged)
            else:
                certificates[certificates.index(old)] = merged
        krl = Krl(
            version=self.version + 1,
            generated_date=_u64(now, "date"),
            comment=self.comment,
            flags=self.flags,
            certificates=tuple(certificates),
            keys=self.keys | new_keys,
            sha1=self.sha1 | new_sha1,
            sha256=self.sha256 | new_sha256,
        )
        _check_totals(krl)
        return krl

    # --- lookups ---

    def revocation(self, key_blob: bytes, cert: CertRef | None = None) -> str | None:
        """Why this key (a plain public key blob), or the certificate `cert` of it, is
        revoked, else None. Checks in the order of OpenSSH's ssh_krl_check_key: the key by
        fingerprint and explicitly; the certificate by key id and serial under its CA,
        then under "any CA"; then the CA key itself by fingerprint and explicitly."""
        key_type = wire_key_type(key_blob) or ""
        if key_type.endswith(_CERT_SUFFIX):
            raise ValueError("revocation() takes the certified key's plain blob")
        reason = self._key_revocation(key_blob, "key")
        if reason is not None or cert is None:
            return reason
        for section, scope in (
            (self._by_ca.get(cert.ca_key_blob) if cert.ca_key_blob else None, ""),
            (self._by_ca.get(b""), " (any CA)"),
        ):
            if section is not None and (found := section.revocation(cert.serial, cert.key_id)):
                return found + scope
        return self._key_revocation(cert.ca_key_blob, "CA key")

    def _key_revocation(self, blob: bytes, what: str) -> str | None:
        if (
            (self.sha1 and hashlib.sha1(blob).digest() in self.sha1)  # noqa: S324 - as OpenSSH
            or (self.sha256 and hashlib.sha256(blob).digest() in self.sha256)
            or blob in self.keys
        ):
            return f"revoked: {what} {fingerprint(blob)}"
        return None

    # --- writing ---

    def to_bytes(self) -> bytes:
        """The KRL as ssh-keygen -k writes it (same sections, order and encodings), except
        that no bitmap grows past what OpenSSH reads back; signatures are not written."""
        out = [
            MAGIC,
            struct.pack(">IQQQ", FORMAT_VERSION, self.version, self.generated_date, self.flags),
            _string(b""),
            _string(self.comment.encode()),
        ]
        for section in self.certificates:
            if section.serials or section.key_ids:
                out += [bytes([Section.CERTIFICATES]), _string(_certificates_body(section))]
        for kind, blobs in (
            (Section.EXPLICIT_KEY, self.keys),
            (Section.FINGERPRINT_SHA1, self.sha1),
            (Section.FINGERPRINT_SHA256, self.sha256),
        ):
            if blobs:
                out += [bytes([kind]), _string(b"".join(_string(blob) for blob in sorted(blobs)))]
        return b"".join(out)


def _u64(value: int, what: str) -> int:
    if not 0 <= value <= U64_MAX:
        raise InvalidInput(f"KRL: {what} {value} is not a u64")
    return value


def _serial(value: int) -> int:
    if not 0 < value <= U64_MAX:
        raise InvalidInput(f"KRL: serial {value} cannot be revoked (1 to 2^64-1)")
    return value


def _check_text(text: str, what: str) -> None:
    if "\0" in text:
        raise InvalidInput(f"KRL: {what} contains NUL")


def _check_totals(krl: Krl) -> None:
    if len(krl.certificates) > MAX_CA_KEYS:
        raise InvalidInput(f"KRL: more than {MAX_CA_KEYS} CA keys")
    if sum(len(section.serials) for section in krl.certificates) > MAX_SERIAL_INTERVALS:
        raise InvalidInput(f"KRL: more than {MAX_SERIAL_INTERVALS} revoked serial intervals")
    if sum(len(section.key_ids) for section in krl.certificates) > MAX_KEY_IDS:
        raise InvalidInput(f"KRL: more than {MAX_KEY_IDS} revoked key ids")
    if len(krl.keys) + len(krl.sha1) + len(krl.sha256) > MAX_BLOBS:
        raise InvalidInput(f"KRL: more than {MAX_BLOBS} revoked keys and fingerprints")


# --- parsing -------------------------------------------------------------------------------


class _CaBuilder:
    __slots__ = ("key_ids", "serials")

    def __init__(self) -> None:
        self.serials = _SerialsBuilder()
        self.key_ids: set[str] = set()


class _Parser:
    def __init__(self, data: memoryview) -> None:
        self.reader = _Reader(data)
        self.by_ca: dict[bytes, _CaBuilder] = {}
        self.intervals = 0
        self.key_ids = 0
        self.keys: set[bytes] = set()
        self.sha1: set[bytes] = set()
        self.sha256: set[bytes] = set()
        self.signatures: list[KrlSignature] = []

    def parse(self) -> Krl:
        reader = self.reader
        head = bytes(reader.data[: len(MAGIC)])
        if head != MAGIC:
            if MAGIC.startswith(head) and head:
                raise _fail("truncated header (magic)")
            raise _fail("not a KRL (wrong magic)")
        reader.pos = len(MAGIC)
        version = reader.u32("header")
        if version != FORMAT_VERSION:
            raise _fail(f"unsupported format version {version}", len(MAGIC))
        krl_version = reader.u64("header")
        generated_date = reader.u64("header")
        flags = reader.u64("header")
        reader.sub("header reserved field")  # "currently ignored" (PROTOCOL.krl)
        comment = reader.text("comment")

        while reader.left():
            at = reader.pos
            if reader.left() < 5:
                raise _fail(f"{reader.left()} trailing bytes after the last section", at)
            kind = reader.u8("section type")
            if self.signatures and kind != Section.SIGNATURE:
                name = _SECTION_NAMES.get(kind, f"type {kind:#04x}")
                raise _fail(f"{name} section after a signature (signatures come last)", at)
            match kind:
                case Section.CERTIFICATES:
                    self._certificates(reader.sub("certificates section"))
                case Section.EXPLICIT_KEY:
                    self._blobs(reader.sub("explicit key section"), self.keys, 0, "explicit key")
                case Section.FINGERPRINT_SHA1:
                    body = reader.sub("SHA1 section")
                    self._blobs(body, self.sha1, SHA1_SIZE, "SHA1 fingerprint")
                case Section.FINGERPRINT_SHA256:
                    body = reader.sub("SHA256 section")
                    self._blobs(body, self.sha256, SHA256_SIZE, "SHA256 fingerprint")
                case Section.SIGNATURE:
                    self._signature()
                case _:
                    raise _fail(f"unknown section type {kind:#04x}", at)

        certificates = tuple(
            RevokedCertificates(ca or None, built.serials.build(), frozenset(built.key_ids))
            for ca, built in self.by_ca.items()
        )
        krl = Krl(
            version=krl_version,
            generated_date=generated_date,
            comment=comment,
            flags=flags,
            certificates=certificates,
            keys=frozenset(self.keys),
            sha1=frozenset(self.sha1),
            sha256=frozenset(self.sha256),
            signatures=tuple(self.signatures),
        )
        # As OpenSSH 9.2: a signature counts only by a key this very KRL does not revoke.
        if krl.signatures and all(krl.revocation(sig.key_blob) for sig in krl.signatures):
            raise _fail("every key that signed it is revoked by it")
        return krl

    def _count_intervals(self, added: int, at: int) -> None:
        self.intervals += added
        if self.intervals > MAX_SERIAL_INTERVALS:
            raise _fail(f"more than {MAX_SERIAL_INTERVALS} revoked serial intervals", at)

    def _certificates(self, section: _Reader) -> None:
        at = section.pos
        ca_key = section.string("CA key")
        if ca_key:
            _check_public_key(ca_key, "CA key", at + 4)
        section.sub("certificates section reserved field")  # ignored, as by OpenSSH
        if not section.left():
            raise _fail("certificates section without subsections", at)
        built = self.by_ca.get(ca_key)
        if built is None:
            if len(self.by_ca) >= MAX_CA_KEYS:
                raise _fail(f"more than {MAX_CA_KEYS} CA keys", at)
            built = self.by_ca[ca_key] = _CaBuilder()
        while section.left():
            at = section.pos
            kind = section.u8("certificate subsection type")
            body = section.sub("certificate subsection")
            match kind:
                case CertSection.SERIAL_LIST:
                    self._serial_list(body, built.serials)
                case CertSection.SERIAL_RANGE:
                    start = body.u64("serial range")
                    end = body.u64("serial range")
                    body.expect_end("a serial range subsection")
                    if start == 0:
                        raise _fail("serial range starts at serial 0", at)
                    if start > end:
                        raise _fail(f"inverted serial range {start}-{end}", at)
                    self._count_intervals(1, at)
                    built.serials.add((start,), (end,), start)
                case CertSection.SERIAL_BITMAP:
                    self._serial_bitmap(body, built.serials)
                case CertSection.KEY_ID:
                    if not body.left():
                        raise _fail("empty key id subsection", at)
                    while body.left():
                        built.key_ids.add(body.text("key id"))
                        self.key_ids += 1
                        if self.key_ids > MAX_KEY_IDS:
                            raise _fail(f"more than {MAX_KEY_IDS} revoked key ids", at)
                case _:
                    raise _fail(f"unknown certificate subsection type {kind:#04x}", at)

    def _serial_list(self, body: _Reader, serials: _SerialsBuilder) -> None:
        at = body.pos
        if not body.left():
            raise _fail("empty serial list", at)
        if body.left() % 8:
            raise _fail(f"serial list of {body.left()} bytes is not a multiple of 8", at)
        self._count_intervals(body.left() // 8, at)
        values: array[int] = array("Q")
        values.frombytes(body.data[body.pos : body.end])
        if sys.byteorder == "little":
            values.byteswap()
        starts, ends = _list_intervals(values, at)
        serials.add(starts, ends, starts[0])

    def _serial_bitmap(self, body: _Reader, serials: _SerialsBuilder) -> None:
        at = body.pos
        offset = body.u64("bitmap offset")
        bits = body.mpint("serial bitmap", MAX_MPINT_BYTES)
        body.expect_end("a serial bitmap subsection")
        if not bits:
            raise _fail("serial bitmap revokes nothing", at)
        nbits = bits.bit_length()
        if offset + nbits - 1 > U64_MAX:
            raise _fail("serial bitmap reaches past serial 2^64-1", at)
        if offset == 0 and bits & 1:
            raise _fail("serial bitmap revokes serial 0", at)
        run_starts = bits & ~(bits << 1)
        run_ends = bits & ~(bits >> 1)
        self._count_intervals(run_starts.bit_count(), at)
        starts = _set_bits(run_starts, offset, nbits)
        serials.add(starts, _set_bits(run_ends, offset, nbits), starts[0])

    def _blobs(self, body: _Reader, into: set[bytes], size: int, what: str) -> None:
        """A section of strings: plain keys (size 0) or hashes of `size` bytes, ascending."""
        at = body.pos
        if not body.left():
            raise _fail(f"empty {what} section", at)
        previous = b""
        while body.left():
            at = body.pos
            blob = body.string(what)
            if size == 0:
                _check_public_key(blob, what, at + 4)
            else:
                if len(blob) != size:
                    raise _fail(f"{what} of {len(blob)} bytes (must be {size})", at)
                if blob <= previous:
                    raise _fail(f"{what}s are not in ascending order", at)
                previous = blob
            into.add(blob)
            if len(self.keys) + len(self.sha1) + len(self.sha256) > MAX_BLOBS:
                raise _fail(f"more than {MAX_BLOBS} revoked keys and fingerprints", at)

    def _signature(self) -> None:
        reader = self.reader
        at = reader.pos
        key = reader.string("signature key")
        _check_public_key(key, "signature key", at + 4)
        signed_length = reader.pos
        signature_at = reader.pos + 4
        signature = reader.string("signature")
        if any(existing.key_blob == key for existing in self.signatures):
            raise _fail("signed twice with the same key", at)
        if len(self.signatures) >= MAX_SIGNATURES:
            raise _fail(f"more than {MAX_SIGNATURES} signatures", at)
        message = bytes(reader.data[:signed_length])
        _verify_signature(key, signature, message, signature_at)
        self.signatures.append(KrlSignature(key, signature, signed_length))


def _verify_signature(key: bytes, signature: bytes, message: bytes, at: int) -> None:
    """Refuses unless `signature` (SSH wire format) is `key`'s valid signature of `message`.

    As sshkey_verify, for Ed25519, ECDSA and RSA (SHA-2) keys; DSA and security-key
    signatures are refused as unverifiable rather than accepted unchecked.
    """
    key_fingerprint = fingerprint(key)
    keys = _Reader(memoryview(key), origin=None)
    key_type = keys.string("key type").decode()  # checked by _check_public_key already
    signatures = _Reader(memoryview(signature), origin=at)
    signature_type = signatures.string("signature type").decode("ascii", "replace")
    raw = signatures.string("signature blob")
    signatures.expect_end("the signature")
    try:
        match key_type:
            case "ssh-ed25519" if signature_type == key_type:
                public = Ed25519PublicKey.from_public_bytes(keys.string("key"))
                public.verify(raw, message)
            case "ssh-rsa" if signature_type in _RSA_SIGNATURE_HASHES:
                exponent = keys.mpint("exponent", MAX_MPINT_BYTES)
                modulus = keys.mpint("modulus", MAX_MPINT_BYTES)
                size = (modulus.bit_length() + 7) // 8
                if len(raw) > size:  # shorter ones are left-padded, as by ssh_rsa_verify
                    raise InvalidSignature
                rsa.RSAPublicNumbers(exponent, modulus).public_key().verify(
                    raw.rjust(size, b"\0"),
                    message,
                    padding.PKCS1v15(),
                    _RSA_SIGNATURE_HASHES[signature_type],
                )
            case "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" if (
                signature_type == key_type
            ):
                _, curve, _, digest = _ECDSA_CURVES[key_type]
                keys.string("curve")
                public_ec = ec.EllipticCurvePublicKey.from_encoded_point(curve, keys.string("Q"))
                numbers = _Reader(memoryview(raw), origin=None)
                r = numbers.mpint("ECDSA r", MAX_MPINT_BYTES)
                s = numbers.mpint("ECDSA s", MAX_MPINT_BYTES)
                numbers.expect_end("the ECDSA signature")
                public_ec.verify(encode_dss_signature(r, s), message, ec.ECDSA(digest))
            case (
                "ssh-ed25519"
                | "ssh-rsa"
                | "ecdsa-sha2-nistp256"
                | "ecdsa-sha2-nistp384"
                | ("ecdsa-sha2-nistp521")
            ):
                raise _fail(f"signature of type '{escape(signature_type)}' by a {key_type} key", at)
            case _:
                raise _fail(f"cannot verify a signature by a {key_type} key", at)
    except (InvalidSignature, ValueError):
        raise _fail(f"signature by {key_fingerprint} does not verify", at) from None


# --- writing -------------------------------------------------------------------------------


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return _string(b"\0" + raw if raw and raw[0] & 0x80 else raw)


def _next_subsection(
    current: int, contig: int, final: bool, last_gap: int, next_gap: int
) -> tuple[int, bool]:
    """krl.c's choose_next_state: the cheapest encoding for the next run of `contig`
    serials, and whether to start a new bitmap. Ported exactly, so that the bytes written
    here are the bytes ssh-keygen writes for the same revocations."""
    # As krl.c: bounded so that the arithmetic below stays meaningful.
    contig, last_gap, next_gap = (min(value, 1 << 31) for value in (contig, last_gap, next_gap))
    cost_list = cost_bitmap = cost_bitmap_restart = 0
    cost_range = 8
    match current:
        case CertSection.SERIAL_LIST:
            cost_bitmap_restart = cost_bitmap = 8 + 64
        case CertSection.SERIAL_BITMAP:
            cost_list = 8
            cost_bitmap_restart = 8 + 64
        case _:
            cost_bitmap_restart = cost_bitmap = 8 + 64
            cost_list = 8
    cost_list += 64 * contig + (0 if final else 8 + 64)
    cost_range += 2 * 64 + (0 if final else 8 + 64)
    cost_bitmap += last_gap + contig + (0 if final else min(next_gap, 8 + 64))
    cost_bitmap_restart += contig + (0 if final else min(next_gap, 8 + 64))
    cost_list, cost_range, cost_bitmap, cost_bitmap_restart = (
        (cost + 7) // 8 for cost in (cost_list, cost_range, cost_bitmap, cost_bitmap_restart)
    )
    state, cost, restart = CertSection.SERIAL_BITMAP, cost_bitmap, False
    if cost_range < cost:
        state, cost = CertSection.SERIAL_RANGE, cost_range
    if cost_list < cost:
        state, cost = CertSection.SERIAL_LIST, cost_list
    if cost_bitmap_restart < cost:
        state, restart = CertSection.SERIAL_BITMAP, True
    return state, restart


def _serial_subsections(serials: SerialSet) -> Iterator[bytes]:
    """krl.c's revoked_certs_generate, with one change: a bitmap that would grow past
    MAX_BITMAP_BITS (which OpenSSH would write and then refuse to read) is restarted."""
    state = 0
    body = bytearray()
    bitmap = bitmap_start = last = 0
    starts, ends = serials.starts, serials.ends

    def flush() -> bytes:
        if state == CertSection.SERIAL_BITMAP:
            body.extend(_mpint(bitmap))
        encoded = bytes([state]) + _string(bytes(body))
        body.clear()
        return encoded

    for index in range(len(starts)):
        start, end = starts[index], ends[index]
        final = index == len(starts) - 1
        gap = 0 if final else starts[index + 1] - end
        contig = end - start + 1
        next_state, restart = _next_subsection(
            state, contig, final, 0 if state == 0 else start - last, gap
        )
        if next_state == CertSection.SERIAL_BITMAP:
            if state == next_state and not restart and end - bitmap_start >= MAX_BITMAP_BITS:
                restart = True
            if (restart or state != next_state) and contig > MAX_BITMAP_BITS:
                next_state, restart = CertSection.SERIAL_RANGE, False
        if state and (restart or next_state != state or state == CertSection.SERIAL_RANGE):
            yield flush()
        if next_state != state or restart:
            state = next_state
            if state == CertSection.SERIAL_BITMAP:
                bitmap, bitmap_start = 0, start
                body.extend(struct.pack(">Q", start))
        match state:
            case CertSection.SERIAL_LIST:
                body.extend(struct.pack(f">{contig}Q", *range(start, end + 1)))
            case CertSection.SERIAL_RANGE:
                body.extend(struct.pack(">QQ", start, end))
            case _:
                bitmap |= ((1 << contig) - 1) << (start - bitmap_start)
        last = end
    if state:
        yield flush()


def _certificates_body(section: RevokedCertificates) -> bytes:
    parts = [_string(section.ca_key_blob or b""), _string(b"")]
    parts += _serial_subsections(section.serials)
    if section.key_ids:
        ids = b"".join(_string(key_id) for key_id in sorted(k.encode() for k in section.key_ids))
        parts += [bytes([CertSection.KEY_ID]), _string(ids)]
    return b"".join(parts)
