"""Deciding a push before any NAR byte: complete, closed, signed by certified keys."""

from __future__ import annotations

import calendar
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from nixwarden.ca import cert, sshkey
from nixwarden.ca.policy import CertificatePolicy, Rules
from nixwarden.config import TrustSettings
from nixwarden.deploy import wire
from nixwarden.deploy.admission import (
    Refusal,
    admit,
    certificates,
    check_closure,
    check_signatures,
    topological,
)
from nixwarden.trust.hashes import Hash, HashAlgorithm
from nixwarden.trust.keys import SecretKey, fingerprint

STORE = "/nix/store/"
APP = STORE + "a" * 32 + "-app"
LIB = STORE + "b" * 32 + "-lib"
DATA = STORE + "c" * 32 + "-data"
OTHER = STORE + "d" * 32 + "-other"
NAR_HASH = Hash(HashAlgorithm.SHA256, bytes(32))
AT = calendar.timegm((2026, 6, 1, 0, 0, 0))
CA = sshkey.generate_ca()
ALICE = SecretKey.generate("alice-1")
ALICE_CERT = cert.issue(
    CA,
    key=ALICE.public().key,
    key_id="alice-1",
    serial=7,
    principals=["deploy"],
    valid_after=AT - 3600,
    valid_before=AT + 3600,
)


def info(path: str, *references: str, signed_by: Sequence[SecretKey] = (ALICE,)) -> wire.PathInfo:
    message = fingerprint(path, NAR_HASH, 100, references)
    return wire.PathInfo(
        path=path,
        nar_hash=NAR_HASH,
        nar_size=100,
        references=tuple(references),
        deriver=None,
        ca=None,
        signatures=tuple(key.sign(message) for key in signed_by),
    )


CLOSURE = (info(DATA), info(LIB, DATA, LIB), info(APP, LIB))


def nothing_valid(paths: Sequence[str]) -> frozenset[str]:
    return frozenset(paths)


def test_a_complete_closure_comes_back_references_first() -> None:
    manifest = wire.Manifest(CLOSURE[::-1])
    order = check_closure(manifest, [APP, LIB, DATA], frozenset(), nothing_valid)
    assert order.index(DATA) < order.index(LIB) < order.index(APP)


def test_references_valid_on_the_target_need_not_be_pushed() -> None:
    manifest = wire.Manifest((info(APP, LIB),))
    assert check_closure(manifest, [APP], frozenset({LIB}), nothing_valid) == (APP,)
    asked: list[Sequence[str]] = []

    def lib_is_valid(paths: Sequence[str]) -> frozenset[str]:
        asked.append(paths)
        return frozenset(paths) - {LIB}

    assert check_closure(manifest, [APP], frozenset(), lib_is_valid) == (APP,)
    assert asked == [[LIB]]


@pytest.mark.parametrize(
    ("manifest", "missing", "failure"),
    [
        ((info(APP, LIB),), [APP], (APP, f"refers to {LIB}, which is neither in the push")),
        ((info(APP),), [APP, LIB], (LIB, "lacking on the target but not in the manifest")),
        ((info(APP), info(OTHER)), [APP], (OTHER, "not among the paths the target lacks")),
        ((info(APP, LIB), info(LIB, APP)), [APP, LIB], (APP, "part of a reference cycle")),
    ],
)
def test_an_incomplete_or_open_closure_is_refused(
    manifest: tuple[wire.PathInfo, ...], missing: list[str], failure: tuple[str, str]
) -> None:
    with pytest.raises(Refusal) as refused:
        check_closure(wire.Manifest(manifest), missing, frozenset(), nothing_valid)
    path, reason = failure
    assert any(f.path == path and reason in f.reason for f in refused.value.failures)


def test_topological_keeps_independent_paths() -> None:
    assert sorted(topological((info(APP), info(OTHER)))) == sorted([APP, OTHER])


def test_a_malformed_certificate_refuses_the_push() -> None:
    with pytest.raises(Refusal) as refused:
        certificates([ALICE_CERT.blob, b"\0\0\0\x03abc"])
    [failure] = refused.value.failures
    assert failure.path == "certificates[1]"


def policy(min_signers: int = 1, at: int = AT) -> CertificatePolicy:
    return CertificatePolicy.build(
        ca_keys=[sshkey.public_of(CA).key],
        certificates=[ALICE_CERT],
        rules=Rules(principals=("deploy",), min_signers=min_signers),
        at=at,
    )


def test_signatures_accepted_name_their_certificate() -> None:
    manifest = wire.Manifest(CLOSURE, (ALICE_CERT.blob,))
    signers, per_path = check_signatures(manifest, policy(), [ALICE_CERT])
    assert [(s.key_id, s.serial, s.ca_fingerprint) for s in signers] == [
        ("alice-1", 7, ALICE_CERT.ca_fingerprint)
    ]
    assert cert.Certificate.from_blob(__import__("base64").b64decode(signers[0].certificate))
    assert per_path == {DATA: ("alice-1",), LIB: ("alice-1",), APP: ("alice-1",)}


@pytest.mark.parametrize(
    ("signed_by", "kwargs", "reason"),
    [
        ((), {}, "no signatures"),
        ((SecretKey.generate("alice-1"),), {}, "signature does not verify"),
        ((SecretKey.generate("mallory-1"),), {}, "no certificate for this key name"),
        ((ALICE,), {"at": AT + 7200}, "expired"),
        ((ALICE,), {"min_signers": 2}, "1 certified signer (alice-1), 2 required"),
    ],
)
def test_every_failing_path_is_named_with_why(
    signed_by: tuple[SecretKey, ...], kwargs: dict[str, int], reason: str
) -> None:
    manifest = wire.Manifest((info(APP, signed_by=signed_by), info(OTHER)), (ALICE_CERT.blob,))
    with pytest.raises(Refusal) as refused:
        check_signatures(manifest, policy(**kwargs), [ALICE_CERT])
    failures = {f.path: f.reason for f in refused.value.failures}
    assert reason in failures[APP]
    if "min_signers" not in kwargs and "at" not in kwargs:
        assert set(failures) == {APP}  # OTHER is signed by alice and passes
    assert "refused" in str(refused.value)


def test_admit_reads_the_trust_files_and_decides(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pub"
    ca_file.write_text(sshkey.public_of(CA).render() + "\n")
    settings = TrustSettings(ca_keys=(str(ca_file),), principals=("deploy",))
    manifest = wire.Manifest(CLOSURE, (ALICE_CERT.blob,))
    accepted = admit(
        manifest,
        missing=[APP, LIB, DATA],
        known_valid=frozenset(),
        invalid=nothing_valid,
        settings=settings,
        at=AT,
    )
    assert accepted.nar_bytes == 300 and len(accepted.order) == 3
    with pytest.raises(Refusal):
        admit(
            manifest,
            missing=[APP, LIB, DATA],
            known_valid=frozenset(),
            invalid=nothing_valid,
            settings=settings,
            at=int(time.time()) + 10**8,
        )
