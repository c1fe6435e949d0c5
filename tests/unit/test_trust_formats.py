"""nix32, hashes, store paths, keys, fingerprints, narinfo: known answers and refusals."""

from __future__ import annotations

import hashlib

import pytest

from nixwarden.errors import FormatError
from nixwarden.nix import nix32
from nixwarden.nix.storepath import StorePath
from nixwarden.trust.hashes import Hash, HashAlgorithm, HashFormat
from nixwarden.trust.keys import (
    PublicKey,
    SecretKey,
    Signature,
    TrustedKeys,
    fingerprint,
    parse_public_keys,
)
from nixwarden.trust.narinfo import NarInfo, make
from nixwarden.trust.verify import SignatureRejected, Verified

# Known answers from Nix's own tests (libutil-tests/hash.cc).
EMPTY_SHA256_NIX32 = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
ABC_SHA256_NIX32 = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"

# RFC 8032 section 7.1, test 1: seed, public key, and the signature of the empty message.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_nix32_known_answers() -> None:
    assert nix32.encode(hashlib.sha256(b"").digest()) == EMPTY_SHA256_NIX32
    assert nix32.encode(hashlib.sha256(b"abc").digest()) == ABC_SHA256_NIX32
    assert nix32.encode(b"") == ""
    assert nix32.encoded_length(20) == 32


