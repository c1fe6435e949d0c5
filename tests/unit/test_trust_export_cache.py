"""Export streams and file:// caches, written and read back without Nix."""

from __future__ import annotations

import io
import lzma
import os
import shutil
import signal
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from nixwarden.errors import FormatError, Refused
from nixwarden.nix.storepath import StorePath
from nixwarden.trust import cache, export, nar, narinfo
from nixwarden.trust.keys import SecretKey, TrustedKeys
from nixwarden.trust.verify import PathFailure, VerificationFailed

A = StorePath.from_base_name("0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-a")
B = StorePath.from_base_name("1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b-b")
DRV = StorePath.from_base_name("2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c-b.drv")


@pytest.fixture
def trees(tmp_path: Path) -> dict[StorePath, Path]:
    a = tmp_path / "a"
    a.mkdir()
    (a / "lib.so").write_bytes(os.urandom(70_000))
    b = tmp_path / "b"
    b.write_bytes(b"#!/bin/sh\necho " + A.absolute().encode() + b"\n")
    b.chmod(0o755)
    return {A: a, B: b}


def _items(trees: dict[StorePath, Path]) -> list[export.ExportItem]:
    return [
        export.ExportItem(B, (A, B), DRV, str(trees[B])),
        export.ExportItem(A, (), None, str(trees[A])),
    ]


def test_export_stream_round_trip(trees: dict[StorePath, Path]) -> None:
    ordered = export.topological(_items(trees))
    assert [item.path for item in ordered] == [A, B]
    out = io.BytesIO()
    export.write(ordered, out.write)
    got = []
    for entry in export.read(io.BytesIO(out.getvalue())):
        got.append((entry.path, entry.references, entry.deriver))
        assert entry.nar.read() == nar.dump_bytes(trees[entry.path])
        assert entry.nar_digest == nar.hash_path(trees[entry.path])
    assert got == [(A, (), None), (B, (A, B), DRV)]


def test_export_stream_refusals(trees: dict[StorePath, Path]) -> None:
    out = io.BytesIO()
    export.write(export.topological(_items(trees)), out.write)
    data = out.getvalue()
    for broken, reason in (
        (data[:-8], "truncated"),
        (data[:16] + b"N" + data[17:], "wrong magic"),
        (struct.pack("<Q", 7), "expected 1 or 0"),
        (data.replace(b"NIXE", b"NIXF", 1), "NIXE"),
        (
            data.replace(A.absolute().encode(), b"/tmp/" + A.base_name.encode(), 1),
            "not in the store",
        ),
    ):
        with pytest.raises(FormatError, match=reason):
            for _ in export.read(io.BytesIO(broken)):
                pass


def test_reference_cycle_is_refused() -> None:
    with pytest.raises(FormatError, match="cycle"):
        export.topological(
            [export.ExportItem(A, (B,), None, "x"), export.ExportItem(B, (A,), None, "y")]
        )


