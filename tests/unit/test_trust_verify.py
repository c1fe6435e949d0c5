"""verify_paths: a Verified per path, or one VerificationFailed naming every failing path."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixwarden.errors import EXIT_REFUSED, Refused
from nixwarden.trust import verify
from nixwarden.trust.keys import SecretKey, Signature, TrustedKeys
from nixwarden.trust.verify import (
    KeyPolicy,
    PathFailure,
    SignatureRejected,
    VerificationFailed,
    Verified,
    verify_paths,
)

ALICE = SecretKey.generate("alice-1")
MALLORY = SecretKey.generate("mallory-1")
TRUSTED = TrustedKeys.of([ALICE.public()])


def _item(index: int, signer: SecretKey | None) -> tuple[str, bytes, list[Signature]]:
    path = f"/nix/store/{'a' * 32}-p{index}"
    message = f"1;{path};sha256:x;{index + 1};".encode()
    return path, message, [] if signer is None else [signer.sign(message)]


def test_every_path_verified_in_order() -> None:
    items = [_item(index, ALICE) for index in range(5)]
    assert verify_paths(items, TRUSTED) == (Verified(("alice-1",)),) * 5
    assert verify_paths([], TRUSTED) == ()


def test_every_failing_path_is_named_on_one_line() -> None:
    items = [_item(0, ALICE), _item(1, MALLORY), _item(2, ALICE), _item(3, None)]
    with pytest.raises(VerificationFailed) as failed:
        verify_paths(items, TRUSTED)
    assert failed.value.failures == (
        PathFailure(items[1][0], "signed only by untrusted keys mallory-1"),
        PathFailure(items[3][0], "no signatures"),
    )
    message = str(failed.value)
    assert message == (
        f"2 of 4 paths failed verification: {items[1][0]}: signed only by untrusted keys "
        f"mallory-1; {items[3][0]}: no signatures"
    )
    assert isinstance(failed.value, Refused)
    assert failed.value.exit_code == EXIT_REFUSED


def test_failure_message_escapes_what_it_names() -> None:
    failure = PathFailure("/nix/store/x-\u202ename\nforged", "reason\x1b[2J\u2028more")
    message = str(VerificationFailed([failure]))
    assert "\n" not in message and "\x1b" not in message
    assert "\u202e" not in message and "\u2028" not in message
    assert "\\u202ename\\x0aforged: reason\\x1b[2J\\u2028more" in message
    assert message.startswith("1 of 1 path failed verification: ")


@dataclass(frozen=True)
class TwoSigners:
    """A policy of another shape, as the certificate policy will be: two trusted signers."""

    keys: TrustedKeys

    def check(self, fingerprint: bytes, signatures: Sequence[Signature]) -> Verified:
        signers = self.keys.check(fingerprint, signatures).signers
        if len(set(signers)) < 2:
            raise SignatureRejected(f"{len(set(signers))} trusted signer, 2 required")
        return Verified(signers)


def test_any_key_policy_plugs_in() -> None:
    bob = SecretKey.generate("bob-1")
    policy: KeyPolicy = TwoSigners(TrustedKeys.of([ALICE.public(), bob.public()]))
    path, message, _ = _item(0, None)
    both = [ALICE.sign(message), bob.sign(message)]
    assert verify_paths([(path, message, both)], policy) == (Verified(("alice-1", "bob-1")),)
    with pytest.raises(VerificationFailed, match="1 trusted signer, 2 required"):
        verify_paths([(path, message, both[:1])], policy)


def test_large_batches_fan_out_to_threads_with_the_same_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify, "_cores", lambda: 4)  # threads even on a one-core runner
    signers = [MALLORY if index % 97 == 5 else ALICE for index in range(600)]
    items = [_item(index, signer) for index, signer in enumerate(signers)]
    with pytest.raises(VerificationFailed) as failed:
        verify_paths(items, TRUSTED)
    expected = [item[0] for item, signer in zip(items, signers, strict=True) if signer is MALLORY]
    assert [failure.path for failure in failed.value.failures] == expected
    good = [item for item, signer in zip(items, signers, strict=True) if signer is ALICE]
    assert verify_paths(good, TRUSTED) == (Verified(("alice-1",)),) * len(good)


def test_a_slowed_thread_holds_up_only_its_own_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads take small chunks as they go: while one thread is stalled (on a busy
    machine, by another process), the others check the rest of the batch."""
    monkeypatch.setattr(verify, "_cores", lambda: 2)
    checked_by: dict[int, list[bytes]] = {}
    stalled = threading.Event()

    class Recording:
        def check(self, fingerprint: bytes, signatures: Sequence[Signature]) -> Verified:
            checked_by.setdefault(threading.get_ident(), []).append(fingerprint)
            if not stalled.is_set():
                stalled.set()
                time.sleep(0.5)  # the first path's thread stalls; the other goes on
            return Verified(())

    items = [_item(index, None) for index in range(600)]
    assert verify_paths(items, Recording()) == (Verified(()),) * 600
    assert sorted(len(paths) for paths in checked_by.values()) == [verify.CHUNK, 600 - verify.CHUNK]


def test_an_unexpected_error_in_a_worker_thread_propagates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify, "_cores", lambda: 4)

    class Broken:
        def check(self, fingerprint: bytes, signatures: Sequence[Signature]) -> Verified:
            if fingerprint.endswith(b";400;"):
                raise RuntimeError("policy bug")
            return Verified(())

    with pytest.raises(RuntimeError, match="policy bug"):
        verify_paths([_item(index, None) for index in range(512)], Broken())


def test_trusted_keys_pickle_after_use() -> None:
    item = _item(0, ALICE)
    verify_paths([item], TRUSTED)  # caches the OpenSSL key object inside
    copy = pickle.loads(pickle.dumps(TRUSTED))  # noqa: S301 - our own bytes
    assert copy == TRUSTED
    assert verify_paths([item], copy) == (Verified(("alice-1",)),)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["alice", "mallory", "none", "forged"]), max_size=12))
def test_exactly_the_bad_paths_fail(kinds: list[str]) -> None:
    items = []
    for index, kind in enumerate(kinds):
        path, message, _ = _item(index, None)
        match kind:
            case "alice":
                signatures = [ALICE.sign(message)]
            case "mallory":
                signatures = [MALLORY.sign(message)]
            case "forged":
                signatures = [Signature("alice-1", MALLORY.sign(message).signature)]
            case _:
                signatures = []
        items.append((path, message, signatures))
    bad = [item[0] for item, kind in zip(items, kinds, strict=True) if kind != "alice"]
    if not bad:
        assert len(verify_paths(items, TRUSTED)) == len(items)
        return
    with pytest.raises(VerificationFailed) as failed:
        verify_paths(items, TRUSTED)
    assert [failure.path for failure in failed.value.failures] == bad
