"""Provenance: one append-only, hash-chained record per push, in the receive service's SQLite.

    records(seq, time, principal, unix_user, ssh_keys, client, signers, tops,
            closure_digest, action, outcome, reason, profile, generation, prev_hash, hash)
    record_paths(path, seq, signers)      indexed by path: "who put this path here"

Each record's `hash` is `sha256(prev_hash || canonical JSON of the record)`, hex, where
the record's JSON holds every column but `hash` and, under `paths`, its record_paths
rows in order; the first record's `prev_hash` is 64 zeros. Changing, removing or
reordering any row (of either table) therefore breaks the chain at that record, which
`verify` finds. Truncating the newest records cannot be seen from inside the file: keep
the head hash `verify` prints somewhere else if that matters.

Only the service writes (one IMMEDIATE transaction per record, serialized by the caller
too); readers (`nixwarden provenance`, often root) open the file read-only through a
descriptor opened without following symlinks, with `trusted_schema` off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from nixwarden.errors import FormatError, InvalidInput, Refused

GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    principal TEXT NOT NULL,
    unix_user TEXT NOT NULL,
    ssh_keys TEXT NOT NULL,
    client TEXT,
    signers TEXT NOT NULL,
    tops TEXT NOT NULL,
    closure_digest TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    profile TEXT,
    generation INTEGER,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS record_paths (
    path TEXT NOT NULL,
    seq INTEGER NOT NULL,
    signers TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS record_paths_by_path ON record_paths (path);
CREATE INDEX IF NOT EXISTS record_paths_by_seq ON record_paths (seq);
CREATE INDEX IF NOT EXISTS records_by_profile ON records (profile);
"""

_COLUMNS = (
    "seq, time, principal, unix_user, ssh_keys, client, signers, tops, closure_digest, "
    "action, outcome, reason, profile, generation, prev_hash, hash"
)
BUSY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Signer:
    """A certified identity whose signatures the policy accepted (the certificate kept, so
    `--revoked` can judge it again under today's KRLs and clock)."""

    key_id: str
    serial: int
    ca_fingerprint: str
    certificate: str  # base64 of the OpenSSH certificate blob

    def to_json(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "serial": self.serial,
            "ca_fingerprint": self.ca_fingerprint,
            "certificate": self.certificate,
        }


