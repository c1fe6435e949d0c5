"""The target's store as the receive service sees it: which paths are valid, importing a
staged closure through the daemon, and removing what a failed push added.

Validity is read from the store database (fast, read-only, one snapshot; see nix.db);
when that cannot be read (an idle machine's WAL database, see nix.daemon), asked of the
daemon over its socket, and only when that fails of `nix-store --check-validity`.
Imports and deletions go through the daemon as the service's own, untrusted user.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nixwarden.errors import CommandFailed, InvalidInput
from nixwarden.nix import commands, daemon
from nixwarden.nix import db as store_db
from nixwarden.nix.closure import DB_ENV
from nixwarden.nix.storepath import STORE_DIR


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
            pass
        try:
            return frozenset(paths) - daemon.valid_paths(paths, environ=self.env)
        except daemon.DaemonUnavailable:
            return self._invalid_by_nix(paths)

    def database_problem(self) -> str | None:
        """Why validity cannot be read from the store database now (then it is asked of
        the daemon), or None when it can."""
        probe = f"{STORE_DIR}/{'0' * 32}-nixwarden-probe"
        try:
            store_db.invalid([probe], self.db)
        except store_db.DatabaseUnreadable as error:
            return str(error)
        return None

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
