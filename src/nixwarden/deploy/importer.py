"""Importing a push's verified paths while later NARs are still arriving.

The receive service hands each path to an `Importer` once its NAR matched the manifest
(size and SHA-256) and its countersigned narinfo is in the staging cache. A path can be
imported once the whole of its closure within the push has arrived (the others it
refers to were valid on the target when the push was admitted). One background thread
takes everything importable so far as one batch, references before referrers, and
hands it to `import_batch` (one `nix copy` through the daemon); while it runs, more
paths arrive, so the batches grow when the daemon is the slower side.

Pure bookkeeping and one thread: what a batch does, and undoing it on failure, is the
caller's (receive.py). A failed batch stops the importer; the caller sees the error at
its next `check` or at `finish`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from nixwarden.deploy import wire
from nixwarden.errors import NixwardenError


class ImportIncomplete(NixwardenError):
    """`finish` found paths that never became importable (a bug or a missing NAR)."""


class Importer:
    """Closed layers of one push, imported in the background as they complete."""

    def __init__(
        self,
        infos: Sequence[wire.PathInfo],
        import_batch: Callable[[Sequence[str]], None],
        *,
        name: str = "import",
    ) -> None:
        self._import_batch = import_batch
        present = {info.path for info in infos}
        # Per path: 1 for its own NAR, plus one per other path of the push it refers to
        # that is not importable yet; it is importable when the count reaches 0.
        self._waiting: dict[str, int] = {}
        self._referrers: dict[str, list[str]] = {}
        for info in infos:
            inside = {ref for ref in info.references if ref in present and ref != info.path}
            self._waiting[info.path] = 1 + len(inside)
            for reference in inside:
                self._referrers.setdefault(reference, []).append(info.path)
        self._ready: list[str] = []
        self._imported = 0
        self._closed = False  # no more arrivals: import what is left, then end
        self._stopped = False  # abandon: end after the batch under way
        self._error: BaseException | None = None
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def arrived(self, path: str) -> None:
        """`path`'s NAR and narinfo are staged and verified."""
        with self._condition:
            if self._count_down(path):
                self._condition.notify_all()

    def _count_down(self, path: str) -> bool:
        """One fewer thing for `path` to wait for; once it waits for nothing, it is
        importable, and so one fewer thing for each path of the push that refers to it."""
        became_ready = False
        pending = [path]
        while pending:
            current = pending.pop()
            self._waiting[current] -= 1
            if self._waiting[current]:
                continue
            self._ready.append(current)  # after everything it refers to
            became_ready = True
            pending += self._referrers.get(current, ())
        return became_ready

    def check(self) -> None:
        """Raise the error of a failed batch, if one failed."""
        with self._condition:
            error = self._error
        if error is not None:
            raise error

    def finish(self) -> None:
        """Import what is left and wait for it; raises a batch's error."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join()
        self.check()
        if self._imported != len(self._waiting):
            left = sorted(path for path, count in self._waiting.items() if count)
            raise ImportIncomplete(
                f"{len(self._waiting) - self._imported} paths never became importable, "
                f"e.g. {left[0] if left else '?'}"
            )

    def stop(self) -> None:
        """Import nothing more; return once the batch under way (if any) has ended."""
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not (self._ready or self._closed or self._stopped):
                    self._condition.wait()
                if self._stopped or not self._ready:
                    return
                batch, self._ready = self._ready, []
            try:
                self._import_batch(batch)
            except BaseException as error:  # handed to the session's thread
                with self._condition:
                    self._error = error
                    self._stopped = True
                return
            with self._condition:
                self._imported += len(batch)
