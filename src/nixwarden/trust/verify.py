"""Signature verification that either returns what it verified or raises.

A caller hands `verify_paths` the store paths it is about to trust, each with its
fingerprint and signatures, and a policy (`KeyPolicy`) that decides for one path
whether its signatures are good enough. The answer is one `Verified` per path, in
order, or one `VerificationFailed` naming every path that failed and why: there is
no result object whose `.passed` a caller could forget to test.

Policies are plain frozen values (keys, certificates, revocation lists) that are
safe to share between threads and to pickle. Ed25519 verification in `cryptography`
runs without the GIL, so a large batch is spread over the machine's cores with
threads, which cost nothing to start; a small batch is checked inline.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from nixwarden.display import escape
from nixwarden.errors import Refused

if TYPE_CHECKING:
    from nixwarden.trust.keys import Signature

# Below this many paths per thread, starting threads costs more than it saves: one
# Ed25519 verification is ~0.1 ms, so a thread earns its keep after a few dozen.
MIN_PATHS_PER_THREAD = 64
# Threads take paths in chunks this small (about a millisecond of work), so that the
# batch ends at most a chunk after its first thread runs out of work.
CHUNK = 8


@dataclass(frozen=True)
class Verified:
    """The signers (key names, certificate key ids) a policy accepted for one path."""

    signers: tuple[str, ...]


class SignatureRejected(Exception):
    """A policy's refusal of one path; `reason` is one line (`no signatures`, …)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyPolicy(Protocol):
    """Decides whether one path's signatures are acceptable."""

    def check(self, fingerprint: bytes, signatures: Sequence[Signature]) -> Verified:
        """The accepted signers; raises `SignatureRejected` when there are not enough."""
        ...


@dataclass(frozen=True)
class PathFailure:
    path: str
    reason: str


class VerificationFailed(Refused):
    """One or more paths failed verification; the message names each, on one line."""

    def __init__(self, failures: Sequence[PathFailure], *, checked: int | None = None) -> None:
        self.failures = tuple(failures)
        total = len(self.failures) if checked is None else checked
        listed = "; ".join(f"{escape(f.path)}: {escape(f.reason)}" for f in self.failures)
        noun = "path" if total == 1 else "paths"
        super().__init__(f"{len(self.failures)} of {total} {noun} failed verification: {listed}")


Item = tuple[str, bytes, Sequence["Signature"]]


def verify_paths(items: Sequence[Item], policy: KeyPolicy) -> tuple[Verified, ...]:
    """One `Verified` per (store path, fingerprint, signatures) item, in order.

    Raises `VerificationFailed` naming every failing path; never returns a partial
    answer. Any other exception from the policy propagates unchanged.
    """
    results: list[Verified | PathFailure | None] = [None] * len(items)
    workers = min(_cores(), len(items) // MIN_PATHS_PER_THREAD)
    if workers <= 1:
        _check_slice(items, policy, results, 0, len(items))
    else:
        _check_in_threads(items, policy, results, workers)
    failures = [result for result in results if isinstance(result, PathFailure)]
    if failures:
        raise VerificationFailed(failures, checked=len(items))
    return tuple(result for result in results if isinstance(result, Verified))


def _check_slice(
    items: Sequence[Item],
    policy: KeyPolicy,
    results: list[Verified | PathFailure | None],
    start: int,
    stop: int,
) -> None:
    for index in range(start, stop):
        path, fingerprint, signatures = items[index]
        try:
            results[index] = policy.check(fingerprint, signatures)
        except SignatureRejected as rejected:
            results[index] = PathFailure(path, rejected.reason)


def _check_in_threads(
    items: Sequence[Item],
    policy: KeyPolicy,
    results: list[Verified | PathFailure | None],
    workers: int,
) -> None:
    """Every thread, this one included, takes the next chunk of `CHUNK` paths until none
    is left: a thread that the machine's other work slows down takes fewer chunks,
    instead of holding up the batch with a fixed share of it."""
    errors: list[BaseException] = []
    # next() on a shared iterator is atomic under the GIL: each chunk goes to one thread.
    starts = iter(range(0, len(items), CHUNK))

    def work() -> None:
        try:
            for start in starts:
                _check_slice(items, policy, results, start, min(start + CHUNK, len(items)))
        except BaseException as error:  # re-raised in the caller's thread below
            errors.append(error)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(1, workers)]
    for thread in threads:
        thread.start()
    work()  # this thread takes chunks too
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - Linux has sched_getaffinity
        return os.cpu_count() or 1
