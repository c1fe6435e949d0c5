"""Every file of the bad-certificate corpus is refused, with the reason its name promises.

`MALFORMED` files are refused by the parser (`ca show` and `verify` exit 2);
`REFUSED` files are well-formed certificates the policy must not accept (verification
fails, exit 1). See tests/corpus/make_cert_corpus.py for how each was made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nixwarden.ca import policy
from nixwarden.ca.cert import Certificate
from nixwarden.cli import main
from nixwarden.errors import FormatError
from tests.corpus import make_cert_corpus as corpus

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "cert"

MALFORMED = {
    "cert_absurd_key_id_length": "key id of 2147483647 bytes is longer than the 1024 allowed",
    "cert_absurd_principals_length": "principals of 4294967280 bytes is longer than",
    "cert_bad_signature": "the CA's signature does not verify",
    "cert_ca_key_ecdsa": "CA key type 'ecdsa-sha2-nistp256' is not accepted",
    "cert_ca_key_rsa": "CA key type 'ssh-rsa' is not accepted",
    "cert_chained_ca": "chained certificates are not supported",
    "cert_duplicate_critical_option": "duplicate critical option 'force-command'",
    "cert_duplicate_extension": "duplicate extension 'permit-pty'",
    "cert_empty_file": "no certificate found",
    "cert_empty_key_id": "empty key id",
    "cert_empty_principal": "empty principal",
    "cert_host_type": "host certificate",
    "cert_huge_principal_count": "more than 256 principals",
    "cert_inner_type_mismatch": "inner type 'ssh-rsa-cert-v01@openssh.com'",
    "cert_never_valid": "never valid",
    "cert_non_utf8_principal": "principal is not UTF-8",
    "cert_not_base64": "not base64",
    "cert_nul_in_key_id": "key id contains NUL",
    "cert_plain_key": "ssh-ed25519 is not a certificate type",
    "cert_rsa_certificate": "ssh-rsa-cert-v01@openssh.com certificates are not accepted",
    "cert_short_public_key": "public key of 31 bytes, expected 32",
    "cert_signature_trailing_bytes": "1 trailing byte after the signature bytes",
    "cert_signature_type_mismatch": "signature type 'ssh-rsa' does not match",
    "cert_signed_by_other_key": "the CA's signature does not verify",
    "cert_tampered_serial": "the CA's signature does not verify",
    "cert_trailing_bytes": "4 trailing bytes after the signature",
    "cert_truncated": "truncated in signature",
    "cert_unknown_type": "unknown certificate type 3",
    "cert_unsorted_critical_options": "critical options not sorted",
    "cert_unsorted_extensions": "extensions not sorted",
}

REFUSED = {
    "cert_expired": "expired 2026-01-01T00:00Z",
    "cert_force_command_option": "unknown critical option force-command",
    "cert_no_principals": "no principals",
    "cert_not_yet_valid": "not valid before 2027-01-01T00:00Z",
    "cert_unknown_critical_option": "unknown critical option restrict@example.com",
    "cert_untrusted_ca": "certified by an untrusted CA SHA256:",
    "cert_validity_too_long": "valid always to forever, longer than max_validity 57w1d",
    "cert_wrong_principal": "principal deploy not in [build]",
}

RULES = policy.Rules(principals=("deploy",), max_validity=400 * 86400)


def _files() -> dict[str, Path]:
    return {path.stem: path for path in sorted(CORPUS.iterdir())}


def test_every_corpus_file_has_an_expected_reason_and_vice_versa() -> None:
    assert not set(MALFORMED) & set(REFUSED)
    assert set(_files()) == set(MALFORMED) | set(REFUSED)
    assert set(_files()) == set(corpus.CORPUS)


def test_the_corpus_on_disk_is_what_the_generator_writes() -> None:
    for name, path in _files().items():
        assert path.read_bytes() == corpus.CORPUS[name], f"rerun make_cert_corpus: {name}"


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_certificates_are_refused_with_their_reason(name: str) -> None:
    with pytest.raises(FormatError) as refused:
        Certificate.parse(_files()[name].read_bytes(), name)
    message = str(refused.value)
    assert MALFORMED[name] in message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_certificates_parse_but_do_not_certify(name: str) -> None:
    certificate = Certificate.parse(_files()[name].read_bytes(), name)
    problem = policy.certificate_problem(
        certificate,
        trusted_cas=frozenset({corpus.public(corpus.CA_SEED)}),
        krls=(),
        rules=RULES,
        at=corpus.AT,
    )
    assert problem is not None
    assert REFUSED[name] in problem


def test_the_good_certificate_certifies() -> None:
    certificate = Certificate.parse(corpus.line(corpus.GOOD))
    trusted = frozenset({corpus.public(corpus.CA_SEED)})
    problem = policy.certificate_problem(
        certificate, trusted_cas=trusted, krls=(), rules=RULES, at=corpus.AT
    )
    assert problem is None


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_ca_show_exits_2_with_one_line(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", "show", str(_files()[name])]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("nixwarden: error: ")
    assert captured.err.count("\n") == 1
    assert MALFORMED[name] in captured.err
