"""The provisioning commands: observe, plan, check what must hold, execute.

Everything that can be refused is refused before the first change: bad input (keys,
names, a config that no longer parses) while planning, and the machine's own
preconditions (init done, the gate's interpreter usable by every gate user, a host key
that matches the host) right after. A run then changes only what is not yet as planned.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import stat
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import nixwarden
from nixwarden import process, sessions
from nixwarden.audit import sshd as sshd_config
from nixwarden.audit.model import GlobResult
from nixwarden.display import escape
from nixwarden.errors import CommandFailed, InvalidInput, Refused
from nixwarden.gate import keyline
from nixwarden.nix import commands as nix_commands
from nixwarden.nix import daemon
from nixwarden.provision import builder_plan, client_plan, execute, handshake, observe, steps
from nixwarden.provision.execute import Executor, Hook
from nixwarden.provision.layout import BuilderLayout, ClientLayout
from nixwarden.provision.system import program, run
from nixwarden.sshkeys import weak_key_problem
from nixwarden.tenants import limits

MAX_KEY_FILE = 64 << 10
CHECK_USER = "nixwarden-check"


# --- keys ------------------------------------------------------------------------------------


def read_key_text(path: str) -> str:
    data = execute.read_file(path, MAX_KEY_FILE)
    if data is None:
        raise InvalidInput(f"{escape(path)}: not a readable regular file")
    if len(data) > MAX_KEY_FILE:
        raise InvalidInput(f"{escape(path)}: too large for a public key")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{escape(path)}: not a text file") from None


def parse_key(text: str, source: str) -> tuple[str, str, str]:
    """One OpenSSH public key, of a type and size worth pinning (no DSA, RSA ≥ 2048 bits)."""
    if "PRIVATE KEY-----" in text:
        raise InvalidInput(f"{source}: a private key; give the public half (the .pub file)")
    if "-----BEGIN " in text:
        raise InvalidInput(
            f"{source}: a PEM file, not an OpenSSH public key line "
            "(ssh-keygen -i -m PKCS8 -f FILE converts a public one)"
        )
    if text.lstrip().startswith("ssh-dss "):
        raise InvalidInput(f"{source}: {weak_key_problem('ssh-dss', '')}")
    key = keyline.parse_public_key(text, source)
    problem = weak_key_problem(key[0], key[1])
    if problem is not None:
        raise InvalidInput(f"{source}: {problem}")
    return key


def host_key(value: str) -> tuple[str, str]:
    """--host-key: the key itself (`ssh-ed25519 AAAA…`) or a file holding it."""
    word = value.split(None, 1)[0] if value.strip() else ""
    if word in keyline.ENROLLABLE or word == "ssh-dss":
        key_type, blob, _comment = parse_key(value, "--host-key")
    else:
        key_type, blob, _comment = parse_key(read_key_text(value), escape(value))
    if key_type.startswith("sk-"):
        raise InvalidInput("--host-key: a security-key type is never a host key")
    return key_type, blob


# --- builder ---------------------------------------------------------------------------------


def _sshd_glob(
    layout: BuilderLayout, candidate: bytes
) -> tuple[sshd_config.Reader, sshd_config.Globber]:
    def read(path: str) -> bytes:
        if os.path.normpath(path) == layout.sshd_dropin:
            return candidate
        data = execute.read_file(path)
        if data is None:
            raise FileNotFoundError(path)
        return data

    def expand(pattern: str) -> GlobResult:
        found = set(glob.glob(pattern)[: sshd_config.MAX_FILES])
        if fnmatch.fnmatchcase(layout.sshd_dropin, pattern):
            found.add(layout.sshd_dropin)
        return GlobResult(tuple(sorted(found)))

    return read, expand


def check_dropin_included(layout: BuilderLayout, candidate: bytes) -> None:
    """sshd, reading its main config, must give a gate user exactly the drop-in's settings:
    the main config must Include the drop-in, and nothing before it may decide otherwise."""
    main = execute.read_file(layout.sshd_config)
    if main is None:
        raise Refused(f"{layout.sshd_config}: no such file (--sshd-config names sshd's own)")
    read, expand = _sshd_glob(layout, candidate)
    parsed = sshd_config.parse(main, layout.sshd_config, read, expand)
    decided = parsed.effective(CHECK_USER, [layout.gate_group], unknown_matches=False)
    wrong = []
    for keyword, expected in builder_plan.expected_sshd(layout):
        value, _line = sshd_config.value(decided, keyword)
        if value.lower() != expected.lower():
            wrong.append(f"{keyword} {value or '(unset)'}")
    if wrong:
        directory = os.path.dirname(layout.sshd_dropin)
        raise Refused(
            f"{layout.sshd_config} would not give the gate users the drop-in's settings "
            f"({', '.join(wrong)}): it must `Include {directory}/*.conf` before any Match "
            "block or setting of those (Debian's does, on its first line)"
        )


def gate_command_problem(paths: Sequence[str]) -> str | None:
    """Why the gate's interpreter, launcher or package cannot serve every gate user: each
    must be reachable by all (o+x on every directory) and changeable by root alone."""
    for path in paths:
        for candidate in dict.fromkeys((path, os.path.realpath(path))):
            parts = candidate.split("/")
            for end in range(2, len(parts) + 1):
                piece = "/".join(parts[:end]) or "/"
                try:
                    info = os.lstat(piece)
                except OSError as error:
                    return f"{piece}: {error.strerror}"
                if stat.S_ISLNK(info.st_mode):
                    continue  # the link's target is checked as the realpath
                if info.st_uid != 0:
                    return f"{piece} belongs to uid {info.st_uid}, not root"
                if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
                    return f"{piece} may be written by others than root"
                if not _usable_by_others(info, last=end == len(parts)):
                    return f"{piece} is not usable by other users (mode {info.st_mode & 0o777:04o})"
    return None


def _usable_by_others(info: os.stat_result, *, last: bool) -> bool:
    if stat.S_ISDIR(info.st_mode):
        return bool(info.st_mode & 0o001) and (not last or bool(info.st_mode & 0o004))
    return bool(info.st_mode & 0o005)


def _check_gate_command(layout: BuilderLayout) -> None:
    package = os.path.dirname(os.path.abspath(nixwarden.__file__))
    problem = gate_command_problem([layout.python, layout.launcher, package])
    if problem is not None:
        raise Refused(
            f"the gate runs as every gate user, from {layout.launcher}: {problem}; install "
            "nixwarden where they can run it (make install: /opt/nixwarden) and enrol from there"
        )


def init(
    layout: BuilderLayout, *, out: TextIO, dry_run: bool = False, hook: Hook | None = None
) -> int:
    with execute.provisioning_lock(layout.config):
        world = observe.builder_world(layout)
        plan = builder_plan.init_plan(layout, world)
        check_dropin_included(layout, builder_plan.sshd_dropin(layout))
        Executor(out, dry_run=dry_run, hook=hook).run(plan)
    return 0


def pending_init(layout: BuilderLayout, world: builder_plan.BuilderWorld) -> list[steps.Step]:
    """What init set up that is not in place (its compiled policy aside: every enrolment
    and revocation compiles the policy again, and one cut short leaves it stale)."""
    return [
        step
        for step in builder_plan.init_plan(layout, world)
        if not isinstance(step, steps.Compiled) and not execute.is_done(step)
    ]


def _world_for(
    layout: BuilderLayout, request: builder_plan.Enrollment | builder_plan.Revocation
) -> builder_plan.BuilderWorld:
    """The machine as it is, with the unix users the request may be about."""
    return observe.builder_world(layout, [n for n in (request.user, request.principal) if n])


def enroll_plan(
    layout: BuilderLayout, request: builder_plan.Enrollment
) -> tuple[builder_plan.BuilderWorld, list[steps.Step]]:
    world = _world_for(layout, request)
    return world, builder_plan.enroll_plan(layout, world, request)


def enroll(
    layout: BuilderLayout,
    request: builder_plan.Enrollment,
    *,
    out: TextIO,
    dry_run: bool = False,
    hook: Hook | None = None,
) -> int:
    with execute.provisioning_lock(layout.config):
        world, plan = enroll_plan(layout, request)
        pending = pending_init(layout, world)
        if pending:
            raise Refused(
                f"builder init has not completed ({pending[0].describe()}, …): "
                "run nixwarden builder init (with the same --root and paths) first"
            )
        _check_gate_command(layout)
        Executor(out, dry_run=dry_run, hook=hook).run(plan)
    return 0


def revoke_plan(layout: BuilderLayout, request: builder_plan.Revocation) -> list[steps.Step]:
    return builder_plan.revoke_plan(layout, _world_for(layout, request), request)


def revoke(
    layout: BuilderLayout,
    request: builder_plan.Revocation,
    *,
    out: TextIO,
    dry_run: bool = False,
    hook: Hook | None = None,
) -> int:
    with execute.provisioning_lock(layout.config):
        plan = revoke_plan(layout, request)
        Executor(out, dry_run=dry_run, hook=hook).run(plan)
    return 0


# --- builder status --------------------------------------------------------------------------


@dataclass(frozen=True)
class PrincipalStatus:
    name: str
    store: str
    protocols: tuple[str, ...]
    write: bool
    user: str | None
    keys: tuple[str, ...]  # TYPE SHA256:…
    tenant_store: str | None
    sessions: int
    max_sessions: int
    limits: str  # "memory 8 GiB, cpu 2, …" or "-"
    limits_not_held: str | None  # why some are not held by the kernel here


def status_document(layout: BuilderLayout) -> dict[str, object]:
    world = observe.builder_world(layout)
    if world.config is None:
        return {
            "config": layout.config,
            "initialised": False,
            "pieces": [],
            "principals": [],
            "limits": None,
        }
    config = builder_plan.parse_config(world.config, layout.config)
    pieces = [
        {"piece": step.describe(), "in_place": execute.is_done(step)}
        for step in builder_plan.init_plan(layout, world)
    ]
    principals = []
    for name, principal in sorted(config.principals.items()):
        user = builder_plan.user_serving(world, name)
        keys = []
        if user is not None:
            for _line, key in builder_plan.key_lines(world.keys_files[user]):
                if key is not None:
                    keys.append(f"{key.key_type} {keyline.fingerprint(key.key_data)}")
        tenant = None
        if principal.store == "tenant":
            path = os.path.join(config.tenants.root, name)
            tenant = path if os.path.isdir(path) and not os.path.islink(path) else None
        busy = 0
        if user is not None:
            try:
                busy = sessions.in_use(config.gate.state_dir, user, name, principal.max_sessions)
            except Refused:
                busy = -1
        principals.append(
            PrincipalStatus(
                name=name,
                store=principal.store,
                protocols=principal.protocols,
                write=principal.write,
                user=user,
                keys=tuple(keys),
                tenant_store=tenant,
                sessions=busy,
                max_sessions=principal.max_sessions,
                limits=limits.describe(principal),
                limits_not_held=(
                    limits.unenforced(config.tenants, principal)
                    if principal.store == "tenant"
                    else None
                ),
            ).__dict__
        )
    return {
        "config": layout.config,
        "initialised": all(piece["in_place"] for piece in pieces),
        "pieces": pieces,
        "principals": principals,
        "limits": limits.host_mechanism(config.tenants),
    }


def status(layout: BuilderLayout, *, out: TextIO, as_json: bool) -> int:
    document = status_document(layout)
    if as_json:
        print(json.dumps(document, indent=2, sort_keys=True), file=out)
        return 0
    print(f"config: {document['config']}", file=out)
    pieces = document["pieces"]
    assert isinstance(pieces, list)
    if not pieces:
        print("not initialised: run nixwarden builder init", file=out)
    for piece in pieces:
        print(f"  [{'x' if piece['in_place'] else ' '}] {piece['piece']}", file=out)
    if document["limits"]:
        print(f"limits: {document['limits']}", file=out)
    principals = document["principals"]
    assert isinstance(principals, list)
    print(f"principals: {len(principals)}", file=out)
    for entry in principals:
        store = entry["store"]
        tenant = entry["tenant_store"] or ("(missing)" if store == "tenant" else "-")
        sessions_text = "?" if entry["sessions"] < 0 else str(entry["sessions"])
        print(
            f"  {entry['name']}: store {store}, {','.join(entry['protocols'])}"
            f"{' write' if entry['write'] else ''}, user {entry['user'] or '(none)'}, "
            f"sessions {sessions_text}/{entry['max_sessions']}, tenant store {tenant}",
            file=out,
        )
        for key in entry["keys"] or ["(no key: cannot log in)"]:
            print(f"      key {key}", file=out)
        if entry["limits"] != "-":
            print(f"      limits {entry['limits']}", file=out)
        if entry["limits_not_held"]:
            print(f"      limits not held: {entry['limits_not_held']}", file=out)
    return 0


# --- client ----------------------------------------------------------------------------------


def check_host_key(entry: client_plan.BuilderEntry) -> None:
    """The host must offer the pinned key (ssh-keyscan; nothing is trusted from it)."""
    output = run(
        "ssh-keyscan", "-T", "10", "-p", str(entry.port), entry.host.strip("[]"), check=False
    )
    offered = []
    for line in output.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            offered.append((fields[1], fields[2]))
    if not offered:
        raise CommandFailed(
            f"cannot reach {entry.host} port {entry.port} to check its host key "
            "(--no-check adds the builder without checking)"
        )
    if entry.host_key not in offered:
        types = ", ".join(sorted({key_type for key_type, _blob in offered}))
        raise InvalidInput(
            f"{entry.host} port {entry.port} does not offer the --host-key given (it offers "
            f"other keys: {types}); check the key on the builder (ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub) before pinning anything"
        )


def add_builder(
    layout: ClientLayout,
    entry: client_plan.BuilderEntry,
    *,
    check: bool,
    out: TextIO,
    dry_run: bool = False,
    hook: Hook | None = None,
) -> int:
    with execute.provisioning_lock(layout.machines):
        world = observe.client_world(layout)
        plan = client_plan.add_plan(layout, world, entry)
        if check:
            check_host_key(entry)
        Executor(out, dry_run=dry_run, hook=hook).run(plan)
    return 0


def remove_builder(
    layout: ClientLayout,
    name: str,
    *,
    out: TextIO,
    dry_run: bool = False,
    hook: Hook | None = None,
) -> int:
    with execute.provisioning_lock(layout.machines):
        world = observe.client_world(layout)
        plan = client_plan.remove_plan(layout, world, name)
        Executor(out, dry_run=dry_run, hook=hook).run(plan)
    return 0


def store_url(found: client_plan.Configured) -> str:
    """The builder's store URL with the machines line's key and host key, so the ping goes
    exactly the way a build would."""
    params = {}
    if found.identity:
        params["ssh-key"] = found.identity
    if found.host_key_base64:
        params["base64-ssh-public-host-key"] = found.host_key_base64
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote, safe="/")
    return f"{found.uri}?{query}" if query else found.uri


def greeting(layout: ClientLayout, name: str, protocol: str) -> handshake.Greeting:
    """The store's first words through the gate (ssh with the Host block add-builder wrote):
    its protocol version and, from a daemon, its Nix version."""
    if protocol == "ssh-ng":
        command, hello, parse = (
            "nix-daemon --stdio",
            daemon.worker_hello(),
            handshake.parse_worker,
        )
    else:
        command, hello, parse = "nix-store --serve", handshake.serve_hello(), handshake.parse_serve
    config = [] if layout.uses_default_ssh_config else ["-F", layout.ssh_config]
    argv = [program("ssh"), *config, "-x", "-T", "-o", "BatchMode=yes", "--", name, command]
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8"}
    output, errors = process.converse(
        argv,
        env=env,
        send=hello,
        enough=lambda data: handshake.complete(data, parse),
        timeout=60,
    )
    if not output:
        detail = errors.decode("utf-8", "replace").strip().splitlines()
        raise CommandFailed(
            f"ssh {name} {command}: {escape(detail[-1]) if detail else 'no answer'}"
        )
    return parse(output)


def check_builder(layout: ClientLayout, name: str, *, out: TextIO) -> int:
    world = observe.client_world(layout)
    found = client_plan.configured(layout, world, name)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8"}
    if not layout.uses_default_ssh_config:
        env["NIX_SSHOPTS"] = f"-F {layout.ssh_config}"
    started = time.monotonic()
    answer = nix_commands.store_ping(store_url(found), env=env)
    latency = (time.monotonic() - started) * 1000
    protocol = found.uri.split("://", 1)[0]
    served = "nix-daemon --stdio" if protocol == "ssh-ng" else "nix-store --serve"
    hello = greeting(layout, name, protocol)
    version = answer.get("Version") or hello.nix_version or f"not reported over {protocol}://"
    print(f"builder {name}: {found.uri}", file=out)
    print(f"  protocol: {protocol} ({served}, protocol {hello.protocol})", file=out)
    print(f"  version:  {version}", file=out)
    print(f"  latency:  {latency:.0f} ms (nix store ping: connection, login, handshake)", file=out)
    return 0
