""".narinfo: the text record a binary cache keeps per store path (libstore/nar-info.cc).

`Key: value` lines, each ending in a newline. Nix ignores keys it does not know, and
so does this parser; everything it does know is checked: required fields present,
single-valued fields not repeated, hashes and sizes well formed, the path inside the
store, references and deriver plain base names, signatures well formed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from nixwarden.errors import FormatError
from nixwarden.nix.storepath import STORE_DIR, StorePath
from nixwarden.trust.failures import shown
from nixwarden.trust.hashes import Hash, HashAlgorithm
from nixwarden.trust.keys import SecretKey, Signature, fingerprint

# A narinfo with more than this is not one any cache writes; stop before parsing it.
MAX_NARINFO_SIZE = 4 << 20
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_URL = re.compile(r"[!-~]+")  # printable ASCII, no spaces
_COMPRESSION = re.compile(r"[a-z0-9]+")
_CA = re.compile(r"(fixed:(r:)?|text:)(.+)")
_REPEATABLE = {"Sig"}
_KNOWN = {
    "StorePath",
    "URL",
    "Compression",
    "FileHash",
    "FileSize",
    "NarHash",
    "NarSize",
    "References",
    "Deriver",
    "Sig",
    "CA",
}
_UNKNOWN_DERIVER = "unknown-deriver"


@dataclass(frozen=True)
class NarInfo:
    store_path: StorePath
    url: str
    compression: str
    file_hash: Hash | None
    file_size: int | None
    nar_hash: Hash
    nar_size: int
    references: tuple[StorePath, ...]
    deriver: StorePath | None
    signatures: tuple[Signature, ...]
    ca: str | None
    store_dir: str = STORE_DIR

    @classmethod
    def parse(cls, data: bytes, *, store_dir: str = STORE_DIR) -> NarInfo:
        fields = _fields(data)

        def one(key: str, required: bool = True) -> str | None:
            values = fields.get(key, [])
            if len(values) > 1:
                raise FormatError(f"narinfo: field {key} is repeated")
            if not values:
                if required:
                    raise FormatError(f"narinfo: required field {key} is missing")
                return None
            return values[0]

        try:
            store_path = StorePath.parse(_required(one("StorePath")), store_dir)
        except FormatError as error:
            raise FormatError(f"narinfo: StorePath: {error}") from None
        url = _required(one("URL"))
        if not _URL.fullmatch(url):
            raise FormatError("narinfo: URL is empty or contains spaces or control characters")
        compression = one("Compression", required=False)
        if compression is None:
            compression = "bzip2"  # what Nix assumes when the field is absent
        if not _COMPRESSION.fullmatch(compression):
            raise FormatError(f"narinfo: malformed Compression {shown(compression, 40)}")
        file_hash_text = one("FileHash", required=False)
        file_hash = None if file_hash_text is None else _hash("FileHash", file_hash_text)
        file_size_text = one("FileSize", required=False)
        file_size = None if file_size_text is None else _size("FileSize", file_size_text)
        nar_hash = _hash("NarHash", _required(one("NarHash")))
        nar_size = _size("NarSize", _required(one("NarSize")))
        if nar_size == 0:
            raise FormatError("narinfo: NarSize is 0")
        references_text = one("References", required=False) or ""
        references = tuple(_base_name("References", word) for word in _words(references_text))
        if len(set(references)) != len(references):
            raise FormatError("narinfo: References lists a path twice")
        deriver_text = one("Deriver", required=False)
        deriver = (
            None
            if deriver_text in (None, _UNKNOWN_DERIVER)
            else _base_name("Deriver", _required(deriver_text))
        )
        signatures = tuple(_signature(text) for text in fields.get("Sig", []))
        ca = one("CA", required=False)
        if ca is not None:
            _check_ca(ca)
        return cls(
            store_path=store_path,
            url=url,
            compression=compression,
            file_hash=file_hash,
            file_size=file_size,
            nar_hash=nar_hash,
            nar_size=nar_size,
            references=references,
            deriver=deriver,
            signatures=signatures,
            ca=ca,
            store_dir=store_dir,
        )

    def render(self) -> bytes:
        """The narinfo as Nix writes it: same fields, same order, hashes in nix32."""
        lines = [
            f"StorePath: {self.path}",
            f"URL: {self.url}",
            f"Compression: {self.compression}",
        ]
        if self.file_hash is not None:
            lines.append(f"FileHash: {self.file_hash.to_nix32()}")
        if self.file_size is not None:
            lines.append(f"FileSize: {self.file_size}")
        lines.append(f"NarHash: {self.nar_hash.to_nix32()}")
        lines.append(f"NarSize: {self.nar_size}")
        lines.append("References: " + " ".join(ref.base_name for ref in self.references))
        if self.deriver is not None:
            lines.append(f"Deriver: {self.deriver.base_name}")
        lines += [f"Sig: {signature.render()}" for signature in self.signatures]
        if self.ca is not None:
            lines.append(f"CA: {self.ca}")
        return ("\n".join(lines) + "\n").encode()

    @property
    def path(self) -> str:
        return self.store_path.absolute(self.store_dir)

    def reference_paths(self) -> list[str]:
        return [ref.absolute(self.store_dir) for ref in self.references]

    def fingerprint(self) -> bytes:
        return fingerprint(self.path, self.nar_hash, self.nar_size, self.reference_paths())

    def signed(self, key: SecretKey) -> NarInfo:
        """This narinfo with `key`'s signature added (replacing an earlier one by that name)."""
        others = tuple(s for s in self.signatures if s.key_name != key.name)
        return replace(self, signatures=(*others, key.sign(self.fingerprint())))


