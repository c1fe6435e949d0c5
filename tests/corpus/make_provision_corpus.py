"""Writes the provisioning corpus: files handed to `builder enroll --key` and
`client add-builder --host-key` that must be refused, one per attack or mistake.

Run from the repository: `.venv/bin/python -m tests.corpus.make_provision_corpus`.
`KEY_REASONS` in tests/unit/test_provision_corpus.py lists the reason each is refused with.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa

HERE = Path(__file__).parent / "provision"


def _openssh_public(key: object) -> str:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def cases() -> dict[str, bytes]:
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_public = _openssh_public(ed.public_key())
    ed_blob = ed_public.split()[1]
    rsa_short = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point
    dsa_key = dsa.generate_private_key(key_size=1024)  # noqa: S505 - the point
    # An ssh-ed25519 label on an ssh-rsa blob.
    rsa_blob = _openssh_public(rsa_short.public_key()).split()[1]
    return {
        "key_private_openssh.pub": ed.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
        "key_dsa.pub": (_openssh_public(dsa_key.public_key()) + " old@laptop\n").encode(),
        "key_rsa_1024.pub": (_openssh_public(rsa_short.public_key()) + " short@laptop\n").encode(),
        "key_rsa_truncated_blob.pub": (
            "ssh-rsa "
            + base64.b64encode(_string(b"ssh-rsa") + _string(b"\x01\x00\x01")).decode()
            + "\n"
        ).encode(),
        "key_not_base64.pub": b"ssh-ed25519 AAAA$$$not-base64 x@y\n",
        "key_type_mismatch.pub": f"ssh-ed25519 {rsa_blob} liar@laptop\n".encode(),
        "key_two_keys.pub": f"{ed_public} a\n{ed_public} b\n".encode(),
        "key_empty.pub": b"",
        "key_with_options.pub": f'restrict,command="/bin/sh" {ed_public}\n'.encode(),
        "key_comment_control.pub": f"{ed_public} evil\x1b[2Jcomment\n".encode(),
        "key_not_utf8.pub": b"ssh-ed25519 " + ed_blob.encode() + b" \xff\xfe\n",
        "key_x509_pem.pub": ed.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "key_certificate.pub": (
            "ssh-ed25519-cert-v01@openssh.com "
            + base64.b64encode(_string(b"ssh-ed25519-cert-v01@openssh.com")).decode()
            + "\n"
        ).encode(),
    }


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name, data in cases().items():
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
