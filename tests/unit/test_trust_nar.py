"""NAR: round trips on generated trees, robustness on mutated bytes, safe restore."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixwarden.errors import FormatError, InvalidInput
from nixwarden.trust import nar
from nixwarden.trust.restore import restore

# A tree model: bytes = file, (bytes, True) = executable file, str = symlink target,
# dict = directory.
Tree = bytes | tuple[bytes, bool] | str | dict[bytes, "Tree"]

names = st.binary(min_size=1, max_size=12).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")
)
targets = st.text(
    st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=30
)
leaves = st.one_of(
    st.binary(max_size=70),
    st.tuples(st.binary(max_size=70), st.just(True)),
    targets,
)
trees: st.SearchStrategy[Tree] = st.recursive(
    leaves, lambda children: st.dictionaries(names, children, max_size=5), max_leaves=25
)


def events(tree: Tree, path: nar.Path = ()) -> list[nar.Event]:
    match tree:
        case bytes() as data:
            return [nar.FileStart(path, False, len(data)), nar.FileChunk(data), nar.FileEnd(path)]
        case (bytes() as data, True):
            return [nar.FileStart(path, True, len(data)), nar.FileChunk(data), nar.FileEnd(path)]
        case str() as target:
            return [nar.Symlink(path, target.encode())]
        case dict() as entries:
            out: list[nar.Event] = [nar.DirectoryStart(path)]
            for name in sorted(entries):
                out += events(entries[name], (*path, name))
            return [*out, nar.DirectoryEnd(path)]
    raise AssertionError(tree)


def serialize(stream: list[nar.Event]) -> bytes:
    parts: list[bytes] = []
    nar.write_events(stream, lambda data: parts.append(bytes(data)))
    return b"".join(parts)


def reserialize(data: bytes) -> bytes:
    return serialize(list(nar.parse(io.BytesIO(data))))


def materialize(tree: Tree, path: Path) -> None:
    match tree:
        case bytes() as data:
            path.write_bytes(data)
        case (bytes() as data, True):
            path.write_bytes(data)
            path.chmod(0o755)
        case str() as target:
            path.symlink_to(target)
        case dict() as entries:
            path.mkdir()
            for name, child in entries.items():
                materialize(child, Path(os.fsdecode(os.fsencode(path) + b"/" + name)))


@given(trees)
@settings(max_examples=300, deadline=None)
def test_serialize_parse_serialize_is_identity(tree: Tree) -> None:
    data = serialize(events(tree))
    assert reserialize(data) == data
    assert [e for e in nar.parse(io.BytesIO(data)) if not isinstance(e, nar.FileChunk)] == [
        e for e in events(tree) if not isinstance(e, nar.FileChunk)
    ]


def whole_files(stream: list[nar.Event]) -> list[nar.Event]:
    """`stream` with each `File` event spelled out as FileStart, FileChunk, FileEnd."""
    out: list[nar.Event] = []
    for event in stream:
        match event:
            case nar.File(path, executable, data):
                out += [nar.FileStart(path, executable, len(data))]
                out += [nar.FileChunk(data)] if data else []
                out += [nar.FileEnd(path)]
            case _:
                out.append(event)
    return out


@given(trees)
@settings(max_examples=200, deadline=None)
def test_whole_file_events_say_what_the_three_events_say(tree: Tree) -> None:
    data = serialize(events(tree))
    plain = [e for e in nar.parse(io.BytesIO(data)) if not isinstance(e, nar.FileChunk)]
    combined = list(nar.parse(io.BytesIO(data), files=True))
    assert [e for e in whole_files(combined) if not isinstance(e, nar.FileChunk)] == plain
    assert serialize(whole_files(combined)) == data
    if any(isinstance(e, nar.FileStart) for e in plain) and isinstance(tree, dict):
        assert any(isinstance(e, nar.File) for e in combined)  # small files come whole


@given(tree=trees)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_dump_restore_dump_on_real_trees(
    tree: Tree, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("tree")
    materialize(tree, base / "in")
    data = nar.dump_bytes(base / "in")
    assert data == serialize(events(tree))
    digest = restore(io.BytesIO(data), base / "out")
    assert nar.dump_bytes(base / "out") == data
    assert digest == nar.hash_path(base / "in")
    assert digest.size == len(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(serialize(events(draw(trees))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        match kind:
            case "flip":
                if data:
                    data[at] ^= 1 << draw(st.integers(0, 7))
            case "truncate":
                del data[at:]
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            case "delete":
                del data[at : at + draw(st.integers(1, 16))]
            case "set":
                data[at : at + 8] = draw(st.binary(min_size=8, max_size=8))
    return bytes(data)


@given(mutated())
@settings(max_examples=600, deadline=None)
def test_parser_raises_only_its_format_error_on_mutations(data: bytes) -> None:
    try:
        again = reserialize(data)
    except FormatError as error:
        assert "\n" not in str(error)
    else:
        assert again == data  # anything accepted is canonical


def test_dump_of_special_files_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FormatError, match="not a regular file"):
        nar.dump_bytes(tmp_path)


def test_executable_bit_and_modes_survive(tmp_path: Path) -> None:
    tree = tmp_path / "in"
    tree.mkdir()
    (tree / "run").write_bytes(b"#!/bin/sh\n")
    (tree / "run").chmod(0o500)
    (tree / "data").write_bytes(b"x" * (3 << 20))  # larger than one chunk
    data = nar.dump_bytes(tree)
    restore(io.BytesIO(data), tmp_path / "out")
    assert os.stat(tmp_path / "out" / "run").st_mode & stat.S_IXUSR
    assert not os.stat(tmp_path / "out" / "data").st_mode & stat.S_IXUSR
    assert nar.dump_bytes(tmp_path / "out") == data


def test_restore_never_follows_or_writes_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = {b"link": str(outside), b"z": b"inside\n"}
    restore(io.BytesIO(serialize(events(tree))), tmp_path / "out")
    assert os.readlink(tmp_path / "out" / "link") == str(outside)
    assert list(outside.iterdir()) == []
    # An archive cannot name a path under its own symlink: names have no '/', and a
    # second entry of the same name is refused as a duplicate.
    trick = serialize(events({b"link": str(outside)}))
    with pytest.raises(FormatError):
        restore(io.BytesIO(trick + b"\0" * 8), tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("kind", ["directory", "empty-directory", "file", "symlink"])
def test_restore_refuses_an_existing_target(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "out"
    match kind:
        case "directory":
            target.mkdir()
            (target / "keep").write_text("mine")
        case "empty-directory":
            target.mkdir()
        case "file":
            target.write_text("mine")
        case "symlink":
            target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidInput, match="already exists"):
        restore(io.BytesIO(serialize(events(b"x"))), target)
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_root_file_and_symlink_archives(tmp_path: Path) -> None:
    for name, tree in (("file", (b"#!x", True)), ("link", "../somewhere")):
        data = serialize(events(tree))
        restore(io.BytesIO(data), tmp_path / name)
        assert nar.dump_bytes(tmp_path / name) == data


def test_listing_escapes_hostile_names() -> None:
    data = serialize(events({b"a\nb": b"", b"c\\": "t\x1b[0m"}))
    assert list(nar.list_lines(io.BytesIO(data))) == [
        "dr-xr-xr-x                    0 .",
        "-r--r--r--                    0 ./a\\x0ab",
        "lrwxrwxrwx                    0 ./c\\\\ -> t\\x1b[0m",
    ]


class Trickle:
    """A stream that returns at most `step` bytes per read, as a slow pipe does."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.step = step
        self.at = 0

    def read(self, size: int = -1, /) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        chunk = self.data[self.at : self.at + size]
        self.at += len(chunk)
        return chunk


