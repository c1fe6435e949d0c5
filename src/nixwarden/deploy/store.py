"""The target's store as the receive service sees it: which paths are valid, importing a
staged closure through the daemon, and removing what a failed push added.

Validity is read from the store database (fast, read-only, one snapshot; see nix.db) and,
when that cannot be read, asked of Nix (`nix-store --check-validity --print-invalid`).
Imports and deletions go through the daemon as the service's own, untrusted user.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nixwarden.errors import CommandFailed, InvalidInput
from nixwarden.nix import commands
from nixwarden.nix import db as store_db
from nixwarden.nix.closure import DB_ENV


@dataclass(frozen=True)
class TargetStore:
    env: Mapping[str, str]
    db: str = store_db.DEFAULT_DB
    timeout: float = 3600

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> TargetStore:
        return cls(env=env, db=os.environ.get(DB_ENV) or store_db.DEFAULT_DB)

    def invalid(self, paths: Sequence[str]) -> frozenset[str]:
        """Those of `paths` that are not valid in the target store."""
        if not paths:
            return frozenset()
        try:
            return store_db.invalid(paths, self.db)
        except store_db.DatabaseUnreadable:
            return self._invalid_by_nix(paths)

    def _invalid_by_nix(self, paths: Sequence[str]) -> frozenset[str]:
        return commands.invalid_paths(paths, env=self.env, timeout=self.timeout)

    def import_from(self, cache: str, paths: Sequence[str], env: Mapping[str, str]) -> None:
        """Add `paths` (references first) from the `file://` cache at `cache`."""
        commands.copy_from(f"file://{cache}", paths, env=env, timeout=self.timeout)

    def delete(self, paths: Sequence[str]) -> frozenset[str]:
        """Delete `paths` (referrers before references) where nothing keeps them alive;
        returns those still valid afterwards.

        One path that is alive makes `nix-store --delete` refuse the whole command line,
        so after a refusal each remaining path is tried on its own.
        """
        if not paths:
            return frozenset()
        try:
            commands.delete_paths(paths, env=self.env, timeout=self.timeout)
            return frozenset(paths) - self.invalid(paths)
        except (CommandFailed, InvalidInput, OSError):
            pass
        left = self.invalid(paths)
        for path in paths:
            if path in left:
                continue
            with contextlib.suppress(CommandFailed, InvalidInput, OSError):
                commands.delete_paths([path], env=self.env, timeout=self.timeout)
        return frozenset(paths) - self.invalid(paths)
