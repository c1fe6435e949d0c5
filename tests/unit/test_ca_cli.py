"""`nixwarden ca …` and `key ssh-public` on files in a temporary directory."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from nixwarden.ca import ledger, sshkey
from nixwarden.ca.cert import Certificate
from nixwarden.ca.krl import CertRef, Krl
from nixwarden.cli import main
from nixwarden.errors import FormatError, InvalidInput, Refused
from nixwarden.trust.keys import PublicKey, SecretKey


@pytest.fixture
def ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    secret, public = tmp_path / "ca", tmp_path / "ca.pub"
    argv = ["ca", "init", "--secret", str(secret), "--public", str(public), "--comment", "team"]
    assert main(argv) == 0
    capsys.readouterr()
    return secret, public


@pytest.fixture
def alice(tmp_path: Path) -> Path:
    path = tmp_path / "alice.pub"
    path.write_text(SecretKey.generate("alice-1").public().render() + "\n")
    return path


def issue(ca: Path, key: Path, out: Path, *extra: str) -> int:
    argv = ["ca", "issue", "--ca", str(ca), "--key", str(key), "--out", str(out)]
    argv += ["--principal", "deploy", "--validity", "-1d:+1d", *extra]
    if "--serial" not in extra:
        argv += ["--serial", "42"]
    return main(argv)


def test_init_writes_a_private_secret_once(
    tmp_path: Path, ca: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    secret, public = ca
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    private = sshkey.load_secret(secret.read_bytes(), "ca")
    assert sshkey.parse_public_keys(public.read_bytes(), "p") == (
        sshkey.public_of(private, "team"),
    )
    before = secret.read_bytes()
    argv = ["ca", "init", "--secret", str(secret), "--public", str(tmp_path / "new.pub")]
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert secret.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca", "ca.pub"]


def test_issue_and_show(
    tmp_path: Path, ca: tuple[Path, Path], alice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "alice-cert.pub"
    assert issue(ca[0], alice, out, "--principal", "build,web", "--option", "x@y=1") == 0
    assert "serial 42 for deploy, build, web" in capsys.readouterr().err
    certificate = Certificate.parse(out.read_bytes())
    key = PublicKey.parse(alice.read_text())
    assert (certificate.key, certificate.key_id) == (key.key, key.name)
    assert certificate.principals == ("deploy", "build", "web")
    assert certificate.ca_key == sshkey.parse_public_keys(ca[1].read_bytes(), "p")[0].key

    assert main(["ca", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Key ID: alice-1" in text
    assert "Serial: 42" in text
    assert "Principals: deploy, build, web" in text
    assert "Critical options: x@y '1'" in text
    assert f"(Nix: {key.render()})" in text
    assert main(["ca", "show", "--json", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)["certificates"][0]
    assert shown["serial"] == 42
    assert shown["nix_public_key"] == key.render()
    assert shown["critical_options"] == [{"name": "x@y", "value": "1"}]
    assert shown["valid_before"] - shown["valid_after"] == 2 * 86400 or shown["valid_to"]


def test_show_escapes_untrusted_text(
    tmp_path: Path, ca: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from nixwarden.ca import cert  # noqa: PLC0415

    private = sshkey.load_secret(ca[0].read_bytes(), "ca")
    sneaky = cert.issue(
        private,
        key=SecretKey.generate("k-1").public().key,
        key_id="k-1\x1b[2J\u202e",
        serial=1,
        principals=["deploy"],
        valid_after=0,
        valid_before=2**64 - 1,
        critical_options=[cert.Option.of("opt", "a\nb")],
    )
    path = tmp_path / "sneaky-cert.pub"
    assert sneaky.comment == ""  # a key id that is not plain text is not copied there
    path.write_text(sneaky.render() + "\n")
    assert main(["ca", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert "Key ID: k-1\\x1b[2J\\u202e" in out
    assert "opt 'a\\x0ab'" in out
    assert "Valid: from always to forever" in out


def test_issue_refusals(
    tmp_path: Path, ca: tuple[Path, Path], alice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c"
    open_ca = tmp_path / "open-ca"
    open_ca.write_bytes(ca[0].read_bytes())
    open_ca.chmod(0o644)
    two_keys = tmp_path / "two.pub"
    two_keys.write_text(alice.read_text() + SecretKey.generate("b-1").public().render() + "\n")
    for argv, reason in (
        (["--serial", "0"], "--serial: invalid"),
        (["--serial", "x"], "--serial: invalid"),
        (["--serial", "\u0664\u0662"], "--serial: invalid"),
        (["--validity", "8h"], "invalid validity"),
        (["--option", "=x"], "invalid --option"),
        (["--principal", "a,,b"], "empty principal"),
    ):
        assert issue(ca[0], alice, out, *argv) == 2, argv
        err = capsys.readouterr().err
        assert reason in err and err.count("\n") == 1, err
    assert issue(open_ca, alice, out) == 2
    assert "too open" in capsys.readouterr().err
    assert issue(ca[0], two_keys, out) == 2
    assert "holds 2 public keys" in capsys.readouterr().err
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_bytes(alice.read_bytes())
    not_a_key.chmod(0o600)
    assert issue(not_a_key, alice, out) == 2
    assert "not an OpenSSH private key" in capsys.readouterr().err
    assert not out.exists()


def test_ledger_refuses_a_serial_twice(
    tmp_path: Path, ca: tuple[Path, Path], alice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "ledger"
    first, second = tmp_path / "1-cert.pub", tmp_path / "2-cert.pub"
    assert issue(ca[0], alice, first, "--ledger", str(record)) == 0
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert issue(ca[0], alice, second, "--ledger", str(record)) == 1
    assert "serial 42 was already issued" in capsys.readouterr().err
    assert not second.exists()
    assert issue(ca[0], alice, second, "--ledger", str(record), "--serial", "43") == 0
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line["serial"] for line in lines] == [42, 43]
    assert lines[0]["key_id"] == "alice-1"
    assert lines[0]["key"] == Certificate.parse(first.read_bytes()).key_fingerprint
    assert ledger.serials(record.read_bytes(), "l") == {42, 43}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"serial": 1}', "incomplete"),
        (b"nope\n", "not JSON"),
        (b'{"serial": 0}\n', "no valid serial"),
        (b'{"serial": true}\n', "no valid serial"),
        (b"[1]\n", "no valid serial"),
        (b'{"serial": 1}\n{"serial": 1}\n', "repeats serial 1"),
    ],
)
def test_damaged_ledgers_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        ledger.serials(data, "l")


def test_ledger_lock_serializes_issuers(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger")
    order: list[str] = []
    with ledger.opened(path) as held:
        held.append(ledger.Record(1, "a-1", "SHA256:x", ("p",), 0, 1, "SHA256:y", 0))

        def other() -> None:
            with ledger.opened(path) as late:
                order.append("other")
                with pytest.raises(Refused):
                    late.refuse_reuse(1)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(0.3)
        order.append("first")
    thread.join(5)
    assert order == ["first", "other"]


def test_ledger_must_be_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    for name in ("fifo", "link"):
        with (
            pytest.raises(Exception, match=r"regular file|Too many levels|symbolic"),
            ledger.opened(str(tmp_path / name)),
        ):
            pass
    assert not (tmp_path / "elsewhere").exists()


def test_key_ssh_public(alice: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key", "ssh-public", "--public", str(alice)]) == 0
    line = capsys.readouterr().out.strip()
    key = PublicKey.parse(alice.read_text())
    assert line == sshkey.SshPublicKey(key.key, key.name).render()
    assert line.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI") and line.endswith(" alice-1")


def test_revoke_builds_a_krl_version_by_version(
    tmp_path: Path, ca: tuple[Path, Path], alice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    krl_path = tmp_path / "revoked.krl"
    base = ["ca", "revoke", "--ca-public", str(ca[1]), "--krl", str(krl_path)]
    assert main([*base, "--serial", "42", "--serial", "100-200"]) == 0
    assert "revoked serial 42, serials 100-200" in capsys.readouterr().err
    first = Krl.parse(krl_path.read_bytes())
    assert main([*base, "--key-id", "bob-1", "--key", str(alice)]) == 0
    second = Krl.parse(krl_path.read_bytes())
    ca_blob = sshkey.parse_public_keys(ca[1].read_bytes(), "p")[0].blob
    key_blob = sshkey.ed25519_blob(PublicKey.parse(alice.read_text()).key)
    other_key = sshkey.ed25519_blob(os.urandom(32))
    for serial, revoked in ((42, True), (43, False), (150, True), (201, False)):
        found = second.revocation(other_key, CertRef(ca_blob, serial, "carol-1"))
        assert (found is not None) == revoked, serial
    assert second.revocation(other_key, CertRef(ca_blob, 7, "bob-1")) is not None
    assert second.revocation(key_blob) is not None
    assert first.revocation(key_blob) is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_revoke_refusals(
    tmp_path: Path, ca: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    krl_path = tmp_path / "revoked.krl"
    base = ["ca", "revoke", "--ca-public", str(ca[1]), "--krl", str(krl_path)]
    for extra, reason in (
        ([], "nothing to revoke"),
        (["--serial", "0"], "invalid --serial"),
        (["--serial", "9-3"], "range is empty"),
        (["--serial", "1-"], "invalid --serial"),
        (["--key-id", ""], "empty --key-id"),
    ):
        assert main([*base, *extra]) == 2, extra
        assert reason in capsys.readouterr().err
    krl_path.write_bytes(b"SSHKRL\n\0garbage")
    assert main([*base, "--serial", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert krl_path.read_bytes() == b"SSHKRL\n\0garbage"


def test_show_a_krl(
    tmp_path: Path, ca: tuple[Path, Path], alice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    krl_path = tmp_path / "revoked.krl"
    base = ["ca", "revoke", "--ca-public", str(ca[1]), "--krl", str(krl_path)]
    serials = [arg for serial in range(100, 160, 2) for arg in ("--serial", str(serial))]
    assert main([*base, "--serial", "7", "--serial", "10-20", *serials]) == 0
    assert main([*base, "--key-id", "evil\x1b[2J", "--key", str(alice)]) == 0
    capsys.readouterr()
    assert main(["ca", "show", str(krl_path)]) == 0
    text = capsys.readouterr().out
    ca_fingerprint = sshkey.parse_public_keys(ca[1].read_bytes(), "p")[0].fingerprint
    assert "KRL version 2" in text
    assert f"Certificates by {ca_fingerprint}:" in text
    assert "serials (42): 7, 10-20, 100, 102," in text and "… (12 more)" in text
    assert "key ids: evil\\x1b[2J" in text and "\x1b" not in text
    key = sshkey.SshPublicKey(PublicKey.parse(alice.read_text()).key)
    assert f"Keys: {key.fingerprint}" in text
    assert main(["ca", "show", "--json", str(krl_path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["krl_version"] == 2
    section = shown["certificates"][0]
    assert section["ca"] == ca_fingerprint
    assert section["serials"][:2] == [[7, 7], [10, 20]] and section["serial_count"] == 42
    assert section["key_ids"] == ["evil\x1b[2J"]
    assert shown["keys"] == [key.fingerprint]
    krl_path.write_bytes(krl_path.read_bytes()[:-1])
    assert main(["ca", "show", str(krl_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nixwarden: error: {krl_path}: ") and err.count("\n") == 1


FAKE_PATH = "/nix/store/" + "0" * 32 + "-x"


def test_verify_refuses_bad_certificate_options_before_looking_at_any_path(
    tmp_path: Path, ca: tuple[Path, Path], alice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    assert issue(ca[0], alice, certs / "alice-cert.pub") == 0
    broken_krl = tmp_path / "broken.krl"
    broken_krl.write_bytes(b"SSHKRL\n\0\0\0\0\x01")
    rsa_ca = tmp_path / "rsa.pub"
    rsa_ca.write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 x\n")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x-cert.pub").write_text("ssh-ed25519-cert-v01@openssh.com AAAA\n")
    good = ["--ca", str(ca[1]), "--certs", str(certs)]
    capsys.readouterr()
    for argv, reason in (
        ([], "nothing to trust"),
        (["--ca", str(ca[1])], "--ca and --certs go together"),
        (["--certs", str(certs)], "--ca and --certs go together"),
        ([*good, "--min-signers", "0"], "--min-signers: invalid"),
        ([*good, "--at", "yesterday"], "invalid time"),
        ([*good, "--max-validity", "1y"], "invalid time interval"),
        ([*good, "--krl", str(broken_krl)], "broken.krl: KRL"),
        ([*good, "--krl", str(tmp_path / "missing.krl")], "missing.krl"),
        (["--ca", str(rsa_ca), "--certs", str(certs)], "'ssh-rsa' is not accepted"),
        (["--ca", str(ca[1]), "--certs", str(tmp_path / "bad")], "x-cert.pub"),
    ):
        assert main(["verify", *argv, FAKE_PATH]) == 2, argv
        err = capsys.readouterr().err
        assert reason in err and err.count("\n") == 1, (argv, err)
    # a value that starts with '-' is taken as the value, as ssh-keygen's getopt takes it
    assert main(["verify", *good, "--at", "-1d", "--max-validity", "x", FAKE_PATH]) == 2
    assert "invalid time interval 'x'" in capsys.readouterr().err


def test_policy_from_the_trust_table(
    tmp_path: Path, ca: tuple[Path, Path], alice: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nixwarden.ca.options import policy_from_settings  # noqa: PLC0415
    from nixwarden.config import TrustSettings  # noqa: PLC0415

    certs = tmp_path / "certs"
    certs.mkdir()
    assert issue(ca[0], alice, certs / "alice-cert.pub", "--principal", "web") == 0
    krl_path = tmp_path / "revoked.krl"
    assert (
        main(["ca", "revoke", "--ca-public", str(ca[1]), "--krl", str(krl_path), "--serial", "9"])
        == 0
    )
    settings = TrustSettings(
        ca_keys=(str(ca[1]),), krl=(str(krl_path),), principals=("web",), min_signers=1
    )
    policy = policy_from_settings(settings, [str(certs)])
    assert set(policy.accepted) == {"alice-1"}
    refused = policy_from_settings(settings, [str(certs)], at=2**40)
    assert refused.refused["alice-1"].startswith("expired ")
    with pytest.raises(InvalidInput, match="no ca_keys"):
        policy_from_settings(TrustSettings(), [str(certs)])