def _outcome(stream: nar.Readable, *, whole: bool = True) -> tuple[str, bytes | str]:
    try:
        return "ok", serialize(list(nar.parse(stream, whole=whole)))
    except FormatError as error:
        return "refused", str(error)


@given(mutated(), st.integers(1, 9))
@settings(max_examples=400, deadline=None)
def test_parsing_does_not_depend_on_how_the_stream_is_cut(data: bytes, step: int) -> None:
    # Whole archives are parsed from buffered blocks with runs of tokens matched at
    # once; a trickling stream splits every run, so the token-by-token path runs.
    expected = _outcome(io.BytesIO(data))
    assert _outcome(Trickle(data, step)) == expected
    # Inside a larger stream the reader never looks ahead; it must agree except that
    # bytes after the archive are none of its business.
    embedded = _outcome(io.BytesIO(data), whole=False)
    if expected[0] == "refused" and "trailing bytes" in str(expected[1]):
        assert embedded[0] == "ok"
    else:
        assert embedded == expected


@given(trees)
@settings(max_examples=100, deadline=None)
def test_validate_hashes_exactly_the_archive(tree: Tree) -> None:
    data = serialize(events(tree))
    digest = nar.validate(io.BytesIO(data))
    assert digest.size == len(data)
    assert digest.hash.digest == hashlib.sha256(data).digest()
    assert nar.validate(Trickle(data, 3)) == digest


class _Listing:
    """What os.scandir returns, listed before `then` runs: the race window of `dump`."""

    def __init__(self, entries: list[os.DirEntry[str]]) -> None:
        self.entries = entries

    def __enter__(self) -> list[os.DirEntry[str]]:
        return self.entries

    def __exit__(self, *_: object) -> None:
        pass


@pytest.mark.parametrize("swap", ["file_to_fifo", "file_to_symlink", "directory_to_symlink"])
def test_a_tree_changed_after_listing_is_never_followed_nor_waited_on(
    tmp_path: Path, swap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The entry is swapped between `dump` listing its directory and opening it, as
    # someone racing a root-run `nar hash` of a tree they can write would.
    tree = tmp_path / "tree"
    tree.mkdir()
    if swap == "directory_to_symlink":
        (tree / "e").mkdir()
    else:
        (tree / "e").write_bytes(b"x")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_bytes(b"do not archive")
    real_scandir = os.scandir

    def racing_scandir(fd: int) -> _Listing:
        with real_scandir(fd) as listing:
            entries = list(listing)
        if swap == "directory_to_symlink":
            (tree / "e").rmdir()
        else:
            (tree / "e").unlink()
        if swap == "file_to_fifo":
            os.mkfifo(tree / "e")
        else:
            (tree / "e").symlink_to(secret if swap == "directory_to_symlink" else secret / "key")
        return _Listing(entries)

    monkeypatch.setattr(os, "scandir", racing_scandir)
    parts: list[bytes] = []
    with pytest.raises((nar.TreeError, OSError)) as refused:
        nar.dump(tree, lambda data: parts.append(bytes(data)), threaded=False)
    assert b"do not archive" not in b"".join(parts)
    if isinstance(refused.value, nar.TreeError):
        assert str(refused.value) == f"{tree}/e: changed while being archived"


def test_dump_errors_name_the_path_from_the_root_escaped(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub\u202e").mkdir(parents=True)
    os.mkfifo(tree / "sub\u202e" / "fifo")
    with pytest.raises(nar.TreeError) as refused:
        nar.dump_bytes(tree)
    assert str(refused.value) == (
        f"{tree}/sub\\u202e/fifo: not a regular file, symlink or directory"
    )
