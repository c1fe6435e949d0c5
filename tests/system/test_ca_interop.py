"""The team CA against real OpenSSH 9.2 and real Nix.

Certificates issued here read the same in `ssh-keygen -L`; certificates `ssh-keygen -s`
issues over `key ssh-public` output are accepted here; validity specs mean what
ssh-keygen -V makes of them; KRLs `ssh-keygen -k` writes revoke in verification what
`ssh-keygen -Q` says they revoke; and store paths signed by certified keys verify
until the key is revoked, the certificate expires, the principal is wrong or a
second signer is required.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed import harness

from nixwarden.ca import sshkey
from nixwarden.ca.cert import Certificate
from nixwarden.ca.validity import parse_validity
from nixwarden.trust.keys import PublicKey

NIXWARDEN = harness.NIXWARDEN
KEYGEN = "ssh-keygen"


@pytest.fixture(scope="module")
def env(system: None) -> dict[str, str]:
    harness.need(harness.which(KEYGEN) is not None, "ssh-keygen on PATH")
    return harness.base_env(TZ="UTC")


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = harness.world_dir("nwt-ca")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def nw(env: dict[str, str], *args: str, check: bool = True) -> str:
    return harness.run([NIXWARDEN, *args], env=env, check=check).stdout.decode()


def make_ca(env: dict[str, str], scratch: Path, name: str = "ca") -> tuple[Path, Path]:
    secret, public = scratch / name, scratch / f"{name}.pub"
    nw(env, "ca", "init", "--secret", str(secret), "--public", str(public), "--comment", name)
    return secret, public


def make_key(env: dict[str, str], scratch: Path, name: str) -> tuple[Path, Path]:
    secret, public = scratch / f"{name}.sec", scratch / f"{name}.nixpub"
    nw(env, "key", "generate", "--name", name, "--secret", str(secret), "--public", str(public))
    return secret, public


def keygen_listing(env: dict[str, str], path: Path) -> str:
    return harness.run([KEYGEN, "-L", "-f", str(path)], env=env).stdout.decode()


def test_our_ca_key_is_an_openssh_key(env: dict[str, str], scratch: Path) -> None:
    secret, public = make_ca(env, scratch)
    derived = harness.run([KEYGEN, "-y", "-f", str(secret)], env=env).stdout.decode().split()
    assert derived[:2] == public.read_text().split()[:2]
    listed = harness.run([KEYGEN, "-l", "-f", str(secret)], env=env).stdout.decode()
    ours = sshkey.parse_public_keys(public.read_bytes(), "ca.pub")[0]
    assert listed.split()[1] == ours.fingerprint
    assert listed.split()[2] == "ca"  # the comment lives in the secret key too


def test_certificates_issued_here_read_the_same_in_ssh_keygen(
    env: dict[str, str], scratch: Path
) -> None:
    ca, _ = make_ca(env, scratch)
    _, nixpub = make_key(env, scratch, "alice-1")
    cert = scratch / "alice-cert.pub"
    nw(
        env,
        *("ca", "issue", "--ca", str(ca), "--key", str(nixpub), "--serial", "4242"),
        *("--principal", "deploy", "--principal", "deploy:web,build"),
        *("--validity", "20261201103000Z:20261231Z", "--option", "restrict@example.com=x"),
        *("--out", str(cert)),
    )
    listing = keygen_listing(env, cert)
    assert "ssh-ed25519-cert-v01@openssh.com user certificate" in listing
    assert 'Key ID: "alice-1"' in listing
    assert re.search(r"Serial: 4242\n", listing)
    assert "Valid: from 2026-12-01T10:30:00 to 2026-12-31T00:00:00" in listing
    principals = listing.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == ["deploy", "deploy:web", "build"]
    assert "restrict@example.com UNKNOWN OPTION" in listing
    ssh_key = harness.run([NIXWARDEN, "key", "ssh-public", "--public", str(nixpub)], env=env)
    (scratch / "alice.pub").write_bytes(ssh_key.stdout)
    fingerprint = harness.run([KEYGEN, "-l", "-f", str(scratch / "alice.pub")], env=env)
    assert f"Public key: ED25519-CERT {fingerprint.stdout.decode().split()[1]}" in listing

    forever = scratch / "forever-cert.pub"
    nw(
        env,
        *("ca", "issue", "--ca", str(ca), "--key", str(nixpub), "--serial", "1"),
        *("--principal", "deploy", "--validity", "always:forever", "--out", str(forever)),
    )
    assert "Valid: forever" in keygen_listing(env, forever)


def test_ssh_keygen_certifies_nix_keys_for_us(env: dict[str, str], scratch: Path) -> None:
    # A CA made by ssh-keygen, used by both tools; the Nix key given to ssh-keygen -s as
    # the line `key ssh-public` prints.
    ca = scratch / "keygen-ca"
    harness.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "kg", "-f", str(ca)], env=env)
    _, nixpub = make_key(env, scratch, "bob-1")
    ssh_public = scratch / "bob.pub"
    ssh_public.write_text(nw(env, "key", "ssh-public", "--public", str(nixpub)))
    signing = [KEYGEN, "-q", "-s", str(ca), "-I", "bob-1", "-n", "deploy,build", "-z", "77"]
    harness.run([*signing, "-V", "-5m:+1h", str(ssh_public)], env=env)
    certificate = Certificate.parse((scratch / "bob-cert.pub").read_bytes())
    nix_key = PublicKey.parse(nixpub.read_text())
    assert (certificate.key, certificate.key_id) == (nix_key.key, "bob-1")
    assert (certificate.serial, certificate.principals) == (77, ("deploy", "build"))
    ca_key = sshkey.parse_public_keys((scratch / "keygen-ca.pub").read_bytes(), "ca")[0]
    assert certificate.ca_key == ca_key.key
    assert 3600 <= certificate.span <= 3900
    assert {o.name for o in certificate.extensions} >= {"permit-pty"}  # ignored, as specified
    shown = nw(env, "ca", "show", str(scratch / "bob-cert.pub"))
    assert "Key ID: bob-1" in shown and "Serial: 77" in shown
    # and our issue signs with ssh-keygen's CA key
    ours = scratch / "ours-cert.pub"
    nw(
        env,
        *("ca", "issue", "--ca", str(ca), "--key", str(nixpub), "--serial", "78"),
        *("--principal", "deploy", "--validity", "+1h", "--out", str(ours)),
    )
    assert "Serial: 78" in keygen_listing(env, ours)


ABSOLUTE_SPECS = [
    "20261201:20261231",
    "20260701:20260801120000",  # summer: ssh-keygen reads it as standard time
    "20261201Z:20261231Z",
    "202612011230:20261231235959",
    "20260701UTC:20270101",
    "always:20300101",
    "19991231:forever",
    "0x10:0x7fffffff",
]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York"])
def test_validity_specs_mean_what_ssh_keygen_makes_of_them(
    env: dict[str, str], scratch: Path, zone: str
) -> None:
    zoned = {**env, "TZ": zone}
    ca, _ = make_ca(env, scratch)
    _, nixpub = make_key(env, scratch, "carol-1")
    ssh_public = scratch / "carol.pub"
    ssh_public.write_text(nw(env, "key", "ssh-public", "--public", str(nixpub)))
    for spec in [*ABSOLUTE_SPECS, "+8h", "-1d:+52w"]:
        signing = [KEYGEN, "-q", "-s", str(ca), "-I", "c", "-V", spec, str(ssh_public)]
        harness.run(signing, env=zoned)
        theirs = Certificate.parse((scratch / "carol-cert.pub").read_bytes())
        expected = parse_validity(spec, int(time.time()))  # in the zone of this process
        if zone != "UTC":
            expected = _in_zone(zone, spec)
        if spec.startswith(("+", "-")):
            assert abs(theirs.valid_after - expected.valid_after) <= 61, spec
            assert abs(theirs.valid_before - expected.valid_before) <= 5, spec
        else:
            assert (theirs.valid_after, theirs.valid_before) == (
                expected.valid_after,
                expected.valid_before,
            ), spec


def _in_zone(zone: str, spec: str) -> object:
    """parse_validity as a nixwarden process running in `zone` computes it."""
    out = harness.run(
        [
            str(harness.VENV_BIN / "python"),
            "-c",
            "import sys, time; from nixwarden.ca.validity import parse_validity as p; "
            "v = p(sys.argv[1], int(time.time())); print(v.valid_after, v.valid_before)",
            spec,
        ],
        env=harness.base_env(TZ=zone),
    ).stdout.split()
    from nixwarden.ca.validity import Validity  # noqa: PLC0415

    return Validity(int(out[0]), int(out[1]))
