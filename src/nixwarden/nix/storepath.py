"""Store paths: the one type, parsed and checked as Nix checks them. Pure: no file access.

A store path is `<store dir>/<hash>-<name>`: 32 characters of Nix's base-32 alphabet,
a dash, and a name of at most 211 characters from `[A-Za-z0-9+-._?=]` that does not
start with a period (Nix's `checkName`). A *root* is a store path or a path inside one
(`/nix/store/…-hello/bin/hello`).

`StorePath` validates in its constructor, so an invalid store path cannot be built;
every refusal is a `BadStorePath`, a `FormatError`, with one line naming the text.
"""

from __future__ import annotations

from nixwarden.display import escape
from nixwarden.errors import FormatError, InvalidInput
from nixwarden.nix.nix32 import ALPHABET as NIX32_ALPHABET

TYPE_CHECKING = False  # not typing's: `nixwarden closure` and `confine run` start here
if TYPE_CHECKING:
    from collections.abc import Iterator

STORE_DIR = "/nix/store"
HASH_LENGTH = 32
MAX_NAME_LENGTH = 211  # Nix: 255 for the file name, less the hash part and the dash

# Character sets rather than regular expressions, and plain classes rather than
# dataclasses: `re` and `dataclasses` cost more to import than `nixwarden closure`
# spends on everything else but the interpreter and the query.
_HASH_CHARS = frozenset(NIX32_ALPHABET)
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-._?=")
_NAME_PATTERN = r"[A-Za-z0-9+\-._?=]+"  # the same set, for finding names in text
_SHOWN_LIMIT = 120


class BadStorePath(FormatError):
    """Text that is not a store path (or a path inside one); the message names it."""


def _shown(text: str) -> str:
    return repr(escape(text if len(text) <= _SHOWN_LIMIT else text[: _SHOWN_LIMIT - 3] + "..."))


def _problem(hash_part: str, name: str) -> str | None:
    if len(hash_part) != HASH_LENGTH:
        return f"store path hash has {len(hash_part)} characters, expected {HASH_LENGTH}"
    if not _HASH_CHARS.issuperset(hash_part):
        return "store path hash is not in Nix's base-32 alphabet"
    if not name:
        return "store path has an empty name"
    if len(name) > MAX_NAME_LENGTH:
        return f"store path name is longer than {MAX_NAME_LENGTH}"
    if not _NAME_CHARS.issuperset(name):
        return "store path name has a character Nix does not allow"
    if name.startswith("."):
        return "store path name starts with '.'"
    return None


