"""The receive service's background importer: a path goes to the daemon only once the
whole of its closure within the push has arrived, and never before its references."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.deploy import wire
from nixwarden.deploy.importer import Importer, ImportIncomplete
from nixwarden.errors import CommandFailed
from nixwarden.trust.hashes import Hash, HashAlgorithm

STORE = "/nix/store/"
APP = STORE + "a" * 32 + "-app"
LIB = STORE + "b" * 32 + "-lib"
DATA = STORE + "c" * 32 + "-data"
VALID = STORE + "d" * 32 + "-valid-on-the-target"


def info(path: str, *references: str) -> wire.PathInfo:
    return wire.PathInfo(path, Hash(HashAlgorithm.SHA256, bytes(32)), 8, references, None, None, ())


# app -> lib -> data, and app -> data; app also refers to itself and to a valid path.
CLOSURE = (info(APP, APP, LIB, DATA, VALID), info(LIB, DATA), info(DATA))


class Recorder:
    """An import_batch that records its batches (and can be told to fail or wait)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[tuple[str, ...]] = []
        self.fail_on = fail_on
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, batch: Sequence[str]) -> None:
        self.started.set()
        self.release.wait(10)
        self.batches.append(tuple(batch))
        if self.fail_on in batch:
            raise CommandFailed("nix copy: refused by the daemon")

    def imported(self) -> list[str]:
        return [path for batch in self.batches for path in batch]


def assert_references_first(imported: Sequence[str], infos: Sequence[wire.PathInfo]) -> None:
    """Every path of `infos` once in `imported`, each after those of them it refers to."""
    assert sorted(imported) == sorted(entry.path for entry in infos)
    position = {path: index for index, path in enumerate(imported)}
    for entry in infos:
        for reference in entry.references:
            if reference in position and reference != entry.path:
                assert position[reference] < position[entry.path], (reference, entry.path)


def imported(infos: Sequence[wire.PathInfo], arrival: Sequence[str]) -> list[str]:
    """What an importer of `infos` imports, in order, when their NARs arrive so."""
    recorder = Recorder()
    importer = Importer(infos, recorder)
    for path in arrival:
        importer.arrived(path)
    importer.finish()
    return recorder.imported()


@pytest.mark.parametrize("arrival", list(itertools.permutations([APP, LIB, DATA])))
def test_every_arrival_order_imports_references_first(arrival: tuple[str, ...]) -> None:
    assert_references_first(imported(CLOSURE, arrival), CLOSURE)


def test_a_referrer_waits_for_a_reference_that_arrived_but_is_not_importable() -> None:
    # app and lib arrive, data (which lib refers to) has not: nothing may be imported.
    recorder = Recorder()
    importer = Importer(CLOSURE, recorder)
    importer.arrived(APP)
    importer.arrived(LIB)
    importer.stop()
    assert recorder.batches == []


def test_a_closed_layer_is_imported_before_the_rest_arrives() -> None:
    recorder = Recorder()
    importer = Importer(CLOSURE, recorder)
    importer.arrived(DATA)
    importer.arrived(LIB)
    for _ in range(1000):  # the importer thread takes them without waiting for APP
        if len(recorder.imported()) == 2:
            break
        threading.Event().wait(0.01)
    assert recorder.imported() == [DATA, LIB]
    importer.arrived(APP)
    importer.finish()
    assert recorder.imported() == [DATA, LIB, APP]


def test_a_failed_batch_is_raised_to_the_session_and_nothing_more_is_imported() -> None:
    recorder = Recorder(fail_on=DATA)
    importer = Importer(CLOSURE, recorder)
    importer.arrived(DATA)
    with pytest.raises(CommandFailed, match="refused by the daemon"):
        importer.finish()
    assert recorder.batches == [(DATA,)]


def test_finish_without_every_nar_is_an_error() -> None:
    importer = Importer(CLOSURE, Recorder())
    importer.arrived(DATA)
    with pytest.raises(ImportIncomplete, match="2 paths never became importable"):
        importer.finish()


def test_stop_waits_for_the_batch_under_way_and_starts_no_other() -> None:
    recorder = Recorder()
    recorder.release.clear()
    importer = Importer(CLOSURE, recorder)
    importer.arrived(DATA)  # taken as a batch, which waits for `release`
    assert recorder.started.wait(10)
    importer.arrived(LIB)
    stopper = threading.Thread(target=importer.stop)
    stopper.start()
    recorder.release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert recorder.batches == [(DATA,)]


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[wire.PathInfo], list[str]]:
    """A random reference graph (each path refers only to earlier ones) and an arrival order."""
    count = draw(st.integers(1, 12))
    paths = [f"{STORE}{index:032d}-p{index}" for index in range(count)]
    infos = [
        info(path, *draw(st.lists(st.sampled_from(paths[:index]), unique=True)) if index else ())
        for index, path in enumerate(paths)
    ]
    return infos, draw(st.permutations(paths))


@given(dags())
@settings(max_examples=200, deadline=None)
def test_any_graph_any_order_is_imported_and_sent_references_first(
    case: tuple[list[wire.PathInfo], list[str]],
) -> None:
    infos, arrival = case
    assert_references_first(imported(infos, arrival), infos)
    # The client's manifest order, from any starting order, puts references first too.
    order, stuck = wire.references_first(sorted(infos, key=lambda i: arrival.index(i.path)))
    assert stuck == ()
    assert_references_first(order, infos)


def test_a_reference_cycle_is_left_out_of_the_order() -> None:
    cycle = (info(APP, LIB), info(LIB, APP), info(DATA))
    assert wire.references_first(cycle) == ((DATA,), (APP, LIB))
