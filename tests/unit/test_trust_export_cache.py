"""Export streams and file:// caches, written and read back without Nix."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest

from nixwarden.errors import FormatError, Refused
from nixwarden.nix.storepath import StorePath
from nixwarden.trust import cache, export, nar
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
