"""Writes the corpus of malformed KRLs: one file per attack, named after it.

Run from the repository: `.venv/bin/python -m tests.corpus.make_krl_corpus`. The KRLs
are assembled from raw bytes here (PROTOCOL.krl), not with nixwarden's writer, so a bug
there cannot hide in the corpus. With `--valid`, it also (re)writes tests/corpus/krl/valid/:
KRLs that the real `ssh-keygen -k` wrote from the spec files next to them, for the unit
tests that need OpenSSH's bytes without running OpenSSH.

`KRL_REASONS` in tests/unit/test_krl_corpus.py lists the reason each file must be
refused with; tests/system/test_krl_interop.py checks which of them OpenSSH's own
`ssh-keygen -Q` refuses too.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.corpus.make_corpus import write_corpus

HERE = Path(__file__).parent

MAGIC = b"SSHKRL\n\0"
CERTIFICATES, EXPLICIT_KEY, SHA1, SIGNATURE, SHA256 = 1, 2, 3, 4, 5
SERIAL_LIST, SERIAL_RANGE, SERIAL_BITMAP, KEY_ID = 0x20, 0x21, 0x22, 0x23


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return u32(len(raw)) + raw


def header(*, version: int = 1, comment: bytes = b"corpus") -> bytes:
    return MAGIC + u32(version) + u64(3) + u64(1_790_000_000) + u64(0) + s(b"") + s(comment)


def section(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + s(body)


def ed25519(seed: int) -> bytes:
    return s("ssh-ed25519") + s(bytes([seed]) * 32)


CA = ed25519(0xCA)
USER = ed25519(0x11)
OTHER = ed25519(0x22)


def certs(*subsections: bytes, ca: bytes = CA) -> bytes:
    return section(CERTIFICATES, s(ca) + s(b"") + b"".join(subsections))


def serial_list(*serials: int) -> bytes:
    return section(SERIAL_LIST, b"".join(u64(serial) for serial in serials))


def serial_range(low: int, high: int) -> bytes:
    return section(SERIAL_RANGE, u64(low) + u64(high))


def bitmap(offset: int, mpint: bytes) -> bytes:
    return section(SERIAL_BITMAP, u64(offset) + s(mpint))


def key_ids(*ids: bytes) -> bytes:
    return section(KEY_ID, b"".join(s(key_id) for key_id in ids))


def hashes(kind: int, *digests: bytes) -> bytes:
    return section(kind, b"".join(s(digest) for digest in digests))


# A fixed signing key, so that the corpus is the same on every run (Ed25519 is deterministic).
SIGNER = Ed25519PrivateKey.from_private_bytes(b"\x5e" * 32)
SIGNER_KEY = s("ssh-ed25519") + s(SIGNER.public_key().public_bytes_raw())


def signed(krl: bytes, signer: Ed25519PrivateKey = SIGNER, key: bytes | None = None) -> bytes:
    """`krl` plus a signature section: `signer`'s signature over everything up to the key
    (PROTOCOL.krl). `key` claims another signing key than the signer's own."""
    if key is None:
        key = s("ssh-ed25519") + s(signer.public_key().public_bytes_raw())
    covered = krl + bytes([SIGNATURE]) + s(key)
    return covered + s(s("ssh-ed25519") + s(signer.sign(covered)))


GOOD = header() + certs(serial_list(1, 5, 9), serial_range(20, 30), key_ids(b"alice"))

