"""Writes the corpus of bad certificates: one file per attack, named after it.

Run from the repository: `.venv/bin/python -m tests.corpus.make_cert_corpus`. The
certificates are assembled here field by field from raw bytes (not with nixwarden's
or cryptography's certificate code), signed with fixed keys and a fixed nonce, so
the files are the same on every run. tests/unit/test_ca_corpus.py lists what each
file must be refused with: `MALFORMED` (a format error, exit 2) or `REFUSED` (a valid
certificate that the policy in that test must not accept, with its reason).
"""

from __future__ import annotations

import base64
import calendar
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HERE = Path(__file__).parent / "cert"
CERT_TYPE = b"ssh-ed25519-cert-v01@openssh.com"
CA_SEED = bytes(range(32))
OTHER_CA_SEED = bytes(range(32, 64))
KEY_SEED = bytes(range(64, 96))
NONCE = b"n" * 32
KEY_ID = "alice-1"
# The policy in the corpus test checks at AT, requires the principal `deploy` and a
# validity of at most 400 days.
AT = calendar.timegm((2026, 6, 1, 0, 0, 0))
AFTER = calendar.timegm((2026, 1, 1, 0, 0, 0))
BEFORE = calendar.timegm((2027, 1, 1, 0, 0, 0))
FOREVER = 2**64 - 1


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return u32(len(raw)) + raw