class _Frozen:
    """Immutable, compared and hashed by `_fields` (what a frozen dataclass would be)."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, field) for field in self._fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{field}={getattr(self, field)!r}" for field in self._fields)
        return f"{type(self).__name__}({shown})"


class StorePath(_Frozen):
    """A store path by its base name; the store directory is supplied where it matters."""

    __slots__ = ("hash_part", "name")
    _fields = __slots__
    hash_part: str
    name: str

    def __init__(self, hash_part: str, name: str) -> None:
        problem = _problem(hash_part, name)
        if problem is not None:
            raise BadStorePath(f"{_shown(f'{hash_part}-{name}')}: {problem}")
        object.__setattr__(self, "hash_part", hash_part)
        object.__setattr__(self, "name", name)

    def __lt__(self, other: StorePath) -> bool:
        return (self.hash_part, self.name) < (other.hash_part, other.name)

    def __le__(self, other: StorePath) -> bool:
        return (self.hash_part, self.name) <= (other.hash_part, other.name)

    def __gt__(self, other: StorePath) -> bool:
        return (self.hash_part, self.name) > (other.hash_part, other.name)

    def __ge__(self, other: StorePath) -> bool:
        return (self.hash_part, self.name) >= (other.hash_part, other.name)

    @classmethod
    def from_base_name(cls, text: str) -> StorePath:
        """`<hash>-<name>`."""
        hash_part, dash, name = text.partition("-")
        if not dash:
            raise BadStorePath(f"{_shown(text)}: store path has no '-' between hash and name")
        return cls(hash_part, name)

    @classmethod
    def parse(cls, text: str, store_dir: str = STORE_DIR) -> StorePath:
        """Exactly a store path directly inside `store_dir`: nothing below it, no slash after."""
        prefix = store_dir.rstrip("/") + "/"
        if not text.startswith(prefix):
            raise BadStorePath(f"{_shown(text)} is not in the store {store_dir}")
        base = text[len(prefix) :]
        if "/" in base:
            raise BadStorePath(f"{_shown(text)}: not exactly a store path")
        try:
            return cls.from_base_name(base)
        except BadStorePath as error:
            raise BadStorePath(f"{_shown(text)}: {str(error).split(': ', 1)[-1]}") from None

    @property
    def base_name(self) -> str:
        return f"{self.hash_part}-{self.name}"

    def absolute(self, store_dir: str = STORE_DIR) -> str:
        return f"{store_dir.rstrip('/')}/{self.base_name}"

    def __str__(self) -> str:
        return self.absolute()


class Root(_Frozen):
    """A store path and the part of the root below it ("" for the store path itself)."""

    __slots__ = ("inner", "store_dir", "store_path")
    _fields = ("store_path", "inner", "store_dir")
    store_path: StorePath
    inner: str
    store_dir: str

    def __init__(self, store_path: StorePath, inner: str = "", store_dir: str = STORE_DIR) -> None:
        object.__setattr__(self, "store_path", store_path)
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "store_dir", store_dir)

    @property
    def top(self) -> str:
        """The store path itself, as a path in the store directory."""
        return self.store_path.absolute(self.store_dir)

    @property
    def path(self) -> str:
        return self.top + (f"/{self.inner}" if self.inner else "")


def check_store_dir(store_dir: str) -> str:
    if not store_dir.startswith("/") or store_dir != "/" + "/".join(
        part for part in store_dir.split("/") if part
    ):
        raise InvalidInput(f"store directory {_shown(store_dir)} is not a canonical absolute path")
    if store_dir == "/":
        raise InvalidInput("the store directory cannot be /")
    return store_dir


def parse_root(text: str, store_dir: str = STORE_DIR) -> Root:
    """A store path or a path inside one, checked lexically (no symlinks are followed).

    Refuses relative paths, `..` anywhere (it could climb out of the store path), NUL
    bytes and paths outside `store_dir`. Repeated slashes and `.` components are dropped.
    """
    if "\0" in text:
        raise BadStorePath(f"{_shown(text)}: contains a NUL byte")
    if not text.startswith("/"):
        raise BadStorePath(f"{_shown(text)}: not an absolute path")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise BadStorePath(f"{_shown(text)}: '..' is not allowed in a root")
    store_parts = [part for part in store_dir.split("/") if part]
    depth = len(store_parts)
    if parts[:depth] != store_parts:
        raise BadStorePath(f"{_shown(text)}: not in the store {store_dir}")
    if len(parts) == depth:
        raise BadStorePath(f"{_shown(text)}: the store directory itself is not a store path")
    try:
        store_path = StorePath.from_base_name(parts[depth])
    except BadStorePath as error:
        raise BadStorePath(f"{_shown(text)}: {str(error).split(': ', 1)[-1]}") from None
    return Root(store_path, "/".join(parts[depth + 1 :]), store_dir)


def in_store(text: str, store_dir: str = STORE_DIR) -> bool:
    """Lexically under `store_dir/` (what Nix's `isInStore` checks)."""
    return text.startswith(store_dir + "/")


def references_in(text: str, store_dir: str = STORE_DIR) -> Iterator[StorePath]:
    """Every store path mentioned in `text` (like `--conf=/nix/store/…-x/etc`), in order.

    Only well-formed hashes count; the name ends at the first character Nix does not
    allow in names (so `/nix/store/…-x/bin` yields `…-x`).
    """
    import re  # noqa: PLC0415 - only where text is searched, off the start-up path

    pattern = re.compile(
        re.escape(store_dir) + f"/([{NIX32_ALPHABET}]{{{HASH_LENGTH}}}-{_NAME_PATTERN})"
    )
    for match in pattern.finditer(text):
        hash_part, _, name = match.group(1).partition("-")
        if not name.startswith(".") and len(name) <= MAX_NAME_LENGTH:
            yield StorePath(hash_part, name)
