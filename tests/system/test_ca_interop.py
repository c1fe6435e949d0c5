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
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixwarden.ca import sshkey
from nixwarden.ca.cert import Certificate
from nixwarden.ca.validity import parse_validity
from nixwarden.trust.keys import PublicKey
from testbed import harness

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


# --- KRLs: ssh-keygen's and ours, against ssh-keygen -Q ---------------------------------


def _people(env: dict[str, str], scratch: Path, ca: Path, serials: dict[str, int]) -> None:
    """A Nix key, its OpenSSH form and a certificate (for `deploy`) for each person."""
    for name, serial in serials.items():
        _, nixpub = make_key(env, scratch, name)
        (scratch / f"{name}.pub").write_text(nw(env, "key", "ssh-public", "--public", str(nixpub)))
        nw(
            env,
            *("ca", "issue", "--ca", str(ca), "--key", str(nixpub), "--serial", str(serial)),
            *("--principal", "deploy", "--validity", "-1h:+1d"),
            *("--out", str(scratch / "certs" / f"{name}-cert.pub")),
        )


def _revoked_by_ssh_keygen(
    env: dict[str, str], scratch: Path, krl: Path, names: list[str]
) -> set[str]:
    revoked = set()
    for name in names:
        cert = scratch / "certs" / f"{name}-cert.pub"
        result = harness.run([KEYGEN, "-Q", "-f", str(krl), str(cert)], env=env, check=False)
        assert result.returncode in (0, 1), result.stderr
        if result.returncode == 1:
            revoked.add(name)
    return revoked


def _refused_by_us(scratch: Path, ca_pub: Path, krl: Path) -> dict[str, str]:
    from nixwarden.ca import load  # noqa: PLC0415
    from nixwarden.ca.policy import CertificatePolicy, Rules  # noqa: PLC0415

    policy = CertificatePolicy.build(
        ca_keys=[key.key for key in load.ca_keys([str(ca_pub)])],
        certificates=load.certificates([str(scratch / "certs")]),
        krls=load.krls([str(krl)]),
        rules=Rules(principals=("deploy",)),
        at=int(time.time()),
    )
    return dict(policy.refused)


SERIALS = {f"p{index}-1": index for index in range(1, 11)} | {"p11-1": 51, "p12-1": 53}


def test_ssh_keygen_krls_revoke_here_what_ssh_keygen_q_says(
    env: dict[str, str], scratch: Path
) -> None:
    ca, ca_pub = make_ca(env, scratch)
    (scratch / "certs").mkdir()
    _people(env, scratch, ca, SERIALS)
    key_line = lambda name: (scratch / f"{name}.pub").read_text().strip()  # noqa: E731
    fingerprint = harness.run([KEYGEN, "-l", "-f", str(scratch / "p9-1.pub")], env=env)
    spec = scratch / "spec"
    spec.write_text(
        "\n".join(
            [
                "serial: 2",
                "serial: 4-5",
                *(f"serial: {serial}" for serial in range(20, 201, 3)),  # a bitmap
                "id: p6-1",
                f"key: {key_line('p3-1')}",
                f"sha1: {key_line('p7-1')}",
                f"sha256: {key_line('p8-1')}",
                f"hash: {fingerprint.stdout.decode().split()[1]}",
                "",
            ]
        )
    )
    krl = scratch / "keygen.krl"
    harness.run([KEYGEN, "-q", "-k", "-s", str(ca_pub), "-f", str(krl), str(spec)], env=env)
    expected = {"p2-1", "p3-1", "p4-1", "p5-1", "p6-1", "p7-1", "p8-1", "p9-1", "p12-1"}
    assert _revoked_by_ssh_keygen(env, scratch, krl, list(SERIALS)) == expected
    refused = _refused_by_us(scratch, ca_pub, krl)
    assert set(refused) == expected
    assert refused["p2-1"] == "revoked: serial 2"
    assert refused["p4-1"] == "revoked: serial range 4-5"
    assert refused["p6-1"] == "revoked: key id p6-1"
    assert refused["p3-1"].startswith("revoked: key SHA256:")
    assert refused["p12-1"] == "revoked: serial 53"


def test_our_krls_revoke_in_ssh_keygen_q_what_they_revoke_here(
    env: dict[str, str], scratch: Path
) -> None:
    ca, ca_pub = make_ca(env, scratch)
    (scratch / "certs").mkdir()
    _people(env, scratch, ca, SERIALS)
    krl = scratch / "ours.krl"
    revoke = ["ca", "revoke", "--ca-public", str(ca_pub), "--krl", str(krl)]
    nw(env, *revoke, "--serial", "2", "--serial", "4-5")
    nw(env, *revoke, "--key-id", "p6-1", "--key", str(scratch / "p3-1.nixpub"))
    nw(env, *revoke, *(arg for s in range(20, 201, 3) for arg in ("--serial", str(s))))
    expected = {"p2-1", "p3-1", "p4-1", "p5-1", "p6-1", "p12-1"}
    assert _revoked_by_ssh_keygen(env, scratch, krl, list(SERIALS)) == expected
    assert set(_refused_by_us(scratch, ca_pub, krl)) == expected
    listing = harness.run([KEYGEN, "-Q", "-l", "-f", str(krl)], env=env).stdout.decode()
    assert "# KRL version 3" in listing
    assert "id: p6-1" in listing
    shown = nw(env, "ca", "show", str(krl))
    assert "KRL version 3" in shown and "key ids: p6-1" in shown