@pytest.mark.parametrize("size", [1, 5, 16, 20, 32, 64])
def test_nix32_round_trip(size: int) -> None:
    data = bytes(range(7, 7 + size))
    assert nix32.decode(nix32.encode(data), size) == data


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("e" * 52, "invalid character"),
        ("0" * 51, "expected 52"),
        ("z" + "0" * 51, "more bits"),
    ],
)
def test_nix32_refuses(text: str, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        nix32.decode(text, 32)


def test_hash_forms_convert_between_each_other() -> None:
    digest = Hash(HashAlgorithm.SHA256, hashlib.sha256(b"abc").digest())
    forms = {
        "sha256:" + ABC_SHA256_NIX32,
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "sha256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
        "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
    }
    for text in forms:
        assert Hash.parse(text) == digest
    assert {digest.render(form) for form in HashFormat} == forms
    assert Hash.parse(ABC_SHA256_NIX32, default=HashAlgorithm.SHA256) == digest


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("sha257:abc", "unknown hash algorithm"),
        ("sha256:abc", "length of none"),
        ("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", "lower"),
        ("sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0", "wrong length"),
        ("sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAF!0=", "invalid base64"),
        ("1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", "does not name"),
    ],
)
def test_hash_refuses(text: str, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        Hash.parse(text)


def test_store_paths() -> None:
    path = StorePath.parse("/nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh6051-hello-2.12")
    assert path.name == "hello-2.12"
    assert path.absolute("/nix/store/") == "/nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh6051-hello-2.12"
    for bad in (
        "/nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh6051-hello/bin",
        "/nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh6051-.hidden",
        "/nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh605-short",
        "/nix/storex/hpi1c1lnw8jb1w6q20b91lh48xrh6051-x",
        "/nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh6051-" + "n" * 212,
    ):
        with pytest.raises(FormatError):
            StorePath.parse(bad)


def test_rfc8032_vector_through_nix_key_format() -> None:
    secret = SecretKey.parse(SecretKey("rfc-1", RFC_SEED + RFC_PUBLIC).render())
    assert secret.public() == PublicKey("rfc-1", RFC_PUBLIC)
    assert secret.sign(b"").signature == RFC_SIGNATURE
    assert secret.public().verify(b"", Signature("rfc-1", RFC_SIGNATURE))
    assert not secret.public().verify(b"x", Signature("rfc-1", RFC_SIGNATURE))
    assert not secret.public().verify(b"", Signature("other-1", RFC_SIGNATURE))


def test_secret_key_never_shows_itself() -> None:
    secret = SecretKey.generate("k-1")
    text = secret.render()
    assert text.split(":")[1] not in repr(secret)
    broken = text[:-4] + ("AAA=" if not text.endswith("AAA=") else "BBB=")
    with pytest.raises(FormatError) as refused:
        SecretKey.parse(broken)
    assert text.split(":")[1][:20] not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no-colon", "name:base64"),
        (":AAAA", "invalid key name"),
        ("k 1:" + "A" * 44, "invalid key name"),
        ("k-1:not base64", "not valid base64"),
        ("k-1:AAAA", "expected 32"),
    ],
)
def test_public_key_refuses(text: str, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        PublicKey.parse(text)


def test_mismatched_secret_key_halves_are_refused() -> None:
    with pytest.raises(FormatError, match="does not match"):
        SecretKey.parse(SecretKey("k-1", RFC_SEED + bytes(32)).render())


def test_fingerprint_matches_nix() -> None:
    nar_hash = Hash.parse("sha256:1ffc72lqyq54q4828a9w0jblnaynnmcf794ax5a17xm4q6bx0cn4")
    refs = ["/nix/store/zzzz" + "0" * 28 + "-b", "/nix/store/aaaa" + "0" * 28 + "-a"]
    assert fingerprint("/nix/store/p-x", nar_hash, 656, refs) == (
        b"1;/nix/store/p-x;sha256:1ffc72lqyq54q4828a9w0jblnaynnmcf794ax5a17xm4q6bx0cn4;656;"
        + f"{refs[1]},{refs[0]}".encode()
    )
    assert fingerprint("/nix/store/p-x", nar_hash, 656, []).endswith(b";656;")
    with pytest.raises(FormatError):
        fingerprint("/nix/store/p-x", nar_hash, 0, [])


def test_trusted_keys_check_reasons() -> None:
    alice, mallory = SecretKey.generate("alice-1"), SecretKey.generate("mallory-1")
    impostor = SecretKey.generate("alice-1")
    trusted = TrustedKeys.of(parse_public_keys(alice.public().render() + "\n"))
    message = b"1;/nix/store/x;sha256:y;1;"
    verified = trusted.check(message, [mallory.sign(message), alice.sign(message)])
    assert verified == Verified(("alice-1",))
    for signatures, reason in (
        (
            [mallory.sign(message), impostor.sign(message)],
            "signature by alice-1 does not verify (also signed by untrusted keys mallory-1)",
        ),
        ([impostor.sign(message)], "signature by alice-1 does not verify"),
        ([mallory.sign(message)], "signed only by untrusted keys mallory-1"),
        ([], "no signatures"),
    ):
        with pytest.raises(SignatureRejected) as rejected:
            trusted.check(message, signatures)
        assert rejected.value.reason == reason
    with pytest.raises(FormatError, match="two different trusted keys"):
        TrustedKeys.of([alice.public(), impostor.public()])


NIX_NARINFO = b"""\
StorePath: /nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh6051-nwtrust
URL: nar/0b3pval65xk7gqzrkasgj75ysxggvp1xk4gshrwj20i1hrpvbvhm.nar.xz
Compression: xz
FileHash: sha256:0b3pval65xk7gqzrkasgj75ysxggvp1xk4gshrwj20i1hrpvbvhm
FileSize: 200
NarHash: sha256:1ffc72lqyq54q4828a9w0jblnaynnmcf794ax5a17xm4q6bx0cn4
NarSize: 656
References: 7d5ma06gqchg2c6gygc3c9wbzbg3bx8k-a hpi1c1lnw8jb1w6q20b91lh48xrh6051-nwtrust
Deriver: 7d5ma06gqchg2c6gygc3c9wbzbg3bx8k-nwtrust.drv
Sig: t-1:WpioIJsMQwDXWaxtvGcSjKK6lBFpt2JF4zdzvdeenkOXpoN4ayMgRZbd1GVRkz1DGX/55W73l1lDVhgxPKo2AA==
CA: fixed:r:sha256:1ffc72lqyq54q4828a9w0jblnaynnmcf794ax5a17xm4q6bx0cn4
"""


def test_narinfo_round_trips_byte_for_byte() -> None:
    info = NarInfo.parse(NIX_NARINFO)
    assert info.render() == NIX_NARINFO
    assert info.nar_size == 656
    assert [ref.name for ref in info.references] == ["a", "nwtrust"]
    assert info.deriver is not None and info.deriver.name == "nwtrust.drv"


def test_narinfo_defaults_and_unknown_fields() -> None:
    minimal = b"""\
StorePath: /nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh6051-nwtrust
URL: nar/x.nar.bz2
NarHash: sha256:1ffc72lqyq54q4828a9w0jblnaynnmcf794ax5a17xm4q6bx0cn4
NarSize: 656
System: x86_64-linux
Deriver: unknown-deriver
"""
    info = NarInfo.parse(minimal)
    assert info.compression == "bzip2"
    assert info.references == () and info.deriver is None and info.signatures == ()


def test_narinfo_signing_covers_fingerprint_only() -> None:
    key = SecretKey.generate("cache-1")
    info = make(
        StorePath.parse("/nix/store/hpi1c1lnw8jb1w6q20b91lh48xrh6051-nwtrust"),
        url="nar/a.nar",
        compression="none",
        file_hash=None,
        file_size=None,
        nar_hash=Hash.parse("sha256:1ffc72lqyq54q4828a9w0jblnaynnmcf794ax5a17xm4q6bx0cn4"),
        nar_size=656,
        references=[StorePath.from_base_name("7d5ma06gqchg2c6gygc3c9wbzbg3bx8k-a")],
    ).signed(key)
    trusted = TrustedKeys.of([key.public()])
    reparsed = NarInfo.parse(info.render())
    assert trusted.check(reparsed.fingerprint(), reparsed.signatures).signers == ("cache-1",)
    tampered = NarInfo.parse(info.render().replace(b"NarSize: 656", b"NarSize: 657"))
    with pytest.raises(SignatureRejected, match="does not verify"):
        trusted.check(tampered.fingerprint(), tampered.signatures)
    assert len(info.signed(key).signatures) == 1
