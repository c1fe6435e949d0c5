"""Which path signatures count when keys are certified by a team CA.

A signature counts only when its key name equals the key id of a certificate that:
is signed by a trusted CA (certificates are always user certificates with an
Ed25519 CA key, see cert.py); is not revoked by any KRL (by serial, key id, the
certified key or the CA key, or their fingerprints); has no critical option
nixwarden does not know (it knows none yet, so any critical option refuses the
certificate); is valid at the time of checking, give or take the clock skew;
spans no longer than `max_validity`; and lists a principal among the required
ones (a certificate without principals matches nothing). The signature must
then verify under that certificate's key. `min_signers` distinct certified
identities (key ids) must sign every path.

All of that except the signature is decided once per certificate, when the policy
is built: `check` then costs one dictionary lookup and one Ed25519 verification per
signature, as plain trusted keys do. The policy holds only names, bytes and
strings, so it can be pickled to worker processes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nixwarden.ca.cert import Certificate
from nixwarden.ca.krl import CertRef, Krl
from nixwarden.ca.sshkey import ed25519_blob, fingerprint
from nixwarden.ca.validity import format_interval, format_time
from nixwarden.display import escape
from nixwarden.errors import InvalidInput
from nixwarden.trust.keys import Signature
from nixwarden.trust.verify import SignatureRejected, Verified

# Critical options whose meaning nixwarden enforces; any other one refuses the
# certificate, as PROTOCOL.certkeys requires. OpenSSH's own (force-command,
# source-address, verify-required) restrict SSH logins and mean nothing for a
# signature, so they refuse it too.
KNOWN_CRITICAL_OPTIONS: frozenset[str] = frozenset()
MAX_MIN_SIGNERS = 64


@dataclass(frozen=True)
class Rules:
    """What a certificate must satisfy, besides its CA and the KRLs."""

    principals: tuple[str, ...] = ()  # any one of them; () accepts any principal
    max_validity: int | None = None  # seconds; None: no limit
    clock_skew: int = 0  # seconds of leeway at both ends of the validity window
    min_signers: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min_signers <= MAX_MIN_SIGNERS:
            raise InvalidInput(f"min_signers must be 1 to {MAX_MIN_SIGNERS}")
        if self.clock_skew < 0 or (self.max_validity is not None and self.max_validity <= 0):
            raise InvalidInput("clock_skew must not be negative, max_validity must be positive")


def certificate_problem(
    certificate: Certificate,
    *,
    trusted_cas: frozenset[bytes],
    krls: Sequence[Krl],
    rules: Rules,
    at: int,
) -> str | None:
    """Why `certificate` does not certify its key at time `at`, or None when it does."""
    if certificate.ca_key not in trusted_cas:
        return f"certified by an untrusted CA {certificate.ca_fingerprint}"
    reference = CertRef(certificate.ca_blob, certificate.serial, certificate.key_id)
    for krl in krls:
        revoked = krl.revocation(certificate.key_blob, reference)
        if revoked is not None:
            return revoked
    for option in certificate.critical_options:
        if option.name not in KNOWN_CRITICAL_OPTIONS:
            return f"unknown critical option {escape(option.name)}"
    if at < certificate.valid_after - rules.clock_skew:
        return f"not valid before {format_time(certificate.valid_after)}"
    if at >= certificate.valid_before + rules.clock_skew:
        return f"expired {format_time(certificate.valid_before)}"
    if rules.max_validity is not None and certificate.span > rules.max_validity:
        return (
            f"valid {format_time(certificate.valid_after)} to "
            f"{format_time(certificate.valid_before)}, longer than max_validity "
            f"{format_interval(rules.max_validity)}"
        )
    if not certificate.principals:
        return "no principals (a certificate without principals matches nothing)"
    if rules.principals and not set(rules.principals) & set(certificate.principals):
        wanted = ", ".join(escape(principal) for principal in rules.principals)
        held = ", ".join(escape(principal) for principal in certificate.principals)
        noun = "principal" if len(rules.principals) == 1 else "principals"
        return f"{noun} {wanted} not in [{held}]"
    return None


@functools.lru_cache(maxsize=4096)
def _verifier(key: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(key)


def _verifies(key: bytes, fingerprint: bytes, signature: bytes) -> bool:
    try:
        _verifier(key).verify(signature, fingerprint)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class CertificatePolicy:
    """Key name → the keys that may sign as it; names refused, with why. See `build`."""

    accepted: Mapping[str, tuple[bytes, ...]]
    refused: Mapping[str, str] = field(default_factory=dict)
    min_signers: int = 1

    @classmethod
    def build(
        cls,
        *,
        ca_keys: Iterable[bytes],
        certificates: Iterable[Certificate],
        krls: Sequence[Krl] = (),
        rules: Rules,
        at: int,
        trusted_keys: Iterable[tuple[str, bytes]] = (),
    ) -> CertificatePolicy:
        """Decide every certificate once, at time `at`.

        `trusted_keys` are plain `(name, key)` pairs (`--trusted-key`) that count as
        identities without a certificate; a KRL that lists such a key still revokes it.
        """
        trusted_cas = frozenset(ca_keys)
        accepted: dict[str, list[bytes]] = {}
        refused: dict[str, list[str]] = {}
        for certificate in certificates:
            problem = certificate_problem(
                certificate, trusted_cas=trusted_cas, krls=krls, rules=rules, at=at
            )
            if problem is None:
                accepted.setdefault(certificate.key_id, []).append(certificate.key)
            else:
                refused.setdefault(certificate.key_id, []).append(problem)
        for name, key in trusted_keys:
            revoked = next(
                (why for krl in krls if (why := krl.revocation(ed25519_blob(key))) is not None),
                None,
            )
            if revoked is None:
                accepted.setdefault(name, []).append(key)
            else:
                refused.setdefault(name, []).append(f"{revoked} ({fingerprint(ed25519_blob(key))})")
        return cls(
            accepted={name: tuple(dict.fromkeys(keys)) for name, keys in accepted.items()},
            refused={
                name: "; ".join(dict.fromkeys(reasons))
                for name, reasons in refused.items()
                if name not in accepted
            },
            min_signers=rules.min_signers,
        )

    def check(self, fingerprint: bytes, signatures: Sequence[Signature]) -> Verified:
        signers: list[str] = []
        problems: list[str] = []
        for signature in signatures:
            name = signature.key_name
            keys = self.accepted.get(name)
            if keys is None:
                why = self.refused.get(name, "no certificate for this key name")
                problems.append(f"{escape(name)}: {why}")
            elif any(_verifies(key, fingerprint, signature.signature) for key in keys):
                if name not in signers:
                    signers.append(name)
            else:
                problems.append(f"{escape(name)}: signature does not verify")
        if len(signers) >= self.min_signers:
            return Verified(signers=tuple(signers))
        if self.min_signers == 1:
            raise SignatureRejected("; ".join(dict.fromkeys(problems)) or "no signatures")
        count = f"{len(signers)} certified signer{'' if len(signers) == 1 else 's'}"
        if signers:
            count += f" ({', '.join(signers)})"
        reasons = [f"{count}, {self.min_signers} required", *dict.fromkeys(problems)]
        raise SignatureRejected("; ".join(reasons))
