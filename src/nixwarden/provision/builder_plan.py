"""What `builder init`, `enroll` and `revoke` must make true, as ordered steps (pure).

The order is the safety argument. Enrolment ends with the key line: the unix user, its
groups, the principal in the config, its tenant store, its session state, the compiled
policy and sshd's settings for it are all in place (and checked) before the one file
that lets the key log in is written. Revocation begins by taking the key lines away,
and ends by removing the file that records which unix user served the principal, so a
revocation cut short is found and finished by the next run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import tomlkit
import tomlkit.items

from nixwarden import config as config_module
from nixwarden.audit import authorized_keys
from nixwarden.errors import InvalidInput, Refused
from nixwarden.gate import keyline
from nixwarden.provision import blocks, steps
from nixwarden.provision.layout import BuilderLayout
from nixwarden.sessions import tmpfiles_line, user_directory

USER_COMMENT = "nixwarden principal {}"
KEYS_HEADER = "# nixwarden: keys of principal {} (builder enroll adds them, revoke removes them)"
RELOAD_STAMP = "sshd-reloaded"
ROLES = ("build", "deploy")

# The gate users' sshd settings (drop-in), and what `sshd -T` must then say for each.
SSHD_SETTINGS = (
    ("AuthenticationMethods", "publickey"),
    ("PubkeyAuthentication", "yes"),
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
    ("ExposeAuthInfo", "yes"),
    ("PermitTTY", "no"),
    ("DisableForwarding", "yes"),
    ("AllowTcpForwarding", "no"),
    ("AllowStreamLocalForwarding", "no"),
    ("AllowAgentForwarding", "no"),
    ("X11Forwarding", "no"),
    ("PermitTunnel", "no"),
    ("PermitUserRC", "no"),
)


@dataclass(frozen=True)
class UnixUser:
    name: str
    uid: int
    primary_group: str
    comment: str
    shell: str


@dataclass(frozen=True)
class BuilderWorld:
    """What the planners need to know of the machine (read by `observe`)."""

    config: bytes | None
    config_owner: tuple[int, str, str] | None  # (mode, owner, group) of the existing config
    tmpfiles: bytes | None
    nix_conf: bytes | None
    nix_conf_owner: tuple[int, str, str] | None
    allowed_users: tuple[str, ...]  # the daemon's effective allowed-users
    keys_files: Mapping[str, bytes]  # unix user -> their file in keys_dir
    users: Mapping[str, UnixUser | None]  # the unix users the plan is about
    socket_group: str | None  # the group a host principal needs to reach the daemon


@dataclass(frozen=True)
class Enrollment:
    principal: str
    key: tuple[str, str, str]  # type, base64, comment (parsed and checked)
    store: str | None = None  # None: keep the principal's, or "tenant" for a new one
    protocols: tuple[str, ...] | None = None
    write: bool | None = None
    user: str | None = None  # explicitly named: may be an existing user that is not ours
    role: str | None = None
    profiles: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Revocation:
    principal: str
    remove_user: bool = False
    user: str | None = None


# --- the config file -------------------------------------------------------------------------


def starter_config(layout: BuilderLayout) -> bytes:
    return f"""\
# nixwarden's policy: which SSH keys may speak Nix, and how (docs/gate.md, docs/tenants.md).
# Made by `nixwarden builder init`, which never rewrites it; `nixwarden builder enroll`
# and `revoke` add and remove [principals.NAME] tables, keeping everything else as it is.

[gate]
audit_log = "{layout.audit_log}"
state_dir = "{layout.state_dir}"
# nix_daemon = "/usr/bin/nix-daemon"   # the pinned programs (default: the system's Nix)
# nix_store = "/usr/bin/nix-store"

[tenants]
root = "{layout.tenants_root}"

