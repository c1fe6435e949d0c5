"""KRLs against the real ssh-keygen (OpenSSH 9.2): both read the same revocations.

A CA issues user certificates with `ssh-keygen -s`; KRLs are written by `ssh-keygen -k`
from spec files (serial lists and ranges, key ids, explicit keys, SHA1 and SHA256
fingerprints, certificate lines, any-CA sections, `-u` updates). For every KRL and every
certificate and plain key, `Krl.revocation` must say "revoked" exactly when
`ssh-keygen -Q` says REVOKED; then the same for the KRL nixwarden writes from the same
revocations, which must also be byte for byte what ssh-keygen wrote.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    SSHCertificate,
    load_ssh_public_identity,
)

from nixwarden.ca.krl import CertRef, Krl
from nixwarden.errors import FormatError
from testbed import harness
from tests.corpus.make_krl_corpus import GOOD, signed

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "krl"

# Corpus files that OpenSSH 9.2 reads although nixwarden refuses them: what ssh-keygen
# never writes (unsorted or repeated serials and hashes, empty sections, non-minimal or
# empty bitmaps, non-UTF-8 text) and explicit-key blobs that are not plain keys (OpenSSH
# does not look at them when reading; they can never match). Every other file of the
# corpus OpenSSH refuses too.
OPENSSH_READS = {
    "krl_bitmap_empty",
    "krl_bitmap_leading_zero",
    "krl_cert_section_without_subsections",
    "krl_comment_not_utf8",
    "krl_duplicate_serials",
    "krl_empty_explicit_key_section",
    "krl_empty_key_id_subsection",
    "krl_empty_serial_list",
    "krl_empty_sha1_section",
    "krl_explicit_key_certificate",
    "krl_explicit_key_garbage",
    "krl_key_id_not_utf8",
    "krl_sha256_duplicate",
    "krl_sha256_unsorted",
    "krl_unsorted_serials",
}

# (CA file, serial, key id) of the certificates issued; serial 0 means "no serial".
CERTIFICATES = [
    (ca, serial, key_id)
    for ca in ("ca1", "ca2")
    for serial, key_id in (
        (0, "alice"),
        (0, "nobody"),
        (1, "alice"),
        (2, "bob"),
        (5, "carol"),
        (6, "deploy bot"),
        (9, "mallory"),
        (10, "dave"),
        (15, "erin"),
        (20, "frank"),
        (21, "grace"),
        (127, "heidi"),
        (1000, "ivan"),
        (1001, "judy"),
        (1003, "mallory"),
        (2**63, "niaj"),
        (2**64 - 1, "olivia"),
    )
]
USERS = ("u1", "u2", "u3", "u4", "u5", "u6")


@dataclass(frozen=True)
class World:
    root: Path
    env: dict[str, str]
    files: tuple[Path, ...]  # every certificate and plain public key checked

    def blob(self, name: str) -> bytes:
        return base64.b64decode((self.root / f"{name}.pub").read_text().split()[1])

    def keygen(self, *argv: str, check: bool = True) -> tuple[int, str]:
        result = harness.run(["ssh-keygen", *argv], env=self.env, check=check)
        return result.returncode, result.stdout.decode() + result.stderr.decode()

    def openssh_verdicts(self, krl: Path) -> dict[str, bool]:
        """ssh-keygen -Q's verdict on every file: True for REVOKED."""
        code, output = self.keygen("-Q", "-f", str(krl), *map(str, self.files), check=False)
        verdicts = {}
        for line in output.splitlines():
            path = line.split(" ", 1)[0].rstrip(":")
            verdicts[Path(path).name] = line.endswith(": REVOKED")
        assert len(verdicts) == len(self.files), output
        assert code == (1 if any(verdicts.values()) else 0), output
        return verdicts


def _blob_of(key: object) -> bytes:
    line = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)  # type: ignore[attr-defined]
    return base64.b64decode(line.split()[1])


def our_verdicts(world: World, krl: Krl) -> dict[str, bool]:
    verdicts = {}
    for path in world.files:
        identity = load_ssh_public_identity(path.read_bytes())
        if isinstance(identity, SSHCertificate):
            cert = CertRef(
                _blob_of(identity.signature_key()), identity.serial, identity.key_id.decode()
            )
            reason = krl.revocation(_blob_of(identity.public_key()), cert)
        else:
            reason = krl.revocation(_blob_of(identity))
        verdicts[path.name] = reason is not None
    return verdicts


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    harness.need(harness.which("ssh-keygen") is not None, "ssh-keygen on PATH")
    root = harness.world_dir("nwt-krl")
    try:
        env = harness.base_env(HOME=str(root))
        made = World(root, env, ())
        for name, kind in (
            ("ca1", "ed25519"),
            ("ca2", "ed25519"),
            *((user, "ed25519") for user in USERS),
            ("ecdsa", "ecdsa"),
            ("rsa", "rsa"),
        ):
            made.keygen("-q", "-t", kind, "-N", "", "-C", name, "-f", str(root / name))
        files = [root / f"{name}.pub" for name in (*USERS, "ecdsa", "rsa", "ca1", "ca2")]
        for index, (ca, serial, key_id) in enumerate(CERTIFICATES):
            subject = root / f"cert{index}.pub"
            shutil.copy(root / f"{USERS[index % len(USERS)]}.pub", subject)
            made.keygen(
                *("-q", "-s", str(root / ca), "-I", key_id, "-n", "deploy", "-V", "+1d"),
                *("-z", str(serial), str(subject)),
            )
            files.append(root / f"cert{index}-cert.pub")
        yield World(root, env, tuple(files))
    finally:
        shutil.rmtree(root, ignore_errors=True)


