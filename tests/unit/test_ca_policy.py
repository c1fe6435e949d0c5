"""The certificate policy: which signatures count, why the others do not, quorums."""

from __future__ import annotations

import calendar
import pickle
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from nixwarden.ca import cert, sshkey
from nixwarden.ca.krl import CertRef, Krl
from nixwarden.ca.policy import CertificatePolicy, Rules
from nixwarden.errors import InvalidInput
from nixwarden.trust.keys import SecretKey, Signature
from nixwarden.trust.verify import SignatureRejected, Verified

AFTER = calendar.timegm((2026, 1, 1, 0, 0, 0))
BEFORE = calendar.timegm((2026, 11, 20, 10, 0, 0))
AT = calendar.timegm((2026, 6, 1, 0, 0, 0))
FINGERPRINT = b"1;/nix/store/00000000000000000000000000000000-x;sha256:0;1;"
CA = sshkey.generate_ca()
CA_KEY = sshkey.public_of(CA).key


@dataclass
class Person:
    secret: SecretKey
    certificate: cert.Certificate

    def sign(self, message: bytes = FINGERPRINT) -> Signature:
        return self.secret.sign(message)


def person(name: str, serial: int, **overrides: object) -> Person:
    secret = SecretKey.generate(name)
    fields: dict[str, object] = {
        "key": secret.public().key,
        "key_id": name,
        "serial": serial,
        "principals": ["deploy"],
        "valid_after": AFTER,
        "valid_before": BEFORE,
    }
    ca = overrides.pop("ca", CA)
    fields.update(overrides)
    return Person(secret, cert.issue(ca, **fields))  # type: ignore[arg-type]


ALICE = person("alice-1", 1)
BOB = person("bob-1", 5)
CAROL = person("carol-1", 6, principals=["build"])


def build(
    people: Sequence[Person] = (ALICE, BOB, CAROL),
    *,
    krls: Sequence[Krl] = (),
    at: int = AT,
    **rules: object,
) -> CertificatePolicy:
    return CertificatePolicy.build(
        ca_keys=[CA_KEY],
        certificates=[p.certificate for p in people],
        krls=krls,
        rules=Rules(**{"principals": ("deploy",), **rules}),  # type: ignore[arg-type]
        at=at,
    )


def rejection(policy: CertificatePolicy, signatures: Sequence[Signature]) -> str:
    with pytest.raises(SignatureRejected) as rejected:
        policy.check(FINGERPRINT, signatures)
    return rejected.value.reason


def test_a_certified_signature_counts() -> None:
    assert build().check(FINGERPRINT, [ALICE.sign()]) == Verified(signers=("alice-1",))
    both = build().check(FINGERPRINT, [ALICE.sign(), BOB.sign(), ALICE.sign()])
    assert both.signers == ("alice-1", "bob-1")


def test_reasons_name_the_signer() -> None:
    policy = build()
    assert rejection(policy, []) == "no signatures"
    assert rejection(policy, [CAROL.sign()]) == "carol-1: principal deploy not in [build]"
    stranger = SecretKey.generate("mallory-1").sign(FINGERPRINT)
    assert rejection(policy, [stranger]) == "mallory-1: no certificate for this key name"
    forged = Signature("alice-1", SecretKey.generate("alice-1").sign(FINGERPRINT).signature)
    assert rejection(policy, [forged]) == "alice-1: signature does not verify"
    other_path = ALICE.sign(FINGERPRINT + b"x")
    assert rejection(policy, [other_path]) == "alice-1: signature does not verify"


def test_a_key_certified_for_another_key_id_does_not_count() -> None:
    # Bob's certificate says key id alice-1 but certifies Bob's key: Alice's signature
    # under her name must verify under *the certified key*, which is not hers.
    secret = SecretKey.generate("alice-1")
    impostor = person("bob-1", 9, key_id="alice-1")
    policy = build([impostor])
    assert rejection(policy, [secret.sign(FINGERPRINT)]) == "alice-1: signature does not verify"


def test_validity_with_clock_skew() -> None:
    assert rejection(build(at=BEFORE), [ALICE.sign()]) == "alice-1: expired 2026-11-20T10:00Z"
    assert build(at=BEFORE + 59, clock_skew=60).check(FINGERPRINT, [ALICE.sign()])
    assert rejection(build(at=AFTER - 1), [ALICE.sign()]) == (
        "alice-1: not valid before 2026-01-01T00:00Z"
    )
    assert build(at=AFTER - 60, clock_skew=60).check(FINGERPRINT, [ALICE.sign()])


def test_max_validity() -> None:
    reason = rejection(build(max_validity=30 * 86400), [ALICE.sign()])
    assert reason == (
        "alice-1: valid 2026-01-01T00:00Z to 2026-11-20T10:00Z, longer than max_validity 4w2d"
    )
    assert build(max_validity=365 * 86400).check(FINGERPRINT, [ALICE.sign()])


