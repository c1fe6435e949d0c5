"""The audited file system: paths resolved inside the root, globs too, every read bounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nixwarden.audit import system as system_module
from nixwarden.audit.gather import load_config
from nixwarden.audit.model import CutKind, LimitReached
from nixwarden.audit.system import System
from nixwarden.audit.wildcard import glob_matcher, sshd_match_list
from nixwarden.config import Config


def make(root: Path, path: str, content: str = "x\n") -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    return target


def link(root: Path, path: str, target: str) -> None:
    where = root / path.lstrip("/")
    where.parent.mkdir(parents=True, exist_ok=True)
    where.symlink_to(target)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    make(tree, "/etc/inside.conf", "inside\n")
    return tree


def test_absolute_links_are_rerooted_and_dotdot_stops_at_the_root(root: Path) -> None:
    link(root, "/etc/abs", "/etc/inside.conf")
    link(root, "/etc/up", "../../../../../../etc/inside.conf")
    system = System(str(root))
    for path in ("/etc/abs", "/etc/up", "/../../../../etc/inside.conf", "etc/./inside.conf"):
        assert system.read(path) == b"inside\n", path
        assert system.resolve(path) == "/etc/inside.conf"


def test_a_link_to_a_host_file_reads_the_trees_file_or_nothing(root: Path) -> None:
    link(root, "/etc/passwd-link", "/etc/passwd")
    link(root, "/home/u/.ssh", "/root/.ssh")
    system = System(str(root))
    with pytest.raises(FileNotFoundError):
        system.read("/etc/passwd-link")  # the host's /etc/passwd exists; the tree's does not
    assert system.read_optional("/home/u/.ssh/authorized_keys") is None
    assert system.stat("/etc/passwd-link") is None


def test_link_loops_end_with_eloop(root: Path) -> None:
    link(root, "/etc/a", "b")
    link(root, "/etc/b", "a")
    with pytest.raises(OSError, match="symbolic links"):
        System(str(root)).read("/etc/a")


def test_only_regular_files_are_opened(root: Path) -> None:
    os.mkfifo(root / "etc/fifo")
    system = System(str(root))
    with pytest.raises(OSError, match="not a regular file"):
        system.read("/etc/fifo")  # never opened: a FIFO would block or feed forever
    with pytest.raises(IsADirectoryError):
        system.read("/etc")


def test_no_descriptor_is_left_open(root: Path) -> None:
    link(root, "/etc/loop", ".")
    system = System(str(root))
    before = open_descriptors()
    for _ in range(50):
        system.read_optional("/etc/loop/loop/inside.conf")
        system.read_optional("/etc/missing/x")
        system.stat("/etc/loop")
        system.glob("/etc/loop/*/*.conf")
    assert open_descriptors() == before


def test_globs_stay_inside_the_root(root: Path) -> None:
    link(root, "/etc/ssh/host", "/etc")
    make(root, "/etc/ssh/sshd_config.d/10.conf")
    make(root, "/etc/ssh/sshd_config.d/.hidden.conf")
    system = System(str(root))
    names = system.glob("/etc/ssh/host/*").paths
    assert names == ("/etc/ssh/host/inside.conf", "/etc/ssh/host/ssh")  # the tree's /etc only
    assert system.glob("/etc/ssh/sshd_config.d/*.conf").paths == ("/etc/ssh/sshd_config.d/10.conf",)
    assert system.glob("/../../etc/ssh/sshd_config.d/1?.conf").paths == (
        "/../../etc/ssh/sshd_config.d/10.conf",
    )
    assert system.glob("/etc/ssh/nothing/*").paths == ()


def test_a_glob_through_link_loops_is_cut(root: Path) -> None:
    for index in range(10):
        link(root, f"/etc/ssh/loop{index}", ".")
    make(root, "/etc/ssh/a.conf")
    result = System(str(root)).glob("/etc/ssh/" + "*/" * 10 + "*.conf")
    assert result.cut is not None and "256" in result.cut
    assert len(result.paths) <= system_module.MAX_GLOB_MATCHES


def test_a_glob_deeper_than_the_bound_is_cut(root: Path) -> None:
    result = System(str(root)).glob("/" + "x/" * 40 + "*")
    assert result.paths == () and result.cut is not None and "components" in result.cut


def test_a_file_over_the_size_bound_is_a_cut_not_read(root: Path) -> None:
    big = root / "etc/big"
    with big.open("wb") as handle:
        handle.truncate(system_module.MAX_FILE + 1)
    system = System(str(root))
    with pytest.raises(LimitReached):
        system.read("/etc/big")
    with pytest.raises(LimitReached):
        system.read("/etc/big")  # the same file again: still one cut, not two files
    (cut,) = system.cuts()
    assert (cut.kind, cut.file) == (CutKind.INPUT, "/etc/big") and "more" not in cut.detail


def test_the_lookup_budget_is_one_cut_naming_how_many_were_left(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(system_module, "MAX_LOOKUPS", 3)
    system = System(str(root))
    for index in range(6):
        system.read_optional(f"/etc/{index}")
    (cut,) = system.cuts()
    assert cut.file == "/etc/3" and "(and 2 more files)" in cut.detail


def test_glob_and_sshd_wildcards() -> None:
    assert glob_matcher("[a-c]?.conf")("b1.conf") and not glob_matcher("[!a-c]*")("b")
    assert glob_matcher("\\*")("*") and not glob_matcher("\\*")("x")
    assert not glob_matcher("*")(".hidden") and glob_matcher(".*")(".hidden")
    # sshd's Match patterns know only * and ?: a bracket is a character.
    assert sshd_match_list("build[er]", "build[er]") == 1
    assert sshd_match_list("builder", "build[er]") == 0
    assert sshd_match_list("builder", "b*,!bu*") == -1
    assert sshd_match_list("a" * 255, "*a" * 400 + "b") == 0  # no exponential backtracking


@pytest.mark.parametrize(
    "failure",
    [RecursionError("deep"), MemoryError(), ValueError("odd"), KeyError("x")],
    ids=["RecursionError", "MemoryError", "ValueError", "KeyError"],
)
def test_any_failure_to_parse_the_config_is_a_reason_not_a_crash(
    failure: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(data: bytes, path: str) -> Config:
        raise failure

    monkeypatch.setattr(Config, "from_toml", staticmethod(broken))
    facts = load_config(b"[principals.a]\n", "/etc/nixwarden/config.toml")
    assert facts.config is None and facts.error is not None
    assert facts.error.startswith("/etc/nixwarden/config.toml: ") and "\n" not in facts.error


def test_a_deeply_nested_config_is_a_reason() -> None:
    for document in (
        b"a = " + b"[" * 5000 + b"]" * 5000,
        b"a = " + b"{b=" * 3000 + b"1" + b"}" * 3000,
    ):
        facts = load_config(document + b"\n", "/etc/nixwarden/config.toml")
        assert facts.config is None and facts.error