# A scenario: steps of (CA for -s, or "none" for any CA; spec lines). The first step makes
# the KRL with -k, each further one updates it with -k -u. Lines use ssh-keygen's spec
# syntax, with a file name in angle brackets for a key's text, {FP:name} for its fingerprint.
SCENARIOS: dict[str, list[tuple[str, list[str]]]] = {
    "serial_list": [("ca1", ["serial: 1", "serial: 5", "serial: 6", "serial: 127"])],
    "serial_ranges": [
        ("ca1", ["serial: 10-20", "serial: 1000-1003", "serial: 9223372036854775808"])
    ],
    "key_ids": [("ca1", ["id: alice", "id: deploy bot"])],
    "explicit_keys": [("ca1", ["key: <u1>", "<u2>", "<ca2>"])],
    "fingerprints": [("ca1", ["hash: {FP:u3}", "sha256: <u4>", "sha1: <u5>", "sha1: <ecdsa>"])],
    "any_ca": [("none", ["id: mallory", "serial: 2", "serial: 18446744073709551615"])],
    "certificate_lines": [("ca1", ["<cert3-cert>", "<cert1-cert>", "<cert17-cert>"])],
    "dense_bitmaps": [("ca2", [f"serial: {serial}" for serial in range(1, 1200, 3)])],
    "updates": [
        ("ca1", ["serial: 5", "id: bob"]),
        ("ca2", ["serial: 9-15", "id: alice", "key: <rsa>"]),
        ("none", ["id: judy"]),
    ],
}


def _expand(world: World, line: str) -> str:
    if "{FP:" in line:
        before, _, name = line.partition("{FP:")
        fingerprint = world.keygen("-l", "-f", str(world.root / f"{name[:-1]}.pub"))[1]
        return before + fingerprint.split()[1]
    if "<" in line:
        before, _, name = line.partition("<")
        return before + (world.root / f"{name[:-1]}.pub").read_text().strip()
    return line


def _revoke_like_ssh_keygen(
    world: World, krl: Krl, ca: str, template: str, line: str, *, now: int
) -> Krl:
    """What one spec line does (ssh-keygen's update_krl_from_file), through Krl.revoking."""
    ca_blob = None if ca == "none" else world.blob(ca)
    kind, _, value = line.partition(": ")
    match kind:
        case "serial":
            low, _, high = value.partition("-")
            return krl.revoking(ca_blob, serial_ranges=[(int(low), int(high or low))], now=now)
        case "id":
            return krl.revoking(ca_blob, key_ids=[value], now=now)
        case "hash":
            digest = base64.b64decode(value.removeprefix("SHA256:") + "=")
            return krl.revoking(ca_blob, sha256=[digest], now=now)
    name = template.rpartition("<")[2].rstrip(">")
    identity = load_ssh_public_identity((world.root / f"{name}.pub").read_bytes())
    if isinstance(identity, SSHCertificate):  # ssh_krl_revoke_key: by serial, else key id
        issuer = _blob_of(identity.signature_key())
        if identity.serial:
            return krl.revoking(issuer, serials=[identity.serial], now=now)
        return krl.revoking(issuer, key_ids=[identity.key_id.decode()], now=now)
    key = _blob_of(identity)
    match kind:
        case "sha256":
            return krl.revoking(ca_blob, sha256=[hashlib.sha256(key).digest()], now=now)
        case "sha1":
            sha1 = hashlib.sha1(key).digest()  # noqa: S324 - the fingerprint OpenSSH revokes
            return krl.revoking(ca_blob, sha1=[sha1], now=now)
    return krl.revoking(ca_blob, keys=[key], now=now)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_krls_agree_with_ssh_keygen(world: World, name: str) -> None:
    theirs = world.root / f"{name}.krl"
    ours = world.root / f"{name}.ours.krl"
    ours_krl = Krl.empty(comment=name)
    for step, (ca, lines) in enumerate(SCENARIOS[name]):
        spec = world.root / f"{name}.{step}.spec"
        expanded = [_expand(world, line) for line in lines]
        spec.write_text("\n".join(expanded) + "\n")
        now = Krl.parse(theirs.read_bytes()).generated_date if step else 0
        for template, line in zip(lines, expanded, strict=True):
            ours_krl = _revoke_like_ssh_keygen(world, ours_krl, ca, template, line, now=now)
        argv = ["-q", "-k", "-f", str(theirs), "-s", ca if ca == "none" else str(world.root / ca)]
        version = str(ours_krl.version)
        world.keygen(*argv, *(["-u"] if step else []), "-z", version, "-C", name, str(spec))
        if step == 0:  # ssh-keygen dates a new KRL itself: take its date
            created = Krl.parse(theirs.read_bytes()).generated_date
            ours_krl = dataclasses.replace(ours_krl, generated_date=created)
    data = theirs.read_bytes()
    parsed = Krl.parse(data)
    assert parsed.to_bytes() == data

    verdicts = world.openssh_verdicts(theirs)
    assert 0 < sum(verdicts.values()) < len(verdicts)  # something revoked, something not
    assert our_verdicts(world, parsed) == verdicts

    ours.write_bytes(ours_krl.to_bytes())
    assert ours_krl.to_bytes() == data  # the same revocations, the same bytes
    assert world.openssh_verdicts(ours) == verdicts