def public(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def ed25519_key(seed: bytes) -> bytes:
    return s("ssh-ed25519") + s(public(seed))


def options(*pairs: tuple[str, bytes]) -> bytes:
    return b"".join(s(name) + s(data) for name, data in pairs)


def body(
    *,
    inner_type: bytes = CERT_TYPE,
    key: bytes | None = None,
    serial: int = 42,
    kind: int = 1,
    key_id: bytes | str = KEY_ID,
    principals: bytes | None = None,
    after: int = AFTER,
    before: int = BEFORE,
    critical: bytes = b"",
    extensions: bytes = b"",
    ca_key: bytes | None = None,
) -> bytes:
    """Every field up to and including the signature key: what the CA signs."""
    return (
        s(inner_type)
        + s(NONCE)
        + (s(public(KEY_SEED)) if key is None else key)
        + u64(serial)
        + u32(kind)
        + s(key_id)
        + s(s("deploy") + s("build") if principals is None else principals)
        + u64(after)
        + u64(before)
        + s(critical)
        + s(extensions)
        + s(b"")
        + s(ed25519_key(CA_SEED) if ca_key is None else ca_key)
    )


def signed(signed_part: bytes, *, seed: bytes = CA_SEED, sig_type: str = "ssh-ed25519") -> bytes:
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(signed_part)
    return signed_part + s(s(sig_type) + s(signature))


def line(blob: bytes, key_type: bytes = CERT_TYPE) -> bytes:
    return key_type + b" " + base64.b64encode(blob) + b" " + KEY_ID.encode() + b"\n"


def cert(**fields: object) -> bytes:
    return line(signed(body(**fields)))  # type: ignore[arg-type]


GOOD = signed(body())
flipped = bytearray(GOOD)
flipped[-1] ^= 1
tampered = bytearray(GOOD)
tampered[body().index(u64(42)) + 7] = 43  # serial 42 -> 43 after signing

CORPUS: dict[str, bytes] = {
    # malformed: refused by the parser, exit 2
    "cert_truncated": line(GOOD[:-20]),
    "cert_trailing_bytes": line(GOOD + b"\0\0\0\0"),
    "cert_host_type": cert(kind=2),
    "cert_unknown_type": cert(kind=3),
    "cert_ca_key_rsa": line(
        body(ca_key=s("ssh-rsa") + s(b"\x01\x00\x01") + s(b"\x00" + b"\xc5" * 256))
        + s(s("rsa-sha2-512") + s(b"\x11" * 256))
    ),
    "cert_ca_key_ecdsa": line(
        body(ca_key=s("ecdsa-sha2-nistp256") + s("nistp256") + s(b"\x04" + b"\x22" * 64))
        + s(s("ecdsa-sha2-nistp256") + s(s(b"\x01" * 32) + s(b"\x02" * 32)))
    ),
    "cert_chained_ca": line(
        body(ca_key=s(CERT_TYPE) + s(NONCE) + s(public(OTHER_CA_SEED))) + s(b"")
    ),
    "cert_duplicate_critical_option": cert(
        critical=options(("force-command", s("ls")), ("force-command", s("id")))
    ),
    "cert_unsorted_critical_options": cert(
        critical=options(("source-address", s("10.0.0.1")), ("force-command", s("ls")))
    ),
    "cert_duplicate_extension": cert(extensions=options(("permit-pty", b""), ("permit-pty", b""))),
    "cert_unsorted_extensions": cert(
        extensions=options(("permit-pty", b""), ("permit-X11-forwarding", b""))
    ),
    "cert_huge_principal_count": cert(principals=b"".join(s(f"p{i}") for i in range(257))),
    "cert_absurd_principals_length": line(
        body()[: body().index(s(s("deploy") + s("build")))] + u32(0xFFFFFFF0) + b"deploy"
    ),
    "cert_absurd_key_id_length": line(
        body()[: body().index(s(KEY_ID))] + u32(0x7FFFFFFF) + KEY_ID.encode()
    ),
    "cert_bad_signature": line(bytes(flipped)),
    "cert_tampered_serial": line(bytes(tampered)),
    "cert_signed_by_other_key": line(signed(body(), seed=OTHER_CA_SEED)),
    "cert_short_public_key": cert(key=s(public(KEY_SEED)[:31])),
    "cert_nul_in_key_id": cert(key_id=b"alice-1\0admin"),
    "cert_non_utf8_principal": cert(principals=s(b"deploy\xff")),
    "cert_empty_key_id": cert(key_id=b""),
    "cert_empty_principal": cert(principals=s("deploy") + s("")),
    "cert_inner_type_mismatch": cert(inner_type=b"ssh-rsa-cert-v01@openssh.com"),
    "cert_rsa_certificate": line(GOOD, b"ssh-rsa-cert-v01@openssh.com"),
    "cert_plain_key": b"ssh-ed25519 " + base64.b64encode(ed25519_key(KEY_SEED)) + b" alice-1\n",
    "cert_not_base64": CERT_TYPE + b" AAAA!!!!\n",
    "cert_never_valid": cert(after=BEFORE, before=AFTER),
    "cert_signature_type_mismatch": line(signed(body(), sig_type="ssh-rsa")),
    "cert_signature_trailing_bytes": line(body() + s(s("ssh-ed25519") + s(GOOD[-64:]) + b"\0")),
    "cert_empty_file": b"",
    # valid certificates that the policy must refuse, exit 1
    "cert_expired": cert(after=AFTER - 86400 * 30, before=AFTER),
    "cert_not_yet_valid": cert(after=BEFORE, before=BEFORE + 86400),
    "cert_unknown_critical_option": cert(critical=options(("restrict@example.com", b""))),
    "cert_force_command_option": cert(critical=options(("force-command", s("true")))),
    "cert_no_principals": cert(principals=b""),
    "cert_wrong_principal": cert(principals=s("build")),
    "cert_untrusted_ca": line(signed(body(ca_key=ed25519_key(OTHER_CA_SEED)), seed=OTHER_CA_SEED)),
    "cert_validity_too_long": cert(after=0, before=FOREVER),
}


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for stale in HERE.glob("cert_*"):
        stale.unlink()
    for name, data in CORPUS.items():
        (HERE / f"{name}.cert").write_bytes(data)
    print(f"wrote {len(CORPUS)} files to {HERE}")


if __name__ == "__main__":
    main()
