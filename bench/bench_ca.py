"""Certified keys against plain trusted keys: what a CA and a large KRL cost a verifier.

10,000 paths (NIXWARDEN_BENCH_CA_PATHS), each signed by one of 10 keys. The same
paths are verified (`verify_paths`) against the 10 keys as plain trusted keys, and
against the same 10 keys certified by a CA, with a KRL of 100,000 revoked serials
(NIXWARDEN_BENCH_CA_REVOKED; random and sparse, so written as serial lists, the
largest encoding) from which the 10 certificates' serials are absent. The certified
side pays for everything: parsing the KRL and the certificates, deciding each
certificate, then the paths. The two sides take turns on every chunk of 500 paths, so
a busy neighbour slows both alike; best of seven rounds (NIXWARDEN_BENCH_CA_ROUNDS);
nothing is asserted.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

from nixwarden.ca import cert, sshkey
from nixwarden.ca.krl import Krl
from nixwarden.ca.policy import CertificatePolicy, Rules
from nixwarden.nix import nix32
from nixwarden.trust.hashes import Hash, HashAlgorithm
from nixwarden.trust.keys import SecretKey, Signature, TrustedKeys, fingerprint
from nixwarden.trust.verify import verify_paths

PATHS = int(os.environ.get("NIXWARDEN_BENCH_CA_PATHS", "10000"))
REVOKED = int(os.environ.get("NIXWARDEN_BENCH_CA_REVOKED", "100000"))
KEYS = 10
ROUNDS = int(os.environ.get("NIXWARDEN_BENCH_CA_ROUNDS", "7"))
CHUNK = 500
NOW = int(time.time())

Item = tuple[str, bytes, list[Signature]]


def _seconds(measure: Callable[[], object]) -> float:
    start = time.perf_counter()
    measure()
    return time.perf_counter() - start


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))


def run() -> None:
    rng = random.Random(11)
    ca = sshkey.generate_ca()
    ca_blob = sshkey.public_of(ca).blob
    people = [SecretKey.generate(f"person{index}-1") for index in range(KEYS)]
    revoked = rng.sample(range(1, 1 << 40), REVOKED + KEYS)
    serials, revoked = revoked[:KEYS], sorted(revoked[KEYS:])
    certificates = "\n".join(
        cert.issue(
            ca,
            key=person.public().key,
            key_id=person.name,
            serial=serial,
            principals=["deploy"],
            valid_after=NOW - 3600,
            valid_before=NOW + 86400,
        ).render()
        for person, serial in zip(people, serials, strict=True)
    ).encode()
    krl_bytes = Krl.empty(now=NOW).revoking(ca_blob, serials=revoked, now=NOW).to_bytes()

    items: list[Item] = []
    for index in range(PATHS):
        path = f"/nix/store/{nix32.encode(rng.randbytes(20))}-bench-{index}"
        digest = Hash(HashAlgorithm.SHA256, rng.randbytes(32))
        message = fingerprint(path, digest, 1000 + index, [])
        items.append((path, message, [people[index % KEYS].sign(message)]))

    def plain_policy() -> TrustedKeys:
        return TrustedKeys.of(person.public() for person in people)

    def certified_policy() -> CertificatePolicy:
        return CertificatePolicy.build(
            ca_keys=[sshkey.public_of(ca).key],
            certificates=cert.parse_certificates(certificates, "certs"),
            krls=[Krl.parse(krl_bytes)],
            rules=Rules(principals=("deploy",)),
            at=NOW,
        )

    # Both sides verify everything (verify_paths raises otherwise), and warm up.
    verify_paths(items, plain_policy())
    verify_paths(items, certified_policy())
    # The load on this shared machine drifts: the two sides take turns on every chunk
    # of CHUNK paths, so a busy moment slows both alike; each side's round total is
    # its set-up plus its chunks, and the best round counts.
    chunks = [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]
    plain_rounds, certified_rounds, setup_rounds, krl_rounds = [], [], [], []
    for _ in range(ROUNDS):
        plain_total = _seconds(plain_policy)
        setup = _seconds(certified_policy)
        trusted, policy = plain_policy(), certified_policy()
        certified_total = setup
        for index, chunk in enumerate(chunks):
            pair = [(trusted, True), (policy, False)]
            for side, is_plain in pair if index % 2 == 0 else reversed(pair):
                spent = _seconds(lambda side=side, chunk=chunk: verify_paths(chunk, side))
                if is_plain:
                    plain_total += spent
                else:
                    certified_total += spent
        plain_rounds.append(plain_total)
        certified_rounds.append(certified_total)
        setup_rounds.append(setup)
        krl_rounds.append(_seconds(lambda: Krl.parse(krl_bytes)))
    plain_s, certified_s = min(plain_rounds), min(certified_rounds)
    setup_s, krl_s = min(setup_rounds), min(krl_rounds)

    load = os.getloadavg()[0]
    print(
        f"{PATHS} paths, {KEYS} keys, KRL of {REVOKED} revoked serials "
        f"({len(krl_bytes) / 1024:.0f} KiB); best of {ROUNDS}; load average {load:.1f}"
    )
    widths = [52, 12, 9, 9]
    print(_row(["measure", "time", "ratio", "target"], widths))
    print(_row(["-" * width for width in widths], widths))
    print(
        _row(
            ["verify against 10 plain trusted keys", f"{plain_s * 1000:.0f} ms", "1.00", ""], widths
        )
    )
    print(
        _row(
            [
                "verify against 10 certified keys + KRL (all in)",
                f"{certified_s * 1000:.0f} ms",
                f"{certified_s / plain_s:.2f}",
                "≤ 1.10",
            ],
            widths,
        )
    )
    print(
        _row(
            ["  of which: KRL, certificates, policy set-up", f"{setup_s * 1000:.1f} ms", "", ""],
            widths,
        )
    )
    print(_row(["load the KRL (Krl.parse)", f"{krl_s * 1000:.1f} ms", "", "< 50 ms"], widths))
