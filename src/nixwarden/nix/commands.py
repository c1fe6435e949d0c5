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


# How many store paths one command line carries: far below ARG_MAX (2 MiB on Linux)
# with paths of up to 255 bytes.
PATHS_PER_COMMAND = 4096


def _batches(paths: Sequence[str]) -> list[Sequence[str]]:
    return [paths[i : i + PATHS_PER_COMMAND] for i in range(0, len(paths), PATHS_PER_COMMAND)]


def _in_batches(
    argv: Sequence[str], paths: Sequence[str], *, env: Mapping[str, str], timeout: float | None
) -> list[bytes]:
    """`argv -- BATCH…` for each batch of `paths`, in order; their outputs."""
    outputs = []
    for batch in _batches(paths):
        command = [*argv, "--", *batch]
        result = process.run(command, env=env, check=False, timeout=timeout)
        if result.returncode != 0:
            raise _failed(command, result.stderr, result.returncode)
        outputs.append(result.stdout)
    return outputs


def copy_from(
    source: str,
    paths: Sequence[str],
    *,
    env: Mapping[str, str],
    to: str = "daemon",
    nix: str | None = None,
    timeout: float | None = None,
) -> None:
    """`nix copy --no-recursive --from SOURCE --to TO PATH…`: exactly `paths`, no closure.

    Their references must be valid at `to` or among `paths`; `paths` must come in an
    order where every path follows its references (each command line is one batch, and
    a later batch may refer to an earlier one). Signatures are checked at `to` as its
    trust settings say (`--no-check-sigs` is never passed).
    """
    program = nix or find_nix_program("nix")
    argv = [program, "--extra-experimental-features", "nix-command", "copy", "--no-recursive"]
    argv += ["--from", source, "--to", to]
    _in_batches(argv, paths, env=env, timeout=timeout)


def invalid_paths(
    paths: Sequence[str],
    *,
    env: Mapping[str, str],
    nix_store: str | None = None,
    timeout: float | None = None,
    store_dir: str = STORE_DIR,
) -> frozenset[str]:
    """`nix-store --check-validity --print-invalid PATH…`: those of `paths` the store lacks.

    One request per batch (the daemon's QueryValidPaths), unlike `nix path-info`, which
    costs tens of milliseconds for each path it does not find."""
    argv = [nix_store or find_nix_program("nix-store"), "--check-validity", "--print-invalid"]
    try:
        return frozenset(
            StorePath.parse(line, store_dir).absolute(store_dir)
            for output in _in_batches(argv, paths, env=env, timeout=timeout)
            for line in output.decode("utf-8").split()
        )
    except (UnicodeDecodeError, BadStorePath):
        raise CommandFailed(f"{argv[0]} --check-validity: unexpected output") from None


def sign_paths(
    paths: Sequence[str],
    key_file: str,
    *,
    env: Mapping[str, str],
    nix: str | None = None,
    timeout: float | None = None,
) -> None:
    """`nix store sign --key-file SEC PATH…`: add that key's signature to exactly `paths`.

    Through the daemon's AddSignatures, which any client may call (the signature is only
    as good as the key); a path that already has it keeps one. No `--recursive`.
    """
    argv = [nix or find_nix_program("nix"), "--extra-experimental-features", "nix-command"]
    argv += ["store", "sign", "--key-file", key_file]
    _in_batches(argv, paths, env=env, timeout=timeout)


def delete_paths(
    paths: Sequence[str],
    *,
    env: Mapping[str, str],
    nix_store: str | None = None,
    timeout: float | None = None,
) -> None:
    """`nix-store --delete PATH…`: delete `paths` if nothing keeps them alive.

    Raises `CommandFailed` when a path is still alive (a GC root, a running process or
    a valid path outside `paths` refers to it) or the daemon refuses; the paths that
    were dead are deleted even then.
    """
    argv = [nix_store or find_nix_program("nix-store"), "--delete"]
    _in_batches(argv, paths, env=env, timeout=timeout)


def nix_env_profile(
    profile: str,
    arguments: Sequence[str],
    *,
    env: Mapping[str, str],
    nix_env: str | None = None,
    timeout: float | None = None,
) -> bytes:
    """`nix-env --profile PROFILE ARGUMENTS…`: `--set PATH` (a new generation holding
    exactly PATH), `--switch-generation N`, `--delete-generations N…` (never the
    current one), `--rollback`, `--list-generations`. Returns its stdout."""
    argv = [nix_env or find_nix_program("nix-env"), "--profile", profile, *arguments]
    result = process.run(argv, env=env, check=False, timeout=timeout)
    if result.returncode != 0:
        raise _failed(argv, result.stderr, result.returncode)
    return result.stdout


def profile_generations(
    profile: str,
    *,
    env: Mapping[str, str],
    nix_env: str | None = None,
    timeout: float | None = None,
) -> tuple[tuple[int, bool], ...]:
    """`nix-env --profile PROFILE --list-generations`: (number, is current) per generation."""
    output = nix_env_profile(
        profile, ["--list-generations"], env=env, nix_env=nix_env, timeout=timeout
    )
    return parse_generations(output.decode("utf-8", "replace"))


def parse_generations(text: str) -> tuple[tuple[int, bool], ...]:
    """`   3   2026-11-22 21:05:48   (current)` lines → ((3, True), …)."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if (
            not words[0].isdigit()
            or len(words) not in (3, 4)
            or words[3:] not in ([], ["(current)"])
        ):
            raise CommandFailed(f"nix-env --list-generations: unexpected line {escape(line)!r}")
        found.append((int(words[0]), len(words) == 4))
    return tuple(found)


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
