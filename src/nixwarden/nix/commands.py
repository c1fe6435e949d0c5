"""One function per Nix command nixwarden runs, and nowhere else are they spelled out.

Each function takes the program to run (a pinned absolute path; `find_nix_program` by
default), an explicit environment, and returns values or raises: `InvalidInput` when
Nix says the input is wrong (an invalid path), `CommandFailed` for anything else. A
`wrap` turns the argv into the one that really runs (setpriv, bubblewrap, `timeout`),
so a command runs the same way on the host and inside a tenant's sandbox.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from nixwarden import process
from nixwarden.display import escape
from nixwarden.errors import CommandFailed, InvalidInput
from nixwarden.nix.programs import find_nix_program
from nixwarden.nix.storepath import STORE_DIR, BadStorePath, StorePath

Wrap = Callable[[list[str]], list[str]]

# What tells Nix which store, daemon and settings to use.
NIX_ENV_PREFIX = "NIX_"
_PASSED_THROUGH = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "USER", "LOGNAME")
MAX_OUTPUT_LINES = 10_000_000


def nix_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (ours by default) narrowed to what tells Nix which store and settings to use."""
    source = os.environ if environ is None else environ
    env = {
        key: value
        for key, value in source.items()
        if key in _PASSED_THROUGH or key.startswith(NIX_ENV_PREFIX)
    }
    env.setdefault("PATH", "/usr/bin:/bin")
    return env


def _unwrapped(argv: list[str]) -> list[str]:
    return argv


def _last_line(stderr: bytes, returncode: int) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return escape(lines[-1]) if lines else f"exit status {returncode}"


def _failed(argv: Sequence[str], stderr: bytes, returncode: int) -> CommandFailed | InvalidInput:
    last = _last_line(stderr, returncode)
    if "is not valid" in last or "is not in the Nix store" in last:
        return InvalidInput(last.removeprefix("error: "))
    return CommandFailed(f"{' '.join(argv[:3])}: {last}")


def path_info_json(
    paths: Sequence[str],
    *,
    env: Mapping[str, str],
    nix: str | None = None,
    wrap: Wrap = _unwrapped,
    timeout: float | None = None,
) -> bytes:
    """`nix path-info --json --sigs PATH…`: its JSON, unparsed (the caller parses it
    strictly: see trust.pathinfo). Closures come from nix.closure, never `--recursive`."""
    argv = [
        nix or find_nix_program("nix"),
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "--json",
        "--sigs",
        "--",
        *paths,
    ]
    result = process.run(wrap(argv), env=env, check=False, timeout=timeout)
    if result.returncode != 0:
        raise _failed(argv, result.stderr, result.returncode)
    return result.stdout


def query_requisites(
    paths: Sequence[str],
    *,
    env: Mapping[str, str],
    nix_store: str | None = None,
    wrap: Wrap = _unwrapped,
    timeout: float | None = None,
    store_dir: str = STORE_DIR,
) -> frozenset[str]:
    """`nix-store --query --requisites PATH…`: the closure, every line checked as a store path."""
    argv = [nix_store or find_nix_program("nix-store"), "--query", "--requisites", "--", *paths]
    result = process.run(wrap(argv), env=env, check=False, timeout=timeout)
    if result.returncode != 0:
        raise _failed(argv, result.stderr, result.returncode)
    lines = [line for line in result.stdout.decode("utf-8", "replace").splitlines() if line]
    if len(lines) > MAX_OUTPUT_LINES:
        raise CommandFailed(f"{argv[0]} --query --requisites: more than {MAX_OUTPUT_LINES} paths")
    try:
        return frozenset(StorePath.parse(line, store_dir).absolute(store_dir) for line in lines)
    except BadStorePath as error:
        raise CommandFailed(f"{argv[0]} --query --requisites: unexpected output: {error}") from None


def collect_garbage(
    *,
    env: Mapping[str, str],
    nix_store: str | None = None,
    wrap: Wrap = _unwrapped,
    timeout: float | None = None,
) -> str:
    """`nix-store --gc`: Nix's own summary line (`N store paths deleted, X MiB freed`)."""
    argv = [nix_store or find_nix_program("nix-store"), "--gc"]
    result = process.run(wrap(argv), env=env, check=False, timeout=timeout)
    if result.returncode != 0:
        raise _failed(argv, result.stderr, result.returncode)
    output = (result.stdout or result.stderr).decode("utf-8", "replace").strip().splitlines()
    return escape(output[-1]) if output else "done"


def version(*, env: Mapping[str, str], nix: str | None = None, timeout: float | None = 20) -> str:
    """`nix --version`: its first line, as printed (`nix (Nix) 2.8.0`)."""
    argv = [nix or find_nix_program("nix"), "--version"]
    result = process.run(argv, env=env, check=False, timeout=timeout)
    if result.returncode != 0:
        raise _failed(argv, result.stderr, result.returncode)
    return result.stdout.decode("utf-8", "replace").strip().split("\n", 1)[0]


def store_ping(
    store: str, *, env: Mapping[str, str], nix: str | None = None, timeout: float | None = 60
) -> dict[str, str]:
    """`nix store ping --store URL` (with `nix-command` on, which Nix 2.8 needs): the
    `Key: value` lines it prints (`Store URL`, and `Version` where the store reports one)."""
    argv = [
        nix or find_nix_program("nix"),
        "--extra-experimental-features", "nix-command",
        "store", "ping", "--store", store,
    ]  # fmt: skip
    result = process.run(argv, env=env, check=False, timeout=timeout)
    if result.returncode != 0:
        raise CommandFailed(f"nix store ping: {_last_line(result.stderr, result.returncode)}")
    found: dict[str, str] = {}
    for line in result.stdout.decode("utf-8", "replace").splitlines()[:64]:
        key, separator, value = line.partition(": ")
        if separator:
            found.setdefault(escape(key.strip()), escape(value.strip()))
    return found
