"""Every file of the malicious corpus is refused, with the reason its name promises."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from nixwarden.cli import main
from nixwarden.errors import FormatError
from nixwarden.trust import nar, narinfo
from nixwarden.trust.restore import restore

CORPUS = Path(__file__).resolve().parents[1] / "corpus"

NAR_REASONS = {
    "nar_absurd_contents_length": "absurd length",
    "nar_absurd_token_length": "absurd length",
    "nar_case_hack_name": "case-hack suffix",
    "nar_dot_entry": "'.' is not allowed",
    "nar_dotdot_entry": "'..' is not allowed",
    "nar_duplicate_entry": "duplicate entry",
    "nar_empty_file": "truncated",
    "nar_empty_name": "empty file name",
    "nar_entry_without_node": "expected 'node'",
    "nar_executable_after_contents": "expected ')'",
    "nar_executable_nonempty": "non-empty executable marker",
    "nar_missing_node_close": "truncated",
    "nar_name_too_long": "more than the 255 allowed",
    "nar_nonzero_padding": "non-zero padding",
    "nar_nul_in_name": "file name contains NUL",
    "nar_slash_in_name": "file name contains '/'",
    "nar_symlink_escape_then_file": "duplicate entry",
    "nar_symlink_target_empty": "empty symlink target",
    "nar_symlink_target_nul": "symlink target contains NUL",
    "nar_symlink_target_too_long": "more than the 4095 allowed",
    "nar_too_deep": "nest deeper",
    "nar_trailing_bytes": "trailing bytes",
    "nar_truncated": "truncated",
    "nar_truncated_contents": "truncated",
    "nar_unknown_node_type": "unknown node type",
    "nar_unknown_token": "unknown token 'kontents'",
    "nar_unsorted_entries": "not sorted",
    "nar_wrong_magic": "wrong magic",
}

# Valid archives that attack what handles them; each must be accepted and handled safely.
NAR_ACCEPTED = {
    "nar_deep_fd_exhaustion": "restore holding a descriptor per directory level",
    "nar_name_c0_controls": "a listing forged by escape sequences and newlines in names",
    "nar_name_c1_controls": "a listing forged by C1 controls (CSI, NEL) in names",
    "nar_name_line_separators": "one entry shown as several by U+2028/U+2029",
    "nar_name_bidi_override": "names shown reordered by bidirectional overrides",
    "nar_symlink_target_controls": "a symlink target that forges the rest of its line",
    "nar_name_not_utf8": "bytes that are not UTF-8 shown as something else",
    "nar_name_backslash": "a literal backslash mistaken for an escape",
}

# What `nar ls` prints for the archives above that attack a reader of the listing.
NAR_LISTINGS = {
    "nar_name_c0_controls": [
        "./esc-\\x1b[2J",
        "./nl-\\x0afake-line",
        "./tab\\x09",
    ],
    "nar_name_c1_controls": ["./csi-\\u009b31m", "./nel-\\u0085x"],
    "nar_name_line_separators": ["./ls-\\u2028x", "./ps-\\u2029x"],
    "nar_name_bidi_override": ["./invoice-\\u202efdp.exe", "./isolate-\\u2066x\\u2069"],
    "nar_symlink_target_controls": [". -> ../\\x1b[31m\\u202e\\x0ax -> y"],
    "nar_name_not_utf8": ["./raw-\\xff\\xfe"],
    "nar_name_backslash": ["./a\\\\x0ab"],
}

NARINFO_REASONS = {
    "narinfo_bad_ca": "malformed CA",
    "narinfo_carriage_return": "control character",
    "narinfo_deriver_with_slash": "Deriver: '../",
    "narinfo_filehash_garbage": "malformed FileHash",
    "narinfo_filesize_not_number": "malformed FileSize",
    "narinfo_line_without_colon": "is not 'Key: value'",
    "narinfo_missing_narhash": "NarHash is missing",
    "narinfo_missing_storepath": "StorePath is missing",
    "narinfo_missing_url": "URL is missing",
    "narinfo_narhash_bad_char": "malformed NarHash",
    "narinfo_narhash_md5": "NarHash must be sha256",
    "narinfo_narhash_no_algorithm": "does not name its algorithm",
    "narinfo_narhash_wrong_length": "malformed NarHash",
    "narinfo_narsize_leading_plus": "malformed NarSize",
    "narinfo_narsize_negative": "malformed NarSize",
    "narinfo_narsize_overflow": "malformed NarSize",
    "narinfo_narsize_zero": "NarSize is 0",
    "narinfo_no_final_newline": "does not end with a newline",
    "narinfo_path_bad_hash_chars": "store path hash is not in Nix's base-32 alphabet",
    "narinfo_path_dotdot": "not exactly a store path",
    "narinfo_path_outside_store": "is not in the store",
    "narinfo_ref_double_space": "empty entries",
    "narinfo_ref_full_path": "References: '/nix/store/",
    "narinfo_ref_with_slash": "References: '../",
    "narinfo_repeated_narsize": "NarSize is repeated",
    "narinfo_repeated_storepath": "StorePath is repeated",
    "narinfo_sig_bad_base64": "malformed Sig",
    "narinfo_sig_short": "malformed Sig",
    "narinfo_url_with_space": "URL is empty or contains spaces",
    "narinfo_compression_bidi_override": "malformed Compression 'xz\\u202e'",
    "narinfo_narsize_line_separator": "malformed NarSize '656\\u2028NarSize: 1'",
    "narinfo_storepath_c1_control": "u0085x': store path name has a character Nix does not",
}


def _files(kind: str) -> dict[str, Path]:
    return {path.stem: path for path in sorted((CORPUS / kind).iterdir())}


def test_every_corpus_file_has_an_expected_reason_and_vice_versa() -> None:
    assert not set(NAR_REASONS) & set(NAR_ACCEPTED)
    assert set(_files("nar")) == set(NAR_REASONS) | set(NAR_ACCEPTED)
    assert set(NAR_LISTINGS) <= set(NAR_ACCEPTED)
    assert set(_files("narinfo")) == set(NARINFO_REASONS)


@pytest.mark.parametrize("name", sorted(NAR_ACCEPTED))
def test_hostile_valid_archives_are_accepted_and_listed_one_printable_line_per_node(
    name: str, tmp_path: Path
) -> None:
    data = _files("nar")[name].read_bytes()
    nar.validate(io.BytesIO(data))
    restore(io.BytesIO(data), tmp_path / "out")
    assert nar.dump_bytes(tmp_path / "out") == data
    lines = list(nar.list_lines(io.BytesIO(data)))
    nodes = sum(
        isinstance(event, nar.DirectoryStart | nar.FileStart | nar.Symlink)
        for event in nar.parse(io.BytesIO(data))
    )
    assert len(lines) == nodes
    assert all(line.isprintable() for line in lines)
    if name in NAR_LISTINGS:
        shown = [re.fullmatch(r"\S+ +\d+ (.*)", line).group(1) for line in lines]  # type: ignore[union-attr]
        assert [path for path in shown if path != "."] == NAR_LISTINGS[name]


def test_nar_ls_prints_hostile_names_escaped(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    data = _files("nar")["nar_name_bidi_override"].read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["nar", "ls"]) == 0
    out = capsysbinary.readouterr().out
    assert out.count(b"\n") == 3
    assert "\u202e".encode() not in out and b"\\u202efdp.exe" in out


@pytest.mark.parametrize("name", sorted(NAR_REASONS))
def test_nar_corpus_is_refused_with_its_reason(name: str) -> None:
    data = _files("nar")[name].read_bytes()
    with pytest.raises(FormatError) as refused:
        nar.validate(io.BytesIO(data))
    message = str(refused.value)
    assert NAR_REASONS[name] in message
    assert message.isprintable()


@pytest.mark.parametrize("name", sorted(NAR_REASONS))
def test_restore_of_corpus_nar_leaves_nothing(name: str, tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(FormatError):
        restore(io.BytesIO(_files("nar")[name].read_bytes()), target)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", sorted(NARINFO_REASONS))
def test_narinfo_corpus_is_refused_with_its_reason(name: str) -> None:
    data = _files("narinfo")[name].read_bytes()
    with pytest.raises(FormatError) as refused:
        narinfo.NarInfo.parse(data)
    assert NARINFO_REASONS[name] in str(refused.value)
    assert str(refused.value).isprintable()


def test_cli_exits_2_with_one_line_for_a_corpus_nar(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = _files("nar")["nar_dotdot_entry"].read_bytes()
    for argv in (["nar", "ls"], ["nar", "restore", str(tmp_path / "out")]):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("nixwarden: error: NAR: file name '..' is not allowed")
        assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()
