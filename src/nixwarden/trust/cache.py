"""`file://` binary caches: the layout `nix copy --to file://DIR` writes and reads.

    DIR/nix-cache-info               StoreDir: /nix/store
    DIR/<hash part>.narinfo          one per path, signed
    DIR/nar/<FileHash nix32>.nar[.xz]

Writing: each NAR is streamed from the tree through the compressor into a temporary
file, hashed on the way (NarHash before, FileHash after compression), renamed to its
content address; the narinfo is written last, so a reader never finds a narinfo whose
NAR is missing. Reading checks the signature first, then FileHash/FileSize, then the
NAR's own hash and size while validating it, and only then hands anything over.
"""

from __future__ import annotations

import bz2
import contextlib
import enum
import lzma
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from nixwarden.errors import FormatError, Refused
from nixwarden.files import write_atomic
from nixwarden.nix import nix32
from nixwarden.nix.storepath import STORE_DIR, StorePath
from nixwarden.trust import nar, narinfo
from nixwarden.trust.hashes import Hash, HashAlgorithm
from nixwarden.trust.keys import SecretKey
from nixwarden.trust.restore import restore
from nixwarden.trust.verify import KeyPolicy, verify_paths

CACHE_INFO = "nix-cache-info"
MAX_CACHE_INFO = 64 << 10
_SAFE_URL = re.compile(r"nar/[0-9a-z]+\.nar(\.[a-z0-9]+)?")


class Compression(enum.Enum):
    NONE = "none"
    XZ = "xz"
    BZIP2 = "bzip2"  # read only: what Nix assumes when a narinfo names none

    @property
    def suffix(self) -> str:
        match self:
            case Compression.NONE:
                return ".nar"
            case Compression.XZ:
                return ".nar.xz"
            case Compression.BZIP2:
                return ".nar.bz2"

    @classmethod
    def parse(cls, name: str) -> Compression:
        try:
            return cls(name)
        except ValueError:
            raise FormatError(f"unsupported compression {name!r}") from None


@dataclass(frozen=True)
class CacheSource:
    """A path to put in a cache: what the store says about it, and where its tree is."""

    path: StorePath
    references: tuple[StorePath, ...]
    deriver: StorePath | None
    ca: str | None
    nar_hash: Hash | None  # when known (from the store), the dump must match it
    nar_size: int | None
    tree: str


def init(root: str, store_dir: str = STORE_DIR) -> None:
    """Create the cache directory (or accept an existing cache for the same store).

    A non-empty directory that is not a cache is refused: exporting into the wrong
    directory should not scatter files among someone else's.
    """
    info = os.path.join(root, CACHE_INFO)
    if os.path.isdir(root) and os.listdir(root) and not os.path.exists(info):
        raise Refused(f"{root}: not empty and not a binary cache (no {CACHE_INFO})")
    os.makedirs(os.path.join(root, "nar"), mode=0o755, exist_ok=True)
    if os.path.exists(info):
        existing = read_store_dir(root)
        if existing != store_dir:
            raise Refused(f"{root}: is a cache for {existing}, not {store_dir}")
        return
    write_atomic(info, f"StoreDir: {store_dir}\n".encode(), mode=0o644, replace=True)


def read_store_dir(root: str) -> str:
    with open(os.path.join(root, CACHE_INFO), "rb") as handle:
        data = handle.read(MAX_CACHE_INFO + 1)
    if len(data) > MAX_CACHE_INFO:
        raise FormatError(f"{CACHE_INFO}: too large")
    store_dir = STORE_DIR
    for line in data.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(":")
        if key == "StoreDir":
            store_dir = value.strip()
    return store_dir


