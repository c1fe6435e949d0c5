"""Nix's base-32 ("nix32"): its own alphabet, and the digits in an unusual order.

Nix reads the bytes as one little-endian integer and prints its 5-bit digits most
significant first, so `encode` is an integer conversion rather than RFC 4648 base32.
"""

from __future__ import annotations

from nixwarden.errors import FormatError

ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"  # no e, o, u, t: fewer accidental words
_DIGIT = {char: value for value, char in enumerate(ALPHABET)}


def encoded_length(size: int) -> int:
    """How many nix32 characters `size` bytes take (52 for a SHA-256 digest)."""
    return (size * 8 - 1) // 5 + 1 if size else 0


def encode(data: bytes) -> str:
    value = int.from_bytes(data, "little")
    chars = []
    for _ in range(encoded_length(len(data))):
        chars.append(ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def decode(text: str, size: int) -> bytes:
    """The `size` bytes that `text` encodes; refuses any other length and excess high bits."""
    if len(text) != encoded_length(size):
        raise FormatError(
            f"nix32 string has {len(text)} characters, expected {encoded_length(size)}"
        )
    value = 0
    for char in text:
        digit = _DIGIT.get(char)
        if digit is None:
            raise FormatError(f"invalid character {char!r} in nix32 string")
        value = (value << 5) | digit
    if value >> (size * 8):
        # The top digit can carry bits beyond the last byte; Nix rejects those too.
        raise FormatError("nix32 string encodes more bits than its length allows")
    return value.to_bytes(size, "little")
