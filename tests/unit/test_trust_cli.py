"""The trust commands' own behaviour that needs no Nix: key files, nar commands, errors."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nixwarden.cli import main
from nixwarden.trust import nar
from nixwarden.trust.cli import read_secret_key
from nixwarden.trust.hashes import HashFormat
from nixwarden.trust.keys import PublicKey, SecretKey
from nixwarden.trust.narcli import HASH_FORMATS


def test_key_generate_writes_private_secret_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret, public = tmp_path / "k.sec", tmp_path / "k.pub"
    argv = ["key", "generate", "--name", "ci-1", "--secret", str(secret), "--public", str(public)]
    assert main(argv) == 0
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    key = SecretKey.parse(secret.read_text())
    assert PublicKey.parse(public.read_text()) == key.public()
    out = capsys.readouterr().out
    assert key.render().split(":")[1] not in out
    before = secret.read_bytes()
    public.unlink()
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert secret.read_bytes() == before
    assert not public.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["k.sec"]  # no temporary files left


def test_nar_dump_hash_restore_ls(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"hello\n")
    assert main(["nar", "dump", str(tree)]) == 0
    data = capsysbinary.readouterr().out
    assert data == nar.dump_bytes(tree)
    assert main(["nar", "hash", str(tree)]) == 0
    assert capsysbinary.readouterr().out.decode().strip() == nar.hash_path(tree).hash.to_nix32()
    assert main(["nar", "hash", "--format", "sri", str(tree)]) == 0
    assert capsysbinary.readouterr().out.startswith(b"sha256-")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["nar", "restore", str(tmp_path / "out")]) == 0
    assert nar.dump_bytes(tmp_path / "out") == data
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["nar", "ls"]) == 0
    assert capsysbinary.readouterr().out.splitlines()[-1].endswith(b" 6 ./f")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["nar", "restore", str(tmp_path / "out")]) == 2
    assert b"already exists" in capsysbinary.readouterr().err


def test_bad_inputs_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing")
    bad_key = tmp_path / "bad.sec"
    bad_key.write_text("k-1:" + "A" * 10)
    os.chmod(bad_key, 0o600)
    for argv in (
        ["nar", "hash", missing],
        ["nar", "frobnicate"],
        ["sign", "--key", str(bad_key), "/nix/store/" + "0" * 32 + "-x"],
        ["sign", "--key", missing, "/nix/store/" + "0" * 32 + "-x"],
        ["verify", "--trusted-key", str(bad_key), "/nix/store/" + "0" * 32 + "-x"],
        ["verify", "--trusted-key", missing, "/nix/store/" + "0" * 32 + "-x"],
        ["key", "generate", "--name", "bad name", "--secret", missing, "--public", missing + "p"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("nixwarden: error: "), err
        assert err.count("\n") == 1, err
        assert "AAAAAAAAAA" not in err
    assert not os.path.exists(missing)


@pytest.mark.parametrize("kind", ["fifo_without_writer", "device", "directory", "huge"])
def test_key_files_that_are_not_files_end_at_once_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    key = tmp_path / "key"
    match kind:
        case "fifo_without_writer":
            os.mkfifo(key)
        case "device":
            key.symlink_to("/dev/zero")
        case "directory":
            key.mkdir()
        case "huge":
            key.write_bytes(b"k-1:" + b"A" * (1 << 20))
    for argv in (
        ["sign", "--key", str(key), "/nix/store/" + "0" * 32 + "-x"],
        ["verify", "--trusted-key", str(key), "/nix/store/" + "0" * 32 + "-x"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"nixwarden: error: {key}"), err
        assert err.count("\n") == 1, err


def test_a_secret_key_can_come_through_a_pipe(tmp_path: Path) -> None:
    secret = SecretKey.generate("piped-1")
    read_end, write_end = os.pipe()
    os.write(write_end, secret.render().encode())
    os.close(write_end)
    try:
        assert read_secret_key(f"/proc/self/fd/{read_end}") == secret
    finally:
        os.close(read_end)


def test_the_hash_formats_offered_are_those_the_hash_module_renders() -> None:
    assert tuple(form.value for form in HashFormat) == HASH_FORMATS


def test_nar_dump_imports_neither_hashing_nor_dataclasses(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    probe = (
        "import sys; from nixwarden.cli import main; "
        f"main(['nar', 'dump', {str(tmp_path)!r}]); "
        "loaded = [m for m in ('dataclasses', 'hashlib', 'threading', 'nixwarden.trust.nar') "
        "if m in sys.modules]; sys.stderr.write(repr(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, check=True, env={"PATH": "/usr/bin"}
    )
    assert result.stdout == nar.dump_bytes(tmp_path)
    assert result.stderr == b"[]"


@pytest.mark.parametrize("output", ["pipe", "file", "appended file"])
def test_nar_dump_writes_the_same_bytes_to_any_output(tmp_path: Path, output: str) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "large").write_bytes(os.urandom(300_000))  # sent with sendfile where it can be
    (tree / "small").write_bytes(b"small\n")
    argv = [sys.executable, "-m", "nixwarden", "nar", "dump", str(tree)]
    env = {"PATH": "/usr/bin"}
    if output == "pipe":
        data = subprocess.run(argv, capture_output=True, check=True, env=env).stdout
    else:
        target = tmp_path / "out.nar"
        target.write_bytes(b"before\n" if output == "appended file" else b"")
        with open(target, "ab" if output == "appended file" else "wb") as out:
            subprocess.run(argv, stdout=out, check=True, env=env)
        data = target.read_bytes().removeprefix(b"before\n")
    assert data == nar.dump_bytes(tree)
