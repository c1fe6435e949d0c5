"""Every malicious wire stream of the corpus is refused, with the reason its name promises."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from nixwarden.deploy import wire
from nixwarden.errors import FormatError
from tests.corpus.make_wire_corpus import PATH, REF, WIRE

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "wire"

WIRE_REASONS = {
    "wire_action_unknown": "action: 'install' is not one of 'push', 'plan', 'rollback'",
    "wire_ca_malformed": "ca: malformed content address",
    "wire_certificate_not_base64": "certificates[0]: not base64",
    "wire_certificate_too_large": "certificate over 16384 bytes",
    "wire_control_over_16mib": "WANT payload of 16777217 bytes is over the 16777216 allowed",
    "wire_deriver_outside_store": "deriver: '/tmp/x.drv' is not in the store /nix/store",
    "wire_duplicate_path_manifest": f"MANIFEST: paths: '{PATH}' is listed twice",
    "wire_duplicate_path_want": f"WANT: paths: '{PATH}' is listed twice",
    "wire_duplicate_reference": f"references: '{REF}' is listed twice",
    "wire_empty_nar_chunk": "NAR_DATA: empty chunk",
    "wire_empty_want": "WANT: paths: no paths",
    "wire_error_kind_unknown": "kind: 'fatal' is not one of",
    "wire_huge_integer_digits": "an integer of 5000 digits",
    "wire_json_deep_nesting": "JSON nests too deep",
    "wire_json_nan": "NaN is not a JSON number",
    "wire_json_nested_in_path_list": "paths[0]: expected a string, got an array",
    "wire_json_not_object": "payload is not a JSON object",
    "wire_json_trailing_garbage": "not JSON (Extra data",
    "wire_lone_surrogate": "not valid Unicode (a lone surrogate)",
    "wire_missing_key": "RELAY: required key 'client' is missing",
    "wire_nar_chunk_over_1mib": "NAR_DATA payload of 1048577 bytes is over the 1048576 allowed",
    "wire_nar_end_with_key": "NAR_END: unknown key 'ok'",
    "wire_narhash_garbage": "narHash: sha256 hash 'not-a-hash' has a length of none",
    "wire_narhash_md5": "narHash: must be sha256",
    "wire_path_bad_hash": "store path hash is not in Nix's base-32 alphabet",
    "wire_path_dotdot": "'/nix/store/../../etc/shadow': not exactly a store path",
    "wire_path_info_unknown_key": "paths[0]: 'trusted': unknown key",
    "wire_path_inside_store_path": "/bin/sh': not exactly a store path",
    "wire_path_not_string": "paths[0]: expected a string, got an integer",
    "wire_path_nul": "NAR_START: path: string contains NUL",
    "wire_path_outside_store": "'/etc/shadow' is not in the store /nix/store",
    "wire_payload_not_utf8": "RELAY: payload is not UTF-8 (byte 14)",
    "wire_payload_utf16": "RELAY: payload is not UTF-8 (byte 0)",
    "wire_principal_bad_name": "is not a valid principal name",
    "wire_profile_hidden": "'.web' is not a valid profile name",
    "wire_profile_traversal": "'../../etc/profile' is not a valid profile name",
    "wire_push_without_tops": "tops: a push needs at least one path",
    "wire_reference_outside_store": "references[0]: '/tmp/ref' is not in the store",
    "wire_relay_principal_root_uid": "principal: expected a string, got an integer",
    "wire_relay_too_many_keys": "ssh_keys: 65 entries is over the 64 allowed",
    "wire_repeated_key": "key 'principal' is repeated",
    "wire_result_negative_bytes": "bytes: -5 is not from 0",
    "wire_result_status_unknown": "status: 'deployed-ish' is not one of",
    "wire_rollback_with_paths": "tops: a rollback sends no paths",
    "wire_rollback_without_profile": "profile: a rollback needs a profile",
    "wire_signature_malformed": "signatures[0]: signature 'test-1' has 3 bytes, expected 64",
    "wire_signature_repeated": "signatures: 'test-1:",
    "wire_size_as_bool": "narSize: expected an integer, got a boolean",
    "wire_size_as_float": "narSize: expected an integer, got a number",
    "wire_size_negative": "narSize: -1 is not from 1",
    "wire_size_overflow": "narSize: 18446744073709551616 is not from 1",
    "wire_size_zero": "narSize: 0 is not from 1",
    "wire_string_nul": "reason: string contains NUL",
    "wire_string_too_long": "string of 5000 characters is over the 4096",
    "wire_too_many_signatures": "signatures: 65 entries is over the 64 allowed",
    "wire_truncated_header": "truncated frame header",
    "wire_truncated_payload": "truncated",
    "wire_type_zero": "unknown message type 0",
    "wire_unknown_key": "RELAY: unknown key 'uid'",
    "wire_unknown_type": "unknown message type 99",
    "wire_verdict_accepted_with_failures": "an accepted push has no failures",
    "wire_verdict_refused_without_failures": "a refusal names at least one failure",
    "wire_version_2": "unsupported protocol version 2",
    "wire_version_as_string": "version: expected an integer, got a string",
    "wire_welcome_relative_store_dir": "'nix/store' is not a canonical absolute path",
    "wire_welcome_store_dir_dotdot": "'/nix/../tmp' is not a canonical absolute path",
}


def _files() -> dict[str, Path]:
    return {path.stem: path for path in sorted(CORPUS.glob("*.bin"))}


def test_every_corpus_file_has_an_expected_reason_and_vice_versa() -> None:
    assert set(_files()) == set(WIRE_REASONS)


def test_corpus_on_disk_is_what_the_generator_writes() -> None:
    files = _files()
    assert set(WIRE) == set(files)
    stale = [name for name, data in WIRE.items() if files[name].read_bytes() != data]
    assert stale == [], "run .venv/bin/python -m tests.corpus.make_wire_corpus"


@pytest.mark.parametrize("name", sorted(WIRE_REASONS))
def test_wire_corpus_is_refused_with_its_reason(name: str) -> None:
    with pytest.raises(wire.WireError) as refused:
        wire.decode_all(_files()[name].read_bytes())
    message = str(refused.value)
    assert isinstance(refused.value, FormatError)
    assert message.startswith("wire: ")
    assert WIRE_REASONS[name] in message
    assert "\n" not in message and "\x1b" not in message


@pytest.mark.parametrize("name", sorted(WIRE_REASONS))
def test_stream_reader_refuses_the_same_way(name: str) -> None:
    """`read_message` (what both ends run on a pipe) agrees with `decode_all`."""
    stream = io.BufferedReader(io.BytesIO(_files()[name].read_bytes()))
    with pytest.raises(wire.WireError) as refused:
        while wire.read_message(stream) is not None:
            pass
    assert WIRE_REASONS[name] in str(refused.value)


class _HeaderOnly(io.RawIOBase):
    """A stream that fails the test if more than a frame header is read from it."""

    def __init__(self, header: bytes) -> None:
        self.header = header
        self.read_so_far = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        assert self.read_so_far < len(self.header), "read past the header of an oversize frame"
        count = min(len(buffer), len(self.header) - self.read_so_far)
        buffer[:count] = self.header[self.read_so_far : self.read_so_far + count]
        self.read_so_far += count
        return count


@pytest.mark.parametrize("name", ["wire_control_over_16mib", "wire_type_zero"])
def test_an_oversize_or_unknown_frame_is_refused_before_its_payload_is_read(name: str) -> None:
    header = _files()[name].read_bytes()[: wire.HEADER.size]
    with pytest.raises(wire.WireError):
        wire.read_message(_HeaderOnly(header))
