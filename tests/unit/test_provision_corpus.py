"""Every key of the provisioning corpus is refused by `builder enroll --key` and `client
add-builder --host-key` with the reason its name promises, in one line, exit 2, before
anything is changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nixwarden.cli import main

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "provision"

KEY_REASONS = {
    "key_certificate.pub": "not an OpenSSH public key",
    "key_comment_control.pub": "control characters",
    "key_dsa.pub": "DSA keys are refused",
    "key_empty.pub": "expected exactly one public key line, found 0",
    "key_not_base64.pub": "key data is not base64",
    "key_not_utf8.pub": "not a text file",
    "key_private_openssh.pub": "a private key; give the public half",
    "key_rsa_1024.pub": "an RSA key of 1024 bits is too short",
    "key_rsa_truncated_blob.pub": "not an RSA public key",
    "key_two_keys.pub": "expected exactly one public key line, found 2",
    "key_type_mismatch.pub": "key data does not match its type",
    "key_with_options.pub": "not an OpenSSH public key",
    "key_x509_pem.pub": "a PEM file, not an OpenSSH public key line",
}


def test_the_map_names_every_file_and_every_file_is_mapped() -> None:
    assert sorted(os.listdir(CORPUS)) == sorted(KEY_REASONS)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("name", sorted(KEY_REASONS))
def test_enroll_refuses_the_key(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    error = _refused(
        ["builder", "enroll", "--root", str(root), "--principal", "alice",
         "--key", str(CORPUS / name)],
        capsys,
    )  # fmt: skip
    assert KEY_REASONS[name] in error
    assert error.startswith("nixwarden: error: ")
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("name", sorted(KEY_REASONS))
def test_add_builder_refuses_the_host_key(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = _refused(
        ["client", "add-builder", "b1", "--root", str(tmp_path), "--host", "builder.example",
         "--host-key", str(CORPUS / name), "--systems", "x86_64-linux", "--no-check"],
        capsys,
    )  # fmt: skip
    assert KEY_REASONS[name] in error
    assert list(tmp_path.iterdir()) == []
