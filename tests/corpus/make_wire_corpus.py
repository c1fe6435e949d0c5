"""Writes the corpus of malicious deploy wire streams: one file per attack, named after it.

Run from the repository: `.venv/bin/python -m tests.corpus.make_wire_corpus`. Frames are
assembled here from raw bytes and JSON text, not with nixwarden's encoder, so a bug there
cannot hide in the corpus. `WIRE_REASONS` in tests/unit/test_wire_corpus.py maps each
file to the reason it must be refused with (checked both ways).
"""

from __future__ import annotations

import struct
from pathlib import Path

from tests.corpus.make_corpus import write_corpus

HERE = Path(__file__).parent

HELLO, WELCOME, WANT, MISSING, MANIFEST, VERDICT = 1, 2, 3, 4, 5, 6
NAR_START, NAR_DATA, NAR_END, COMMIT, RESULT, ERROR, RELAY = 7, 8, 9, 10, 11, 12, 13

PATH = "/nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh6051-corpus"
REF = "/nix/store/7d5ma06gqchg2c6gygc3c9wbzbg3bx8k-ref"
HASH = "sha256:1ffc72lqyq54q4828a9w0jblnaynnmcf794ax5a17xm4q6bx0cn4"
SIG = (
    "test-1:WpioIJsMQwDXWaxtvGcSjKK6lBFpt2JF4zdzvdeenkOXpoN4ayMgRZbd1GVR"
    "kz1DGX/55W73l1lDVhgxPKo2AA=="
)


