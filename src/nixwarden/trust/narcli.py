"""`nixwarden nar dump|hash|restore|ls`: Nix archives on the command line.

Lean at import, as `confine run` is: hashing or restoring a gigabyte is measured
against `nix-hash` and `nix-store --restore`, whose start-up is a few milliseconds.
The plain command lines (`nar hash PATH`, `nar restore DIR`, …) are read by hand;
anything else (`--help`, `--format=…`, a mistake) goes to argparse, which with what
it imports (re, shutil, gettext) costs tens of milliseconds. `nar hash` does not load
the NAR parser either (dataclasses, typing): only the tree walk and hashlib.
"""

from __future__ import annotations

import io
import os
import stat
import sys

from nixwarden.trust.failures import from_os_error

TYPE_CHECKING = False  # not typing's: see above
if TYPE_CHECKING:
    import argparse

    from nixwarden.trust.nar import Readable

# The values of trust.hashes.HashFormat (a test keeps the two the same), here so that
# reading the command line does not import the hash module.
HASH_FORMATS = ("nix32", "base16", "base64", "sri")

DESCRIPTION = "Nix archives (NAR): byte-identical to nix-store --dump, strict when reading."


def main(_command: str, argv: list[str]) -> int:
    plain = _plain(argv)
    action, operand, form = plain if plain is not None else _parse(argv)
    try:
        match action:
            case "dump":
                _dump(operand)
            case "hash":
                _hash(operand, form)
            case "restore":
                from nixwarden.trust.restore import unpack  # noqa: PLC0415

                unpack(_restore_input(), operand)
            case "ls":
                _list()
    except BrokenPipeError:
        raise  # the reader went away: not an error worth a message (see nixwarden.cli)
    except OSError as error:
        raise from_os_error(error.filename or operand or "standard input", error) from None
    return 0


def _plain(argv: list[str]) -> tuple[str, str, str] | None:
    """(action, operand, hash format) of a plain command line, or None for argparse."""
    match argv:
        case ["dump" | "hash" | "restore" as action, operand] if not operand.startswith("-"):
            return action, operand, HASH_FORMATS[0]
        case ["hash", "--format", form, operand] if form in HASH_FORMATS and not operand.startswith(
            "-"
        ):
            return "hash", operand, form
        case ["ls"]:
            return "ls", "", HASH_FORMATS[0]
    return None


def _parse(argv: list[str]) -> tuple[str, str, str]:
    from nixwarden.cliutil import parser  # noqa: PLC0415 - see the top of the module

    epilog = "Reading commands refuse any malformed archive with exit status 2."
    top = parser("nar", DESCRIPTION, epilog=epilog)
    commands = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    dumping = commands.add_parser("dump", help="write the NAR of PATH to stdout")
    dumping.add_argument("path", metavar="PATH")
    hashing = commands.add_parser("hash", help="print the NAR hash of PATH (sha256:<nix32>)")
    hashing.add_argument("path", metavar="PATH")
    hashing.add_argument(
        "--format",
        choices=HASH_FORMATS,
        default=HASH_FORMATS[0],
        help="how to print the hash (default: nix32, as nix-store -q --hash)",
    )
    restoring = commands.add_parser(
        "restore", help="unpack the NAR on stdin as DIR (must not exist)"
    )
    restoring.add_argument("directory", metavar="DIR")
    commands.add_parser("ls", help="validate the NAR on stdin and list its contents")
    args: argparse.Namespace = top.parse_args(argv)
    operand = getattr(args, "path", None) or getattr(args, "directory", None) or ""
    return args.action, operand, getattr(args, "format", HASH_FORMATS[0])


def _restore_input() -> Readable:
    """Standard input for `nar restore`: unbuffered when it is a regular file, so that
    its descriptor's position is exactly what the parser consumed and the kernel can
    copy large files' contents from it (`nar.FileExtent`); nothing has read it yet.
    A pipe or socket stays buffered: read raw, it gives a few KiB per call."""
    buffered = sys.stdin.buffer
    raw = getattr(buffered, "raw", None)
    if isinstance(raw, io.FileIO) and stat.S_ISREG(os.fstat(raw.fileno()).st_mode):
        return raw
    return buffered


def _stdout(data: bytes | bytearray | memoryview) -> None:
    sys.stdout.buffer.write(data)


def _dump(path: str) -> None:
    from nixwarden.trust import nardump  # noqa: PLC0415

    # No second thread: writing to a pipe or file costs little next to reading the
    # tree, and the kernel's buffer already decouples the two.
    sys.stdout.buffer.flush()
    try:
        out = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (captured)
        nardump.dump(path, _stdout, threaded=False)
        sys.stdout.buffer.flush()
    else:
        nardump.dump_to(path, out)


def _hash(path: str, form: str) -> None:
    from nixwarden.trust import nardump  # noqa: PLC0415

    digest, _size = nardump.sha256(path)
    if form == "nix32":  # the default, without the hash module's imports
        from nixwarden.nix import nix32  # noqa: PLC0415

        print(f"sha256:{nix32.encode(digest)}")
        return
    from nixwarden.trust.hashes import Hash, HashAlgorithm, HashFormat  # noqa: PLC0415

    print(Hash(HashAlgorithm.SHA256, digest).render(HashFormat(form)))


def _list() -> None:
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from nixwarden.trust import nar  # noqa: PLC0415

    # Nothing is printed before the whole archive is validated; the lines wait in
    # memory up to 8 MiB, beyond that in a temporary file.
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as listing:
        for line in nar.list_lines(sys.stdin.buffer):
            listing.write(line.encode() + b"\n")
        listing.seek(0)
        shutil.copyfileobj(listing, sys.stdout.buffer)
