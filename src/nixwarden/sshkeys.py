"""OpenSSH public keys: which types exist, and whether a key's data is what it claims.

Shared by the gate's `authorized-keys-line` (enrolling a key) and the audit (reading
authorized_keys and the machines file's host-key column).
"""

from __future__ import annotations

import base64
import binascii
import struct

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


def wire_key_type(blob: bytes) -> str | None:
    """The key type at the start of an SSH wire-format public key, or None."""
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if length == 0 or length > 64 or len(blob) < 4 + length:
        return None
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def key_data_problem(key_type: str, data: str) -> str | None:
    """None when `data` is base64 of a wire-format key of `key_type`; else what is wrong."""
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return "key data is not base64"
    if wire_key_type(blob) != key_type:
        return "key data does not match its type"
    return None


MIN_RSA_BITS = 2048


def rsa_bits(blob: bytes) -> int | None:
    """The modulus size of an `ssh-rsa` wire-format key (string type, mpint e, mpint n), or
    None when the blob is not one."""
    fields = []
    offset = 0
    for _ in range(3):
        if len(blob) < offset + 4:
            return None
        (length,) = struct.unpack(">I", blob[offset : offset + 4])
        offset += 4
        if length > len(blob) - offset:
            return None
        fields.append(blob[offset : offset + length])
        offset += length
    if fields[0] != b"ssh-rsa" or offset != len(blob):
        return None
    return int.from_bytes(fields[2], "big").bit_length()


def weak_key_problem(key_type: str, data: str) -> str | None:
    """Why a well-formed key is too weak to enrol or pin, or None: DSA, or RSA under 2048 bits."""
    if key_type == "ssh-dss":
        return "DSA keys are refused (OpenSSH disabled them; use ssh-ed25519)"
    if key_type == "ssh-rsa":
        bits = rsa_bits(base64.b64decode(data))
        if bits is None:
            return "key data is not an RSA public key"
        if bits < MIN_RSA_BITS:
            return (
                f"an RSA key of {bits} bits is too short (at least {MIN_RSA_BITS}; or ssh-ed25519)"
            )
    return None
