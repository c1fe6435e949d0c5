"""One-line errors: an `OSError` as the error the CLI prints, and untrusted text in one.

Errors that say the path given is wrong (missing, not a directory, not permitted, a
symlink where none may be) are bad input, exit 2. Everything else (a full disk, no
descriptors left, a size limit, an I/O error) is the machine's, `EnvironmentFailure`,
exit 1. Paths are escaped: they can come from an archive or a tree someone else wrote.
"""

from __future__ import annotations

import errno

from nixwarden.display import escape, escape_bytes
from nixwarden.errors import EnvironmentFailure, InvalidInput, NixwardenError

_INPUT_ERRORS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EACCES,
        errno.EPERM,
        errno.EEXIST,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)


def shown(text: str, limit: int = 80) -> str:
    """Untrusted text for a one-line error: quoted, escaped, cut to about `limit`."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"'{escape(text)}'"


def from_os_error(path: str | bytes, error: OSError) -> NixwardenError:
    shown = escape_bytes(path) if isinstance(path, bytes) else escape(path)
    reason = error.strerror or str(error)
    if error.errno in _INPUT_ERRORS:
        return InvalidInput(f"{shown}: {reason}")
    return EnvironmentFailure(f"{shown}: {reason}")
