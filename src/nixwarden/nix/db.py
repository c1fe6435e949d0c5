"""The Nix store database, read-only, safe beside a running nix-daemon.

Nix keeps `/nix/var/nix/db/db.sqlite` in WAL mode. A reader that opens it with
`mode=ro` sees one consistent snapshot for the length of one read transaction while
the daemon keeps writing: every query here runs inside a single `BEGIN … COMMIT`.
`SQLITE_BUSY` (WAL recovery, a checkpoint holding the lock) is retried with back-off.
We never open with `immutable=1`: that skips locking and is wrong on a live database.

Tables used (Nix's `schema.sql`, schema version 10, the same in Lix):
`ValidPaths(id, path, …)` and `Refs(referrer, reference)` (ids of ValidPaths;
a path may refer to itself).
"""

from __future__ import annotations

import time

from nixwarden.errors import InvalidInput, NixwardenError

TYPE_CHECKING = False  # not typing's: `nixwarden closure` starts here
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Sequence
    from typing import TypeVar

    T = TypeVar("T")
else:
    # The sqlite3 package is this C module plus datetime adapters we never use; importing
    # them (datetime, collections.abc) costs `nixwarden closure` milliseconds.
    import _sqlite3 as sqlite3

DEFAULT_DB = "/nix/var/nix/db/db.sqlite"

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6

_MISSING = """
SELECT j.value FROM json_each(?1) AS j
LEFT JOIN ValidPaths AS v ON v.path = j.value
WHERE v.id IS NULL
"""

# The closure as a recursive query: UNION (not UNION ALL) drops ids already seen, so
# every path is visited once; Refs' primary key (referrer, reference) serves the join.
_CLOSURE = """
WITH RECURSIVE closure(id) AS (
    SELECT v.id FROM json_each(?1) AS j JOIN ValidPaths AS v ON v.path = j.value
    UNION
    SELECT r.reference FROM Refs AS r JOIN closure AS c ON r.referrer = c.id
)
SELECT v.path FROM closure AS c JOIN ValidPaths AS v ON v.id = c.id
"""


class DatabaseUnreadable(NixwardenError):
    """The database cannot be read (permissions, missing, foreign schema, busy too long)."""


class InvalidPaths(InvalidInput):
    """Some roots are not valid store paths; `paths` names them."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = tuple(paths)
        listed = ", ".join(self.paths)
        super().__init__(f"not a valid store path: {listed}")


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(error)
    return "locked" in text or "busy" in text


def _uri(path: str) -> str:
    """A read-only SQLite URI; '%', '?' and '#' in the path are percent-encoded."""
    quoted = path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?mode=ro"


# JSON string escapes for what may not appear raw in a JSON string (RFC 8259, 7).
_JSON_ESCAPES = {ord('"'): '\\"', ord("\\"): "\\\\"} | {c: f"\\u{c:04x}" for c in range(0x20)}


def json_strings(values: Sequence[str]) -> str:
    """A JSON array of strings, for `json_each`, without importing `json` (and `re`)."""
    return "[" + ",".join(f'"{value.translate(_JSON_ESCAPES)}"' for value in values) + "]"


def closure(
    store_paths: Sequence[str],
    db: str = DEFAULT_DB,
    *,
    attempts: int = 8,
    busy_timeout: float = 2.0,
) -> frozenset[str]:
    """The closure of `store_paths` (exact store paths) from the database at `db`.

    Raises `InvalidPaths` when a root is not valid and `DatabaseUnreadable` when the
    database cannot answer, so that the caller may ask Nix instead.
    """
    roots = json_strings(store_paths)

    def query(connection: sqlite3.Connection) -> frozenset[str]:
        missing = [row[0] for row in connection.execute(_MISSING, (roots,))]
        if missing:
            raise InvalidPaths(missing)
        return frozenset(path for (path,) in connection.execute(_CLOSURE, (roots,)))

    return _read(db, query, attempts=attempts, busy_timeout=busy_timeout)


_USAGE = "SELECT count(*), coalesce(sum(narSize), 0) FROM ValidPaths"


def store_usage(
    db: str, *, attempts: int = 8, busy_timeout: float = 2.0, deadline: float | None = None
) -> tuple[int, int]:
    """(number of valid paths, total of their NAR sizes): what `nix path-info --all --size`
    adds up. `deadline` (a `time.monotonic()` value) interrupts a query still running
    then, as one on a hostile database (a tenant's: a view that never ends) would be."""

    def query(connection: sqlite3.Connection) -> tuple[int, int]:
        paths, nar_bytes = connection.execute(_USAGE).fetchone()
        return int(paths), int(nar_bytes)

    return _read(db, query, attempts=attempts, busy_timeout=busy_timeout, deadline=deadline)


def _read(
    db: str,
    query: Callable[[sqlite3.Connection], T],
    *,
    attempts: int = 8,
    busy_timeout: float = 2.0,
    deadline: float | None = None,
) -> T:
    """`query` run in one read-only transaction on the database at `db`, retried while busy.

    Raises `DatabaseUnreadable` when the database cannot answer.
    """
    delay = 0.02
    last: sqlite3.Error | None = None
    for _ in range(attempts):
        try:
            return _read_once(db, query, busy_timeout, deadline)
        except sqlite3.OperationalError as error:
            if not _is_busy(error):
                raise DatabaseUnreadable(f"{db}: {error}") from error
            last = error
        except sqlite3.Error as error:
            raise DatabaseUnreadable(f"{db}: {error}") from error
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise DatabaseUnreadable(f"{db}: still busy after {attempts} attempts: {last}")


def _read_once(
    db: str, query: Callable[[sqlite3.Connection], T], busy_timeout: float, deadline: float | None
) -> T:
    connection = sqlite3.connect(
        _uri(db), uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=True
    )
    if deadline is not None:
        # SQLite calls this every 10,000 virtual machine steps; True interrupts the query.
        connection.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
    try:
        # query_only: even a bug here cannot write to the store's database.
        connection.execute("PRAGMA query_only = ON")
        # One read transaction: every statement of the query sees the same snapshot.
        connection.execute("BEGIN")
        result = query(connection)
        connection.execute("COMMIT")
    finally:
        connection.close()  # rolls back a transaction left open by an error
    return result