KRLS: dict[str, bytes] = {
    "krl_empty_file": b"",
    "krl_bad_magic": b"SSHKRL\n\1" + GOOD[8:],
    "krl_truncated_magic": MAGIC[:5],
    "krl_bad_format_version": header(version=2),
    "krl_truncated_header": header()[:30],
    "krl_comment_not_utf8": header(comment=b"caf\xe9"),
    "krl_comment_nul": header(comment=b"a\0b"),
    "krl_truncated_section": (header() + certs(serial_list(1, 2, 3)))[:-9],
    "krl_trailing_bytes": GOOD + b"\0\0\0",
    "krl_huge_count": header() + bytes([CERTIFICATES]) + u32(0xFFFFFFF0) + b"\0" * 16,
    "krl_unknown_section": GOOD + section(6, b"\0"),
    "krl_extension_section": GOOD + section(255, s("x@example.org") + b"\0" + s(b"")),
    "krl_unknown_cert_subsection": header() + certs(section(0x24, u64(1))),
    "krl_cert_extension_subsection": header()
    + certs(section(0x39, s("x@example.org") + b"\0" + s(b""))),
    "krl_cert_section_without_subsections": header() + certs(),
    "krl_cert_subsection_truncated": header()
    + section(CERTIFICATES, s(CA) + s(b"") + bytes([SERIAL_LIST]) + u32(16) + u64(1)),
    "krl_unsorted_serials": header() + certs(serial_list(5, 9, 3)),
    "krl_duplicate_serials": header() + certs(serial_list(5, 5)),
    "krl_serial_zero": header() + certs(serial_list(0, 1)),
    "krl_serial_list_ragged": header() + certs(section(SERIAL_LIST, u64(1) + u32(2))),
    "krl_empty_serial_list": header() + certs(section(SERIAL_LIST, b"")),
    "krl_range_inverted": header() + certs(serial_range(20, 10)),
    "krl_range_from_zero": header() + certs(serial_range(0, 10)),
    "krl_range_trailing_bytes": header() + certs(section(SERIAL_RANGE, u64(1) + u64(2) + u64(3))),
    "krl_bitmap_too_large": header() + certs(bitmap(1, b"\x01" + b"\0" * 2048)),
    "krl_bitmap_negative": header() + certs(bitmap(1, b"\x80\x01")),
    "krl_bitmap_leading_zero": header() + certs(bitmap(1, b"\0\x01")),
    "krl_bitmap_empty": header() + certs(bitmap(1, b"")),
    "krl_bitmap_serial_zero": header() + certs(bitmap(0, b"\x03")),
    "krl_bitmap_wraps": header() + certs(bitmap(2**64 - 2, b"\x07")),
    "krl_key_id_not_utf8": header() + certs(key_ids(b"alice", b"b\xffb")),
    "krl_key_id_nul": header() + certs(key_ids(b"ali\0ce")),
    "krl_empty_key_id_subsection": header() + certs(section(KEY_ID, b"")),
    "krl_ca_key_wrong_type": header() + certs(serial_list(1), ca=s("ssh-foo") + s(b"\1" * 32)),
    "krl_ca_key_certificate": header()
    + certs(serial_list(1), ca=s("ssh-ed25519-cert-v01@openssh.com") + s(b"\0" * 32)),
    "krl_ca_key_short": header() + certs(serial_list(1), ca=s("ssh-ed25519") + s(b"\1" * 31)),
    "krl_ca_key_trailing_bytes": header() + certs(serial_list(1), ca=CA + b"\0"),
    "krl_ca_key_ecdsa_off_curve": header()
    + certs(serial_list(1), ca=s("ecdsa-sha2-nistp256") + s("nistp256") + s(b"\4" + b"\1" * 64)),
    "krl_ca_key_rsa_too_short": header()
    + certs(serial_list(1), ca=s("ssh-rsa") + s(b"\1\0\1") + s(b"\x7f" + b"\xff" * 63)),
    "krl_explicit_key_garbage": header() + hashes(EXPLICIT_KEY, b"\xff" * 40),
    "krl_explicit_key_certificate": header()
    + hashes(EXPLICIT_KEY, s("ssh-ed25519-cert-v01@openssh.com") + s(b"\0" * 32)),
    "krl_empty_explicit_key_section": header() + section(EXPLICIT_KEY, b""),
    "krl_sha1_wrong_length": header() + hashes(SHA1, b"\1" * 32),
    "krl_sha256_wrong_length": header() + hashes(SHA256, b"\1" * 31),
    "krl_sha256_unsorted": header() + hashes(SHA256, b"\2" * 32, b"\1" * 32),
    "krl_sha256_duplicate": header() + hashes(SHA256, b"\1" * 32, b"\1" * 32),
    "krl_empty_sha1_section": header() + section(SHA1, b""),
    "krl_section_after_signature": signed(header()) + certs(serial_list(1)),
    "krl_signed_twice_same_key": signed(signed(GOOD)),
    "krl_signature_truncated": GOOD + bytes([SIGNATURE]) + s(SIGNER_KEY),
    "krl_signature_key_wrong_type": signed(GOOD, key=s("ssh-foo") + s(b"\1")),
    # Serial 9 turned into 8 after signing: still well-formed, no longer what was signed.
    "krl_signature_invalid": signed(GOOD).replace(u64(9), u64(8), 1),
    "krl_signed_by_revoked_key": signed(header() + hashes(EXPLICIT_KEY, SIGNER_KEY)),
}


