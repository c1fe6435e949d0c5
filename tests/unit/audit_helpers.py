"""Shared by the audit tests: run the audit over a corpus case or a tree, with fakes.

A case's AUDIT-CASE file holds what git cannot (or should not) keep, one line each:
  stat PATH UID GID MODE      an owner and mode the audit should see
  daemon-env NAME=VALUE       the running daemon's environment
  daemon-uid N                the running daemon's uid
  repeat PATH COUNT TEXT      append TEXT COUNT times to PATH (big files stay out of git)
  numbered PATH COUNT TEXT    append TEXT COUNT times, `{n}` in it replaced by 0, 1, 2…
  write PATH TEXT             create PATH (its name may hold any character) with TEXT
  files DIR COUNT TEXT        create COUNT files DIR/00000.conf… holding TEXT
  fifo PATH                   create a FIFO
  symlink PATH TARGET         create a symbolic link
  nest PATH COUNT FILE        directories PATH/PATH/… COUNT deep, holding FILE (b"x")
PATH and TEXT take Python escapes (\\n, \\x1b, \\u202e, \\x20 for a space).
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import shutil
from pathlib import Path

from nixwarden.audit import catalog, gather
from nixwarden.audit.facts import Facts
from nixwarden.audit.model import FileStat, Finding

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "audit"
BASE = CORPUS / "_base"
CASE_FILE = "AUDIT-CASE"


BUILD_DIRECTIVES = ("repeat", "numbered", "write", "files", "fifo", "symlink", "nest")


def _unescape(text: str) -> str:
    return codecs.decode(text, "unicode_escape")


def _inside(root: Path, path: str) -> Path:
    target = root / _unescape(path).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def write(root: Path, path: str, content: str | bytes) -> None:
    """A file of a system tree, at its path inside `root`."""
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)


def build_tree(case: Path, into: Path) -> Path:
    """The base tree (passwd, group) with the case's files on top, and what AUDIT-CASE
    says to generate."""
    root = into / "root"
    shutil.copytree(BASE, root, symlinks=True)
    shutil.copytree(case, root, symlinks=True, dirs_exist_ok=True)
    (root / CASE_FILE).unlink(missing_ok=True)
    meta = case / CASE_FILE
    for line in meta.read_text().splitlines() if meta.exists() else ():
        words = line.split(" ")
        match words[0]:
            case "repeat":
                with _inside(root, words[1]).open("ab") as handle:
                    handle.write(_unescape(" ".join(words[3:])).encode() * int(words[2]))
            case "numbered":
                text = _unescape(" ".join(words[3:]))
                with _inside(root, words[1]).open("ab") as handle:
                    for index in range(int(words[2])):
                        handle.write(text.replace("{n}", str(index)).encode())
            case "write":
                _inside(root, words[1]).write_bytes(_unescape(" ".join(words[2:])).encode())
            case "files":
                directory = _inside(root, words[1] + "/x").parent
                for index in range(int(words[2])):
                    content = _unescape(" ".join(words[3:])).encode()
                    (directory / f"{index:05d}.conf").write_bytes(content)
            case "fifo":
                os.mkfifo(_inside(root, words[1]))
            case "symlink":
                _inside(root, words[1]).symlink_to(_unescape(words[2]))
            case "nest":
                # One level at a time: Path.mkdir(parents=True) recurses once per level.
                directory = root
                for _ in range(int(words[2])):
                    directory = directory / words[1].strip("/")
                    directory.mkdir(exist_ok=True)
                (directory / words[3]).write_bytes(b"x")
    return root


def audit_tree(root: Path, meta: str = "", **options: str) -> tuple[Facts, list[Finding]]:
    """Audit `root` as --root would. File owners default to root (git does not keep
    owners), and modes to what is on disk; `meta` overrides them (`stat PATH UID GID MODE`)
    and sets what a tree cannot hold (`daemon-env NAME=VALUE`, `daemon-uid N`)."""
    overrides: dict[str, tuple[int, int, int]] = {}
    daemon_env: dict[str, str] = {}
    daemon_uid: int | None = None
    for line in meta.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        match words[0]:
            case "stat":
                overrides[words[1]] = (int(words[2]), int(words[3]), int(words[4], 8))
            case "daemon-env":
                name, _, value = words[1].partition("=")
                daemon_env[name] = value
            case "daemon-uid":
                daemon_uid = int(words[1])
            case directive if directive in BUILD_DIRECTIVES:
                continue  # applied by build_tree
            case other:
                raise AssertionError(f"unknown {CASE_FILE} line {other!r}")
    facts = gather.gather(gather.Options(root=str(root), **options), {})
    real_stat = facts.stat

    def stat(path: str) -> FileStat | None:
        info = real_stat(path)
        if path in overrides:
            uid, gid, mode = overrides[path]
            kind = info.mode & 0o170000 if info else 0o100000
            return FileStat(path, uid, gid, kind | mode)
        if info is None:
            return None
        return FileStat(path, 0, 0, info.mode & ~0o022)  # as a root-owned install would be

    facts = dataclasses.replace(
        facts, stat=stat, daemon_env=daemon_env or None, daemon_uid=daemon_uid
    )
    return facts, catalog.run(facts)


def audit_case(case: Path, tmp_path: Path) -> list[Finding]:
    meta_file = case / CASE_FILE
    meta = meta_file.read_text() if meta_file.exists() else ""
    _, findings = audit_tree(build_tree(case, tmp_path), meta)
    return findings
