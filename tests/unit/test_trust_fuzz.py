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
from tests.unit.test_trust_formats import NIX_NARINFO


@given(st.text(max_size=120))
@settings(max_examples=200)
def test_hash_and_key_parsers_only_raise_format_error(text: str) -> None:
    for parse in (Hash.parse, PublicKey.parse, SecretKey.parse, Signature.parse):
        with contextlib.suppress(FormatError):
            parse(text)


@st.composite
def mutated_narinfo(draw: st.DrawFn) -> bytes:
    data = bytearray(NIX_NARINFO)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        match draw(st.sampled_from(["replace", "delete", "insert"])):
            case "replace":
                data[at] = draw(st.integers(0, 255))
            case "delete":
                del data[at : at + draw(st.integers(1, 30))]
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=10))
    return bytes(data)


@given(mutated_narinfo())
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