def add(
    root: str,
    source: CacheSource,
    key: SecretKey,
    compression: Compression,
    *,
    store_dir: str = STORE_DIR,
) -> narinfo.NarInfo:
    """Write `source`'s NAR and signed narinfo into the cache at `root` (see `init`)."""
    if compression is Compression.BZIP2:
        raise FormatError("writing bzip2 caches is not supported; use none or xz")
    nar_dir = os.path.join(root, "nar")
    fd, temporary = tempfile.mkstemp(prefix=".nar.", dir=nar_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            nar_digest, file_digest = _write_nar(source.tree, handle, compression)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        expected = (source.nar_hash, source.nar_size)
        if source.nar_hash is not None and expected != (nar_digest.hash, nar_digest.size):
            raise Refused(
                f"{source.path.absolute(store_dir)}: contents do not match the store's "
                f"narHash {source.nar_hash.to_nix32()}; not exporting a corrupt path"
            )
        url = f"nar/{nix32.encode(file_digest.hash.digest)}{compression.suffix}"
        os.replace(temporary, os.path.join(root, url))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    info = narinfo.make(
        source.path,
        url=url,
        compression=compression.value,
        file_hash=file_digest.hash,
        file_size=file_digest.size,
        nar_hash=nar_digest.hash,
        nar_size=nar_digest.size,
        references=source.references,
        deriver=source.deriver,
        ca=source.ca,
        store_dir=store_dir,
    ).signed(key)
    write_atomic(
        os.path.join(root, f"{source.path.hash_part}.narinfo"),
        info.render(),
        mode=0o644,
        replace=True,
    )
    return info


def _write_nar(
    tree: str, handle: IO[bytes], compression: Compression
) -> tuple[nar.NarDigest, nar.NarDigest]:
    nar_counter = nar.CountingHasher()
    file_counter = nar.CountingHasher()

    def emit(data: bytes) -> None:
        if data:
            file_counter.update(data)
            handle.write(data)

    compressor = (
        lzma.LZMACompressor(format=lzma.FORMAT_XZ) if compression is Compression.XZ else None
    )

    def sink(data: bytes | bytearray | memoryview) -> None:
        nar_counter.update(data)
        emit(compressor.compress(data) if compressor is not None else bytes(data))

    nar.dump(tree, sink)
    if compressor is not None:
        emit(compressor.flush())
    return nar_counter.digest(), file_counter.digest()


# --- reading ---------------------------------------------------------------------------


class _Decompressing:
    """A readable stream of the NAR inside a cache file, hashing the file as it goes."""

    def __init__(
        self, handle: IO[bytes], compression: Compression, algorithm: HashAlgorithm
    ) -> None:
        self.handle = handle
        self.algorithm = algorithm
        self.file_hasher = algorithm.new()
        self.file_size = 0
        self.buffer = b""
        self.decompressor: lzma.LZMADecompressor | bz2.BZ2Decompressor | None
        match compression:
            case Compression.NONE:
                self.decompressor = None
            case Compression.XZ:
                self.decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            case Compression.BZIP2:
                self.decompressor = bz2.BZ2Decompressor()

    def _raw(self) -> bytes:
        data = self.handle.read(nar.CHUNK)
        self.file_hasher.update(data)
        self.file_size += len(data)
        return data

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            raise ValueError("internal: reads must be bounded")
        if self.decompressor is None:
            return self._raw_exact(size)
        while len(self.buffer) < size:
            if self.decompressor.eof:
                break
            if self.decompressor.needs_input:
                data = self._raw()
                if not data:
                    raise FormatError("compressed NAR is truncated")
            else:
                data = b""
            try:
                self.buffer += self.decompressor.decompress(data, max_length=nar.CHUNK)
            except (lzma.LZMAError, OSError, EOFError) as error:
                raise FormatError(f"compressed NAR is corrupt: {error}") from None
        chunk, self.buffer = self.buffer[:size], self.buffer[size:]
        return chunk

    def _raw_exact(self, size: int) -> bytes:
        data = self.handle.read(size)
        self.file_hasher.update(data)
        self.file_size += len(data)
        return data

    def finish(self) -> tuple[Hash, int]:
        """Hash whatever of the file is left (trailing garbage changes FileHash too)."""
        if self.decompressor is not None and not self.decompressor.eof:
            raise FormatError("compressed NAR has data after the archive")
        while self._raw():
            pass
        return Hash(self.algorithm, self.file_hasher.digest()), self.file_size


@dataclass(frozen=True)
class BinaryCache:
    root: str

    @property
    def store_dir(self) -> str:
        return read_store_dir(self.root)

    def read_narinfo(self, path: StorePath) -> narinfo.NarInfo:
        name = os.path.join(self.root, f"{path.hash_part}.narinfo")
        try:
            with open(name, "rb") as handle:
                data = handle.read(narinfo.MAX_NARINFO_SIZE + 1)
        except FileNotFoundError:
            raise Refused(f"{path.base_name}: not in the cache {self.root}") from None
        info = narinfo.NarInfo.parse(data, store_dir=self.store_dir)
        if info.store_path != path:
            raise Refused(f"{name}: describes {info.store_path.base_name}, not {path.base_name}")
        return info

    def verified_narinfo(self, path: StorePath, policy: KeyPolicy) -> narinfo.NarInfo:
        """The narinfo of `path`, once `policy` accepts its signatures (else raises)."""
        info = self.read_narinfo(path)
        verify_paths([(info.path, info.fingerprint(), info.signatures)], policy)
        return info

    def check(self, path: StorePath, policy: KeyPolicy) -> narinfo.NarInfo:
        """Verify signature, file and NAR of `path` without unpacking it."""
        info = self.verified_narinfo(path, policy)
        with self._open(info) as stream:
            digest = nar.validate(stream)
            self._check(info, stream, digest)
        return info

    def fetch(self, path: StorePath, policy: KeyPolicy, target: str) -> narinfo.NarInfo:
        """Verify `path` and restore it as `target`; nothing is left at `target` on failure."""
        info = self.verified_narinfo(path, policy)
        with self._open(info) as stream:
            restore(stream, target, verify=lambda digest: self._check(info, stream, digest))
        return info

    @contextlib.contextmanager
    def _open(self, info: narinfo.NarInfo) -> Iterator[_Decompressing]:
        if not _SAFE_URL.fullmatch(info.url):
            raise FormatError(f"{info.path}: URL {info.url[:80]!r} is not a nar/ file name")
        compression = Compression.parse(info.compression)
        with open(os.path.join(self.root, info.url), "rb") as handle:
            algorithm = HashAlgorithm.SHA256 if info.file_hash is None else info.file_hash.algorithm
            yield _Decompressing(handle, compression, algorithm)

    @staticmethod
    def _check(info: narinfo.NarInfo, stream: _Decompressing, digest: nar.NarDigest) -> None:
        if (digest.hash, digest.size) != (info.nar_hash, info.nar_size):
            raise Refused(f"{info.path}: NAR does not match the signed NarHash/NarSize")
        file_hash, file_size = stream.finish()
        if info.file_size is not None and file_size != info.file_size:
            raise Refused(f"{info.path}: cache file does not match its FileSize")
        if info.file_hash is not None and file_hash != info.file_hash:
            raise Refused(f"{info.path}: cache file does not match its FileHash")