def frame(kind: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return struct.pack(">II", kind, len(raw)) + raw


def hello(
    principal: str = '"alice"',
    action: str = '"push"',
    profile: str = '"web"',
    tops: str = f'["{PATH}"]',
) -> bytes:
    return frame(
        HELLO,
        f'{{"version":1,"principal":{principal},"action":{action},'
        f'"profile":{profile},"tops":{tops}}}',
    )


def entry(**overrides: str) -> str:
    fields = {
        "path": f'"{PATH}"',
        "narHash": f'"{HASH}"',
        "narSize": "1024",
        "references": f'["{REF}"]',
        "deriver": "null",
        "ca": "null",
        "signatures": f'["{SIG}"]',
    }
    fields.update(overrides)
    return "{" + ",".join(f'"{key}":{value}' for key, value in fields.items()) + "}"


def manifest(*entries: str, certificates: str = "[]") -> bytes:
    return frame(MANIFEST, f'{{"paths":[{",".join(entries)}],"certificates":{certificates}}}')


RELAY_OK = frame(RELAY, '{"principal":"alice","ssh_keys":["SHA256:abc"],"client":"127.0.0.1"}')
START = RELAY_OK + hello()

WIRE: dict[str, bytes] = {
    # framing
    "wire_unknown_type": START + frame(99, "{}"),
    "wire_type_zero": frame(0, "{}"),
    "wire_control_over_16mib": struct.pack(">II", WANT, (16 << 20) + 1),
    "wire_nar_chunk_over_1mib": START + struct.pack(">II", NAR_DATA, (1 << 20) + 1) + b"x" * 64,
    "wire_truncated_header": START + struct.pack(">II", NAR_END, 2)[:5],
    "wire_truncated_payload": START + frame(WANT, f'{{"paths":["{PATH}"]}}')[:-7],
    "wire_empty_nar_chunk": START + frame(NAR_START, f'{{"path":"{PATH}"}}') + frame(NAR_DATA, b""),
    # JSON
    "wire_payload_not_utf8": frame(RELAY, b'{"principal":"\xff"}'),
    "wire_payload_utf16": frame(RELAY, '{"principal":"alice"}'.encode("utf-16")),
    "wire_json_not_object": frame(WANT, f'["{PATH}"]'),
    "wire_json_trailing_garbage": frame(NAR_END, "{} {}"),
    "wire_json_nan": RELAY_OK
    + frame(RESULT, '{"status":"failed","reason":null,"generation":NaN,"paths":0,"bytes":0}'),
    "wire_json_deep_nesting": frame(WANT, '{"paths":' + "[" * 100_000 + "]" * 100_000 + "}"),
    "wire_json_nested_in_path_list": frame(WANT, '{"paths":[[[[[[[[[["x"]]]]]]]]]]}'),
    "wire_repeated_key": frame(
        RELAY, '{"principal":"alice","principal":"root","ssh_keys":[],"client":null}'
    ),
    "wire_unknown_key": frame(RELAY, '{"principal":"alice","ssh_keys":[],"client":null,"uid":0}'),
    "wire_missing_key": frame(RELAY, '{"principal":"alice","ssh_keys":[]}'),
    "wire_nar_end_with_key": START + frame(NAR_END, '{"ok":true}'),
    "wire_lone_surrogate": frame(ERROR, '{"reason":"\\ud800","kind":"failed"}'),
    "wire_string_nul": frame(ERROR, '{"reason":"ok\\u0000hidden","kind":"failed"}'),
    "wire_string_too_long": frame(ERROR, '{"reason":"' + "x" * 5000 + '","kind":"failed"}'),
    "wire_huge_integer_digits": frame(
        RESULT,
        '{"status":"failed","reason":null,"generation":' + "9" * 5000 + ',"paths":0,"bytes":0}',
    ),
    # HELLO
    "wire_version_2": RELAY_OK
    + frame(
        HELLO,
        f'{{"version":2,"principal":"alice","action":"push","profile":null,"tops":["{PATH}"]}}',
    ),
    "wire_version_as_string": RELAY_OK
    + frame(
        HELLO,
        f'{{"version":"1","principal":"alice","action":"push","profile":null,"tops":["{PATH}"]}}',
    ),
    "wire_principal_bad_name": RELAY_OK + hello(principal='"alice\\u001b[2J root"'),
    "wire_profile_traversal": RELAY_OK + hello(profile='"../../etc/profile"'),
    "wire_profile_hidden": RELAY_OK + hello(profile='".web"'),
    "wire_action_unknown": RELAY_OK + hello(action='"install"'),
    "wire_rollback_without_profile": RELAY_OK
    + hello(action='"rollback"', profile="null", tops="[]"),
    "wire_rollback_with_paths": RELAY_OK + hello(action='"rollback"'),
    "wire_push_without_tops": RELAY_OK + hello(tops="[]"),
    # paths
    "wire_path_outside_store": START + frame(WANT, '{"paths":["/etc/shadow"]}'),
    "wire_path_dotdot": START + frame(WANT, '{"paths":["/nix/store/../../etc/shadow"]}'),
    "wire_path_inside_store_path": START + frame(WANT, f'{{"paths":["{PATH}/bin/sh"]}}'),
    "wire_path_bad_hash": START
    + frame(WANT, '{"paths":["/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"]}'),
    "wire_path_nul": START + frame(NAR_START, f'{{"path":"{PATH}\\u0000x"}}'),
    "wire_path_not_string": START + frame(WANT, '{"paths":[42]}'),
    "wire_duplicate_path_want": START + frame(WANT, f'{{"paths":["{PATH}","{REF}","{PATH}"]}}'),
    "wire_empty_want": START + frame(WANT, '{"paths":[]}'),
    # MANIFEST
    "wire_duplicate_path_manifest": START + manifest(entry(), entry()),
    "wire_duplicate_reference": START + manifest(entry(references=f'["{REF}","{REF}"]')),
    "wire_reference_outside_store": START + manifest(entry(references='["/tmp/ref"]')),
    "wire_deriver_outside_store": START + manifest(entry(deriver='"/tmp/x.drv"')),
    "wire_size_zero": START + manifest(entry(narSize="0")),
    "wire_size_negative": START + manifest(entry(narSize="-1")),
    "wire_size_overflow": START + manifest(entry(narSize=str(1 << 64))),
    "wire_size_as_bool": START + manifest(entry(narSize="true")),
    "wire_size_as_float": START + manifest(entry(narSize="1024.0")),
    "wire_narhash_md5": START + manifest(entry(narHash='"md5:d41d8cd98f00b204e9800998ecf8427e"')),
    "wire_narhash_garbage": START + manifest(entry(narHash='"sha256:not-a-hash"')),
    "wire_ca_malformed": START + manifest(entry(ca='"sha256:abc"')),
    "wire_signature_malformed": START + manifest(entry(signatures='["test-1:AAAA"]')),
    "wire_signature_repeated": START + manifest(entry(signatures=f'["{SIG}","{SIG}"]')),
    "wire_too_many_signatures": START
    + manifest(entry(signatures="[" + ",".join([f'"{SIG}"'] * 65) + "]")),
    "wire_path_info_unknown_key": START + manifest(entry(trusted="true")),
    "wire_certificate_not_base64": START + manifest(entry(), certificates='["not base64!"]'),
    "wire_certificate_too_large": START
    + manifest(entry(), certificates='["' + "QUFB" * 5462 + '"]'),
    # service → client
    "wire_welcome_relative_store_dir": frame(
        WELCOME, '{"version":1,"store_dir":"nix/store","host":"web1"}'
    ),
    "wire_welcome_store_dir_dotdot": frame(
        WELCOME, '{"version":1,"store_dir":"/nix/../tmp","host":"web1"}'
    ),
    "wire_verdict_accepted_with_failures": frame(
        VERDICT, f'{{"accepted":true,"failures":[{{"path":"{PATH}","reason":"x"}}]}}'
    ),
    "wire_verdict_refused_without_failures": frame(VERDICT, '{"accepted":false,"failures":[]}'),
    "wire_result_status_unknown": frame(
        RESULT, '{"status":"deployed-ish","reason":null,"generation":null,"paths":0,"bytes":0}'
    ),
    "wire_result_negative_bytes": frame(
        RESULT, '{"status":"deployed","reason":null,"generation":3,"paths":1,"bytes":-5}'
    ),
    "wire_error_kind_unknown": frame(ERROR, '{"reason":"x","kind":"fatal"}'),
    # RELAY
    "wire_relay_too_many_keys": frame(
        RELAY, '{"principal":"alice","ssh_keys":[' + ",".join(['"k"'] * 65) + '],"client":null}'
    ),
    "wire_relay_principal_root_uid": frame(RELAY, '{"principal":0,"ssh_keys":[],"client":null}'),
}


def main() -> None:
    write_corpus(HERE / "wire", ".bin", WIRE)
    print(f"wrote {len(WIRE)} wire streams under {HERE / 'wire'}")


if __name__ == "__main__":
    main()
