"""Deciding a push before a single NAR byte: is the manifest complete, closed and signed?

Pure checks over what the client announced (a `wire.Manifest`), what the target lacks
and a signature policy; they return what was accepted or raise `Refusal` naming every
failing path and why. The receive service (receive.py) does the I/O around them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from nixwarden.ca import options
from nixwarden.ca.cert import Certificate
from nixwarden.ca.policy import CertificatePolicy
from nixwarden.config import TrustSettings
from nixwarden.deploy import wire
from nixwarden.deploy.provenance import Signer
from nixwarden.display import escape
from nixwarden.errors import FormatError, InvalidInput, Refused
from nixwarden.trust.keys import fingerprint
from nixwarden.trust.verify import VerificationFailed, verify_paths

# How many failures a VERDICT lists; the rest are counted in the last one.
MAX_LISTED_FAILURES = 1000


class Refusal(Refused):
    """The push is refused; `failures` (path, reason) go into the VERDICT."""

    def __init__(self, failures: Sequence[wire.Failure]) -> None:
        listed = list(failures[:MAX_LISTED_FAILURES])
        if len(failures) > MAX_LISTED_FAILURES:
            more = len(failures) - MAX_LISTED_FAILURES
            listed.append(wire.Failure("…", f"and {more} more failures"))
        self.failures = tuple(listed)
        shown = "; ".join(f"{escape(f.path)}: {escape(f.reason)}" for f in listed[:5])
        extra = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        noun = "path" if len(failures) == 1 else "paths"
        super().__init__(f"{len(failures)} {noun} refused: {shown}{extra}")


@dataclass(frozen=True)
class Accepted:
    """What the verification accepted: the import order and who vouched for what."""

    order: tuple[str, ...]  # the manifest's paths, every one after its references
    signers: tuple[Signer, ...]  # each accepted certificate of a signer, once
    path_signers: dict[str, tuple[str, ...]]  # path -> key ids accepted for it
    nar_bytes: int


def check_closure(
    manifest: wire.Manifest,
    missing: Sequence[str],
    known_valid: frozenset[str],
    invalid: Callable[[Sequence[str]], frozenset[str]],
) -> tuple[str, ...]:
    """The manifest's paths in import order, if the manifest describes exactly the paths
    the target lacks and every reference is in it or valid on the target."""
    failures: list[wire.Failure] = []
    announced = {info.path: info for info in manifest.paths}
    wanted = set(missing)
    failures += [
        wire.Failure(path, "not among the paths the target lacks")
        for path in announced
        if path not in wanted
    ]
    failures += [
        wire.Failure(path, "lacking on the target but not in the manifest")
        for path in missing
        if path not in announced
    ]
    outside = sorted(
        {
            reference
            for info in manifest.paths
            for reference in info.references
            if reference != info.path
            and reference not in announced
            and reference not in known_valid
        }
    )
    absent = invalid(outside) if outside else frozenset()
    for info in manifest.paths:
        lacking = sorted(ref for ref in info.references if ref in absent)
        if lacking:
            failures.append(
                wire.Failure(
                    info.path,
                    f"refers to {lacking[0]}, which is neither in the push nor valid on the target"
                    + (f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""),
                )
            )
    if failures:
        raise Refusal(failures)
    return topological(manifest.paths)


def topological(infos: Sequence[wire.PathInfo]) -> tuple[str, ...]:
    """Paths so that each comes after the others it refers to; a cycle is refused."""
    order, stuck = wire.references_first(infos)
    if stuck:
        raise Refusal([wire.Failure(path, "part of a reference cycle") for path in stuck])
    return order


def certificates(blobs: Iterable[bytes]) -> tuple[Certificate, ...]:
    """The manifest's certificates, strictly parsed; a malformed one refuses the push."""
    found = []
    failures = []
    for index, blob in enumerate(blobs):
        try:
            found.append(Certificate.from_blob(blob, f"certificates[{index}]"))
        except FormatError as error:
            failures.append(wire.Failure(f"certificates[{index}]", str(error)))
    if failures:
        raise Refusal(failures)
    return tuple(found)


def trust_policy(
    settings: TrustSettings, certified: Sequence[Certificate], at: int
) -> CertificatePolicy:
    """The `[trust]` policy at time `at` over the certificates the client sent.

    CA keys and KRLs are read now, so a KRL updated since the service started counts; a
    KRL that cannot be read or parsed refuses every push (nothing verifies).
    """
    if not settings.ca_keys:
        raise InvalidInput("[trust] names no ca_keys: no certificate can be accepted")
    return options.trust_policy(settings, certified, at)


def check_signatures(
    manifest: wire.Manifest, policy: CertificatePolicy, certified: Sequence[Certificate]
) -> tuple[tuple[Signer, ...], dict[str, tuple[str, ...]]]:
    """Every path's signatures under `policy`: the accepted signers' certificates, and the
    key ids accepted per path. Raises `Refusal` naming every failing path."""
    items = [
        (
            info.path,
            fingerprint(info.path, info.nar_hash, info.nar_size, info.references),
            info.signatures,
        )
        for info in manifest.paths
    ]
    try:
        verified = verify_paths(items, policy)
    except VerificationFailed as failed:
        raise Refusal([wire.Failure(f.path, f.reason) for f in failed.failures]) from None
    path_signers = {
        info.path: result.signers for info, result in zip(manifest.paths, verified, strict=True)
    }
    used = {key_id for signers in path_signers.values() for key_id in signers}
    signers = tuple(
        Signer(
            key_id=certificate.key_id,
            serial=certificate.serial,
            ca_fingerprint=certificate.ca_fingerprint,
            certificate=certificate.render().split()[1],
        )
        for certificate in dict.fromkeys(certified)
        if certificate.key_id in used
        and certificate.key in policy.accepted.get(certificate.key_id, ())
    )
    return signers, path_signers


def admit(
    manifest: wire.Manifest,
    *,
    missing: Sequence[str],
    known_valid: frozenset[str],
    invalid: Callable[[Sequence[str]], frozenset[str]],
    settings: TrustSettings,
    at: int,
) -> Accepted:
    """The whole decision: closure first (cheap, and names what is lacking), then the
    certificates, then every path's signatures."""
    order = check_closure(manifest, missing, known_valid, invalid)
    certified = certificates(manifest.certificates)
    if not manifest.paths:
        return Accepted(order, (), {}, 0)
    policy = trust_policy(settings, certified, at)
    signers, path_signers = check_signatures(manifest, policy, certified)
    nar_bytes = sum(info.nar_size for info in manifest.paths)
    return Accepted(order, signers, path_signers, nar_bytes)
