"""Blocks of lines nixwarden owns inside files others edit too (pure).

A block sits between two comment lines that name it:

    # nixwarden: begin builder b1
    …
    # nixwarden: end builder b1

Every format edited this way (ssh_config, known_hosts, Nix's machines file, nix.conf,
tmpfiles.d) takes `#` comments on a line of their own. Everything outside our blocks
is kept byte for byte; a block is replaced in place, so its position (which decides
precedence in ssh_config) is kept too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from nixwarden.display import escape
from nixwarden.errors import InvalidInput

BEGIN = "# nixwarden: begin "
END = "# nixwarden: end "
BLOCK_ID = re.compile(r"[A-Za-z0-9_.-]+(?: [A-Za-z0-9_.@-]+)*")
MAX_BLOCK_FILE_BYTES = 4 << 20


@dataclass(frozen=True)
class Block:
    block_id: str
    first: int  # index of the begin line
    last: int  # index of the end line
    body: tuple[str, ...]  # the lines between, without their newline


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def blocks(text: str, source: str) -> list[Block]:
    """Every owned block, in order. An unmatched or nested marker is an error: the file was
    edited by hand where we would otherwise overwrite someone's lines."""
    found: list[Block] = []
    open_id: str | None = None
    start = 0
    body: list[str] = []
    for index, raw in enumerate(_lines(text)):
        line = raw.rstrip("\r\n")
        if line.startswith(BEGIN):
            if open_id is not None:
                raise _broken(source, index, f"'{escape(open_id)}' is not ended before it")
            open_id = line[len(BEGIN) :]
            start = index
            body = []
        elif line.startswith(END):
            ended = line[len(END) :]
            if ended != open_id:
                raise _broken(source, index, f"end of '{escape(ended)}' without its begin")
            found.append(Block(ended, start, index, tuple(body)))
            open_id = None
        elif open_id is not None:
            body.append(line)
    if open_id is not None:
        raise _broken(source, start, f"'{escape(open_id)}' has no end line")
    return found


def _broken(source: str, index: int, what: str) -> InvalidInput:
    return InvalidInput(
        f"{source}:{index + 1}: nixwarden's marked block {what}; fix the file by hand"
    )


def find(text: str, source: str, block_id: str) -> Block | None:
    for block in blocks(text, source):
        if block.block_id == block_id:
            return block
    return None


def render(block_id: str, body: Sequence[str]) -> list[str]:
    if not BLOCK_ID.fullmatch(block_id):
        raise ValueError(f"not a block id: {block_id!r}")
    return [f"{BEGIN}{block_id}\n", *(f"{line}\n" for line in body), f"{END}{block_id}\n"]


def replace(
    text: str, source: str, block_id: str, body: Sequence[str] | None, *, first: bool = False
) -> str:
    """`text` with block `block_id` holding `body` (None: without the block). A new block
    goes at the end, or at the start with `first` (ssh_config: the first value wins)."""
    lines = _lines(text)
    existing = [block for block in blocks(text, source) if block.block_id == block_id]
    new = render(block_id, body) if body is not None else []
    if existing:
        # One block per id; any duplicates (a hand-made copy) go with the first's update.
        for block in reversed(existing[1:]):
            del lines[block.first : block.last + 1]
        block = existing[0]
        lines[block.first : block.last + 1] = new
        return "".join(lines)
    if body is None:
        return text
    if first:
        return "".join(new + lines)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return "".join(lines + new)


def owned_line_numbers(text: str, source: str) -> set[int]:
    """Indexes of the lines inside (and of) our blocks."""
    owned: set[int] = set()
    for block in blocks(text, source):
        owned.update(range(block.first, block.last + 1))
    return owned


def foreign_lines(text: str, source: str) -> list[tuple[int, str]]:
    """(1-based line number, line) of every line that is not ours."""
    owned = owned_line_numbers(text, source)
    return [
        (index + 1, raw.rstrip("\r\n"))
        for index, raw in enumerate(_lines(text))
        if index not in owned
    ]


def decode(data: bytes, source: str) -> str:
    if len(data) > MAX_BLOCK_FILE_BYTES:
        raise InvalidInput(f"{source}: larger than {MAX_BLOCK_FILE_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput(f"{source}: not UTF-8 (byte {error.start})") from None
