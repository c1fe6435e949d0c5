"""`nixwarden authorized-keys-line`: the authorized_keys line that pins a key to the gate.

The line runs the venv's interpreter in isolated mode (`-I`) on the gate launcher:
isolated, so PYTHONPATH and friends are ignored even where sshd accepts them.

sshd runs a `command=` through the user's login shell, so every path in it must be
absolute and free of anything the shell would interpret; such paths are refused
rather than quoted.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import sys

from nixwarden import config as config_module
from nixwarden.cliutil import parser
from nixwarden.display import escape
from nixwarden.errors import InvalidInput, UsageError
from nixwarden.sshkeys import KEY_TYPES, key_data_problem

# Types a new key may have: what OpenSSH still accepts by default (no DSA).
ENROLLABLE = tuple(sorted(KEY_TYPES - {"ssh-dss"}))
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
_SAFE_COMMENT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")


def parse_public_key(text: str, source: str) -> tuple[str, str, str]:
    """(type, base64 blob, comment) of a single OpenSSH public key line without options."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1:
        raise InvalidInput(f"{source}: expected exactly one public key line, found {len(lines)}")
    fields = lines[0].strip().split(None, 2)
    if len(fields) < 2 or fields[0] not in ENROLLABLE:
        raise InvalidInput(
            f"{source}: not an OpenSSH public key (expected '<type> <base64> [comment]' "
            f"with type one of {', '.join(ENROLLABLE)}; options are added here, not read)"
        )
    key_type, blob = fields[0], fields[1]
    problem = key_data_problem(key_type, blob)
    if problem is not None:
        raise InvalidInput(f"{source}: {problem} ({key_type})")
    comment = fields[2].strip() if len(fields) > 2 else ""
    if comment and not _SAFE_COMMENT.fullmatch(comment):
        raise InvalidInput(f"{source}: the key comment has control characters")
    return key_type, blob, comment


def render(command: list[str], principal: str, config_path: str, key: tuple[str, str, str]) -> str:
    """`command` is the interpreter and launcher, e.g. [python, "-I", nixwarden-gate].

    The line names its own key (`--key TYPE:SHA256:…`), so the gate can log which key
    it was even when sshd's SSH_USER_AUTH is gone by the time the gate starts."""
    # The paths (interpreter, launcher, config); the subcommand word `gate` is no path.
    paths = [word for word in command if not word.startswith("-") and word != "gate"]
    for path in [*paths, config_path]:
        if not _SAFE_PATH.fullmatch(path):
            raise InvalidInput(
                f"path '{escape(path)}' must be absolute and use only letters, digits and ._/+-"
            )
    key_type, blob, comment = key
    words = [
        *command,
        "--principal", principal,
        "--config", config_path,
        "--key", f"{key_type}:{fingerprint(blob)}",
    ]  # fmt: skip
    line = f'restrict,command="{" ".join(words)}" {key_type} {blob}'
    return f"{line} {comment}" if comment else line


def fingerprint(blob: str) -> str:
    """OpenSSH's SHA256 fingerprint of a base64 key blob, as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(base64.b64decode(blob, validate=True)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def gate_command(nixwarden: str, python: str) -> list[str]:
    """Isolated interpreter (-I) running the lean launcher if it is installed, else `gate`."""
    launcher = os.path.join(os.path.dirname(nixwarden), "nixwarden-gate")
    if os.access(launcher, os.R_OK):
        return [python, "-I", launcher]
    return [python, "-I", nixwarden, "gate"]


def _own_path() -> str | None:
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "nixwarden" and os.access(argv0, os.X_OK):
        return os.path.abspath(argv0)
    found = shutil.which("nixwarden")
    return os.path.abspath(found) if found else None


def main(argv: list[str]) -> int:
    cli = parser(
        "authorized-keys-line",
        "Print the authorized_keys line that pins a public key to the gate as a principal:\n"
        '  restrict,command="/…/nixwarden gate --principal NAME --config FILE --key K" <key>\n'
        "`restrict` turns off forwarding, the pty and ~/.ssh/rc; the command runs whatever\n"
        "the client asked for through the gate.",
    )
    cli.add_argument("--principal", required=True, help="a principal in the configuration")
    cli.add_argument("--key", required=True, metavar="FILE.pub", help="the client's public key")
    cli.add_argument("--config", help="configuration file (its absolute path goes in the line)")
    cli.add_argument("--nixwarden", help="absolute path of the nixwarden executable to run")
    cli.add_argument(
        "--python", help="absolute path of its Python interpreter (default: the running one)"
    )
    args = cli.parse_args(argv)
    config = config_module.load(args.config)
    config.principal(args.principal)  # must exist: a line for an unknown principal only denies
    try:
        with open(args.key, encoding="utf-8") as handle:
            key = parse_public_key(handle.read(), args.key)
    except OSError as error:
        raise InvalidInput(f"{args.key}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{args.key}: not a text file") from None
    nixwarden = args.nixwarden or _own_path()
    if not nixwarden:
        raise UsageError("cannot tell where nixwarden is installed; pass --nixwarden PATH")
    python = args.python or sys.executable
    command = gate_command(os.path.abspath(nixwarden), python)
    print(render(command, args.principal, os.path.abspath(config.path), key))
    _refresh_compiled(config)
    return 0


def _refresh_compiled(config: config_module.Config) -> None:
    """Keep the gate's fast path current when the config's owner enrols a key."""
    from nixwarden.gate import compiled  # noqa: PLC0415

    if os.stat(config.path).st_uid != os.geteuid():
        return
    try:
        compiled.write(config)
    except OSError as error:
        print(
            f"nixwarden: note: could not write the gate's compiled policy: {error.strerror}",
            file=sys.stderr,
        )