@pytest.mark.parametrize("compression", [cache.Compression.NONE, cache.Compression.XZ])
def test_cache_write_then_verified_read(
    trees: dict[StorePath, Path], tmp_path: Path, compression: cache.Compression
) -> None:
    key = SecretKey.generate("cache-1")
    root = str(tmp_path / "cache")
    cache.init(root)
    for path, tree in trees.items():
        digest = nar.hash_path(tree)
        source = cache.CacheSource(
            path, (A,) if path == B else (), None, None, digest.hash, digest.size, str(tree)
        )
        info = cache.add(root, source, key, compression)
        assert info.url.endswith(compression.suffix)
    store = cache.BinaryCache(root)
    trusted = TrustedKeys.of([key.public()])
    assert store.check(B, trusted).references == (A,)
    store.fetch(A, trusted, str(tmp_path / "restored"))
    assert nar.dump_bytes(tmp_path / "restored") == nar.dump_bytes(trees[A])

    stranger = TrustedKeys.of([SecretKey.generate("other-1").public()])
    with pytest.raises(VerificationFailed) as failed:
        store.check(A, stranger)
    assert failed.value.failures == (
        PathFailure(A.absolute(), "signed only by untrusted keys cache-1"),
    )

    narinfo_file = Path(root) / f"{B.hash_part}.narinfo"
    good = narinfo_file.read_bytes()
    narinfo_file.write_bytes(
        good.replace(b"References: ", b"References: " + B.base_name.encode() + b" ")
    )
    with pytest.raises(VerificationFailed, match=f"{B.absolute()}: signature by cache-1 does not"):
        store.check(B, trusted)
    narinfo_file.write_bytes(good)

    nar_file = Path(root) / store.read_narinfo(A).url
    blob = bytearray(nar_file.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    nar_file.write_bytes(bytes(blob))
    with pytest.raises((Refused, FormatError)):
        store.fetch(A, trusted, str(tmp_path / "again"))
    assert not (tmp_path / "again").exists()


def test_cache_refuses_corrupt_store_contents(trees: dict[StorePath, Path], tmp_path: Path) -> None:
    root = str(tmp_path / "cache")
    cache.init(root)
    wrong = nar.hash_path(trees[B])
    source = cache.CacheSource(A, (), None, None, wrong.hash, wrong.size, str(trees[A]))
    with pytest.raises(Refused, match="do not match the store"):
        cache.add(root, source, SecretKey.generate("k-1"), cache.Compression.NONE)
    assert os.listdir(Path(root) / "nar") == []


def test_cache_refuses_urls_outside_nar(trees: dict[StorePath, Path], tmp_path: Path) -> None:
    key = SecretKey.generate("k-1")
    root = str(tmp_path / "cache")
    cache.init(root)
    digest = nar.hash_path(trees[A])
    source = cache.CacheSource(A, (), None, None, digest.hash, digest.size, str(trees[A]))
    cache.add(root, source, key, cache.Compression.NONE)
    narinfo_file = Path(root) / f"{A.hash_part}.narinfo"
    text = narinfo_file.read_text()
    url = next(line for line in text.splitlines() if line.startswith("URL: "))
    narinfo_file.write_text(text.replace(url, "URL: ../../etc/passwd"))
    with pytest.raises(FormatError, match="not a nar/ file name"):
        cache.BinaryCache(root).check(A, TrustedKeys.of([key.public()]))


def test_cache_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(Refused, match="not a binary cache"):
        cache.init(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    cache.init(str(tmp_path / "fresh"))
    cache.init(str(tmp_path / "fresh"))  # an existing cache is fine
    assert (tmp_path / "fresh" / "nix-cache-info").read_text() == "StoreDir: /nix/store\n"


# --- a cache laid out by someone hostile ----------------------------------------------


def _planted_cache(trees: dict[StorePath, Path], tmp_path: Path) -> tuple[Path, SecretKey]:
    key = SecretKey.generate("cache-1")
    root = tmp_path / "cache"
    cache.init(str(root))
    digest = nar.hash_path(trees[A])
    source = cache.CacheSource(A, (), None, None, digest.hash, digest.size, str(trees[A]))
    cache.add(str(root), source, key, cache.Compression.XZ)
    return root, key


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    make(path)


def _move_away(directory: Path, elsewhere: Path) -> None:
    """`directory` moved to `elsewhere`, and a symlink to it left in its place."""
    shutil.move(directory, elsewhere)
    directory.symlink_to(elsewhere)


def _narinfo(root: Path) -> Path:
    return root / f"{A.hash_part}.narinfo"


def _nar_file(root: Path) -> Path:
    (path,) = (root / "nar").iterdir()
    return path


def _bomb_without_file_size(root: Path, key: SecretKey, tmp_path: Path) -> None:
    """A narinfo signed without FileSize/FileHash, and its NAR swapped for an xz stream
    that expands far beyond the signed NarSize."""
    info = cache.BinaryCache(str(root)).read_narinfo(A)
    unsigned = narinfo.make(
        A,
        url=info.url,
        compression="xz",
        file_hash=None,
        file_size=None,
        nar_hash=info.nar_hash,
        nar_size=info.nar_size,
        references=(),
    )
    _narinfo(root).write_bytes(unsigned.signed(key).render())
    huge = (
        struct.pack("<Q", 13)
        + b"nix-archive-1\0\0\0"
        + b"".join(
            struct.pack("<Q", len(t)) + t + b"\0" * (-len(t) % 8)
            for t in (b"(", b"type", b"regular", b"contents")
        )
        + struct.pack("<Q", 1 << 40)
    )
    compressor = lzma.LZMACompressor(format=lzma.FORMAT_XZ)
    blob = compressor.compress(huge) + b"".join(
        compressor.compress(bytes(1 << 20)) for _ in range(64)
    )
    _nar_file(root).write_bytes(blob + compressor.flush())


# name -> (how the cache is tampered with, the error, what it says)
CACHE_ATTACKS: dict[str, tuple[Callable[[Path, SecretKey, Path], None], type[Exception], str]] = {
    "cache_narinfo_is_fifo": (
        lambda root, key, tmp: _replace(_narinfo(root), os.mkfifo),
        FormatError,
        "is not a regular file",
    ),
    "cache_narinfo_is_directory": (
        lambda root, key, tmp: _replace(_narinfo(root), os.mkdir),
        FormatError,
        "is not a regular file",
    ),
    "cache_narinfo_is_symlink": (
        lambda root, key, tmp: _replace(_narinfo(root), lambda p: p.symlink_to("/etc/passwd")),
        FormatError,
        "a symlink or not a directory",
    ),
    "cache_info_is_fifo": (
        lambda root, key, tmp: _replace(root / "nix-cache-info", os.mkfifo),
        FormatError,
        "cache: nix-cache-info is not a regular file",
    ),
    "cache_narinfo_huge": (
        lambda root, key, tmp: os.truncate(_narinfo(root), 1 << 40),
        FormatError,
        "larger than",
    ),
    "cache_nar_is_fifo": (
        lambda root, key, tmp: _replace(_nar_file(root), os.mkfifo),
        FormatError,
        "is not a regular file",
    ),
    "cache_nar_is_symlink": (
        lambda root, key, tmp: _replace(_nar_file(root), lambda p: p.symlink_to("/dev/zero")),
        FormatError,
        "a symlink or not a directory",
    ),
    "cache_nar_dir_is_symlink": (
        lambda root, key, tmp: _move_away(root / "nar", tmp / "elsewhere"),
        FormatError,
        "a symlink or not a directory",
    ),
    "cache_nar_missing": (
        lambda root, key, tmp: _nar_file(root).unlink(),
        Refused,
        "is missing from the cache",
    ),
    "cache_nar_longer_than_file_size": (
        lambda root, key, tmp: os.truncate(_nar_file(root), 1 << 40),
        Refused,
        "does not match its FileSize",
    ),
    "cache_nar_decompression_bomb": (
        _bomb_without_file_size,
        FormatError,
        "larger than its signed NarSize",
    ),
}


@pytest.mark.parametrize("name", sorted(CACHE_ATTACKS))
def test_a_tampered_cache_is_refused_in_one_line_in_bounded_time(
    trees: dict[StorePath, Path], tmp_path: Path, name: str
) -> None:
    root, key = _planted_cache(trees, tmp_path)
    tamper, error, reason = CACHE_ATTACKS[name]
    tamper(root, key, tmp_path)
    store = cache.BinaryCache(str(root))
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail(f"{name}: reader hung"))
    signal.alarm(20)
    try:
        with pytest.raises(error) as refused:
            store.fetch(A, TrustedKeys.of([key.public()]), str(tmp_path / "out"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert reason in str(refused.value)
    assert str(refused.value).isprintable()
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