# [principals.NAME] tables follow, one per principal (`nixwarden builder enroll`).
""".encode()


def parse_config(data: bytes, path: str) -> config_module.Config:
    """The config validated (bounded, one-line errors) before tomlkit ever reads it."""
    return config_module.Config.from_toml(data, path)


def _document(data: bytes, path: str) -> tomlkit.TOMLDocument:
    parse_config(data, path)
    return tomlkit.parse(data.decode("utf-8"))


def with_principal(data: bytes, path: str, request: Enrollment, user: str) -> bytes:
    """The config with [principals.NAME] holding what the enrolment says, every other line,
    comment and key kept; unchanged bytes when it already does."""
    document = _document(data, path)
    principals = document.get("principals")
    if principals is None:
        principals = tomlkit.table(is_super_table=True)
        document.add("principals", principals)
    if not isinstance(principals, tomlkit.items.Table | tomlkit.items.InlineTable):
        raise InvalidInput(f"{path}: principals: expected a table")
    found = principals.get(request.principal)
    new = found is None
    table = tomlkit.table() if found is None else found
    values: dict[str, object] = {}
    deploy = request.role == "deploy"
    # A deploy principal speaks only the receive protocol: no build keys apply to it.
    if not deploy and (new or request.protocols is not None):
        values["protocols"] = list(request.protocols or ("ssh-ng",))
    if not deploy and (new or request.store is not None):
        values["store"] = request.store or "tenant"
    if not deploy and request.write is not None and (request.write or "write" in table):
        values["write"] = request.write
    if request.role is not None:
        values["role"] = request.role
        if deploy:
            values["user"] = user
            values["profiles"] = list(request.profiles or ())
    for key, value in values.items():
        if table.get(key) != value:
            table[key] = value
    if new:
        principals.add(request.principal, table)
    result = tomlkit.dumps(document).encode()
    if result == data:
        return data
    parse_config(result, path)  # what we write must load, or nothing changes
    return result


def without_principal(data: bytes, path: str, principal: str) -> bytes:
    document = _document(data, path)
    principals = document.get("principals")
    if principals is None or principal not in principals:
        return data
    del principals[principal]
    if (
        not principals
        and isinstance(principals, tomlkit.items.Table)
        and principals.is_super_table()
    ):
        del document["principals"]
    result = tomlkit.dumps(document).encode()
    if not data.endswith(b"\n\n"):
        # The blank line tomlkit put before the table stays behind when it goes.
        result = result.rstrip(b"\n") + b"\n" if result.strip() else b""
    parse_config(result, path)
    return result


# --- the sshd drop-in ------------------------------------------------------------------------


def sshd_dropin(layout: BuilderLayout) -> bytes:
    settings = "".join(f"    {keyword} {value}\n" for keyword, value in SSHD_SETTINGS)
    return f"""\