@dataclass(frozen=True)
class PathEntry:
    """A path this record vouches for, with the key ids that signed it (empty for a top
    that was already valid)."""

    path: str
    signers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Record:
    time: str
    principal: str
    unix_user: str
    action: str
    outcome: str
    ssh_keys: tuple[str, ...] = ()  # as reported by the session (the gate)
    client: str | None = None  # as reported by the session
    signers: tuple[Signer, ...] = ()
    tops: tuple[str, ...] = ()
    closure_digest: str = ""
    reason: str | None = None
    profile: str | None = None
    generation: int | None = None
    paths: tuple[PathEntry, ...] = ()
    seq: int = 0
    prev_hash: str = ""
    hash: str = field(default="", compare=False)

    def body(self) -> dict[str, object]:
        """Everything the hash covers."""
        return {
            "seq": self.seq,
            "time": self.time,
            "principal": self.principal,
            "unix_user": self.unix_user,
            "ssh_keys": list(self.ssh_keys),
            "client": self.client,
            "signers": [signer.to_json() for signer in self.signers],
            "tops": list(self.tops),
            "closure_digest": self.closure_digest,
            "action": self.action,
            "outcome": self.outcome,
            "reason": self.reason,
            "profile": self.profile,
            "generation": self.generation,
            "prev_hash": self.prev_hash,
            "paths": [[entry.path, list(entry.signers)] for entry in self.paths],
        }

    def computed_hash(self) -> str:
        canonical = json.dumps(self.body(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(self.prev_hash.encode("ascii") + canonical.encode()).hexdigest()

    def to_json(self) -> dict[str, object]:
        document = self.body()
        document["paths"] = [
            {"path": entry.path, "signers": list(entry.signers)} for entry in self.paths
        ]
        document["hash"] = self.hash
        return document


def closure_digest(paths: Iterable[str]) -> str:
    """`sha256:` of the sorted closure, one path per line: the same closure, the same digest."""
    text = "".join(f"{path}\n" for path in sorted(set(paths)))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# --- writing (the service) -------------------------------------------------------------


def create(path: str) -> None:
    """Make sure the database exists with its tables (mode 0644: who deployed what is not a
    secret on this machine; only the service user may write)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"{path}: not a regular file")
    finally:
        os.close(fd)
    with contextlib.closing(_connect_rw(path)) as connection:
        connection.executescript(SCHEMA)


def _connect_rw(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    connection.execute("PRAGMA journal_mode = DELETE")  # readers need no write access
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA trusted_schema = OFF")
    return connection


def append(path: str, record: Record) -> Record:
    """Append `record` (its seq, prev_hash and hash are filled in here); returns it so."""
    with writing(path) as connection:
        return append_in(connection, record)


@contextlib.contextmanager
def writing(path: str) -> Iterator[sqlite3.Connection]:
    """One IMMEDIATE transaction on the database at `path`: committed when the block
    ends, rolled back if it raises."""
    with contextlib.closing(_connect_rw(path)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


def append_in(connection: sqlite3.Connection, record: Record) -> Record:
    """Append `record` inside the transaction of `writing`, after the last record."""
    last = connection.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev_hash = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
    sealed = replace(record, seq=seq, prev_hash=prev_hash)
    sealed = replace(sealed, hash=sealed.computed_hash())
    connection.execute(
        f"INSERT INTO records ({_COLUMNS}) VALUES "  # noqa: S608 - fixed column list
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        _row(sealed),
    )
    connection.executemany(
        "INSERT INTO record_paths (path, seq, signers) VALUES (?, ?, ?)",
        ((entry.path, seq, _dump(list(entry.signers))) for entry in sealed.paths),
    )
    return sealed


def _dump(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _row(record: Record) -> tuple[object, ...]:
    return (
        record.seq,
        record.time,
        record.principal,
        record.unix_user,
        _dump(list(record.ssh_keys)),
        record.client,
        _dump([signer.to_json() for signer in record.signers]),
        _dump(list(record.tops)),
        record.closure_digest,
        record.action,
        record.outcome,
        record.reason,
        record.profile,
        record.generation,
        record.prev_hash,
        record.hash,
    )


# --- reading (the CLI) -----------------------------------------------------------------


@contextlib.contextmanager
def reading(path: str) -> Iterator[sqlite3.Connection]:
    """The database at `path`, read-only, opened through a descriptor (no symlink in its
    last component, a regular file) so what SQLite reads is what was checked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise InvalidInput(f"{path}: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"{path}: not a regular file")
        uri = f"file:/proc/self/fd/{fd}?mode=ro"
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as error:
            raise InvalidInput(f"{path}: {error}") from None
        try:
            connection.execute("PRAGMA trusted_schema = OFF")
            connection.execute("PRAGMA query_only = ON")
            connection.execute("BEGIN")  # one snapshot for the whole read
            yield connection
        except sqlite3.Error as error:
            raise FormatError(f"{path}: not a provenance database ({error})") from None
        finally:
            connection.close()
    finally:
        os.close(fd)


def by_path(connection: sqlite3.Connection, store_path: str) -> tuple[Record, ...]:
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM records WHERE seq IN "  # noqa: S608 - fixed column list
        "(SELECT seq FROM record_paths WHERE path = ?) ORDER BY seq",
        (store_path,),
    ).fetchall()
    return tuple(_record(connection, row) for row in rows)


def by_profile(connection: sqlite3.Connection, profile: str) -> tuple[Record, ...]:
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM records WHERE profile = ? ORDER BY seq",  # noqa: S608
        (profile,),
    ).fetchall()
    return tuple(_record(connection, row) for row in rows)


def all_records(connection: sqlite3.Connection) -> Iterator[Record]:
    """Every record in order, with its paths (one pass over each table)."""
    rows = iter(
        connection.execute("SELECT seq, path, signers FROM record_paths ORDER BY seq, rowid")
    )
    pending = next(rows, None)
    signer_lists: dict[object, tuple[str, ...]] = {}  # most paths share one signers text
    for row in connection.execute(
        f"SELECT {_COLUMNS} FROM records ORDER BY seq"  # noqa: S608
    ):
        entries = []
        while pending is not None and pending[0] < row[0]:
            pending = next(rows, None)  # rows of no record: seen by verify as a break
        while pending is not None and pending[0] == row[0]:
            _, path, signers = pending
            if signers not in signer_lists:
                signer_lists[signers] = _path_entry(path, signers).signers
            if not isinstance(path, str):
                raise FormatError("provenance: a path is not text")
            entries.append(PathEntry(path, signer_lists[signers]))
            pending = next(rows, None)
        yield _record_of(row, tuple(entries))


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    problem: str


@dataclass(frozen=True)
class ChainState:
    records: int
    head: str


def verify(connection: sqlite3.Connection) -> ChainState:
    """Recompute the chain; raises `Refused` naming the first broken record."""
    expected_seq = 1
    prev_hash = GENESIS
    count = 0
    for record in all_records(connection):
        problem = _break(record, expected_seq, prev_hash)
        if problem is not None:
            raise Refused(f"provenance chain broken at record {problem.seq}: {problem.problem}")
        prev_hash = record.hash
        expected_seq += 1
        count += 1
    orphans = connection.execute(
        "SELECT min(seq) FROM record_paths WHERE seq NOT IN (SELECT seq FROM records)"
    ).fetchone()[0]
    if orphans is not None:
        raise Refused(f"provenance chain broken at record {orphans}: paths of a missing record")
    return ChainState(count, prev_hash)


def _break(record: Record, expected_seq: int, prev_hash: str) -> ChainBreak | None:
    if record.seq != expected_seq:
        return ChainBreak(expected_seq, f"missing (next is {record.seq})")
    if record.prev_hash != prev_hash:
        return ChainBreak(record.seq, "prev_hash is not the previous record's hash")
    if record.computed_hash() != record.hash:
        return ChainBreak(record.seq, "contents do not match its hash")
    return None


def _loads(text: object, what: str) -> object:
    if not isinstance(text, str):
        raise FormatError(f"provenance: {what} is not text")
    try:
        return json.loads(text)
    except ValueError:
        raise FormatError(f"provenance: {what} is not JSON") from None


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise FormatError(f"provenance: {what} is not a list of strings")
    return tuple(value)


def _path_entry(path: object, signers: object) -> PathEntry:
    if not isinstance(path, str):
        raise FormatError("provenance: a path is not text")
    return PathEntry(path, _strings(_loads(signers, "path signers"), "path signers"))


def _signers(value: object) -> tuple[Signer, ...]:
    if not isinstance(value, list):
        raise FormatError("provenance: signers is not a list")
    found = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {
            "key_id",
            "serial",
            "ca_fingerprint",
            "certificate",
        }:
            raise FormatError("provenance: a signer is not {key_id, serial, ca_fingerprint, …}")
        key_id, serial = item["key_id"], item["serial"]
        fingerprint, certificate = item["ca_fingerprint"], item["certificate"]
        if not (
            isinstance(key_id, str)
            and type(serial) is int
            and isinstance(fingerprint, str)
            and isinstance(certificate, str)
        ):
            raise FormatError("provenance: a signer has a field of the wrong type")
        found.append(Signer(key_id, serial, fingerprint, certificate))
    return tuple(found)


def _record(connection: sqlite3.Connection, row: Sequence[object]) -> Record:
    entries = tuple(
        _path_entry(path, signers)
        for path, signers in connection.execute(
            "SELECT path, signers FROM record_paths WHERE seq = ? ORDER BY rowid", (row[0],)
        )
    )
    return _record_of(row, entries)


def _optional_text(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise FormatError(f"provenance: {what} is not text")
    return value


def _record_of(row: Sequence[object], paths: tuple[PathEntry, ...]) -> Record:
    (
        seq,
        time,
        principal,
        unix_user,
        ssh_keys,
        client,
        signers,
        tops,
        digest,
        action,
        outcome,
        reason,
        profile,
        generation,
        prev_hash,
        hash_,
    ) = row
    texts = (time, principal, unix_user, digest, action, outcome, prev_hash, hash_)
    if type(seq) is not int or not all(isinstance(text, str) for text in texts):
        raise FormatError(f"provenance: record {seq!r} has a column of the wrong type")
    if generation is not None and type(generation) is not int:
        raise FormatError(f"provenance: record {seq} has a generation that is not a number")
    return Record(
        seq=seq,
        time=str(time),
        principal=str(principal),
        unix_user=str(unix_user),
        ssh_keys=_strings(_loads(ssh_keys, "ssh_keys"), "ssh_keys"),
        client=_optional_text(client, "client"),
        signers=_signers(_loads(signers, "signers")),
        tops=_strings(_loads(tops, "tops"), "tops"),
        closure_digest=str(digest),
        action=str(action),
        outcome=str(outcome),
        reason=_optional_text(reason, "reason"),
        profile=_optional_text(profile, "profile"),
        generation=generation,
        prev_hash=str(prev_hash),
        hash=str(hash_),
        paths=paths,
    )


@dataclass(frozen=True)
class Unvouched:
    """A path whose every recorded signer is no longer acceptable, and why each is not."""

    path: str
    reasons: tuple[str, ...]


def unvouched(
    records: Iterable[Record], problem: Callable[[Signer], str | None]
) -> list[Unvouched]:
    """The paths that deployed records vouch for whose signers all have a `problem` now.

    A path counts every signer any deployed record accepted for it; one that is still
    acceptable vouches for the path. Paths recorded with no signer (a top that was
    already valid) are not listed: there is nothing to judge.
    """
    signers_of: dict[str, dict[str, Signer]] = {}
    for record in records:
        if record.outcome != "deployed":
            continue
        certificates: dict[str, list[Signer]] = {}
        for signer in record.signers:
            certificates.setdefault(signer.key_id, []).append(signer)
        for entry in record.paths:
            for key_id in entry.signers:
                for signer in certificates.get(key_id, ()):
                    signers_of.setdefault(entry.path, {})[signer.certificate] = signer
    judged: dict[str, str | None] = {}
    found = []
    for path, signers in signers_of.items():
        reasons = []
        for certificate, signer in signers.items():
            if certificate not in judged:
                judged[certificate] = problem(signer)
            why = judged[certificate]
            if why is None:
                break
            reasons.append(f"{signer.key_id} (serial {signer.serial}): {why}")
        else:
            if reasons:
                found.append(Unvouched(path, tuple(reasons)))
    return sorted(found, key=lambda item: item.path)
