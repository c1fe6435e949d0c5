"""`nar restore` when the machine says no: descriptors, file size, umask, a moved tree.

Each case runs the real command line in a forked child with the limit applied, and
checks that the failure is one line with exit 1 or 2, and that nothing is left.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import signal
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import nixwarden.trust.cli  # noqa: F401 - imported before a child runs out of descriptors
from nixwarden.cli import main
from nixwarden.errors import FormatError, InvalidInput
from nixwarden.trust import nar, restore
from tests.corpus.make_corpus import deep, directory, entry, regular, symlink
from tests.corpus.make_corpus import nar as archive

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "nar"
NOBODY = 65534


def _run_in_child(argv: list[str], stdin: bytes, prepare: Callable[[], None]) -> tuple[int, str]:
    """`nixwarden ARGV < stdin` in a forked child after `prepare()`: (status, stderr)."""
    with tempfile.TemporaryFile() as source:
        source.write(stdin)
        source.seek(0)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            status = 70
            try:
                os.dup2(source.fileno(), 0)
                os.dup2(write_end, 2)
                sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, closefd=False)))
                sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
                prepare()
                status = main(argv)
            except BaseException:  # anything unexpected shows in the test
                os.write(2, traceback.format_exc().encode())
                status = 71
            finally:
                os._exit(status)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as errors:
            err = errors.read().decode()
        _, wait_status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(wait_status), err


def _only_descriptors(free: int) -> Callable[[], None]:
    """Close every descriptor above stderr and allow `free` more."""

    def prepare() -> None:
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (3 + free, hard))

    return prepare


def _assert_one_line_failure(status: int, err: str) -> None:
    assert status in (1, 2), err
    assert err.startswith("nixwarden: error: "), err
    assert err.count("\n") == 1, err
    assert "internal error" not in err, err


def test_a_deep_archive_restores_with_few_descriptors(tmp_path: Path) -> None:
    # 128 nested directories; restore used to hold a descriptor for each of them.
    data = (CORPUS / "nar_deep_fd_exhaustion.nar").read_bytes()
    target = tmp_path / "out"
    status, err = _run_in_child(["nar", "restore", str(target)], data, _only_descriptors(8))
    assert (status, err) == (0, "")
    assert nar.dump_bytes(target) == data
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("free", range(7))
def test_running_out_of_descriptors_is_one_line_and_leaves_nothing(
    tmp_path: Path, free: int
) -> None:
    restore_with_few_descriptors(
        tmp_path, (CORPUS / "nar_deep_fd_exhaustion.nar").read_bytes(), free
    )


def restore_with_few_descriptors(directory: Path, data: bytes, free: int) -> None:
    """`nar restore` of `data` with `free` descriptors to spare: the whole tree, or a
    one-line failure (exit 1: the machine's limit, not the input) and nothing at all."""
    target = directory / "out"
    status, err = _run_in_child(["nar", "restore", str(target)], data, _only_descriptors(free))
    if status == 0:
        assert nar.dump_bytes(target) == data
        assert os.listdir(directory) == ["out"]
    else:
        _assert_one_line_failure(status, err)
        assert "Too many open files" in err
        assert status == 1
        assert os.listdir(directory) == []


def test_a_file_over_the_size_limit_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    data = archive(
        directory(entry(b"a", regular(b"x" * 100)), entry(b"big", regular(bytes(1 << 20))))
    )

    def prepare() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))

    status, err = _run_in_child(["nar", "restore", str(tmp_path / "out")], data, prepare)
    _assert_one_line_failure(status, err)
    assert status == 1
    assert "File too large" in err
    assert os.listdir(tmp_path) == []


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory the unprivileged user `nobody` owns, on a path it can reach."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    base = Path(tempfile.mkdtemp(prefix="nwt-restore-"))
    try:
        base.chmod(0o755)
        (base / "w").mkdir()
        os.chown(base / "w", NOBODY, NOBODY)
        yield base / "w"
    finally:
        shutil.rmtree(base)


def _as_nobody(umask: int) -> Callable[[], None]:
    def prepare() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        os.umask(umask)

    return prepare


HOSTILE_TREE = archive(
    directory(
        entry(b"bin", directory(entry(b"run", regular(b"#!/bin/sh\n", executable=True)))),
        entry(b"empty", directory()),
        entry(
            b"lib",
            directory(entry(b"data", regular(b"d" * 70000)), entry(b"link", symlink(b"data"))),
        ),
    )
)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o222, 0o277, 0o577, 0o777])
def test_restore_under_a_restrictive_umask_gives_what_the_umask_says(
    nobody_dir: Path, umask: int
) -> None:
    target = nobody_dir / "out"
    status, err = _run_in_child(["nar", "restore", str(target)], HOSTILE_TREE, _as_nobody(umask))
    assert (status, err) == (0, "")
    assert os.listdir(nobody_dir) == ["out"]
    if not umask & 0o100:  # (a umask without the owner's x bit leaves nothing executable)
        assert nar.dump_bytes(target) == HOSTILE_TREE  # root reads whatever the modes are
    for path, wanted in (
        (target, 0o777),
        (target / "bin", 0o777),
        (target / "empty", 0o777),
        (target / "bin" / "run", 0o777),
        (target / "lib" / "data", 0o666),
    ):
        assert stat.S_IMODE(os.lstat(path).st_mode) == wanted & ~umask, path
        assert os.lstat(path).st_uid == NOBODY


@pytest.mark.parametrize("umask", [0o022, 0o277, 0o777])
def test_a_refused_archive_under_a_restrictive_umask_leaves_nothing(
    nobody_dir: Path, umask: int
) -> None:
    # A complete tree (so directories already have their final, closed modes) and
    # then bytes after the archive: refused at the very end.
    status, err = _run_in_child(
        ["nar", "restore", str(nobody_dir / "out")], HOSTILE_TREE + bytes(8), _as_nobody(umask)
    )
    _assert_one_line_failure(status, err)
    assert "trailing bytes" in err
    assert os.listdir(nobody_dir) == []


def test_cleanup_removes_a_tree_deeper_than_path_max_with_two_descriptors(
    tmp_path: Path,
) -> None:
    # Deeper than any archive may be, with names long enough that the full path is
    # far beyond PATH_MAX: removal by path, or with a descriptor per level, fails.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(300):
        name = f"{level:03d}-" + "d" * 60
        os.mkdir(name, dir_fd=fd)
        with open(os.open("file", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as file:
            file.write(b"x")
        os.symlink("..", "up", dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    parent = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = len(os.listdir("/proc/self/fd"))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        highest = max(int(name) for name in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 3, hard[1]))
        try:
            restore._remove_tree(parent, "scratch")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, hard)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(parent)
    assert os.listdir(tmp_path) == []


def test_the_library_reports_each_failure_as_one_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError):
        restore.restore(io.BytesIO(deep(3)), tmp_path / "out")  # no magic
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InvalidInput, match="Not a directory"):
        restore.restore(io.BytesIO(HOSTILE_TREE), tmp_path / "file" / "out")
    assert os.listdir(tmp_path) == ["file"]
