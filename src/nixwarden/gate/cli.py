"""`nixwarden gate` and `nixwarden authorized-keys-line`.

The gate runs on every SSH connection, so its arguments are parsed by hand (argparse
costs more to import than the whole decision); `--help` and the key-line command,
which people run, use the usual parser.
"""

from __future__ import annotations

import os

from nixwarden.display import escape
from nixwarden.errors import EXIT_OK, EXIT_REFUSED, UsageError

GATE_USAGE = """\
usage: nixwarden gate --principal NAME [--config FILE] [--key TYPE:SHA256:FINGERPRINT]
       nixwarden gate --check --principal NAME --command STRING [--config FILE]
       nixwarden gate --compile [--config FILE]

The forced command of an authorized_keys line (with `restrict`) or a sshd ForceCommand.
Reads SSH_ORIGINAL_COMMAND and allows exactly the Nix remote protocol commands the
principal's policy permits:

  nix-daemon --stdio              ssh-ng://  (protocols includes "ssh-ng")
  nix-store --serve [--write]     ssh://     (protocols includes "ssh"; --write needs write = true)

An absolute remote-program path ending in /nix-daemon or /nix-store and one leading
`exec ` are accepted; `--store URL` only where allowed_stores lists it. With an empty,
`bash` or `sh` command (Lix 2.93), commands are read from stdin: `echo started` is
answered and the first allowed command runs. The pinned binary from the configuration
runs with a clean environment; everything else is denied, exit 1. Every decision is a
JSON line in the audit log (in syslog when the audit log cannot be used).

  --principal NAME   the policy to apply (a [principals.NAME] table)
  --config FILE      configuration (default: /etc/nixwarden/config.toml; every form of
                     `nixwarden gate` ignores $NIXWARDEN_CONFIG, so --check and --compile
                     read exactly what the gate serves)
  --key KEY          the key this authorized_keys line is for, logged when sshd's
                     SSH_USER_AUTH is unset or already gone (authorized-keys-line adds it)
  --check            print the decision for --command without running anything
  --command STRING   the command line to decide on, with --check
  --compile          validate the configuration and write its compiled copy beside it
                     (.config.toml.compiled), which spares the gate parsing TOML on
                     every connection; used only while it matches the file exactly
"""


def main(command: str, argv: list[str]) -> int:
    if command == "authorized-keys-line":
        from nixwarden.gate.keyline import main as keyline_main  # noqa: PLC0415

        return keyline_main(argv)
    if argv[:1] == ["--compile"]:
        return _compile(argv[1:])
    try:
        options = _parse_gate_args(argv)
    except UsageError as error:
        if "--check" in argv or b"SSH_CONNECTION" not in os.environb:
            raise  # a person at a terminal: tell them
        # Under sshd the command line comes from authorized_keys or ForceCommand: a
        # broken one denies every session, so it is logged, and the client told little.
        from nixwarden.gate import run  # noqa: PLC0415

        raise run.refuse_bad_arguments(error, os.environb) from None
    if options is None:
        print(GATE_USAGE, end="")
        return EXIT_OK
    principal, config_path, check_command, line_key = options
    from nixwarden.gate import run  # noqa: PLC0415

    if check_command is not None:
        allowed, detail = run.check(principal, config_path, check_command)
        print(f"{'allow' if allowed else 'deny'}: {detail}")
        return EXIT_OK if allowed else EXIT_REFUSED
    return run.serve(principal, config_path, os.environb, line_key=line_key)


def _parse_gate_args(
    argv: list[str],
) -> tuple[str, str | None, str | None, str | None] | None:
    """(principal, config, check command, key), or None for --help."""
    values: dict[str, str] = {}
    check = False
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in ("-h", "--help"):
            return None
        if arg == "--check":
            check = True
            index += 1
            continue
        name, has_value, value = arg.partition("=")
        if name not in ("--principal", "--config", "--command", "--key"):
            raise UsageError(
                f"nixwarden gate: unknown argument '{escape(arg)}' (see 'nixwarden gate --help')"
            )
        if not has_value:
            if index + 1 >= len(argv):
                raise UsageError(f"nixwarden gate: {name} needs a value")
            value = argv[index + 1]
            index += 1
        if name in values:
            raise UsageError(f"nixwarden gate: {name} given twice")
        values[name] = value
        index += 1
    if "--principal" not in values:
        raise UsageError("nixwarden gate: --principal is required (see 'nixwarden gate --help')")
    if check != ("--command" in values):
        raise UsageError("nixwarden gate: --check and --command go together")
    line_key = values.get("--key")
    if line_key is not None:
        line_key = log_key(line_key)
    return values["--principal"], values.get("--config"), values.get("--command"), line_key


def log_key(argument: str) -> str:
    """`TYPE:SHA256:FINGERPRINT` (the --key of an authorized_keys line) as the audit log
    writes keys, `TYPE SHA256:FINGERPRINT`; checked by hand (no `re` on the gate's path)."""
    key_type, _, fingerprint = argument.partition(":")
    digest = fingerprint.removeprefix("SHA256:")
    if (
        not key_type
        or not set(key_type) <= _KEY_TYPE_CHARS
        or not fingerprint.startswith("SHA256:")
        or len(digest) != 43  # base64 of 32 bytes, unpadded
        or not set(digest) <= _BASE64_CHARS
    ):
        raise UsageError(
            f"nixwarden gate: --key '{escape(argument)}' is not TYPE:SHA256:FINGERPRINT"
        )
    return f"{key_type} {fingerprint}"


_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_KEY_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789@.-")


def _compile(argv: list[str]) -> int:
    from nixwarden import config as config_module  # noqa: PLC0415
    from nixwarden.gate import compiled  # noqa: PLC0415

    if argv and (len(argv) != 2 or argv[0] != "--config"):
        raise UsageError("nixwarden gate: usage: nixwarden gate --compile [--config FILE]")
    config = config_module.load(argv[1] if argv else None, from_environment=False)
    print(compiled.write(config))
    return EXIT_OK