# name → (CA key for -s, or "none" for any CA; spec lines; update: the KRL to start from)
VALID_SPECS: dict[str, tuple[str, list[str], str | None]] = {
    "serials": (
        "ca1.pub",
        [
            "serial: 1",
            "serial: 5-9",
            "serial: 0x7f",
            *(f"serial: {serial}" for serial in range(1000, 1400, 3)),
            *(f"serial: {serial}" for serial in (70000, 123456789, 2**40 + 7, 2**63)),
            "serial: 18446744073709551600-18446744073709551615",
            "id: alice",
            "id: deploy-bot@example.org",
        ],
        None,
    ),
    "any_ca": ("none", ["id: mallory", "serial: 42", "serial: 100-200"], None),
    "keys": (
        "ca1.pub",
        [
            "key: KEY(user1.pub)",
            "sha1: KEY(user2.pub)",
            "sha256: KEY(ecdsa.pub)",
            "hash: FP(rsa.pub)",
            "KEY(user3.pub)",
            "KEY(user1-cert.pub)",
        ],
        None,
    ),
    "updated": ("ca2.pub", ["serial: 2-3", "serial: 1000", "id: alice", "id: bob"], "serials"),
}


def _ssh_keygen(*argv: str) -> str:
    return subprocess.run(["ssh-keygen", *argv], check=True, capture_output=True, text=True).stdout


def write_valid() -> None:
    """Keys (public halves only are kept), spec files and the KRLs ssh-keygen writes."""
    target = HERE / "krl" / "valid"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name, kind in (
        ("ca1", "ed25519"),
        ("ca2", "ed25519"),
        ("user1", "ed25519"),
        ("user2", "ed25519"),
        ("user3", "ed25519"),
        ("ecdsa", "ecdsa"),
        ("rsa", "rsa"),
    ):
        _ssh_keygen("-q", "-t", kind, "-N", "", "-C", name, "-f", str(target / name))
    # A certificate in a spec revokes its serial under its CA (ssh_krl_revoke_key).
    _ssh_keygen(
        "-q", "-s", str(target / "ca1"), "-I", "user1", "-z", "777", str(target / "user1.pub")
    )
    for secret in target.glob("*"):
        if secret.suffix != ".pub":
            secret.unlink()
    for name, (ca, lines, update) in VALID_SPECS.items():
        spec = []
        for template in lines:
            line = template
            for marker, render in (
                ("KEY(", lambda pub: (target / pub).read_text().strip()),
                ("FP(", lambda pub: _ssh_keygen("-l", "-f", str(target / pub)).split()[1]),
            ):
                if marker in line:
                    before, _, pub = line.partition(marker)
                    line = before + render(pub.rstrip(")"))
            spec.append(line)
        (target / f"{name}.spec").write_text("\n".join(spec) + "\n")
        krl = target / f"{name}.krl"
        argv = ["-k", "-f", str(krl), "-s", ca if ca == "none" else str(target / ca)]
        if update:
            shutil.copy(target / f"{update}.krl", krl)
            argv.append("-u")
        version = str(len(name))  # any fixed number: ssh-keygen's -z sets the KRL version
        _ssh_keygen(*argv, "-z", version, "-C", f"corpus {name}", str(target / f"{name}.spec"))
    print(f"wrote {len(VALID_SPECS)} KRLs by ssh-keygen under {target}")


def main() -> None:
    if "--valid" in sys.argv[1:]:
        write_valid()
    write_corpus(HERE / "krl", ".krl", KRLS)
    print(f"wrote {len(KRLS)} KRLs under {HERE / 'krl'}")


if __name__ == "__main__":
    main()
