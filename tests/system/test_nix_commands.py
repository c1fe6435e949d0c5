"""nix/commands.py against the real Nix: each command's answer and its errors."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from nixwarden.errors import InvalidInput
from nixwarden.nix import closure as nix_closure
from nixwarden.nix import commands
from testbed import harness

pytestmark = pytest.mark.usefixtures("nix_daemon")


def _env() -> dict[str, str]:
    return commands.nix_env(harness.base_env(NIX_REMOTE="daemon"))


def _two_paths() -> tuple[str, str]:
    """A store path that refers to another, added through the daemon."""
    env = harness.base_env(NIX_REMOTE="daemon")
    dep = harness.run(["nix-store", "--add", "/etc/hostname"], env=env).stdout.decode().strip()
    # toFile keeps the string's context: the file refers to `dep`.
    expression = f'builtins.toFile "nwt-commands-top" "refers to ${{builtins.storePath "{dep}"}}"'
    top = (
        harness.run(
            ["nix-instantiate", "--eval", "--read-write-mode", "--expr", expression], env=env
        )
        .stdout.decode()
        .strip()
        .strip('"')
    )
    return top, dep


def test_query_requisites_and_closure_agree() -> None:
    top, dep = _two_paths()
    requisites = commands.query_requisites([top], env=_env())
    assert requisites == {top, dep}
    assert nix_closure.closure([top], environ=_env()).paths == requisites


def test_query_requisites_names_an_invalid_path() -> None:
    missing = "/nix/store/00000000000000000000000000000000-nwt-missing"
    with pytest.raises(InvalidInput, match="is not valid"):
        commands.query_requisites([missing], env=_env())


def test_path_info_json_and_version() -> None:
    top, dep = _two_paths()
    output = commands.path_info_json([top], env=_env())
    assert top.encode() in output and dep.encode() in output
    assert commands.version(env=_env()).startswith("nix (Nix) ")


def test_invalid_paths_names_exactly_those_the_store_lacks() -> None:
    top, dep = _two_paths()
    missing = "/nix/store/00000000000000000000000000000000-nwt-missing"
    assert commands.invalid_paths([top, missing, dep], env=_env()) == {missing}
    assert commands.invalid_paths([top], env=_env()) == frozenset()


def test_sign_paths_adds_that_keys_signature_to_exactly_those_paths(tmp_path: Path) -> None:
    top, dep = _two_paths()
    name = f"nwt-commands-{secrets.token_hex(3)}-1"
    secret, public = tmp_path / "key.sec", tmp_path / "key.pub"
    generate = [harness.NIXWARDEN, "key", "generate", "--name", name]
    harness.run(
        [*generate, "--secret", str(secret), "--public", str(public)], env=harness.base_env()
    )
    commands.sign_paths([top], str(secret), env=_env())
    signatures = {
        entry["path"]: entry.get("signatures", [])
        for entry in json.loads(commands.path_info_json([top, dep], env=_env()))
    }
    assert any(signature.startswith(f"{name}:") for signature in signatures[top])
    assert not any(signature.startswith(f"{name}:") for signature in signatures[dep])
