"""Provenance: the hash chain, lookups by path and profile, breaks found, unvouched paths."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.deploy import provenance
from nixwarden.deploy.provenance import PathEntry, Record, Signer
from nixwarden.errors import InvalidInput, Refused

STORE = "/nix/store/"
APP = STORE + "a" * 32 + "-app"
LIB = STORE + "b" * 32 + "-lib"
DATA = STORE + "c" * 32 + "-data"
ALICE = Signer("alice-1", 42, "SHA256:ca", "QUxJQ0U=")
BOB = Signer("bob-1", 43, "SHA256:ca", "Qk9C")


def record(**fields: object) -> Record:
    values: dict[str, object] = {
        "time": "2026-11-22T10:00:00Z",
        "principal": "alice",
        "unix_user": "deploy",
        "action": "push",
        "outcome": "deployed",
        "ssh_keys": ("ssh-ed25519 SHA256:key",),
        "client": "127.0.0.1:5000",
        "signers": (ALICE,),
        "tops": (APP,),
        "closure_digest": provenance.closure_digest([APP, LIB, DATA]),
        "profile": "web",
        "generation": 1,
        "paths": (PathEntry(APP, ("alice-1",)), PathEntry(LIB, ("alice-1",))),
    }
    values.update(fields)
    return Record(**values)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "provenance.db")
    provenance.create(path)
    return path


@pytest.fixture
def chain(db: str) -> Iterator[str]:
    provenance.append(db, record())
    provenance.append(db, record(generation=2, paths=(PathEntry(DATA, ("alice-1",)),)))
    provenance.append(db, record(outcome="refused", reason="no", profile="db", paths=()))
    yield db


def verify(db: str) -> provenance.ChainState:
    with provenance.reading(db) as connection:
        return provenance.verify(connection)


def tamper(db: str, statement: str, *parameters: object) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(statement, parameters)


def test_appends_chain_and_verify(chain: str) -> None:
    with provenance.reading(chain) as connection:
        records = list(provenance.all_records(connection))
        state = provenance.verify(connection)
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == provenance.GENESIS
    assert records[1].prev_hash == records[0].hash
    assert all(r.hash == r.computed_hash() for r in records)
    assert state == provenance.ChainState(3, records[-1].hash)


def test_lookups_by_path_and_profile(chain: str) -> None:
    with provenance.reading(chain) as connection:
        assert [r.seq for r in provenance.by_path(connection, APP)] == [1]
        assert [r.seq for r in provenance.by_path(connection, DATA)] == [2]
        assert provenance.by_path(connection, STORE + "d" * 32 + "-none") == ()
        assert [r.seq for r in provenance.by_profile(connection, "web")] == [1, 2]
        [first] = provenance.by_path(connection, LIB)
    assert first == record(seq=1, prev_hash=provenance.GENESIS)
    assert first.signers == (ALICE,)
    assert first.to_json()["paths"] == [
        {"path": APP, "signers": ["alice-1"]},
        {"path": LIB, "signers": ["alice-1"]},
    ]


@pytest.mark.parametrize(
    ("statement", "parameters", "broken"),
    [
        ("UPDATE records SET principal = 'mallory' WHERE seq = 2", (), "record 2: contents"),
        ("UPDATE records SET outcome = 'deployed' WHERE seq = 3", (), "record 3: contents"),
        ("DELETE FROM records WHERE seq = 2", (), "record 2: missing"),
        ("UPDATE records SET prev_hash = hash WHERE seq = 1", (), "record 1: prev_hash"),
        ("DELETE FROM record_paths WHERE path = ?", (LIB,), "record 1: contents"),
        ("INSERT INTO record_paths VALUES (?, 1, '[]')", (DATA,), "record 1: contents"),
        ("UPDATE record_paths SET seq = 1 WHERE path = ?", (DATA,), "record 1: contents"),
        ("INSERT INTO record_paths VALUES (?, 9, '[]')", (DATA,), "record 9: paths of"),
    ],
)
def test_verify_names_the_first_broken_record(
    chain: str, statement: str, parameters: tuple[str, ...], broken: str
) -> None:
    tamper(chain, statement, *parameters)
    with pytest.raises(Refused, match=f"chain broken at {broken}"):
        verify(chain)


def test_a_rewritten_chain_still_shows_where_it_was_changed(chain: str) -> None:
    # Recomputing the changed record's hash moves the break to the next record.
    with provenance.reading(chain) as connection:
        second = next(r for r in provenance.all_records(connection) if r.seq == 2)
    forged = Record(**{**second.__dict__, "principal": "mallory"})
    tamper(
        chain,
        "UPDATE records SET principal = 'mallory', hash = ? WHERE seq = 2",
        forged.computed_hash(),
    )
    with pytest.raises(Refused, match="record 3: prev_hash"):
        verify(chain)


def test_reading_refuses_a_symlink_and_what_is_not_a_file(chain: str, tmp_path: Path) -> None:
    link = tmp_path / "link.db"
    link.symlink_to(chain)
    with pytest.raises(InvalidInput), provenance.reading(str(link)):
        pass
    with pytest.raises(InvalidInput, match="not a regular file"), provenance.reading(str(tmp_path)):
        pass


def test_reading_is_read_only(chain: str) -> None:
    with provenance.reading(chain) as connection, pytest.raises(sqlite3.OperationalError):
        connection.execute("DELETE FROM records")


def test_the_closure_digest_is_of_the_set() -> None:
    assert provenance.closure_digest([LIB, APP, APP]) == provenance.closure_digest([APP, LIB])
    assert provenance.closure_digest([APP]) != provenance.closure_digest([LIB])


def test_unvouched_lists_paths_whose_every_signer_has_a_problem() -> None:
    records = [
        record(
            signers=(ALICE,), paths=(PathEntry(APP, ("alice-1",)), PathEntry(LIB, ("alice-1",)))
        ),
        record(signers=(BOB,), paths=(PathEntry(LIB, ("bob-1",)),)),
        record(outcome="refused", signers=(BOB,), paths=(PathEntry(DATA, ("bob-1",)),)),
        record(signers=(), paths=(PathEntry(DATA),)),  # a top that was already valid
    ]
    revoked = {"alice-1": "revoked: serial 42"}
    found = provenance.unvouched(records, lambda signer: revoked.get(signer.key_id))
    assert found == [provenance.Unvouched(APP, ("alice-1 (serial 42): revoked: serial 42",))]
    everyone = provenance.unvouched(records, lambda signer: "expired")
    assert [item.path for item in everyone] == sorted([APP, LIB])


texts = st.text(min_size=0, max_size=20)
CHANGES = {
    "principal": "UPDATE records SET principal = principal || 'x' WHERE seq = 1",
    "unix_user": "UPDATE records SET unix_user = unix_user || 'x' WHERE seq = 1",
    "closure_digest": "UPDATE records SET closure_digest = 'sha256:0' WHERE seq = 1",
    "time": "UPDATE records SET time = '2026-11-22T10:00:01Z' WHERE seq = 1",
    # Values the strategies below never produce, so each statement changes the record.
    "ssh_keys": "UPDATE records SET ssh_keys = '[\"" + "k" * 30 + "\"]' WHERE seq = 1",
    "generation": "UPDATE records SET generation = -1 WHERE seq = 1",
}


@settings(max_examples=25, deadline=None)
@given(
    principal=texts,
    reason=st.none() | texts,
    generation=st.none() | st.integers(min_value=0, max_value=2**40),
    keys=st.lists(texts, max_size=3).map(tuple),
    field=st.sampled_from(sorted(CHANGES)),
)
def test_any_change_to_any_record_breaks_the_chain(  # noqa: PLR0917
    tmp_path_factory: pytest.TempPathFactory,
    principal: str,
    reason: str | None,
    generation: int | None,
    keys: tuple[str, ...],
    field: str,
) -> None:
    db = str(tmp_path_factory.mktemp("chain") / "p.db")
    provenance.create(db)
    for _ in range(2):
        provenance.append(
            db, record(principal=principal, reason=reason, generation=generation, ssh_keys=keys)
        )
    assert verify(db).records == 2
    tamper(db, CHANGES[field])
    with pytest.raises(Refused, match="record 1"):
        verify(db)
    os.unlink(db)
