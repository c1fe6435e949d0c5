"""What the local store records about paths, read through `nix path-info --json`.

This is the trust core's only contact with the store: one program run through
`nixwarden.process`, its JSON checked as strictly as any other input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nixwarden.errors import FormatError
from nixwarden.nix import commands
from nixwarden.nix.storepath import STORE_DIR, StorePath
from nixwarden.trust.hashes import Hash, HashAlgorithm


@dataclass(frozen=True)
class PathInfo:
    path: StorePath
    nar_hash: Hash
    nar_size: int
    references: tuple[StorePath, ...]
    deriver: StorePath | None
    signatures: tuple[str, ...]  # as the store has them; parsed (strictly) when checked
    ca: str | None
    store_dir: str = STORE_DIR

    @property
    def absolute(self) -> str:
        return self.path.absolute(self.store_dir)

    def reference_paths(self) -> list[str]:
        return [ref.absolute(self.store_dir) for ref in self.references]

    @classmethod
    def from_json(cls, entry: Mapping[str, Any], store_dir: str = STORE_DIR) -> PathInfo:
        try:
            nar_hash = Hash.parse(_text(entry, "narHash"))
            if nar_hash.algorithm is not HashAlgorithm.SHA256:
                raise FormatError("narHash is not sha256")
            nar_size = entry["narSize"]
            if not isinstance(nar_size, int) or isinstance(nar_size, bool) or nar_size <= 0:
                raise FormatError("narSize is not a positive integer")
            deriver = entry.get("deriver")
            signatures = entry.get("signatures", [])
            if not isinstance(signatures, list) or not all(isinstance(s, str) for s in signatures):
                raise FormatError("signatures is not a list of strings")
            ca = entry.get("ca")
            return cls(
                path=StorePath.parse(_text(entry, "path"), store_dir),
                nar_hash=nar_hash,
                nar_size=nar_size,
                references=tuple(
                    StorePath.parse(ref, store_dir) for ref in _strings(entry, "references")
                ),
                deriver=None if deriver is None else StorePath.parse(str(deriver), store_dir),
                signatures=tuple(signatures),
                ca=None if ca is None else str(ca),
                store_dir=store_dir,
            )
        except (KeyError, TypeError) as error:
            raise FormatError(f"nix path-info: unexpected JSON ({error})") from None


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry[key]
    if not isinstance(value, str):
        raise FormatError(f"nix path-info: {key} is not a string")
    return value


def _strings(entry: Mapping[str, Any], key: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise FormatError(f"nix path-info: {key} is not a list of strings")
    return value


@dataclass(frozen=True)
class Query:
    """Answers of one `nix path-info` run: infos by path, and the paths that are not valid."""

    infos: dict[StorePath, PathInfo]
    invalid: tuple[StorePath, ...]


def query(paths: Sequence[StorePath], *, store_dir: str = STORE_DIR) -> Query:
    """What the store records about exactly `paths` (closures: nix.closure)."""
    if not paths:
        return Query({}, ())
    output = commands.path_info_json(
        [path.absolute(store_dir) for path in paths], env=commands.nix_env()
    )
    try:
        entries = json.loads(output)
    except ValueError:
        raise FormatError("nix path-info: output is not JSON") from None
    if not isinstance(entries, list):
        raise FormatError("nix path-info: output is not a JSON list")
    infos: dict[StorePath, PathInfo] = {}
    invalid: list[StorePath] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise FormatError("nix path-info: an entry is not an object")
        if entry.get("valid") is False:
            invalid.append(StorePath.parse(_text(entry, "path"), store_dir))
            continue
        info = PathInfo.from_json(entry, store_dir)
        infos[info.path] = info
    return Query(infos, tuple(invalid))


def resolve(argument: str, store_dir: str = STORE_DIR) -> StorePath:
    """A command-line argument as a store path; symlinks such as `./result` are followed."""
    prefix = store_dir.rstrip("/") + "/"
    candidate = argument if argument.startswith(prefix) else os.path.realpath(argument)
    return StorePath.parse(candidate.rstrip("/"), store_dir)
