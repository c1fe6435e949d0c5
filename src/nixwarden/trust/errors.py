"""The trust core's own error: malformed or unacceptable input in one of Nix's formats."""

from __future__ import annotations

from nixwarden.errors import InvalidInput


class FormatError(InvalidInput):
    """Bytes that are not a valid NAR, narinfo, key, signature, hash or export stream.

    The message is one line saying what was wrong (and where, when it is known);
    it never contains secret material.
    """
