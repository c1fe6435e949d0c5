"""Restoring with the kernel copying file contents: from a regular file, a pipe, a socket.

`nar restore` reads standard input unbuffered; from a regular file, the contents of
a large file go from its descriptor to the new file's without passing through the
process (`FileExtent`), from anything else they are read and written. Each kind of
stream must give the same tree, and the same one-line failure, with nothing left
behind, when the archive stops inside a file.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nixwarden.trust.narcli  # noqa: F401 - imported before a child runs out of descriptors
from nixwarden.errors import FormatError
from nixwarden.trust import nar, restore
from tests.corpus.make_corpus import directory, entry, regular, symlink
from tests.corpus.make_corpus import nar as archive
from tests.unit.test_trust_nar import Tree, serialize, trees
from tests.unit.test_trust_nar import events as tree_events
from tests.unit.test_trust_restore import (
    _as_nobody,
    _run_in_child,
    nobody_dir,  # noqa: F401 - a fixture
    restore_with_few_descriptors,
)

# Larger than the parser's block, so most of it is never in the parser's buffer;
# not a multiple of 8, so padding follows it.
LARGE = bytes(range(256)) * (nar.BLOCK // 256 * 3) + b"tail"
MEDIUM = os.urandom(nar.DIRECT_MIN + 13)
TREE = archive(
    directory(
        entry(b"a-small", regular(b"hello\n")),
        entry(b"b-large", regular(LARGE, executable=True)),
        entry(b"c-medium", regular(MEDIUM)),
        entry(b"d-link", symlink(b"b-large")),
        entry(b"e-dir", directory(entry(b"large", regular(LARGE)))),
    )
)


@contextmanager
def from_file(data: bytes) -> Iterator[io.FileIO]:
    """`data` as an unbuffered regular file, as `nar restore < file` reads it."""
    with tempfile.TemporaryFile() as source:
        source.write(data)
        source.flush()
        os.lseek(source.fileno(), 0, os.SEEK_SET)
        with io.FileIO(source.fileno(), "rb", closefd=False) as stream:
            yield stream


@contextmanager
def _fed(
    data: bytes, read_end: int, write: Callable[[bytes], object], close: Callable[[], object]
) -> Iterator[io.FileIO]:
    """`read_end` as an unbuffered stream, while another thread writes `data` to it."""
    feeder = threading.Thread(target=lambda: (write(data), close()), daemon=True)
    feeder.start()
    try:
        with io.FileIO(read_end, "rb", closefd=True) as stream:
            yield stream
    finally:
        feeder.join()


@contextmanager
def from_pipe(data: bytes) -> Iterator[io.FileIO]:
    """`data` through a pipe, written by another thread, as `cat file | nar restore`."""
    read_end, write_end = os.pipe()

    def write(chunk: bytes) -> None:
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(write_end, view) :]
        except BrokenPipeError:  # the reader stopped at a flaw
            pass

    with _fed(data, read_end, write, lambda: os.close(write_end)) as stream:
        yield stream


@contextmanager
def from_socket(data: bytes) -> Iterator[io.FileIO]:
    """`data` through a stream socket: no kernel copy from it, read and written."""
    ours, theirs = socket.socketpair()
    with theirs:

        def write(chunk: bytes) -> None:
            with contextlib.suppress(OSError):  # the reader may stop at a flaw
                theirs.sendall(chunk)

        def close() -> None:
            theirs.shutdown(socket.SHUT_WR)

        with _fed(data, ours.detach(), write, close) as stream:
            yield stream


STREAMS = {"regular_file": from_file, "pipe": from_pipe, "socket": from_socket}


@pytest.mark.parametrize("kind", STREAMS)
def test_large_files_restore_byte_identical_from_any_stream(tmp_path: Path, kind: str) -> None:
    with STREAMS[kind](TREE) as stream:
        restore.unpack(stream, tmp_path / "out")
    assert nar.dump_bytes(tmp_path / "out") == TREE
    assert (tmp_path / "out" / "e-dir" / "large").read_bytes() == LARGE
    assert os.access(tmp_path / "out" / "b-large", os.X_OK)
    assert os.listdir(tmp_path) == ["out"]


def test_an_archive_that_is_one_large_file_restores_from_a_regular_file(tmp_path: Path) -> None:
    data = archive(regular(LARGE, executable=True))
    with from_file(data) as stream:
        restore.unpack(stream, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == LARGE
    assert os.access(tmp_path / "out", os.X_OK)
    assert os.listdir(tmp_path) == ["out"]


def _kinds_of_events(stream: io.FileIO) -> set[str]:
    seen = set()
    for event in nar.parse(stream, files=True, direct=True):
        seen.add(type(event).__name__)
        if isinstance(event, nar.FileExtent):
            _copied(event.copy_to)
    return seen


@pytest.mark.parametrize(
    ("kind", "large_files_come_as"),
    [("regular_file", "FileExtent"), ("pipe", "FileChunk"), ("socket", "FileChunk")],
)
def test_only_a_regular_file_is_copied_by_the_kernel(kind: str, large_files_come_as: str) -> None:
    with STREAMS[kind](TREE) as stream:
        seen = _kinds_of_events(stream)
    assert large_files_come_as in seen
    assert ("FileExtent" in seen) == (kind == "regular_file")


def test_a_buffered_stream_is_never_copied_behind_its_back() -> None:
    # A BufferedReader's descriptor is ahead of what it handed out: reading it directly
    # would skip bytes, so such a stream gets plain chunks.
    with tempfile.TemporaryFile() as source:
        source.write(TREE)
        source.seek(0)
        kinds = {type(event).__name__ for event in nar.parse(source, files=True, direct=True)}
    assert "FileExtent" not in kinds


def _cut_inside_large_file() -> bytes:
    cut = TREE.index(LARGE) + len(LARGE) // 2
    return TREE[:cut]


@pytest.mark.parametrize("kind", STREAMS)
def test_an_archive_cut_inside_a_large_file_fails_and_leaves_nothing(
    tmp_path: Path, kind: str
) -> None:
    cut = _cut_inside_large_file()
    with STREAMS[kind](cut) as stream, pytest.raises(FormatError) as failure:
        restore.unpack(stream, tmp_path / "out")
    assert str(failure.value) == f"NAR: archive is truncated (at byte {len(cut)})"
    assert os.listdir(tmp_path) == []


def test_the_command_line_restores_and_refuses_a_cut_archive(tmp_path: Path) -> None:
    # The real `nar restore`, its standard input a regular file (see _run_in_child).
    status, err = _run_in_child(["nar", "restore", str(tmp_path / "out")], TREE, lambda: None)
    assert (status, err) == (0, "")
    assert nar.dump_bytes(tmp_path / "out") == TREE
    cut = _cut_inside_large_file()
    status, err = _run_in_child(["nar", "restore", str(tmp_path / "cut")], cut, lambda: None)
    assert status == 2
    assert err == f"nixwarden: error: NAR: archive is truncated (at byte {len(cut)})\n"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_an_absurd_file_size_in_a_regular_file_is_a_truncated_archive(tmp_path: Path) -> None:
    # The size is checked against the file before anything seeks past it.
    header = TREE[: TREE.index(LARGE) - 8]
    data = header + (1 << 61).to_bytes(8, "little") + LARGE[:100]
    with from_file(data) as stream, pytest.raises(FormatError) as failure:
        restore.unpack(stream, tmp_path / "out")
    assert str(failure.value) == f"NAR: archive is truncated (at byte {len(data)})"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("free", range(8))
def test_running_out_of_descriptors_while_the_kernel_copies_leaves_nothing(
    tmp_path: Path, free: int
) -> None:
    # The writer thread creates the large files: its EMFILE ends the restore the same way.
    restore_with_few_descriptors(tmp_path, TREE, free)


def _first_extent(stream: io.FileIO) -> nar.FileExtent:
    for event in nar.parse(stream, files=True, direct=True):
        if isinstance(event, nar.FileExtent):
            return event
    raise AssertionError("no FileExtent")


def test_a_file_that_shrinks_after_parsing_fails_the_copy() -> None:
    with from_file(TREE) as stream:
        extent = _first_extent(stream)
        os.ftruncate(stream.fileno(), extent.position + 100)
        with tempfile.TemporaryFile() as out, pytest.raises(FormatError) as failure:
            extent.copy_to(out.fileno())
    assert str(failure.value) == f"NAR: archive is truncated (at byte {extent.offset + 100})"


def test_where_the_kernel_will_not_copy_the_bytes_are_read_and_written(tmp_path: Path) -> None:
    # Neither copy_file_range (EBADF) nor sendfile (EINVAL) writes to a file opened
    # O_APPEND: the copy goes on by reading and writing.
    target = tmp_path / "appended"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with from_file(archive(regular(LARGE))) as stream:
            extent = _first_extent(stream)
            extent.copy_to(fd)
    finally:
        os.close(fd)
    assert target.read_bytes() == LARGE


def test_an_archive_that_does_not_start_at_the_files_start(tmp_path: Path) -> None:
    # `(read -N 5; nixwarden nar restore DIR) < file`: positions are the file's, offsets
    # the archive's.
    with from_file(b"junk!" + TREE) as stream:
        os.lseek(stream.fileno(), 5, os.SEEK_SET)
        restore.unpack(stream, tmp_path / "out")
    assert nar.dump_bytes(tmp_path / "out") == TREE


def _copied(copy: Callable[[int], None]) -> bytes:
    with tempfile.TemporaryFile() as out:
        copy(out.fileno())
        out.seek(0)
        return out.read()


def _contents_by_path(stream: io.FileIO) -> list[tuple[str, nar.Path, bool, bytes]]:
    """The archive's nodes, each file's contents whole, however the parser gave them."""
    nodes: list[tuple[str, nar.Path, bool, bytes]] = []
    parts: list[bytes] = []
    for event in nar.parse(stream, files=True, direct=True):
        match event:
            case nar.File(path, executable, data):
                nodes.append(("file", path, executable, bytes(data)))
            case nar.FileExtent(path, executable):
                nodes.append(("file", path, executable, _copied(event.copy_to)))
            case nar.FileStart(path, executable):
                nodes.append(("file", path, executable, b""))
                parts = []
            case nar.FileChunk(data):
                parts.append(bytes(data))
            case nar.FileEnd():
                nodes[-1] = (*nodes[-1][:3], b"".join(parts))
            case nar.Symlink(path, target):
                nodes.append(("symlink", path, False, target))
            case nar.DirectoryStart(path):
                nodes.append(("directory", path, False, b""))
    return nodes


def _expected(tree: Tree) -> list[tuple[str, nar.Path, bool, bytes]]:
    nodes: list[tuple[str, nar.Path, bool, bytes]] = []
    for event in tree_events(tree):
        match event:
            case nar.FileStart(path, executable):
                nodes.append(("file", path, executable, b""))
            case nar.FileChunk(data):
                nodes[-1] = (*nodes[-1][:3], data)
            case nar.Symlink(path, target):
                nodes.append(("symlink", path, False, target))
            case nar.DirectoryStart(path):
                nodes.append(("directory", path, False, b""))
    return nodes


@given(tree=trees, block=st.integers(8, 96), direct_min=st.integers(0, 48))
@settings(max_examples=150, deadline=None)
def test_every_way_of_giving_contents_round_trips(tree: Tree, block: int, direct_min: int) -> None:
    # A small block and threshold, so that files of a few bytes take every path: whole
    # in the buffer, straddling it, as an extent of the file (not from a pipe).
    data = serialize(tree_events(tree))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nar, "BLOCK", block)
        patch.setattr(nar, "DIRECT_MIN", direct_min)
        for opener in (from_file, from_pipe):
            with opener(data) as stream:
                assert _contents_by_path(stream) == _expected(tree)


# Large files handed to the writer thread in `d`, then a subdirectory (whose way down
# gives up the descriptor they were handed over through), then `d` is complete.
CLOSED_LATER = archive(
    directory(
        entry(
            b"d",
            directory(
                *(entry(b"a-large-%d" % index, regular(LARGE)) for index in range(8)),
                entry(b"b-dir", directory(entry(b"f", regular(b"f\n")))),
                entry(b"c-small", regular(b"c\n")),
            ),
        )
    )
)


@pytest.mark.parametrize("umask", [0o277, 0o577])
def test_a_directory_is_closed_to_its_owner_only_after_its_large_files_exist(
    nobody_dir: Path,  # noqa: F811 - the fixture
    umask: int,
) -> None:
    # Under a umask that takes the owner's bits, a complete directory gets its final
    # mode, which keeps even its owner (not root) out. The writer thread must have
    # created every large file in it by then, including those handed over before the
    # way down into b-dir.
    target = nobody_dir / "out"
    status, err = _run_in_child(["nar", "restore", str(target)], CLOSED_LATER, _as_nobody(umask))
    assert (status, err) == (0, "")
    assert nar.dump_bytes(target) == CLOSED_LATER  # root reads whatever the modes are
    assert os.stat(target / "d").st_mode & 0o777 == 0o777 & ~umask
