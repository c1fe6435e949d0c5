"""The CA's parsers on mutated and arbitrary input: a value or their one error, nothing else."""

from __future__ import annotations

import base64
import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.ca import ledger, sshkey
from nixwarden.ca.cert import CERT_TYPE, Certificate, parse_certificates
from nixwarden.ca.validity import parse_instant, parse_validity
from nixwarden.errors import FormatError, InvalidInput
from tests.corpus import make_cert_corpus as corpus
from tests.unit.mutation import mutated

GOOD = corpus.signed(
    corpus.body(
        critical=corpus.options(("force-command", corpus.s("ls"))),
        extensions=corpus.options(("permit-pty", b"")),
    )
)
NOW = 1_780_000_000


@st.composite
def length_overwritten(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a plausible or absurd 32-bit length written somewhere (what
    mutation.mutated does not do): a length field that lies."""
    buffer = bytearray(data)
    at = draw(st.integers(0, len(buffer) - 4))
    value = draw(st.sampled_from([0, 1, 31, 32, 33, 64, 255, 2**31, 2**32 - 1]))
    buffer[at : at + 4] = value.to_bytes(4, "big")
    return bytes(buffer)


DAMAGED = st.one_of(
    mutated(st.just(GOOD), max_edits=4, max_delete=40, max_insert=12, truncate=True),
    length_overwritten(GOOD),
)


@given(DAMAGED)
@settings(max_examples=600)
def test_certificate_blob_parser_only_raises_format_error(blob: bytes) -> None:
    try:
        certificate = Certificate.from_blob(blob)
    except FormatError as error:
        assert "\n" not in str(error)
        return
    # A mutation that survives must still be a whole, correctly signed certificate.
    assert certificate.blob == blob
    assert Certificate.parse(certificate.render().encode()) == certificate


@given(mutated(st.just(corpus.line(GOOD)), max_edits=4))
@settings(max_examples=300)
def test_certificate_file_parser_only_raises_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_certificates(data, "f")


@given(st.binary(max_size=400))
@settings(max_examples=300)
def test_arbitrary_blobs(blob: bytes) -> None:
    with contextlib.suppress(FormatError):
        Certificate.from_blob(blob)
    with contextlib.suppress(FormatError):
        parse_certificates(CERT_TYPE.encode() + b" " + base64.b64encode(blob), "f")
    with contextlib.suppress(FormatError):
        sshkey.parse_ed25519_blob(blob, "key")
    with contextlib.suppress(FormatError):
        ledger.serials(blob, "ledger")


@given(st.text(max_size=60))
@settings(max_examples=400)
def test_time_specs_only_raise_invalid_input(text: str) -> None:
    with contextlib.suppress(InvalidInput):
        validity = parse_validity(text, NOW)
        assert 0 <= validity.valid_after < validity.valid_before < 2**64
    with contextlib.suppress(InvalidInput):
        parse_instant(text, NOW)


@given(st.text(max_size=200))
@settings(max_examples=200)
def test_public_key_files_only_raise_format_error(text: str) -> None:
    with contextlib.suppress(FormatError):
        sshkey.parse_public_keys(text.encode("utf-8", "surrogatepass"), "f")
