"""Writes the corpus of malicious NARs and narinfos: one file per attack, named after it.

Run from the repository: `.venv/bin/python -m tests.corpus.make_corpus`. The archives
are built from raw strings here, not with nixwarden's serializer, so a bug there
cannot hide in the corpus. `NAR_REASONS` and `NARINFO_REASONS` in
tests/unit/test_trust_corpus.py map each file to the reason it must be refused with
(checked both ways: every file has a reason, every reason a file).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).parent
STORE = "/nix/store"
HASH = "sha256:1ffc72lqyq54q4828a9w0jblnaynnmcf794ax5a17xm4q6bx0cn4"
PATH = f"{STORE}/hpi1c1lnw8jb1w6q20b91lh48xrh6051-corpus"
REF = "7d5ma06gqchg2c6gygc3c9wbzbg3bx8k-ref"
SIG = (
    "test-1:WpioIJsMQwDXWaxtvGcSjKK6lBFpt2JF4zdzvdeenkOXpoN4ayMgRZbd1GVR"
    "kz1DGX/55W73l1lDVhgxPKo2AA=="
)


def s(data: bytes | str, *, pad: bytes = b"\0") -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return struct.pack("<Q", len(raw)) + raw + pad * (-len(raw) % 8)


def tokens(*parts: bytes | str) -> bytes:
    return b"".join(s(part) for part in parts)


def regular(contents: bytes = b"hello\n", *, executable: bool = False) -> bytes:
    marker = tokens("executable", "") if executable else b""
    return tokens("(", "type", "regular") + marker + tokens("contents", contents, ")")


def symlink(target: bytes) -> bytes:
    return tokens("(", "type", "symlink", "target", target, ")")


def entry(name: bytes, node: bytes) -> bytes:
    return tokens("entry", "(", "name", name, "node") + node + tokens(")")


def directory(*entries: bytes) -> bytes:
    return tokens("(", "type", "directory") + b"".join(entries) + tokens(")")


def nar(node: bytes) -> bytes:
    return s("nix-archive-1") + node


def deep(levels: int) -> bytes:
    node = regular()
    for _ in range(levels):
        node = directory(entry(b"d", node))
    return node


GOOD = nar(directory(entry(b"a", regular()), entry(b"b", symlink(b"a"))))

NARS: dict[str, bytes] = {
    "nar_wrong_magic": s("nix-archive-2") + regular(),
    "nar_empty_file": b"",
    "nar_truncated": GOOD[:-13],
    "nar_truncated_contents": nar(regular(b"x" * 64))[:60],
    "nar_trailing_bytes": GOOD + b"\0" * 8,
    "nar_nonzero_padding": s("nix-archive-1")
    + tokens("(", "type", "regular", "contents")
    + s(b"abc", pad=b"\x01")
    + tokens(")"),
    "nar_unsorted_entries": nar(directory(entry(b"b", regular()), entry(b"a", regular()))),
    "nar_duplicate_entry": nar(directory(entry(b"a", regular()), entry(b"a", regular()))),
    "nar_empty_name": nar(directory(entry(b"", regular()))),
    "nar_dot_entry": nar(directory(entry(b".", regular()))),
    "nar_dotdot_entry": nar(directory(entry(b"..", regular()))),
    "nar_slash_in_name": nar(directory(entry(b"../../etc/passwd", regular()))),
    "nar_nul_in_name": nar(directory(entry(b"a\0b", regular()))),
    "nar_name_too_long": nar(directory(entry(b"n" * 256, regular()))),
    "nar_case_hack_name": nar(directory(entry(b"a~nix~case~hack~1", regular()))),
    "nar_symlink_target_nul": nar(symlink(b"/etc\0passwd")),
    "nar_symlink_target_too_long": nar(symlink(b"t" * 4096)),
    "nar_symlink_target_empty": nar(symlink(b"")),
    "nar_executable_nonempty": nar(
        tokens("(", "type", "regular", "executable", "yes", "contents", "x", ")")
    ),
    "nar_unknown_node_type": nar(tokens("(", "type", "fifo", ")")),
    "nar_unknown_token": nar(tokens("(", "type", "regular", "kontents", "x", ")")),
    "nar_absurd_contents_length": s("nix-archive-1")
    + tokens("(", "type", "regular", "contents")
    + struct.pack("<Q", 2**64 - 1),
    "nar_absurd_token_length": s("nix-archive-1") + struct.pack("<Q", 2**63) + b"(",
    "nar_too_deep": nar(deep(200)),
    "nar_missing_node_close": s("nix-archive-1") + tokens("(", "type", "regular", "contents", "x"),
    "nar_entry_without_node": nar(
        tokens("(", "type", "directory", "entry", "(", "name", "a", ")", ")")
    ),
    "nar_executable_after_contents": nar(
        tokens("(", "type", "regular", "contents", "x", "executable", "", ")")
    ),
    "nar_symlink_escape_then_file": nar(
        directory(entry(b"link", symlink(b"/etc")), entry(b"link", directory()))
    ),
}


def narinfo(**overrides: str | None) -> str:
    fields = {
        "StorePath": PATH,
        "URL": "nar/0b3pval65xk7gqzrkasgj75ysxggvp1xk4gshrwj20i1hrpvbvhm.nar.xz",
        "Compression": "xz",
        "FileHash": "sha256:0b3pval65xk7gqzrkasgj75ysxggvp1xk4gshrwj20i1hrpvbvhm",
        "FileSize": "200",
        "NarHash": HASH,
        "NarSize": "656",
        "References": REF,
        "Deriver": "7d5ma06gqchg2c6gygc3c9wbzbg3bx8k-corpus.drv",
        "Sig": SIG,
    }
    fields.update(overrides)
    return "".join(f"{key}: {value}\n" for key, value in fields.items() if value is not None)


NARINFOS: dict[str, str] = {
    "narinfo_missing_storepath": narinfo(StorePath=None),
    "narinfo_missing_narhash": narinfo(NarHash=None),
    "narinfo_missing_url": narinfo(URL=None),
    "narinfo_repeated_storepath": narinfo() + f"StorePath: {PATH}\n",
    "narinfo_repeated_narsize": narinfo() + "NarSize: 1\n",
    "narinfo_path_outside_store": narinfo(StorePath="/tmp/hpi1c1lnw8jb1w6q20b91lh48xrh6051-x"),
    "narinfo_path_dotdot": narinfo(StorePath=f"{STORE}/../etc/passwd"),
    "narinfo_path_bad_hash_chars": narinfo(StorePath=f"{STORE}/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"),
    "narinfo_ref_with_slash": narinfo(References=f"{REF} ../{REF}"),
    "narinfo_ref_full_path": narinfo(References=f"{STORE}/{REF}"),
    "narinfo_ref_double_space": narinfo(References=f"{REF}  {REF[:-3]}abc"),
    "narinfo_deriver_with_slash": narinfo(Deriver="../7d5ma06gqchg2c6gygc3c9wbzbg3bx8k-x.drv"),
    "narinfo_narhash_wrong_length": narinfo(NarHash=HASH[:-1]),
    "narinfo_narhash_bad_char": narinfo(NarHash=HASH[:-1] + "e"),
    "narinfo_narhash_md5": narinfo(NarHash="md5:" + "0" * 32),
    "narinfo_narhash_no_algorithm": narinfo(NarHash=HASH.removeprefix("sha256:")),
    "narinfo_filehash_garbage": narinfo(FileHash="sha256:zzzz"),
    "narinfo_narsize_negative": narinfo(NarSize="-1"),
    "narinfo_narsize_zero": narinfo(NarSize="0"),
    "narinfo_narsize_overflow": narinfo(NarSize=str(2**64)),
    "narinfo_narsize_leading_plus": narinfo(NarSize="+656"),
    "narinfo_filesize_not_number": narinfo(FileSize="12k"),
    "narinfo_sig_bad_base64": narinfo(Sig="test-1:not*base64"),
    "narinfo_sig_short": narinfo(Sig="test-1:AAAA"),
    "narinfo_no_final_newline": narinfo().rstrip("\n"),
    "narinfo_line_without_colon": narinfo() + "garbage\n",
    "narinfo_carriage_return": narinfo().replace("\n", "\r\n"),
    "narinfo_bad_ca": narinfo(CA="sha256:abc"),
    "narinfo_url_with_space": narinfo(URL="nar/a b.nar"),
}


def write_corpus(directory: Path, suffix: str, corpus: Mapping[str, bytes]) -> None:
    """Replace the `*suffix` files of `directory` with one file per entry of `corpus`."""
    directory.mkdir(exist_ok=True)
    for stale in directory.glob(f"*{suffix}"):
        stale.unlink()
    for name, data in corpus.items():
        (directory / f"{name}{suffix}").write_bytes(data)


def main() -> None:
    write_corpus(HERE / "nar", ".nar", NARS)
    write_corpus(HERE / "narinfo", ".narinfo", {n: text.encode() for n, text in NARINFOS.items()})
    print(f"wrote {len(NARS)} NARs and {len(NARINFOS)} narinfos under {HERE}")


if __name__ == "__main__":
    main()