# --- end to end with real Nix -----------------------------------------------------------


@pytest.fixture
def nix_env(env: dict[str, str], nix_daemon: harness.NixDaemon) -> dict[str, str]:
    return env | {"NIX_CONF_DIR": str(harness.client_nix_conf_dir())}


@pytest.fixture
def store_paths(nix_env: dict[str, str], scratch: Path) -> Iterator[list[str]]:
    made: list[str] = []
    try:
        yield made
    finally:
        if made:
            harness.run(["nix-store", "--delete", *made], env=nix_env, check=False)


def _add(nix_env: dict[str, str], scratch: Path, made: list[str], name: str) -> str:
    tree = scratch / f"nwt-ca-{name}-{secrets.token_hex(4)}"
    tree.mkdir()
    (tree / "payload").write_text(f"{name} {secrets.token_hex(8)}\n")
    path = harness.run(["nix-store", "--add", str(tree)], env=nix_env).stdout.decode().strip()
    made.append(path)
    return path


def _sign(nix_env: dict[str, str], secret: Path, path: str) -> None:
    """Sign with Nix, and check nixwarden sign computes the very same signature."""
    ours = nw(nix_env, "sign", "--key", str(secret), path).split()
    harness.run(["nix", "store", "sign", "--key-file", str(secret), path], env=nix_env)
    info = harness.run(["nix", "path-info", "--sigs", path], env=nix_env).stdout.decode()
    assert ours[0] == path and ours[1] in info.split()


def test_paths_signed_by_certified_keys_verify_until_they_should_not(
    nix_env: dict[str, str], scratch: Path, store_paths: list[str]
) -> None:
    env = nix_env
    ca, ca_pub = make_ca(env, scratch)
    certs = scratch / "certs"
    certs.mkdir()
    nix_secrets = {}
    for serial, name in enumerate(("alice-1", "bob-1", "carol-1"), start=1):
        secret, nixpub = make_key(env, scratch, name)
        nix_secrets[name] = secret
        principal = "build" if name == "carol-1" else "deploy"
        nw(
            env,
            *("ca", "issue", "--ca", str(ca), "--key", str(nixpub), "--serial", str(serial)),
            *("--principal", principal, "--validity", "-1h:+1d"),
            *("--out", str(certs / f"{name}-cert.pub")),
        )
    both = _add(env, scratch, store_paths, "both")
    _sign(env, nix_secrets["alice-1"], both)
    _sign(env, nix_secrets["bob-1"], both)
    only_alice = _add(env, scratch, store_paths, "alice")
    _sign(env, nix_secrets["alice-1"], only_alice)
    by_carol = _add(env, scratch, store_paths, "carol")
    _sign(env, nix_secrets["carol-1"], by_carol)

    verify = [NIXWARDEN, "verify", "--ca", str(ca_pub), "--certs", str(certs)]

    def check(*args: str, paths: tuple[str, ...] = (both, only_alice)) -> tuple[int, str]:
        result = harness.run([*verify, *args, *paths], env=env, check=False)
        return result.returncode, result.stderr.decode()

    assert check("--principal", "deploy")[0] == 0
    code, err = check("--principal", "deploy", paths=(by_carol,))
    assert code == 1 and "carol-1: principal deploy not in [build]" in err
    code, err = check("--principal", "build")
    assert code == 1 and "alice-1: principal build not in [deploy]" in err
    code, err = check("--principal", "deploy", "--at", "+2d")
    assert code == 1 and "alice-1: expired" in err and f"{only_alice}: " in err
    assert check("--principal", "deploy", "--at", "+2d", "--clock-skew", "2d")[0] == 0
    assert check("--max-validity", "1h", paths=(both,))[0] == 1
    assert check("--min-signers", "2", paths=(both,))[0] == 0
    code, err = check("--min-signers", "2")
    assert code == 1 and f"{only_alice}: 1 certified signer (alice-1), 2 required" in err
    assert err.count("\n") == 1 and both not in err

    krl = scratch / "revoked.krl"
    nw(env, "ca", "revoke", "--ca-public", str(ca_pub), "--krl", str(krl), "--serial", "1")
    code, err = check("--krl", str(krl))
    assert code == 1 and f"{only_alice}: alice-1: revoked: serial 1" in err
    assert both not in err  # bob's signature still counts
    code, err = check("--krl", str(krl), "--min-signers", "2", paths=(both,))
    assert code == 1 and "1 certified signer (bob-1), 2 required; alice-1: revoked: serial 1" in err

    spec = scratch / "spec"
    spec.write_text("id: bob-1\n")
    keygen_krl = scratch / "keygen.krl"
    harness.run([KEYGEN, "-q", "-k", "-s", str(ca_pub), "-f", str(keygen_krl), str(spec)], env=env)
    code, err = check("--krl", str(krl), "--krl", str(keygen_krl), paths=(both,))
    assert code == 1 and "bob-1: revoked: key id bob-1" in err

    # Malformed inputs stop verification before any path is checked: exit 2, one line.
    broken = scratch / "broken.krl"
    broken.write_bytes(krl.read_bytes()[:-3])
    code, err = check("--krl", str(broken))
    assert code == 2 and err.startswith("nixwarden: error: ") and err.count("\n") == 1
    (certs / "zz-cert.pub").write_text("ssh-ed25519-cert-v01@openssh.com AAAA\n")
    code, err = check()
    assert code == 2 and "zz-cert.pub" in err and err.count("\n") == 1