def test_a_bitmap_ssh_keygen_cannot_read_back_is_never_written(world: World) -> None:
    serials = [*range(1, 100_000, 2), 1001, 2**63, 2**64 - 1]
    spec = world.root / "spread.spec"
    spec.write_text("".join(f"serial: {serial}\n" for serial in serials))
    theirs = world.root / "spread.krl"
    world.keygen("-q", "-k", "-f", str(theirs), "-s", str(world.root / "ca1.pub"), str(spec))
    code, output = world.keygen("-Q", "-f", str(theirs), str(world.files[0]), check=False)
    assert code == 255 and "bignum is too large" in output  # OpenSSH's own KRL is unusable
    with pytest.raises(FormatError, match="larger than 2048 bytes"):
        Krl.parse(theirs.read_bytes())

    ours = world.root / "spread.ours.krl"
    krl = Krl.empty().revoking(world.blob("ca1"), serials=serials, now=1_800_000_000)
    ours.write_bytes(krl.to_bytes())
    verdicts = world.openssh_verdicts(ours)
    assert verdicts == our_verdicts(world, krl)
    assert sum(verdicts.values()) >= 10  # serials 1, 5, 9, 15, 21, 127, 1001, 1003, 2^63, 2^64-1


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.krl")), ids=lambda path: path.stem)
def test_openssh_refuses_the_corpus_too_except_where_nixwarden_is_stricter(
    world: World, path: Path
) -> None:
    with pytest.raises(FormatError):
        Krl.parse(path.read_bytes())
    code, output = world.keygen("-Q", "-f", str(path), str(world.files[0]), check=False)
    if path.stem in OPENSSH_READS:
        assert code == 0, output
    else:
        assert code == 255 and "REVOKED" not in output, output


def test_a_signed_krl_is_read_by_both_and_its_signature_checked(world: World) -> None:
    good = world.root / "signed.krl"
    good.write_bytes(signed(GOOD))
    assert Krl.parse(good.read_bytes()).signatures
    code, output = world.keygen("-Q", "-f", str(good), str(world.files[0]), check=False)
    assert code == 0, output


def test_random_serial_sets_are_encoded_exactly_as_ssh_keygen_encodes_them(world: World) -> None:
    """Lists, ranges and bitmaps chosen by krl.c's cost model, over many shapes of input."""
    rng = random.Random(20261122)
    ca = world.blob("ca1")
    for trial in range(24):
        span = (2_000, 60_000, 2**64 - 1)[trial % 3]
        lines, serials, ranges = [], [], []
        for _ in range(rng.randrange(1, 300)):
            start = rng.randrange(1, span)
            if rng.random() < 0.2:
                end = min(span, start + rng.randrange(1, 400))
                lines.append(f"serial: {start}-{end}")
                ranges.append((start, end))
            else:
                lines.append(f"serial: {start}")
                serials.append(start)
        spec = world.root / f"random{trial}.spec"
        spec.write_text("\n".join(lines) + "\n")
        theirs = world.root / f"random{trial}.krl"
        argv = ["-q", "-k", "-f", str(theirs), "-s", str(world.root / "ca1.pub"), "-z", "1"]
        world.keygen(*argv, str(spec))
        data = theirs.read_bytes()
        date = Krl.parse(data).generated_date
        ours = Krl.empty().revoking(ca, serials=serials, serial_ranges=ranges, now=date)
        assert ours.to_bytes() == data, f"trial {trial}"
