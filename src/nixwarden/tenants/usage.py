"""How much a tenant's store holds, from its own Nix database (read-only)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from nixwarden.nix import db


@dataclass(frozen=True)
class StoreUsage:
    paths: int
    nar_bytes: int  # what `nix path-info --all --size` adds up: the paths' NAR sizes


def store_usage(database: str) -> StoreUsage:
    """Count and total NAR size of the valid paths; an absent database is an empty store."""
    if not os.path.exists(database):
        return StoreUsage(0, 0)
    paths, nar_bytes = db.store_usage(database)
    return StoreUsage(paths, nar_bytes)


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
