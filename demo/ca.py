"""Team CA tour: certify Nix keys, verify paths by certificate, revoke, require two signers."""

from __future__ import annotations

import secrets
from pathlib import Path

from demo.framework import Demo

TITLE = "A team CA for Nix signing keys, in OpenSSH's formats"


def run(demo: Demo) -> None:
    conf = demo.scratch / "ca-nix-conf"
    conf.mkdir()
    (conf / "nix.conf").write_text("experimental-features = nix-command\nsubstituters =\n")
    env = demo.env | {"NIX_CONF_DIR": str(conf), "TZ": "UTC"}
    made: list[str] = []
    try:
        _tour(demo, env, made)
    finally:
        if made:
            demo.step(
                "remove the demo's store path",
                ["nix-store", "--delete", *made],
                env=env,
                show_lines=1,
            )


def _tour(demo: Demo, env: dict[str, str], made: list[str]) -> None:
    work = demo.scratch / "ca"
    (work / "certs").mkdir(parents=True)
    ca, ca_pub = work / "team-ca", work / "team-ca.pub"
    demo.nixwarden(
        "the team's CA: an OpenSSH Ed25519 key pair (secret 0600, never overwritten)",
        *("ca", "init", "--secret", str(ca), "--public", str(ca_pub), "--comment", "team CA"),
        env=env,
    )
    demo.step("ssh-keygen reads it", ["ssh-keygen", "-l", "-f", str(ca)], env=env)

    keys: dict[str, tuple[Path, Path]] = {}
    for person in ("alice", "bob"):
        secret, public = work / f"{person}.sec", work / f"{person}.pub"
        demo.nixwarden(
            f"{person} makes an ordinary Nix signing key",
            *("key", "generate", "--name", f"{person}-1"),
            *("--secret", str(secret), "--public", str(public)),
            env=env,
        )
        keys[person] = (secret, public)
    ledger = work / "issued.jsonl"
    for serial, person in enumerate(("alice", "bob"), start=1):
        demo.nixwarden(
            f"the CA certifies {person}'s key for 'deploy', for 8 hours, serial {serial}",
            *("ca", "issue", "--ca", str(ca), "--key", str(keys[person][1])),
            *("--serial", str(serial), "--principal", "deploy", "--validity", "+8h"),
            *("--out", str(work / "certs" / f"{person}-cert.pub"), "--ledger", str(ledger)),
            env=env,
        )
    demo.nixwarden(
        "serials are never issued twice: the ledger refuses serial 1 again",
        *("ca", "issue", "--ca", str(ca), "--key", str(keys["bob"][1]), "--serial", "1"),
        *("--principal", "deploy", "--validity", "+8h", "--out", str(work / "again-cert.pub")),
        *("--ledger", str(ledger)),
        expect_exit=1,
        env=env,
    )
    alice_cert = work / "certs" / "alice-cert.pub"
    demo.nixwarden("what the certificate holds", "ca", "show", str(alice_cert), env=env)
    demo.step(
        "…and what ssh-keygen sees in it",
        ["ssh-keygen", "-L", "-f", str(alice_cert)],
        env=env,
        show_lines=9,
    )

    tree = demo.scratch / f"nwt-ca-demo-{secrets.token_hex(3)}"
    tree.mkdir()
    (tree / "release").write_text("version 1\n")
    added = demo.step("a path to deploy", ["nix-store", "--add", str(tree)], env=env)
    path = added.stdout.decode().strip()
    made.append(path)
    for person in ("alice", "bob"):
        demo.step(
            f"{person} signs it with Nix, with her or his own key",
            ["nix", "store", "sign", "--key-file", str(keys[person][0]), path],
            env=env,
        )

    verify = ["verify", "--ca", str(ca_pub), "--certs", str(work / "certs")]
    demo.nixwarden(
        "the machine trusts the CA, not a list of keys: the path verifies",
        *verify,
        "--principal",
        "deploy",
        path,
        env=env,
    )
    demo.nixwarden(
        "a scope the certificates do not grant is refused",
        *verify,
        "--principal",
        "build",
        path,
        expect_exit=1,
        env=env,
    )
    demo.nixwarden(
        "so is the same path checked 9 hours from now: the certificates have expired",
        *verify,
        "--principal",
        "deploy",
        "--at",
        "+9h",
        path,
        expect_exit=1,
        env=env,
    )
    demo.nixwarden(
        "a quorum: two distinct certified signers on every path",
        *verify,
        "--principal",
        "deploy",
        "--min-signers",
        "2",
        path,
        env=env,
    )
    krl = work / "revoked.krl"
    demo.nixwarden(
        "bob's laptop is stolen: revoke his certificate by serial, in an OpenSSH KRL",
        *("ca", "revoke", "--ca-public", str(ca_pub), "--krl", str(krl), "--serial", "2"),
        env=env,
    )
    demo.step(
        "ssh-keygen agrees it is revoked",
        ["ssh-keygen", "-Q", "-f", str(krl), str(work / "certs" / "bob-cert.pub")],
        expect_exit=1,
        env=env,
    )
    demo.nixwarden(
        "with bob revoked, one signer is left and two are required",
        *verify,
        "--krl",
        str(krl),
        "--principal",
        "deploy",
        "--min-signers",
        "2",
        path,
        expect_exit=1,
        env=env,
    )
    demo.nixwarden("the KRL, listed", "ca", "show", str(krl), env=env)