def test_principals() -> None:
    assert build(principals=()).check(FINGERPRINT, [CAROL.sign()])  # any principal
    assert build(principals=("build", "deploy")).check(FINGERPRINT, [CAROL.sign()])
    reason = rejection(build(principals=("web", "db")), [CAROL.sign()])
    assert reason == "carol-1: principals web, db not in [build]"


def test_untrusted_ca_and_rules_checked() -> None:
    rogue = person("alice-1", 1, ca=sshkey.generate_ca())
    reason = rejection(build([rogue]), [rogue.sign()])
    assert reason.startswith("alice-1: certified by an untrusted CA SHA256:")
    with pytest.raises(InvalidInput):
        Rules(min_signers=0)
    with pytest.raises(InvalidInput):
        Rules(clock_skew=-1)


def test_unknown_critical_options_refuse() -> None:
    restricted = person(
        "alice-1", 1, critical_options=[cert.Option.of("restrict@example.com", None)]
    )
    reason = rejection(build([restricted]), [restricted.sign()])
    assert reason == "alice-1: unknown critical option restrict@example.com"


@pytest.mark.parametrize(
    ("revocation", "reason"),
    [
        ({"serials": (1,)}, "revoked: serial 1"),
        ({"serial_ranges": ((1, 3),)}, "revoked: serial"),
        ({"key_ids": ("alice-1",)}, "revoked: key id alice-1"),
        ({"keys": (ALICE.certificate.key_blob,)}, "revoked"),
    ],
)
def test_revocation(revocation: dict[str, object], reason: str) -> None:
    ca_blob = sshkey.ed25519_blob(CA_KEY)
    krl = Krl.empty().revoking(ca_blob, now=AT, **revocation)  # type: ignore[arg-type]
    policy = build(krls=[Krl.empty(), krl])
    assert rejection(policy, [ALICE.sign()]).startswith(f"alice-1: {reason}")
    assert build(krls=[krl]).check(FINGERPRINT, [BOB.sign()]).signers == ("bob-1",)


def test_a_renewed_certificate_wins_over_an_expired_one() -> None:
    renewed = Person(
        ALICE.secret,
        cert.issue(
            CA,
            key=ALICE.secret.public().key,
            key_id="alice-1",
            serial=10,
            principals=["deploy"],
            valid_after=BEFORE,
            valid_before=BEFORE + 86400,
        ),
    )
    policy = build([ALICE, renewed], at=BEFORE + 60)
    assert policy.check(FINGERPRINT, [ALICE.sign()]).signers == ("alice-1",)


def test_quorum_counts_distinct_certified_identities() -> None:
    policy = build(min_signers=2)
    assert policy.check(FINGERPRINT, [ALICE.sign(), BOB.sign()]).signers == ("alice-1", "bob-1")
    assert rejection(policy, [ALICE.sign(), ALICE.sign()]) == (
        "1 certified signer (alice-1), 2 required"
    )
    assert rejection(policy, [ALICE.sign(), CAROL.sign()]) == (
        "1 certified signer (alice-1), 2 required; carol-1: principal deploy not in [build]"
    )
    assert rejection(policy, []) == "0 certified signers, 2 required"


def test_plain_trusted_keys_count_unless_a_krl_lists_them() -> None:
    dave = SecretKey.generate("dave-1")
    plain = [(dave.name, dave.public().key)]
    rules = Rules(min_signers=2)
    policy = CertificatePolicy.build(
        ca_keys=[CA_KEY], certificates=[ALICE.certificate], rules=rules, at=AT, trusted_keys=plain
    )
    signers = policy.check(FINGERPRINT, [ALICE.sign(), dave.sign(FINGERPRINT)]).signers
    assert signers == ("alice-1", "dave-1")
    krl = Krl.empty().revoking(None, keys=(sshkey.ed25519_blob(dave.public().key),), now=AT)
    revoked = CertificatePolicy.build(
        ca_keys=[], certificates=[], krls=[krl], rules=Rules(), at=AT, trusted_keys=plain
    )
    assert rejection(revoked, [dave.sign(FINGERPRINT)]).startswith("dave-1: revoked")


class CountingKrl:
    """A KRL that counts how often it is asked."""

    def __init__(self) -> None:
        self.asked = 0

    def revocation(self, key_blob: bytes, cert: CertRef | None = None) -> str | None:
        self.asked += 1
        return None


def test_certificates_and_krls_are_decided_once_per_key_not_per_path() -> None:
    counting = CountingKrl()
    policy = build(krls=[counting])  # type: ignore[list-item]
    assert counting.asked == 3
    for index in range(100):
        message = FINGERPRINT + str(index).encode()
        policy.check(message, [ALICE.sign(message), BOB.sign(message)])
    assert counting.asked == 3


def test_the_policy_pickles_after_use() -> None:
    policy = build()
    policy.check(FINGERPRINT, [ALICE.sign()])
    copy = pickle.loads(pickle.dumps(policy))  # noqa: S301 - our own bytes
    assert copy == policy
    assert copy.check(FINGERPRINT, [ALICE.sign()]).signers == ("alice-1",)
