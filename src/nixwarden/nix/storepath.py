"""Store paths: parsing and finding them in text. Pure: no file system access.

A store path is `<store dir>/<hash>-<name>`: 32 characters of Nix's base-32 alphabet,
a dash, and a name of at most 211 characters from `[A-Za-z0-9+-._?=]` (Nix's `checkName`).
A *root* is a store path or a path inside one (`/nix/store/…-hello/bin/hello`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from nixwarden.errors import InvalidInput

STORE_DIR = "/nix/store"
HASH_LENGTH = 32
MAX_NAME_LENGTH = 211
NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"  # no e, o, u, t

_HASH = re.compile(f"[{NIX32_ALPHABET}]{{{HASH_LENGTH}}}")
_NAME = re.compile(r"[A-Za-z0-9+\-._?=]+")


class BadStorePath(InvalidInput):
    """A path that is not a store path (or a path inside one); the message names it."""


@dataclass(frozen=True, order=True)
class StorePath:
    """A store path's base name split into hash and name, in a given store directory."""

    hash_part: str
    name: str
    store_dir: str = STORE_DIR

    @property
    def base_name(self) -> str:
        return f"{self.hash_part}-{self.name}"

    @property
    def path(self) -> str:
        return f"{self.store_dir}/{self.base_name}"

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class Root:
    """A store path and the part of the root below it ("" for the store path itself)."""

    store_path: StorePath
    inner: str = ""

    @property
    def path(self) -> str:
        return self.store_path.path + (f"/{self.inner}" if self.inner else "")


def check_store_dir(store_dir: str) -> str:
    if not store_dir.startswith("/") or store_dir != "/" + "/".join(
        part for part in store_dir.split("/") if part
    ):
        raise InvalidInput(f"store directory {store_dir!r} is not a canonical absolute path")
    if store_dir == "/":
        raise InvalidInput("the store directory cannot be /")
    return store_dir


def parse_base_name(base: str, *, original: str, store_dir: str = STORE_DIR) -> StorePath:
    """`<hash>-<name>` → StorePath; `original` is the text to name in errors."""
    hash_part, dash, name = base.partition("-")
    if not dash:
        raise BadStorePath(f"{original!r}: store path has no '-' between hash and name")
    if len(hash_part) != HASH_LENGTH:
        raise BadStorePath(
            f"{original!r}: store path hash has {len(hash_part)} characters, expected {HASH_LENGTH}"
        )
    if not _HASH.fullmatch(hash_part):
        raise BadStorePath(f"{original!r}: store path hash is not in Nix's base-32 alphabet")
    if not name:
        raise BadStorePath(f"{original!r}: store path has an empty name")
    if len(name) > MAX_NAME_LENGTH:
        raise BadStorePath(f"{original!r}: store path name is longer than {MAX_NAME_LENGTH}")
    if not _NAME.fullmatch(name):
        raise BadStorePath(f"{original!r}: store path name has a character Nix does not allow")
    if name.startswith("."):
        raise BadStorePath(f"{original!r}: store path name starts with '.'")
    return StorePath(hash_part, name, store_dir)


def parse_store_path(text: str, store_dir: str = STORE_DIR) -> StorePath:
    """Exactly a store path (no trailing slash, nothing below it)."""
    root = parse_root(text, store_dir)
    if root.inner or text != root.store_path.path:
        raise BadStorePath(f"{text!r}: not exactly a store path")
    return root.store_path


def parse_root(text: str, store_dir: str = STORE_DIR) -> Root:
    """A store path or a path inside one, checked lexically (no symlinks are followed).

    Refuses relative paths, `..` anywhere (it could climb out of the store path), NUL
    bytes and paths outside `store_dir`. Repeated slashes and `.` components are dropped.
    """
    if "\0" in text:
        raise BadStorePath(f"{text!r}: contains a NUL byte")
    if not text.startswith("/"):
        raise BadStorePath(f"{text!r}: not an absolute path")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise BadStorePath(f"{text!r}: '..' is not allowed in a root")
    store_parts = [part for part in store_dir.split("/") if part]
    depth = len(store_parts)
    if parts[:depth] != store_parts:
        raise BadStorePath(f"{text!r}: not in the store {store_dir}")
    if len(parts) == depth:
        raise BadStorePath(f"{text!r}: the store directory itself is not a store path")
    store_path = parse_base_name(parts[depth], original=text, store_dir=store_dir)
    return Root(store_path, "/".join(parts[depth + 1 :]))


def in_store(text: str, store_dir: str = STORE_DIR) -> bool:
    """Lexically under `store_dir/` (what Nix's `isInStore` checks)."""
    return text.startswith(store_dir + "/")


def references_in(text: str, store_dir: str = STORE_DIR) -> Iterator[StorePath]:
    """Every store path mentioned in `text` (like `--conf=/nix/store/…-x/etc`), in order.

    Only well-formed hashes count; the name ends at the first character Nix does not
    allow in names (so `/nix/store/…-x/bin` yields `…-x`).
    """
    pattern = re.compile(
        re.escape(store_dir) + f"/([{NIX32_ALPHABET}]{{{HASH_LENGTH}}}-[A-Za-z0-9+\\-._?=]+)"
    )
    for match in pattern.finditer(text):
        hash_part, _, name = match.group(1).partition("-")
        if not name.startswith("."):
            yield StorePath(hash_part, name, store_dir)
