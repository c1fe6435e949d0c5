"""Text parsers on arbitrary and mutated input: a value or FormatError, nothing else."""

from __future__ import annotations

import contextlib
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.errors import FormatError
from nixwarden.trust import export
from nixwarden.trust.hashes import Hash
from nixwarden.trust.keys import PublicKey, SecretKey, Signature
from nixwarden.trust.narinfo import NarInfo
from tests.unit.mutation import mutated
from tests.unit.test_trust_formats import NIX_NARINFO


@given(st.text(max_size=120))
@settings(max_examples=200)
def test_hash_and_key_parsers_only_raise_format_error(text: str) -> None:
    for parse in (Hash.parse, PublicKey.parse, SecretKey.parse, Signature.parse):
        with contextlib.suppress(FormatError):
            parse(text)


@given(mutated(st.just(NIX_NARINFO)))
@settings(max_examples=300)
def test_narinfo_parser_only_raises_format_error(data: bytes) -> None:
    try:
        info = NarInfo.parse(data)
    except FormatError:
        return
    assert NarInfo.parse(info.render()) == info


@given(st.binary(max_size=300))
@settings(max_examples=200)
def test_export_reader_only_raises_format_error(data: bytes) -> None:
    try:
        for _ in export.read(io.BytesIO(data)):
            pass
    except FormatError:
        pass