def _fields(data: bytes) -> dict[str, list[str]]:
    if len(data) > MAX_NARINFO_SIZE:
        raise FormatError(f"narinfo: larger than {MAX_NARINFO_SIZE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("narinfo: not UTF-8 text") from None
    if not text.endswith("\n"):
        raise FormatError("narinfo: does not end with a newline (truncated?)")
    fields: dict[str, list[str]] = {}
    for number, line in enumerate(text[:-1].split("\n"), start=1):
        key, separator, value = line.partition(": ")
        if not separator:
            # "References:" with nothing after it is how an empty list can look too.
            if line.endswith(":") and ":" not in line[:-1]:
                key, value = line[:-1], ""
            else:
                raise FormatError(f"narinfo: line {number} is not 'Key: value'")
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in line):
            raise FormatError(f"narinfo: line {number} contains a control character")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", key):
            raise FormatError(f"narinfo: line {number} has a malformed key")
        if key in _KNOWN:
            fields.setdefault(key, []).append(value)
    return fields


def _required(value: str | None) -> str:
    assert value is not None  # `one(..., required=True)` has already refused absence
    return value


def _words(text: str) -> list[str]:
    words = text.split(" ")
    if text and any(not word for word in words):
        raise FormatError("narinfo: References has empty entries (stray spaces)")
    return [word for word in words if word]


def _hash(key: str, text: str) -> Hash:
    try:
        value = Hash.parse(text)
    except FormatError as error:
        raise FormatError(f"narinfo: malformed {key}: {error}") from None
    if key == "NarHash" and value.algorithm is not HashAlgorithm.SHA256:
        raise FormatError(f"narinfo: {key} must be sha256")
    return value


def _size(key: str, text: str) -> int:
    if not _SIZE.fullmatch(text) or int(text) >= 1 << 64:
        raise FormatError(f"narinfo: malformed {key} {shown(text, 40)}")
    return int(text)


def _base_name(key: str, text: str) -> StorePath:
    try:
        return StorePath.from_base_name(text)
    except FormatError as error:
        raise FormatError(f"narinfo: {key}: {error}") from None


def _signature(text: str) -> Signature:
    try:
        return Signature.parse(text)
    except FormatError as error:
        raise FormatError(f"narinfo: malformed Sig: {error}") from None


def _check_ca(text: str) -> None:
    match = _CA.fullmatch(text)
    if match is None:
        raise FormatError("narinfo: malformed CA (expected fixed:… or text:…)")
    _hash("CA", match.group(3))


def make(
    store_path: StorePath,
    *,
    url: str,
    compression: str,
    file_hash: Hash | None,
    file_size: int | None,
    nar_hash: Hash,
    nar_size: int,
    references: Iterable[StorePath],
    deriver: StorePath | None = None,
    ca: str | None = None,
    store_dir: str = STORE_DIR,
) -> NarInfo:
    """A narinfo with references in Nix's (sorted) order and no signatures yet."""
    return NarInfo(
        store_path=store_path,
        url=url,
        compression=compression,
        file_hash=file_hash,
        file_size=file_size,
        nar_hash=nar_hash,
        nar_size=nar_size,
        references=tuple(sorted(set(references), key=lambda ref: ref.base_name)),
        deriver=deriver,
        signatures=(),
        ca=ca,
        store_dir=store_dir,
    )
