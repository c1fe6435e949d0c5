"""Every malformed KRL of the corpus is refused, with the reason its name promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from nixwarden.ca.krl import Krl
from nixwarden.errors import FormatError
from tests.corpus.make_krl_corpus import KRLS

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "krl"

KRL_REASONS = {
    "krl_bad_format_version": "unsupported format version 2",
    "krl_bad_magic": "wrong magic",
    "krl_bitmap_empty": "serial bitmap revokes nothing",
    "krl_bitmap_leading_zero": "superfluous leading zero",
    "krl_bitmap_negative": "serial bitmap is negative",
    "krl_bitmap_serial_zero": "serial bitmap revokes serial 0",
    "krl_bitmap_too_large": "2049 bytes is larger than 2048 bytes",
    "krl_bitmap_wraps": "reaches past serial 2^64-1",
    "krl_ca_key_certificate": "CA key is a certificate",
    "krl_ca_key_ecdsa_off_curve": "point is not on nistp256",
    "krl_ca_key_rsa_too_short": "RSA modulus shorter than 1024 bits",
    "krl_ca_key_short": "Ed25519 public key must be 32 bytes",
    "krl_ca_key_trailing_bytes": "1 trailing byte in CA key",
    "krl_ca_key_wrong_type": "CA key has an unexpected type 'ssh-foo'",
    "krl_cert_extension_subsection": "unknown certificate subsection type 0x39",
    "krl_cert_section_without_subsections": "certificates section without subsections",
    "krl_cert_subsection_truncated": "truncated certificate subsection",
    "krl_comment_not_utf8": "comment is not UTF-8",
    "krl_comment_nul": "comment contains NUL",
    "krl_duplicate_serials": "serial list is not ascending (5 after 5)",
    "krl_empty_explicit_key_section": "empty explicit key section",
    "krl_empty_file": "wrong magic",
    "krl_empty_key_id_subsection": "empty key id subsection",
    "krl_empty_serial_list": "empty serial list",
    "krl_empty_sha1_section": "empty SHA1 fingerprint section",
    "krl_explicit_key_certificate": "explicit key is a certificate",
    "krl_explicit_key_garbage": "absurd explicit key type length",
    "krl_extension_section": "unknown section type 0xff",
    "krl_huge_count": "absurd certificates section length 4294967280",
    "krl_key_id_not_utf8": "key id is not UTF-8",
    "krl_key_id_nul": "key id contains NUL",
    "krl_range_from_zero": "serial range starts at serial 0",
    "krl_range_inverted": "inverted serial range 20-10",
    "krl_range_trailing_bytes": "8 trailing bytes in a serial range subsection",
    "krl_section_after_signature": "certificates section after a signature",
    "krl_serial_list_ragged": "serial list of 12 bytes is not a multiple of 8",
    "krl_serial_zero": "serial list revokes serial 0",
    "krl_sha1_wrong_length": "SHA1 fingerprint of 32 bytes (must be 20)",
    "krl_sha256_duplicate": "SHA256 fingerprints are not in ascending order",
    "krl_sha256_unsorted": "SHA256 fingerprints are not in ascending order",
    "krl_sha256_wrong_length": "SHA256 fingerprint of 31 bytes (must be 32)",
    "krl_signature_invalid": "does not verify",
    "krl_signature_key_wrong_type": "signature key has an unexpected type 'ssh-foo'",
    "krl_signature_truncated": "truncated signature",
    "krl_signed_by_revoked_key": "every key that signed it is revoked by it",
    "krl_signed_twice_same_key": "signed twice with the same key",
    "krl_trailing_bytes": "3 trailing bytes after the last section",
    "krl_truncated_header": "truncated header",
    "krl_truncated_magic": "truncated header (magic)",
    "krl_truncated_section": "truncated certificates section",
    "krl_unknown_cert_subsection": "unknown certificate subsection type 0x24",
    "krl_unknown_section": "unknown section type 0x06",
    "krl_unsorted_serials": "serial list is not ascending (3 after 9)",
}


def _files() -> dict[str, Path]:
    return {path.stem: path for path in sorted(CORPUS.glob("*.krl"))}


def test_every_corpus_file_has_an_expected_reason_and_vice_versa() -> None:
    assert set(_files()) == set(KRL_REASONS)


def test_corpus_on_disk_is_what_the_generator_writes() -> None:
    files = _files()
    assert set(KRLS) == set(files)
    stale = [name for name, data in KRLS.items() if files[name].read_bytes() != data]
    assert stale == [], "run .venv/bin/python -m tests.corpus.make_krl_corpus"


@pytest.mark.parametrize("name", sorted(KRL_REASONS))
def test_krl_corpus_is_refused_with_its_reason(name: str) -> None:
    with pytest.raises(FormatError) as refused:
        Krl.parse(_files()[name].read_bytes())
    message = str(refused.value)
    assert message.startswith("KRL: ")
    assert KRL_REASONS[name] in message
    assert "\n" not in message
