"""Store paths: `<store dir>/<32 nix32 characters>-<name>`, checked as Nix checks them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nixwarden.errors import FormatError
from nixwarden.nix import nix32

STORE_DIR = "/nix/store"
HASH_PART_LENGTH = 32
MAX_NAME_LENGTH = 211  # Nix: 255 for the file name, less the hash part and the dash
_HASH_PART = re.compile(f"[{nix32.ALPHABET}]{{{HASH_PART_LENGTH}}}")
_NAME = re.compile(r"[A-Za-z0-9+\-._?=]+")


@dataclass(frozen=True, order=True)
class StorePath:
    """A store path by its base name; the store directory is supplied where it matters."""

    hash_part: str
    name: str

    @classmethod
    def from_base_name(cls, text: str) -> StorePath:
        hash_part, dash, name = text.partition("-")
        if not dash or not _HASH_PART.fullmatch(hash_part):
            raise FormatError(f"{_shown(text)} is not a store path base name (hash-name)")
        if not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
            raise FormatError(f"{_shown(text)} has an invalid store path name")
        if name.startswith("."):
            raise FormatError(f"{_shown(text)}: store path names cannot start with a period")
        return cls(hash_part, name)

    @classmethod
    def parse(cls, text: str, store_dir: str = STORE_DIR) -> StorePath:
        """A full path directly inside `store_dir`; anything else is refused."""
        prefix = store_dir.rstrip("/") + "/"
        if not text.startswith(prefix):
            raise FormatError(f"{_shown(text)} is not in the store {store_dir}")
        return cls.from_base_name(text[len(prefix) :])

    @property
    def base_name(self) -> str:
        return f"{self.hash_part}-{self.name}"

    def absolute(self, store_dir: str = STORE_DIR) -> str:
        return f"{store_dir.rstrip('/')}/{self.base_name}"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:117] + "...")
