"""KRLs: reading what ssh-keygen wrote, lookups with OpenSSH's semantics, writing, bounds."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nixwarden.ca import krl as krl_module
from nixwarden.ca.krl import U64_MAX, CertRef, Krl, RevokedCertificates, SerialSet
from nixwarden.ca.sshkey import fingerprint as ssh_fingerprint
from nixwarden.errors import FormatError, InvalidInput
from tests.corpus.make_krl_corpus import (
    CA,
    EXPLICIT_KEY,
    GOOD,
    OTHER,
    SERIAL_LIST,
    SIGNER_KEY,
    USER,
    bitmap,
    certs,
    hashes,
    header,
    key_ids,
    serial_list,
    serial_range,
    signed,
)

VALID = Path(__file__).resolve().parents[1] / "corpus" / "krl" / "valid"


def blob(pub: str) -> bytes:
    """The wire blob of a public key (or certificate) file of the valid corpus."""
    return base64.b64decode((VALID / pub).read_text().split()[1])


def krl_file(name: str) -> Krl:
    return Krl.parse((VALID / f"{name}.krl").read_bytes())


def spec_serials(name: str) -> set[int]:
    """The serials a spec file revokes, read the simple way: one by one."""
    revoked: set[int] = set()
    for line in (VALID / f"{name}.spec").read_text().splitlines():
        if line.startswith("serial:"):
            low, _, high = line.removeprefix("serial:").strip().partition("-")
            revoked.update(range(int(low, 0), int(high or low, 0) + 1))
    return revoked


ED25519_USER = blob("user3.pub")
SECOND_SIGNER = Ed25519PrivateKey.from_private_bytes(b"\x77" * 32)


# --- reading what ssh-keygen wrote ------------------------------------------------------------


@pytest.mark.parametrize("name", ["serials", "any_ca", "keys", "updated"])
def test_ssh_keygen_krls_are_written_back_byte_for_byte(name: str) -> None:
    data = (VALID / f"{name}.krl").read_bytes()
    parsed = Krl.parse(data)
    assert parsed.to_bytes() == data
    assert parsed.comment == f"corpus {name}"
    assert parsed.version == len(name)
    assert parsed.generated_date > 1_700_000_000


def test_serials_revoke_exactly_the_spec_and_say_how() -> None:
    krl = krl_file("serials")
    ca = blob("ca1.pub")
    revoked = spec_serials("serials")
    assert len(revoked) == 161
    probes = revoked | {serial + delta for serial in revoked for delta in (-1, 1)}
    probes |= {0, 2, 4, 10, 2**63 - 1, 2**63 + 1, U64_MAX - 16}
    for serial in sorted(probes):
        if not 0 <= serial <= U64_MAX:
            continue
        reason = krl.revocation(ED25519_USER, CertRef(ca, serial, "nobody"))
        assert (reason is not None) == (serial in revoked), serial
    assert krl.revocation(ED25519_USER, CertRef(ca, 1, "x")) == "revoked: serial 1"
    assert krl.revocation(ED25519_USER, CertRef(ca, 7, "x")) == "revoked: serial range 5-9"
    assert (
        krl.revocation(ED25519_USER, CertRef(ca, U64_MAX, "x"))
        == f"revoked: serial range {U64_MAX - 15}-{U64_MAX}"
    )


def test_key_ids_serial_zero_and_other_cas() -> None:
    krl = krl_file("serials")
    ca = blob("ca1.pub")
    assert krl.revocation(ED25519_USER, CertRef(ca, 0, "alice")) == "revoked: key id alice"
    assert krl.revocation(ED25519_USER, CertRef(ca, 1, "alice")) == "revoked: key id alice"
    assert krl.revocation(ED25519_USER, CertRef(ca, 0, "Alice")) is None
    # Serial 0 means "no serial": never revoked by serial.
    assert krl.revocation(ED25519_USER, CertRef(ca, 0, "bob")) is None
    # The same serial and key id under another CA are not revoked.
    assert krl.revocation(ED25519_USER, CertRef(blob("ca2.pub"), 1, "alice")) is None
    # A plain key is never revoked by serial or key id.
    assert krl.revocation(ED25519_USER) is None


def test_any_ca_section_applies_to_every_ca() -> None:
    krl = krl_file("any_ca")
    assert krl.certificates[0].ca_key_blob is None
    for ca in (blob("ca1.pub"), blob("ca2.pub")):
        assert krl.revocation(ED25519_USER, CertRef(ca, 150, "x")) == (
            "revoked: serial range 100-200 (any CA)"
        )
        assert krl.revocation(ED25519_USER, CertRef(ca, 0, "mallory")) == (
            "revoked: key id mallory (any CA)"
        )
        assert krl.revocation(ED25519_USER, CertRef(ca, 43, "x")) is None


def test_keys_by_explicit_blob_sha1_sha256_and_certificate_line() -> None:
    krl = krl_file("keys")
    assert len(krl.keys) == 2 and len(krl.sha1) == 1 and len(krl.sha256) == 2
    for pub in ("user1.pub", "user2.pub", "user3.pub", "ecdsa.pub", "rsa.pub"):
        key = blob(pub)
        assert krl.revocation(key) == f"revoked: key {ssh_fingerprint(key)}", pub
    # A certificate's own key revoked: the certificate is revoked, whatever its CA.
    cert_of_user1 = CertRef(blob("ca2.pub"), 5, "user1")
    assert krl.revocation(blob("user1.pub"), cert_of_user1) is not None
    # "user1-cert.pub" in the spec revoked serial 777 of ca1 (ssh_krl_revoke_key).
    unrevoked_key = blob("ca2.pub")
    assert krl.revocation(unrevoked_key, CertRef(blob("ca1.pub"), 777, "x")) == (
        "revoked: serial 777"
    )
    assert krl.revocation(unrevoked_key, CertRef(blob("ca1.pub"), 778, "x")) is None


def test_a_revoked_ca_key_revokes_its_certificates() -> None:
    ca_key = blob("user1.pub")  # revoked explicitly in keys.krl; here it acts as a CA
    krl = krl_file("keys")
    reason = krl.revocation(blob("ca2.pub"), CertRef(ca_key, 9, "someone"))
    assert reason == f"revoked: CA key {ssh_fingerprint(ca_key)}"


def test_update_appends_a_second_ca_and_keeps_the_first() -> None:
    krl = krl_file("updated")
    ca1, ca2 = blob("ca1.pub"), blob("ca2.pub")
    assert [section.ca_key_blob for section in krl.certificates] == [ca1, ca2]
    assert krl.revocation(ED25519_USER, CertRef(ca2, 3, "x")) == "revoked: serial range 2-3"
    assert krl.revocation(ED25519_USER, CertRef(ca2, 0, "bob")) == "revoked: key id bob"
    assert krl.revocation(ED25519_USER, CertRef(ca1, 0, "bob")) is None
    assert krl.revocation(ED25519_USER, CertRef(ca1, 127, "x")) == "revoked: serial 127"


def test_revocation_wants_the_plain_key_not_the_certificate() -> None:
    with pytest.raises(ValueError, match="plain blob"):
        krl_file("keys").revocation(blob("user1-cert.pub"))


# --- reading hand-made KRLs -----------------------------------------------------------------


def test_subsections_out_of_order_overlapping_and_repeated_cas_are_merged() -> None:
    data = (
        header()
        + certs(serial_list(10, 20, 30), serial_range(3, 5), bitmap(1, b"\x05"))
        + certs(serial_list(6, 21), key_ids(b"bob"))
        + certs(serial_list(7), ca=OTHER)
    )
    krl = Krl.parse(data)
    assert len(krl.certificates) == 2
    serials = krl.certificates[0].serials
    # 1, 3 (bitmap), 3-5, 6, 10, 20, 21, 30: touching runs become one interval.
    assert list(serials.intervals()) == [(1, 1), (3, 6), (10, 10), (20, 21), (30, 30)]
    assert serials.count() == 9
    assert krl.certificates[0].key_ids == frozenset({"bob"})
    assert list(krl.certificates[1].serials.intervals()) == [(7, 7)]


def test_adjacent_list_serials_become_one_interval() -> None:
    krl = Krl.parse(header() + certs(serial_list(1, 2, 3, 7, 9, 10)))
    assert list(krl.certificates[0].serials.intervals()) == [(1, 3), (7, 7), (9, 10)]


def test_bitmap_bits_map_to_offset_plus_index() -> None:
    # 0b1011_0001 at offset 100: bits 0, 4, 5, 7 → 100, 104-105, 107.
    krl = Krl.parse(header() + certs(bitmap(100, b"\x00\xb1")))
    assert list(krl.certificates[0].serials.intervals()) == [(100, 100), (104, 105), (107, 107)]


def test_largest_bitmap_openssh_reads_is_accepted() -> None:
    bits = b"\x00" + b"\xff" * 2048  # 16384 bits, the top one set: a leading zero is required
    krl = Krl.parse(header() + certs(bitmap(1, bits)))
    assert list(krl.certificates[0].serials.intervals()) == [(1, 16384)]


def test_header_fields_and_reserved_fields() -> None:
    data = (
        krl_module.MAGIC
        + b"\0\0\0\1"
        + (2**64 - 1).to_bytes(8, "big")
        + (1234).to_bytes(8, "big")
        + (7).to_bytes(8, "big")
        + b"\0\0\0\3abc"  # reserved: ignored, as by OpenSSH
        + b"\0\0\0\6h\xc3\xa9llo"
    )
    krl = Krl.parse(data)
    assert (krl.version, krl.generated_date, krl.flags, krl.comment) == (U64_MAX, 1234, 7, "héllo")
    assert krl.certificates == () and krl.signatures == ()
    with pytest.raises(InvalidInput, match="past 2\\^64-1"):
        krl.revoking(None, serials=[1], now=1)


def test_a_signed_krl_exposes_what_its_signature_covers() -> None:
    data = signed(GOOD)
    krl = Krl.parse(data)
    (signature,) = krl.signatures
    assert signature.key_blob == SIGNER_KEY
    assert data[: signature.signed_length].endswith(SIGNER_KEY)
    # Signatures cannot survive a change, and nixwarden does not write them.
    assert krl.revoking(None, serials=[99], now=5).signatures == ()
    assert Krl.parse(krl.to_bytes()) == dataclasses.replace(krl, signatures=())


def test_hash_sections_need_not_be_ordered_between_sections() -> None:
    low, high = b"\x01" * 32, b"\x02" * 32
    krl = Krl.parse(header() + hashes(5, high) + hashes(5, low, high))
    assert krl.sha256 == frozenset({low, high})


def test_every_prefix_of_a_valid_krl_is_a_krl_or_refused() -> None:
    data = (VALID / "serials.krl").read_bytes()
    accepted = 0
    for end in range(len(data)):
        try:
            Krl.parse(data[:end])
        except FormatError as refused:
            assert "\n" not in str(refused)
        else:
            accepted += 1
    assert accepted == 1  # the header alone, before the one certificates section


# --- bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "value", "data", "message"),
    [
        ("MAX_SERIAL_INTERVALS", 3, header() + certs(serial_list(1, 3, 5, 7)), "more than 3"),
        ("MAX_SERIAL_INTERVALS", 2, header() + certs(bitmap(1, b"\x15")), "more than 2"),
        ("MAX_KEY_IDS", 1, header() + certs(key_ids(b"a", b"b")), "more than 1 revoked key id"),
        ("MAX_BLOBS", 1, header() + hashes(3, b"\1" * 20) + hashes(5, b"\1" * 32), "more than 1"),
        (
            "MAX_CA_KEYS",
            1,
            header() + certs(serial_list(1)) + certs(serial_list(1), ca=OTHER),
            "more than 1 CA",
        ),
        ("MAX_KRL_SIZE", 60, GOOD, "larger than"),
        ("MAX_SIGNATURES", 1, signed(signed(GOOD), SECOND_SIGNER), "more than 1 signatures"),
    ],
)
def test_counts_and_sizes_are_bounded(
    monkeypatch: pytest.MonkeyPatch, limit: str, value: int, data: bytes, message: str
) -> None:
    Krl.parse(data)  # fine within the real limits
    monkeypatch.setattr(krl_module, limit, value)
    with pytest.raises(FormatError, match=message):
        Krl.parse(data)


# --- writing ------------------------------------------------------------------------------


def test_empty_and_revoking_make_new_versions() -> None:
    empty = Krl.empty(comment="team CA", now=10)
    assert (empty.version, empty.generated_date, empty.comment) == (0, 10, "team CA")
    assert Krl.parse(empty.to_bytes()) == empty
    first = empty.revoking(CA, serials=[42, 7], serial_ranges=[(10, 20)], key_ids=["alice"], now=11)
    second = first.revoking(CA, serials=[21], keys=[USER], sha256=[b"\3" * 32], now=12)
    third = second.revoking(None, key_ids=["mallory"], sha1=[b"\4" * 20], now=13)
    assert (first.version, second.version, third.version) == (1, 2, 3)
    assert third.generated_date == 13 and third.comment == "team CA"
    assert empty.certificates == ()  # unchanged: values, not objects that change
    assert list(third.certificates[0].serials.intervals()) == [(7, 7), (10, 21), (42, 42)]
    assert third.certificates[1] == RevokedCertificates(None, SerialSet(), frozenset({"mallory"}))
    assert Krl.parse(third.to_bytes()) == third
    assert third.revocation(USER) == f"revoked: key {ssh_fingerprint(USER)}"
    assert third.revocation(OTHER, CertRef(CA, 15, "x")) == "revoked: serial range 10-21"
    assert third.revocation(OTHER, CertRef(OTHER, 15, "mallory")) == (
        "revoked: key id mallory (any CA)"
    )


def test_keys_and_hashes_alone_make_no_certificates_section() -> None:
    krl = Krl.empty().revoking(CA, keys=[USER], now=1)
    assert krl.certificates == ()
    assert Krl.parse(krl.to_bytes()).keys == frozenset({USER})


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"serials": [0]}, InvalidInput, "serial 0 cannot be revoked"),
        ({"serials": [2**64]}, InvalidInput, "cannot be revoked"),
        ({"serial_ranges": [(5, 4)]}, InvalidInput, "invalid serial range 5-4"),
        ({"serial_ranges": [(0, 4)]}, InvalidInput, "serial 0"),
        ({"key_ids": ["a\0b"]}, InvalidInput, "key id contains NUL"),
        ({"sha1": [b"\1" * 32]}, InvalidInput, "SHA1 fingerprint must be 20 bytes"),
        ({"sha256": [b"\1" * 20]}, InvalidInput, "SHA256 fingerprint must be 32 bytes"),
        ({"keys": [b"\0\0\0\3abc"]}, FormatError, "unexpected type"),
        ({"now": -1}, InvalidInput, "not a u64"),
    ],
)
def test_revoking_refuses_what_no_krl_can_hold(
    arguments: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Krl.empty().revoking(CA, **{"now": 1, **arguments})  # type: ignore[arg-type]


def test_revoking_refuses_a_certificate_as_ca_key() -> None:
    with pytest.raises(FormatError, match="is a certificate"):
        Krl.empty().revoking(blob("user1-cert.pub"), serials=[1], now=1)


def test_dense_serials_never_make_a_bitmap_openssh_cannot_read() -> None:
    # ssh-keygen would put these in one bitmap of 12,500 bytes and then refuse to read it.
    krl = Krl.empty().revoking(CA, serials=range(1, 100_001, 8), now=1)
    data = krl.to_bytes()
    assert Krl.parse(data) == krl
    assert len(data) < 15_000


def test_writer_rebuilds_ssh_keygen_bytes_from_the_revocations_alone() -> None:
    krl = krl_file("serials")
    rebuilt = Krl.empty(comment=krl.comment, now=krl.generated_date)
    for revoked in krl.certificates:
        rebuilt = rebuilt.revoking(
            revoked.ca_key_blob,
            serial_ranges=list(revoked.serials.intervals()),
            key_ids=revoked.key_ids,
            now=krl.generated_date,
        )
    rebuilt = dataclasses.replace(rebuilt, version=krl.version)
    assert rebuilt.to_bytes() == (VALID / "serials.krl").read_bytes()


def test_long_runs_are_written_as_ranges_short_ones_as_lists_or_bitmaps() -> None:
    data = Krl.empty().revoking(CA, serial_ranges=[(1, 100_000)], serials=[2**40], now=1).to_bytes()
    assert (
        bytes([0x21]) + b"\0\0\0\x10" + (1).to_bytes(8, "big") + (100_000).to_bytes(8, "big")
        in data
    )
    assert bytes([SERIAL_LIST]) + b"\0\0\0\x08" + (2**40).to_bytes(8, "big") in data


def test_krls_pickle_for_worker_processes() -> None:
    krl = krl_file("updated")
    copy = pickle.loads(pickle.dumps(krl))  # noqa: S301 - our own bytes
    assert copy == krl
    assert copy.revocation(ED25519_USER, CertRef(blob("ca2.pub"), 1000, "x")) is not None


def test_serial_set_merges_and_finds() -> None:
    serials = SerialSet.of([(10, 20), (1, 1), (21, 25), (15, 16), (30, 30), (2, 2)])
    assert list(serials.intervals()) == [(1, 2), (10, 25), (30, 30)]
    assert len(serials) == 3 and serials.count() == 19
    assert serials.find(17) == (10, 25) and serials.find(26) is None and serials.find(0) is None
    assert 30 in serials and 31 not in serials and -1 not in serials and 2**64 not in serials
    assert repr(serials) == "SerialSet(3 intervals, 19 serials)"
    assert hash(serials) == hash(SerialSet.of([(30, 30), (1, 2), (10, 25)]))


def test_ssh_fingerprint_matches_ssh_keygen() -> None:
    spec = (VALID / "keys.spec").read_text()
    rsa = blob("rsa.pub")
    assert f"hash: {ssh_fingerprint(rsa)}\n" in spec
    assert ssh_fingerprint(rsa) == "SHA256:" + base64.b64encode(
        hashlib.sha256(rsa).digest()
    ).decode().rstrip("=")


def test_an_explicit_section_holds_any_plain_key_type() -> None:
    keys = [blob(pub) for pub in ("user1.pub", "ecdsa.pub", "rsa.pub")]
    krl = Krl.parse(header() + hashes(EXPLICIT_KEY, *sorted(keys)))
    assert krl.keys == frozenset(keys)
    with pytest.raises(FormatError, match="truncated"):
        Krl.parse(header() + hashes(EXPLICIT_KEY, keys[0][:-1]))
