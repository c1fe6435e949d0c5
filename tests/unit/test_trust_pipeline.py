"""The second threads behind hashing, dumping and restoring: order, bounds, errors."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from nixwarden.errors import FormatError
from nixwarden.trust import pipeline


@pytest.mark.parametrize("threaded", [True, False])
def test_block_sink_hands_over_every_byte_in_order(threaded: bool) -> None:
    seen: list[bytes] = []
    data = os.urandom(100_000)
    with pipeline.BlockSink(
        lambda view: seen.append(bytes(view)), block=4096, threaded=threaded
    ) as sink:
        for start in range(0, len(data), 1000):
            sink.put(data[start : start + 1000])
        sink.close()
    assert b"".join(seen) == data
    assert sink.size == len(data)
    assert all(len(block) <= 4096 for block in seen)


def test_a_consumer_error_reaches_the_producer_and_the_thread_ends() -> None:
    calls = 0

    def consume(view: memoryview) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise BrokenPipeError("reader went away")

    before = threading.active_count()
    with (
        pytest.raises(BrokenPipeError),
        pipeline.BlockSink(consume, block=64, threaded=True) as sink,
    ):
        for _ in range(1000):
            sink.put(b"x" * 60)
        sink.close()
    assert calls == 3  # nothing consumed after the failure
    assert threading.active_count() == before


def test_background_hasher_equals_hashlib_for_any_mix_of_sizes() -> None:
    parts = [os.urandom(size) for size in (0, 1, 70_000, 5, 64 << 10, 3, 200_000, 9)]
    with pipeline.BackgroundHasher(depth=2) as hasher:
        for part in parts:
            hasher.update(part)
        digest, size = hasher.result()
    whole = b"".join(parts)
    assert (digest, size) == (hashlib.sha256(whole).digest(), len(whole))


def test_file_writer_reports_a_write_error_and_closes_every_file(tmp_path: Path) -> None:
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pipeline.FileWriter(max_files=2) as writer:
            good = writer.open("good", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=directory)
            writer.write(good, b"kept")
            writer.close(good)
            read_only = writer.open("bad", os.O_RDONLY | os.O_CREAT, 0o644, dir_fd=directory)
            writer.write(read_only, b"refused")  # EBADF in the thread
            writer.close(read_only)
            with pytest.raises(OSError, match="Bad file descriptor"):
                writer.finish()
    finally:
        os.close(directory)
    assert (tmp_path / "good").read_bytes() == b"kept"
    for fd in (good, read_only):
        with pytest.raises(OSError):
            os.fstat(fd)  # closed by the writer


def test_file_writer_creates_whole_files_in_shared_directories(tmp_path: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    with pipeline.FileWriter(max_directories=1) as writer:
        writer.share()
        writer.create("a", flags, 0o644, lambda fd: os.write(fd, b"first"), dir_fd=directory)
        writer.create("b", flags, 0o644, lambda fd: os.write(fd, b"second"), dir_fd=directory)
        writer.release(directory)  # the thread closes it after creating both
        writer.share()  # waits until it has
        writer.finish()
    assert (tmp_path / "a").read_bytes() == b"first"
    assert (tmp_path / "b").read_bytes() == b"second"


def test_file_writer_raises_what_filling_raised_and_stops_when_cancelled(tmp_path: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:

        def refuse(fd: int) -> None:
            raise FormatError("NAR: archive is truncated (at byte 9)")

        with pipeline.FileWriter() as writer:
            writer.create("refused", flags, 0o644, refuse, dir_fd=directory)
            with pytest.raises(FormatError, match="truncated"):
                writer.finish()
        assert os.listdir(tmp_path) == ["refused"]  # created, then refused: the caller removes it
        with pipeline.FileWriter() as writer:
            writer.cancel()
            writer.create("later", flags, 0o644, lambda fd: None, dir_fd=directory)
            writer.finish()
        assert os.listdir(tmp_path) == ["refused"]
    finally:
        os.close(directory)
