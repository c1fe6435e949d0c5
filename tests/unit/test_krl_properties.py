"""KRLs on mutated and generated input: a Krl or FormatError, and lookups that match a model."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.ca.krl import U64_MAX, CertRef, Krl, SerialSet
from nixwarden.errors import FormatError
from tests.corpus.make_krl_corpus import CA, GOOD, OTHER, USER, signed
from tests.unit.mutation import mutated

VALID = Path(__file__).resolve().parents[1] / "corpus" / "krl" / "valid"
SEEDS = [GOOD, signed(GOOD)] + [path.read_bytes() for path in sorted(VALID.glob("*.krl"))]


@given(mutated(st.sampled_from(SEEDS), max_edits=4, max_delete=16, max_insert=16, truncate=True))
@settings(max_examples=400, deadline=None)
def test_parser_only_raises_format_error_and_what_it_accepts_writes_back(data: bytes) -> None:
    try:
        krl = Krl.parse(data)
    except FormatError as refused:
        assert "\n" not in str(refused)
        return
    assert Krl.parse(krl.to_bytes()) == dataclasses.replace(krl, signatures=())


@given(st.binary(max_size=200))
@settings(max_examples=200)
def test_parser_on_arbitrary_bytes_after_a_header(tail: bytes) -> None:
    try:
        krl = Krl.parse(GOOD[:50] + tail)  # the header, then anything
    except FormatError:
        return
    assert Krl.parse(krl.to_bytes()) == dataclasses.replace(krl, signatures=())


SERIAL = st.one_of(
    st.integers(1, 64), st.integers(1, 2**20), st.integers(U64_MAX - 64, U64_MAX), st.just(2**63)
)


@st.composite
def revocations(draw: st.DrawFn) -> tuple[list[int], list[tuple[int, int]]]:
    serials = draw(st.lists(SERIAL, max_size=60))
    ranges = []
    for start in draw(st.lists(SERIAL, max_size=6)):
        ranges.append((start, min(U64_MAX, start + draw(st.integers(0, 3000)))))
    return serials, ranges


def _revoked(serials: list[int], ranges: list[tuple[int, int]], serial: int) -> bool:
    return serial in serials or any(start <= serial <= end for start, end in ranges)


@given(revocations(), revocations(), st.lists(st.text(max_size=8).filter(lambda t: "\0" not in t)))
@settings(max_examples=150, deadline=None)
def test_written_krls_read_back_and_revoke_exactly_what_was_revoked(
    first: tuple[list[int], list[tuple[int, int]]],
    second: tuple[list[int], list[tuple[int, int]]],
    key_ids: list[str],
) -> None:
    krl = Krl.empty(comment="model", now=1)
    krl = krl.revoking(CA, serials=first[0], serial_ranges=first[1], key_ids=key_ids, now=2)
    krl = krl.revoking(None, serials=second[0], serial_ranges=second[1], now=3)
    assert Krl.parse(krl.to_bytes()) == krl
    probes = {1, 2, U64_MAX, 2**63 - 1, 2**63 + 1}
    for serial in first[0] + second[0] + [point for r in first[1] + second[1] for point in r]:
        probes.update(candidate for candidate in (serial - 1, serial, serial + 1) if candidate > 0)
    for serial in probes - {U64_MAX + 1}:
        for ca, model in ((CA, first), (OTHER, ([], []))):
            expected = _revoked(*model, serial) or _revoked(*second, serial)
            reason = krl.revocation(USER, CertRef(ca, serial, "\0never"))
            assert (reason is not None) == expected, (serial, reason)
    for key_id in key_ids:
        assert krl.revocation(USER, CertRef(CA, 0, key_id)) == f"revoked: key id {key_id}"
        assert krl.revocation(USER, CertRef(OTHER, 0, key_id)) is None


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 20)), max_size=30))
@settings(max_examples=200)
def test_serial_set_merges_like_a_set_of_serials(pairs: list[tuple[int, int]]) -> None:
    intervals = [(start, start + length) for start, length in pairs]
    expected = {serial for start, end in intervals for serial in range(start, end + 1)}
    serials = SerialSet.of(intervals)
    assert {serial for serial in range(-1, 230) if serial in serials} == expected
    assert serials.count() == len(expected)
    merged = list(serials.intervals())
    assert all(end + 1 < start for (_, end), (start, _) in itertools.pairwise(merged))
