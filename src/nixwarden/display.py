"""Untrusted text made safe to show a person: one line, nothing that reorders or hides.

Names from archives, requests from SSH clients, keys' comments and paths from a tree
under audit can hold control characters (C0 and C1), line and paragraph separators
(U+0085, U+2028, U+2029) and bidirectional overrides, which can make one entry look
like several or reorder what a person reads. Every character that `str.isprintable`
rejects is shown as a backslash escape (`\\x1b`, `\\u0085`, `\\u202e`), an undecodable
byte as `\\xNN` (never confused with a code point), and the backslash itself as `\\\\`,
so the escaped text is unambiguous.

Imports nothing: the gate uses it on every connection.
"""


def escape(text: str) -> str:
    """`text` with every non-printable character (and `\\`) as a backslash escape."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape_char(char) for char in text)


def escape_bytes(data: bytes) -> str:
    """Bytes as text: UTF-8 where valid, each undecodable byte as `\\xNN`."""
    return escape(data.decode("utf-8", "surrogateescape"))


def _escape_char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
