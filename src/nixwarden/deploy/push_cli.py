"""`nixwarden push`: verified deploys to targets that run the receive service, without root."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from nixwarden.cliutil import parser
from nixwarden.config import PROFILE_NAME
from nixwarden.deploy import push, wire
from nixwarden.errors import NixwardenError, UsageError

DESCRIPTION = """\
Push store paths (and their closures) to each target's receive service, through its
gate, as an SSH user that holds no key and no trust. The target checks the whole
closure against its [trust] policy (certified signing keys, KRLs, quorum) before a
single NAR byte is sent, imports all or nothing, and can set a profile.

  nixwarden push --to deploy@web1 --profile web ./result
  nixwarden push --to deploy@web1 --to deploy@web2 --jobs 4 --json ./result
  nixwarden push --to deploy@web1 --dry-run ./result
  nixwarden push --to deploy@web1 --profile web --rollback

ssh runs with -T, BatchMode=yes (never a prompt) and keep-alives; NIX_SSHOPTS is added
after those (ssh keeps the first value of an option, so it can add, not override).
Certificates of the signing keys are sent from --certs (or $NIXWARDEN_CERTS, a
:-separated list): files of certificates, or directories of *-cert.pub files.

Exit status: 0 every target deployed, planned or up to date; 1 some target refused
or failed; 2 bad usage. With --json, one JSON object per target on stdout:
target, status (deployed|planned|up-to-date|refused|failed), reason, category
(verification|transport|import|activation), generation, paths, bytes, failures.
"""
DEFAULT_JOBS = 4
MAX_JOBS = 256


def main(command: str, argv: list[str]) -> int:
    cli = parser(command, DESCRIPTION)
    cli.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="[USER@]HOST[:PORT]",
        help="a target (repeatable)",
    )
    cli.add_argument("--profile", metavar="NAME", help="make the pushed path a new generation")
    mode = cli.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run", action="store_true", help="verify and plan at each target, send no NAR"
    )
    mode.add_argument(
        "--rollback", action="store_true", help="switch --profile back to its previous generation"
    )
    cli.add_argument(
        "--key",
        metavar="SEC",
        help="sign paths that lack this Nix secret key's signature first "
        "(a dry run signs in memory only)",
    )
    cli.add_argument(
        "--certs",
        action="append",
        default=None,
        metavar="FILE_OR_DIR",
        help="certificates of the signing keys (repeatable)",
    )
    cli.add_argument(
        "--jobs", type=int, default=DEFAULT_JOBS, metavar="N", help="targets at once (default 4)"
    )
    cli.add_argument("--json", action="store_true", help="one JSON object per target on stdout")
    cli.add_argument("paths", nargs="*", metavar="PATH", help="store paths or links to them")
    args = cli.parse_args(argv)

    targets = _targets(args.to)
    plan = _plan(args.paths, args.profile, dry_run=args.dry_run, rollback=args.rollback)
    if not 1 <= args.jobs <= MAX_JOBS:
        raise UsageError(f"nixwarden push: --jobs must be 1 to {MAX_JOBS}")
    options = push.ssh_options(os.environ)
    env = dict(os.environ)
    # The first sessions' ssh handshakes go on while the key and certificates load.
    early = _connect(targets[: args.jobs], options, env)
    try:
        store = _local_store(args.key, _cert_paths(args.certs), dry_run=args.dry_run)
    except BaseException:
        for connection in early.values():
            connection.close()
        raise
    progress = push.stderr_progress()

    def session(target: push.Target) -> push.Session:
        argv = push.ssh_argv(target, options)
        return push.Session(target, plan, store, progress, argv, env, early.pop(target, None))

    with push.ticking(progress):
        outcomes = push.push_all(targets, session, jobs=args.jobs)
    for outcome in outcomes:
        print(f"nixwarden push: {outcome.summary()}", file=sys.stderr)
    if args.json:
        for outcome in outcomes:
            print(json.dumps(outcome.to_json(), ensure_ascii=False))
    return push.exit_status(outcomes)


def _connect(
    targets: Sequence[push.Target], options: Sequence[str], env: dict[str, str]
) -> dict[push.Target, push.Connection]:
    """ssh started for `targets`; one that cannot start is left to its session to report."""
    started = {}
    for target in targets:
        try:
            started[target] = push.Connection(push.ssh_argv(target, options), env)
        except NixwardenError:
            continue
    return started


def _targets(texts: Sequence[str]) -> list[push.Target]:
    if not texts:
        raise UsageError("nixwarden push: give at least one --to [USER@]HOST[:PORT]")
    targets = [push.Target.parse(text) for text in texts]
    seen: set[str] = set()
    for target in targets:
        if target.text in seen:
            raise UsageError(f"nixwarden push: --to {target.text} is given twice")
        seen.add(target.text)
    return targets


def _plan(paths: Sequence[str], profile: str | None, *, dry_run: bool, rollback: bool) -> push.Plan:
    if profile is not None and not PROFILE_NAME.fullmatch(profile):
        raise UsageError(
            f"nixwarden push: --profile {profile!r}: a profile name is 1-64 of A-Z a-z 0-9 _ + . -"
        )
    if rollback:
        if profile is None:
            raise UsageError("nixwarden push: --rollback needs --profile")
        if paths:
            raise UsageError("nixwarden push: --rollback takes no paths")
        return push.Plan(wire.Action.ROLLBACK, profile, (), ())
    if not paths:
        raise UsageError("nixwarden push: give the store paths to push (or --rollback)")
    from nixwarden.nix.closure import closure, resolve_root  # noqa: PLC0415

    tops = tuple(dict.fromkeys(resolve_root(path).top for path in paths))
    if profile is not None and len(tops) != 1:
        raise UsageError(f"nixwarden push: a profile holds one store path; {len(tops)} given")
    action = wire.Action.PLAN if dry_run else wire.Action.PUSH
    return push.Plan(action, profile, tops, tuple(sorted(closure(tops).paths)))


def _cert_paths(given: Sequence[str] | None) -> list[str]:
    if given is not None:
        return list(given)
    return [part for part in os.environ.get(push.CERTS_ENV, "").split(os.pathsep) if part]


def _local_store(
    key_file: str | None, cert_paths: Sequence[str], *, dry_run: bool
) -> push.LocalStore:
    from nixwarden.ca import load  # noqa: PLC0415

    key = None
    if key_file is not None:
        from nixwarden.trust.keys import decode_secret_key  # noqa: PLC0415

        key = decode_secret_key(load.read_file(key_file, load.MAX_KEY_FILE, secret=True).strip())
    certificates = [(cert.key_id, cert.blob) for cert in load.certificates(cert_paths)]
    return push.LocalStore(
        key_file=key_file, key=key, sign_in_memory=dry_run, certificates=certificates
    )
