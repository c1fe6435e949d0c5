"""Where Nix's own programs live on this machine."""

from __future__ import annotations

import os

# Most specific first: NixOS, a multi-user install, a distribution's package.
NIX_BIN_DIRS = (
    "/run/current-system/sw/bin",
    "/nix/var/nix/profiles/default/bin",
    "/usr/bin",
    "/usr/local/bin",
)


def find_nix_program(name: str) -> str:
    """The first system location that has Nix's `name`; the last candidate if none has it."""
    for directory in NIX_BIN_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return os.path.join("/usr/bin", name)
