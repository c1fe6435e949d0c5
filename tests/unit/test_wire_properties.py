"""The wire parser on generated and damaged input: messages or WireError, nothing else."""

from __future__ import annotations

import io
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.deploy import wire
from nixwarden.nix.nix32 import ALPHABET
from nixwarden.trust.hashes import Hash, HashAlgorithm
from nixwarden.trust.keys import Signature
from tests.corpus.make_wire_corpus import WIRE
from tests.unit.mutation import mutated

STORE_PATHS = st.builds(
    lambda hash_part, name: f"/nix/store/{hash_part}-{name}",
    st.text(ALPHABET, min_size=32, max_size=32),
    st.from_regex(r"[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]{0,20}", fullmatch=True),
)
TEXT = st.text(max_size=40).filter(lambda t: "\0" not in t and t.encode("utf-8", "ignore"))
NAMES = st.from_regex(wire.PRINCIPAL_NAME, fullmatch=True)
PROFILES = st.from_regex(wire.PROFILE_NAME, fullmatch=True)
SIZES = st.integers(0, wire.MAX_SIZE)


def _unique_paths(min_size: int = 0) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(STORE_PATHS, min_size=min_size, max_size=5, unique=True).map(tuple)


def _text(min_size: int = 1) -> st.SearchStrategy[str]:
    return st.text(min_size=min_size, max_size=40).filter(_encodable)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\0" not in text


@st.composite
def hellos(draw: st.DrawFn) -> wire.Hello:
    action = draw(st.sampled_from(wire.Action))
    if action is wire.Action.ROLLBACK:
        return wire.Hello(draw(st.none() | NAMES), action, draw(PROFILES), ())
    return wire.Hello(
        draw(st.none() | NAMES), action, draw(st.none() | PROFILES), draw(_unique_paths(min_size=1))
    )


PATH_INFOS = st.builds(
    wire.PathInfo,
    path=STORE_PATHS,
    nar_hash=st.binary(min_size=32, max_size=32).map(lambda d: Hash(HashAlgorithm.SHA256, d)),
    nar_size=st.integers(1, wire.MAX_SIZE),
    references=_unique_paths(),
    deriver=st.none() | STORE_PATHS,
    ca=st.none()
    | st.binary(min_size=32, max_size=32).map(
        lambda d: "fixed:r:" + Hash(HashAlgorithm.SHA256, d).to_nix32()
    ),
    signatures=st.lists(
        st.builds(
            Signature,
            st.from_regex(r"[a-z][a-z0-9.-]{0,10}-[0-9]", fullmatch=True),
            st.binary(min_size=64, max_size=64),
        ),
        max_size=3,
        unique_by=lambda s: s.render(),
    ).map(tuple),
)


@st.composite
def manifests(draw: st.DrawFn) -> wire.Manifest:
    infos = draw(st.lists(PATH_INFOS, max_size=4, unique_by=lambda info: info.path))
    certificates = draw(st.lists(st.binary(min_size=1, max_size=300), max_size=3))
    return wire.Manifest(tuple(infos), tuple(certificates))


@st.composite
def verdicts(draw: st.DrawFn) -> wire.Verdict:
    if draw(st.booleans()):
        return wire.Verdict(True)
    failures = draw(st.lists(st.builds(wire.Failure, _text(), _text()), min_size=1, max_size=3))
    return wire.Verdict(False, tuple(failures))


MESSAGES: st.SearchStrategy[wire.Message] = st.one_of(
    hellos(),
    st.builds(wire.Welcome, st.just("/nix/store"), _text()),
    st.builds(wire.Want, _unique_paths(min_size=1)),
    st.builds(wire.Missing, _unique_paths()),
    manifests(),
    verdicts(),
    st.builds(wire.NarStart, STORE_PATHS),
    st.builds(wire.NarData, st.binary(min_size=1, max_size=200)),
    st.just(wire.NarEnd()),
    st.just(wire.Commit()),
    st.builds(
        wire.Result,
        st.sampled_from(wire.Status),
        st.none() | _text(),
        st.none() | SIZES,
        st.integers(0, wire.MAX_PATHS),
        SIZES,
    ),
    st.builds(wire.Error, _text(), st.sampled_from(wire.ErrorKind)),
    st.builds(wire.Relay, NAMES, st.lists(_text(), max_size=3).map(tuple), st.none() | _text()),
)


@given(st.lists(MESSAGES, max_size=6))
@settings(max_examples=150, deadline=None)
def test_what_is_encoded_decodes_to_the_same_messages(messages: list[wire.Message]) -> None:
    data = b"".join(wire.encode(message) for message in messages)
    assert wire.decode_all(data) == messages
    stream = io.BufferedReader(io.BytesIO(data))
    read = []
    while (message := wire.read_message(stream)) is not None:
        read.append(message)
    assert read == messages


@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_arbitrary_bytes_are_messages_or_a_wire_error(data: bytes) -> None:
    _decoded_or_refused(data)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=200))
@settings(max_examples=300)
def test_any_frame_header_is_checked_before_its_payload(
    kind: int, length: int, payload: bytes
) -> None:
    _decoded_or_refused(struct.pack(">II", kind, length) + payload)


SEEDS = st.sampled_from(sorted(WIRE.values(), key=len)[:40]) | st.lists(
    MESSAGES, min_size=1, max_size=4
).map(lambda messages: b"".join(wire.encode(m) for m in messages))


@given(mutated(SEEDS, max_edits=4, max_delete=16, max_insert=16, truncate=True))
@settings(max_examples=300, deadline=None)
def test_damaged_streams_are_messages_or_a_wire_error(data: bytes) -> None:
    _decoded_or_refused(data)


@given(st.lists(MESSAGES, min_size=1, max_size=4), st.data())
@settings(max_examples=100, deadline=None)
def test_a_stream_cut_anywhere_inside_a_frame_is_a_truncation(
    messages: list[wire.Message], data: st.DataObject
) -> None:
    encoded = b"".join(wire.encode(message) for message in messages)
    boundaries = set()
    offset = 0
    for message in messages:
        offset += len(wire.encode(message))
        boundaries.add(offset)
    cut = data.draw(st.integers(1, len(encoded) - 1)) if len(encoded) > 1 else 0
    if cut in boundaries or cut == 0:
        return
    try:
        wire.decode_all(encoded[:cut])
    except wire.WireError as refused:
        assert "truncated" in str(refused)
    else:
        raise AssertionError("a cut stream was accepted")


def _decoded_or_refused(data: bytes) -> None:
    try:
        messages = wire.decode_all(data)
    except wire.WireError as refused:
        assert "\n" not in str(refused)
        return
    # What was accepted is a message the encoder writes back the same way.
    assert wire.decode_all(b"".join(wire.encode(m) for m in messages)) == messages