# Made by `nixwarden builder init`; replaced by it. The unix users nixwarden's gated keys
# log in as are the members of {layout.gate_group}: their keys are root's files in
# {layout.keys_dir} (they cannot add their own), each key line forces the gate, and
# nothing but the Nix protocol gets through (no TTY, no forwarding of any kind, no
# ~/.ssh/rc). sshd keeps a Match in force past the end of an included file: `Match all`
# ends ours. See docs/provision.md.
Match Group {layout.gate_group}
    AuthorizedKeysFile {layout.keys_dir}/%u
{settings}Match all
""".encode()


def expected_sshd(layout: BuilderLayout) -> tuple[tuple[str, str], ...]:
    """What `sshd -T` prints for a gate user once the drop-in is in force."""
    return (
        ("authorizedkeysfile", f"{layout.keys_dir}/%u"),
        *((keyword.lower(), value) for keyword, value in SSHD_SETTINGS),
    )


# --- tmpfiles.d ------------------------------------------------------------------------------


def _tmpfiles_text(world: BuilderWorld, layout: BuilderLayout) -> str:
    return (
        blocks.decode(world.tmpfiles, layout.tmpfiles)
        if world.tmpfiles is not None
        else (
            "# nixwarden's runtime state, made again at every boot by systemd-tmpfiles-setup.\n"
            "# Made by `nixwarden builder init` and `enroll`; see docs/provision.md.\n"
        )
    )


def _base_directories(state_dir: str) -> list[tuple[str, int, str, str]]:
    sessions = os.path.join(state_dir, "sessions")
    return [(state_dir, 0o755, "root", "root"), (sessions, 0o711, "root", "root")]


def _tmpfiles_lines(entries: Sequence[tuple[str, int, str, str]]) -> list[str]:
    return [f"d {path} {mode:04o} {owner} {group} -" for path, mode, owner, group in entries]


# --- init ------------------------------------------------------------------------------------


def init_plan(layout: BuilderLayout, world: BuilderWorld) -> list[steps.Step]:
    config_bytes = world.config if world.config is not None else starter_config(layout)
    config = parse_config(config_bytes, layout.config)
    plan: list[steps.Step] = [steps.Group(layout.gate_group), steps.Group(layout.log_group)]
    config_dir = os.path.dirname(layout.config)
    plan.append(steps.Directory(config_dir, 0o755))
    if world.config is None:
        plan.append(steps.File(layout.config, config_bytes, 0o644))
    plan.append(steps.Directory(layout.keys_dir, 0o711))
    log_dir = os.path.dirname(config.gate.audit_log)
    plan += [
        steps.Directory(log_dir, 0o755),
        steps.AuditLog(config.gate.audit_log, layout.log_group),
    ]
    base = _base_directories(config.gate.state_dir)
    tmpfiles = blocks.replace(
        _tmpfiles_text(world, layout), layout.tmpfiles, "base", _tmpfiles_lines(base)
    )
    plan += [
        _shared_directory(os.path.dirname(layout.tmpfiles)),
        steps.File(layout.tmpfiles, tmpfiles.encode(), 0o644),
        *(steps.SessionDirectory(layout.tmpfiles, *entry) for entry in base),
    ]
    tenants_parent = os.path.dirname(config.tenants.root)
    plan += [
        _shared_directory(tenants_parent),
        steps.Directory(config.tenants.root, 0o711),  # tenants.directory.ROOT_MODE
    ]
    dropin = sshd_dropin(layout)
    plan += [
        _shared_directory(os.path.dirname(layout.sshd_dropin)),
        steps.File(layout.sshd_dropin, dropin, 0o644, sshd_check=layout.sshd_config),
        steps.SshdReload(
            layout.sshd_pid_file,
            layout.sshd_dropin,
            dropin,
            os.path.join(config.gate.state_dir, RELOAD_STAMP),
        ),
    ]
    nix_conf = _nix_conf_for_gate_users(layout, world)
    if nix_conf is not None:
        plan.append(nix_conf)
    plan.append(steps.Compiled(layout.config, config_bytes))
    return plan


def _shared_directory(path: str) -> steps.Directory:
    """A directory others own too (/etc/ssh/sshd_config.d): made when missing, else kept."""
    return steps.Directory(path, 0o755, exact=False)


def _nix_conf_for_gate_users(layout: BuilderLayout, world: BuilderWorld) -> steps.File | None:
    """The one daemon-side setting host-store principals need: `allowed-users` must let the
    gate users connect. Never `trusted-users`: their keys must not become root."""
    group = f"@{layout.gate_group}"
    if "*" in world.allowed_users or group in world.allowed_users:
        return None
    text = blocks.decode(world.nix_conf or b"", layout.nix_conf)
    body = [
        "# the gate users may connect to the daemon (as untrusted users: never trusted-users)",
        f"extra-allowed-users = {group}",
    ]
    new = blocks.replace(text, layout.nix_conf, "gate users", body).encode()
    return steps.File(layout.nix_conf, new, *(world.nix_conf_owner or (0o644, "root", "root")))


# --- enrol -----------------------------------------------------------------------------------


def principal_of_keys_file(data: bytes) -> str | None:
    """The principal a keys file serves, from its first line."""
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    prefix, _, rest = KEYS_HEADER.partition("{}")
    if first.startswith(prefix) and first.endswith(rest):
        return first[len(prefix) : len(first) - len(rest)]
    return None


def user_serving(world: BuilderWorld, principal: str) -> str | None:
    for user, data in sorted(world.keys_files.items()):
        if principal_of_keys_file(data) == principal:
            return user
    return None


def choose_user(world: BuilderWorld, principal: str, explicit: str | None) -> str:
    if explicit is not None:
        return explicit
    return user_serving(world, principal) or principal


def key_lines(data: bytes) -> list[tuple[str, authorized_keys.AuthorizedKey | None]]:
    """The lines of a keys file after its header, each with its parsed key (None: not a key)."""
    result: list[tuple[str, authorized_keys.AuthorizedKey | None]] = []
    for line in data.decode("utf-8", "replace").split("\n")[1:]:
        if not line:
            continue
        keys, _problems = authorized_keys.parse(line.encode())
        result.append((line, keys[0] if keys else None))
    return result


def keys_file_content(principal: str, lines: Sequence[str]) -> bytes:
    return "".join(f"{line}\n" for line in [KEYS_HEADER.format(principal), *lines]).encode()


def enroll_plan(
    layout: BuilderLayout, world: BuilderWorld, request: Enrollment
) -> list[steps.Step]:
    if world.config is None:
        raise Refused(f"{layout.config} does not exist: run nixwarden builder init first")
    user_name = choose_user(world, request.principal, request.user)
    _check_user(world, request, user_name)
    existing = world.users.get(user_name)
    primary = existing.primary_group if existing else user_name  # useradd --user-group
    served = world.keys_files.get(user_name)
    if served is not None and principal_of_keys_file(served) not in (None, request.principal):
        raise InvalidInput(
            f"unix user {user_name} already serves principal {principal_of_keys_file(served)}; "
            "one unix user per principal (name another with --user)"
        )

    new_config = with_principal(world.config, layout.config, request, user_name)
    config = parse_config(new_config, layout.config)
    principal = config.principal(request.principal)
    ours = existing is None or existing.comment == USER_COMMENT.format(request.principal)
    memberships = [
        steps.Membership(user_name, layout.gate_group),
        steps.Membership(user_name, layout.log_group),
    ]
    if world.socket_group is not None:
        if principal.store == "host":
            memberships.append(steps.Membership(user_name, world.socket_group))
        elif ours:  # a tenant never talks to the host daemon
            memberships.append(steps.Membership(user_name, world.socket_group, member=False))
    plan: list[steps.Step] = []
    if existing is None:
        groups = tuple(step.group for step in memberships if step.member)
        plan.append(steps.User(user_name, USER_COMMENT.format(request.principal), groups=groups))
    plan += memberships
    plan.append(steps.File(layout.config, new_config, *_config_owner(world)))
    if principal.store == "tenant":
        plan.append(steps.TenantDirectory(layout.config, request.principal, user_name))
    session = (user_directory(config.gate.state_dir, user_name), 0o700, user_name, primary)
    tmpfiles = blocks.replace(
        _tmpfiles_text(world, layout),
        layout.tmpfiles,
        f"user {user_name}",
        [
            f"# principal {request.principal}",
            tmpfiles_line(config.gate.state_dir, user_name, primary),  # as the gate's fix says
        ],
    )
    plan += [
        steps.File(layout.tmpfiles, tmpfiles.encode(), 0o644),
        steps.SessionDirectory(layout.tmpfiles, *session),
        steps.Compiled(layout.config, new_config),
        steps.SshdSettingsFor(layout.sshd_config, user_name, expected_sshd(layout)),
    ]
    line = keyline.render(layout.gate_command(), request.principal, layout.config, request.key)
    kept = [
        text
        for text, key in key_lines(served or b"")
        if key is None or key.key_data != request.key[1]
    ]
    keys = keys_file_content(request.principal, [*kept, line])
    plan.append(steps.File(layout.keys_file(user_name), keys, 0o640, "root", primary))
    return plan


def _check_user(world: BuilderWorld, request: Enrollment, user_name: str) -> None:
    if not config_module.PRINCIPAL_NAME.fullmatch(user_name):
        raise InvalidInput(f"--user {user_name!r}: not a unix user name nixwarden uses")
    existing = world.users.get(user_name)
    if existing is None:
        return
    if existing.uid == 0:
        raise InvalidInput(f"unix user {user_name} is root; a gate user never is")
    if existing.comment != USER_COMMENT.format(request.principal) and request.user != user_name:
        raise InvalidInput(
            f"unix user {user_name} exists and was not made by nixwarden for principal "
            f"{request.principal}; to give it this principal's key anyway, name it: "
            f"--user {user_name}"
        )


# --- revoke ----------------------------------------------------------------------------------


def find_user(world: BuilderWorld, request: Revocation) -> str | None:
    """The unix user that serves (or served) the principal: named, recorded in the keys
    files, or one nixwarden made for it."""
    if request.user is not None:
        return request.user
    recorded = user_serving(world, request.principal)
    if recorded is not None:
        return recorded
    marker = USER_COMMENT.format(request.principal)
    for name, user in sorted(world.users.items()):
        if user is not None and user.comment == marker:
            return name
    return None


def revoke_plan(
    layout: BuilderLayout, world: BuilderWorld, request: Revocation
) -> list[steps.Step]:
    if world.config is None:
        raise Refused(f"{layout.config} does not exist: nothing is enrolled here")
    user_name = find_user(world, request)
    plan: list[steps.Step] = []
    served = world.keys_files.get(user_name) if user_name else None
    if served is not None and user_name is not None:
        owner_principal = principal_of_keys_file(served)
        if owner_principal not in (None, request.principal):
            raise InvalidInput(f"unix user {user_name} serves principal {owner_principal}")
    if served is not None and user_name is not None and any(key for _, key in key_lines(served)):
        primary = _primary(world, user_name)
        # First: no key of the principal logs in any more.
        plan.append(
            steps.File(
                layout.keys_file(user_name),
                keys_file_content(request.principal, []),
                0o640,
                "root",
                primary,
            )
        )
    new_config = without_principal(world.config, layout.config, request.principal)
    config = parse_config(new_config, layout.config)
    plan += [
        steps.File(layout.config, new_config, *_config_owner(world)),
        steps.Compiled(layout.config, new_config),
    ]
    if user_name is not None:
        existing = world.users.get(user_name)
        if request.remove_user:
            if existing is not None and existing.comment != USER_COMMENT.format(request.principal):
                raise Refused(
                    f"unix user {user_name} was not made by nixwarden for principal "
                    f"{request.principal}; not removing it (revoke without --remove-user)"
                )
            plan.append(steps.TenantAbsent(layout.config, request.principal))
            plan.append(steps.UserAbsent(user_name))
        elif existing is not None:
            plan += [
                steps.Membership(user_name, layout.gate_group, member=False),
                steps.Membership(user_name, layout.log_group, member=False),
            ]
        if world.tmpfiles is not None:
            tmpfiles = blocks.replace(
                _tmpfiles_text(world, layout), layout.tmpfiles, f"user {user_name}", None
            )
            plan.append(steps.File(layout.tmpfiles, tmpfiles.encode(), 0o644))
        plan.append(steps.SessionDirectoryAbsent(user_directory(config.gate.state_dir, user_name)))
        # Last: the record of which unix user served the principal.
        plan.append(steps.Absent(layout.keys_file(user_name)))
    return plan


def _config_owner(world: BuilderWorld) -> tuple[int, str, str]:
    """The config keeps its mode and owners (root's, unless the operator chose otherwise)."""
    return world.config_owner or (0o644, "root", "root")


def _primary(world: BuilderWorld, user_name: str) -> str:
    existing = world.users.get(user_name)
    return existing.primary_group if existing else user_name
