"""A hypothesis strategy shared by the parsers' property tests: valid bytes, damaged."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(
    draw: st.DrawFn,
    seeds: st.SearchStrategy[bytes],
    *,
    max_edits: int = 3,
    max_delete: int = 30,
    max_insert: int = 10,
    truncate: bool = False,
) -> bytes:
    """One of `seeds` with 1 to `max_edits` bytes replaced, runs deleted or inserted, and
    (with `truncate`) the tail cut off."""
    data = bytearray(draw(seeds))
    edits = ["replace", "delete", "insert", *(["truncate"] if truncate else [])]
    for _ in range(draw(st.integers(1, max_edits))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        match draw(st.sampled_from(edits)):
            case "replace":
                data[at] = draw(st.integers(0, 255))
            case "delete":
                del data[at : at + draw(st.integers(1, max_delete))]
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=max_insert))
            case "truncate":
                del data[at:]
    return bytes(data)
