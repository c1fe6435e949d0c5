"""The gate's imperative shell: read the request, decide, log, take a session slot, exec.

Runs on every SSH connection as the connecting unix user. Fail closed: any error on
the way to the exec is a denial, and nothing runs. Every decision is logged: in the
audit log, or, when the configuration gives none or it cannot be written, in syslog
(`gate.syslog`). The client is told why only when the reason is about its request or
its own limits; a fault on the server (configuration, audit log, session state, an
internal error) reaches it as one generic line, the details staying in the log.
Its imports are kept to what the decision needs (see docs/gate.md, "Start-up cost").
"""

from __future__ import annotations

import os
import select
import stat
import sys
import time

from nixwarden import defaults, sessions
from nixwarden.display import escape
from nixwarden.errors import ConfigError, NixwardenError, Refused
from nixwarden.gate import audit_log, compiled, policy, request

TYPE_CHECKING = False  # not typing's: this module is on the gate's start-up path
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from nixwarden.config import GateSettings, Principal, TenantSettings

MAX_LINES = 16
LINE_MODE_TIMEOUT = 30.0  # seconds a line-mode client has to send its command
MAX_AUTH_INFO_BYTES = 65536
# sshd writes SSH_USER_AUTH with mkstemp("/tmp/sshauth.XXXXXXXXXXXXXXX") as the user.
AUTH_INFO_PREFIX = b"/tmp/sshauth."
SERVER_FAULT = "server-side error; see the server's log"
CONFIG_FAULT = "configuration error; see the server's log"
LOG_FAULT = "the session cannot be logged; see the server's log"


class GateDenied(Refused):
    """The gate refused this session; the message names the principal and the reason."""


class _Session:
    """What is known about this connection, for the audit log."""

    def __init__(
        self, principal: str, environ: Mapping[bytes, bytes], line_key: str | None = None
    ) -> None:
        self.principal = principal
        self.client = _client(environ.get(b"SSH_CONNECTION", b""))
        # sshd removes SSH_USER_AUTH as soon as the connection closes, which can be before
        # the gate has started (`ssh -tt` to a `restrict` key: the client quits when its
        # pty request is refused). The key the authorized_keys line names is then all
        # there is, and it is the key sshd matched to run this command.
        self.keys = _auth_keys(environ.get(b"SSH_USER_AUTH")) or ([line_key] if line_key else [])
        self.user = _user_name()
        self.mode = "command"
        self.request = request.describe(environ.get(b"SSH_ORIGINAL_COMMAND", b""))

    def entry(self, decision: str, reason: str, argv: Sequence[str] | None) -> bytes:
        return audit_log.entry(
            principal=self.principal,
            decision=decision,
            reason=reason,
            request=self.request,
            mode=self.mode,
            client=self.client,
            keys=self.keys,
            user=self.user,
            argv=argv,
        )

    def log(self, log_path: str, decision: str, reason: str, argv: Sequence[str] | None) -> bool:
        """Append the decision to the audit log: True. If the log cannot take it, the
        decision becomes a denial, which goes to syslog: False."""
        try:
            audit_log.append(log_path, self.entry(decision, reason, argv))
        except audit_log.AuditLogUnwritable as error:
            if decision == "limit":  # the session runs on: what happened, and where it went
                self.to_syslog(f"{reason}; and {error}", decision)
            else:
                self.to_syslog(str(error) if decision == "allow" else f"{reason}; and {error}")
            return False
        return True

    def to_syslog(self, reason: str, decision: str = "deny") -> None:
        """A denial (or a limit hit) for syslog: the audit log's JSON line, escaped ASCII."""
        from nixwarden.gate import syslog  # noqa: PLC0415 - only when the audit log is not used

        syslog.send(self.entry(decision, reason, None).decode("ascii").rstrip("\n"))


def serve(
    principal_name: str,
    config_path: str | None,
    environ: Mapping[bytes, bytes],
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    *,
    line_key: str | None = None,
) -> int:
    """Decide on this connection and exec the Nix program; returns only by raising."""
    session = _Session(principal_name, environ, line_key)
    path = defaults.gate_config_path(config_path)
    try:
        gate, tenants, principals = load_policy(path)
    except Exception as error:  # no policy: nothing to decide with, no audit log to use
        session.to_syslog(f"configuration error: {_reason(error)}")
        raise _denied(principal_name, CONFIG_FAULT) from None
    deploy = None
    slot_number = -1
    try:
        principal = _principal(principals, principal_name, path)
        if principal.role == "deploy":  # the receive protocol, relayed (gate/relay.py)
            from nixwarden.gate import relay  # noqa: PLC0415 - deploy principals only

            raw = environ.get(b"SSH_ORIGINAL_COMMAND", b"")
            deploy = relay.prepare(gate, principal, path, raw, session.keys, session.client)
            argv: tuple[str, ...] = deploy.argv
            env: dict[str, str] = {}
        else:
            argv, env, _slot, slot_number = _decide_and_prepare(
                gate, tenants, principal, session, environ, stdin_fd, stdout_fd, config_path=path
            )
    except Exception as error:  # fail closed, and log it: every decision is a log line
        session.log(gate.audit_log, "deny", _reason(error), None)
        raise _denied(principal_name, _for_client(error)) from None
    if not session.log(gate.audit_log, "allow", "allowed", argv):
        if deploy is not None:
            deploy.close()
        raise _denied(principal_name, LOG_FAULT)
    if deploy is not None:
        return deploy.run(stdin_fd, stdout_fd)
    if principal.store == "tenant" and _has_limits(principal):
        return _supervised(session, gate, tenants, principal, slot_number, argv, env)
    from nixwarden import process  # noqa: PLC0415

    sys.stdout.flush()
    process.exec_replace(argv, env)  # the slot's descriptor is inherited: held while Nix runs
    return 1


def _has_limits(principal: Principal) -> bool:
    """Inline, not tenants.limits: nothing more to import for a principal without limits
    (and the compiled policy's principals are plain values, without methods)."""
    return (
        principal.memory is not None
        or principal.tasks is not None
        or principal.cpu is not None
        or principal.disk_quota is not None
    )


def _supervised(  # noqa: PLR0917
    session: _Session,
    gate: GateSettings,
    tenants: TenantSettings,
    principal: Principal,
    slot: int,
    argv: Sequence[str],
    env: Mapping[str, str],
) -> int:
    """The session as the supervisor's child: a limit it hits is told to the client and
    logged (gate.supervisor); principals without limits are exec'd as before."""
    from nixwarden.gate import supervisor  # noqa: PLC0415 - limited principals only
    from nixwarden.tenants import disk, limits  # noqa: PLC0415

    counters = [
        supervisor.Counter(kind, path, limit)
        for kind, path, limit in limits.counters(tenants, principal, slot)
    ]
    watched: list[supervisor.Counter | supervisor.Watchdog] = list(counters)
    quota = principal.disk_quota
    if quota is not None and disk.uses_image(tenants, principal):
        # The session started: its directory is its image (tenants.session checked it).
        path = os.path.join(tenants.root, principal.name)
        watched.append(supervisor.Counter("disk", path, limits.size_text(quota)))
    elif quota is not None:  # no image: measured while the session runs, and ended past it
        from nixwarden.tenants import session as tenant_session  # noqa: PLC0415

        measure = tenant_session.disk_usage_probe(tenants, principal)
        watched.append(supervisor.Watchdog(measure, quota, limits.size_text(quota)))

    def report(reason: str) -> None:
        session.log(gate.audit_log, "limit", reason, None)

    sys.stdout.flush()
    return supervisor.run(argv, env, watched, report, principal.name)


def refuse_bad_arguments(error: NixwardenError, environ: Mapping[bytes, bytes]) -> GateDenied:
    """The gate's own command line is wrong (a broken authorized_keys line): log, deny."""
    _Session("", environ).to_syslog(f"the gate's command line is wrong: {error}")
    return _denied("", CONFIG_FAULT)


def _reason(error: BaseException) -> str:
    """Why, for the log (JSON or syslog, both escaped on the way out)."""
    if isinstance(error, NixwardenError):
        return str(error)
    return f"internal error: {type(error).__name__}: {escape(str(error))}"


def _for_client(error: BaseException) -> str:
    """What the client may learn: the reason when it is about its request or its own
    limits, else nothing about the server (paths, accounts, keys of the configuration)."""
    if isinstance(
        error,
        request.RequestRefused
        | policy.PolicyRefused
        | sessions.SessionsFull
        | sessions.SessionsBusy,
    ):
        return str(error)
    if isinstance(error, ConfigError):
        return CONFIG_FAULT
    # A tenant session's refusals (its quota, its files) are the tenant's own business;
    # its set-up on the host (TenantSetupError) is not.
    from nixwarden.tenants.session import TenantRefused  # noqa: PLC0415 - only on a denial

    if isinstance(error, TenantRefused):
        return str(error)
    return SERVER_FAULT


def _denied(principal_name: str, reason: str) -> GateDenied:
    """The one line the client sees: escaped, whatever went into it."""
    text = f"principal {escape(principal_name)}: {reason}" if principal_name else reason
    return GateDenied(text if text.isprintable() else escape(text))


def load_policy(path: str) -> tuple[GateSettings, TenantSettings, Mapping[str, Principal]]:
    """The compiled policy when it is current, else the TOML parsed and validated."""
    fast = compiled.read(path)
    if fast is not None:
        return fast
    from nixwarden import config as config_module  # noqa: PLC0415 - the slow path

    config = config_module.load(path)
    return config.gate, config.tenants, config.principals


def _principal(principals: Mapping[str, Principal], name: str, path: str) -> Principal:
    try:
        return principals[name]
    except KeyError:
        raise ConfigError(escape(path), f"principals.{escape(name)}", "no such principal") from None


def check(principal_name: str, config_path: str | None, command: str) -> tuple[bool, str]:
    """The decision for `command`, without logging, session slots or executing anything.

    Reads the same file the gate would serve (`defaults.gate_config_path`)."""
    path = defaults.gate_config_path(config_path)
    gate, tenants, principals = load_policy(path)
    principal = _principal(principals, principal_name, path)
    raw = command.encode("utf-8", "surrogateescape")
    if principal.role == "deploy":
        from nixwarden.gate import relay  # noqa: PLC0415 - deploy principals only

        try:
            relay.check_request(raw)
        except Refused as error:
            return False, escape(str(error))
        return True, escape(f"relay to the receive service (principal {principal.name}, deploy)")
    if request.is_line_mode(raw):
        return False, "line mode (Lix 2.93 'bash'): the decision depends on the lines sent on stdin"
    try:
        argv = _argv_for(gate, principal, request.parse(raw))
    except Refused as error:
        return False, str(error)
    where = (
        f"store = tenant: in bubblewrap over {os.path.join(tenants.root, principal.name, 'nix')}"
        if principal.store == "tenant"
        else "store = host"
    )
    return True, escape(" ".join(argv) + f"  (principal {principal.name}, {where})")


def _decide_and_prepare(  # noqa: PLR0917
    gate: GateSettings,
    tenants: TenantSettings,
    principal: Principal,
    session: _Session,
    environ: Mapping[bytes, bytes],
    stdin_fd: int,
    stdout_fd: int,
    *,
    config_path: str,
) -> tuple[tuple[str, ...], dict[str, str], int, int]:
    """(argv, environment, the session slot's descriptor, its number)"""
    raw = environ.get(b"SSH_ORIGINAL_COMMAND", b"")
    if request.is_line_mode(raw) and gate.line_mode:
        session.mode = "line"
        session.request = request.describe(raw)
        parsed = _read_line_mode(session, stdin_fd, stdout_fd)
    else:
        session.request = request.describe(raw)
        parsed = request.parse(raw)
    argv = _argv_for(gate, principal, parsed)
    slot, slot_number = sessions.acquire_numbered(
        gate.state_dir, principal.name, principal.max_sessions
    )
    if principal.store == "tenant":
        from nixwarden.tenants import session as tenant_session  # noqa: PLC0415

        try:
            tenant_argv, env = tenant_session.prepare(
                tenants,
                principal,
                argv,
                state_dir=gate.state_dir,
                config_path=config_path,
                slot=slot_number,
            )
        except BaseException:
            os.close(slot)
            raise
        return tuple(tenant_argv), env, slot, slot_number
    return argv, _exec_env(gate), slot, slot_number


def _argv_for(gate: GateSettings, principal: Principal, parsed: request.Request) -> tuple[str, ...]:
    return policy.decide(parsed, principal, gate)


def _exec_env(gate: GateSettings) -> dict[str, str]:
    """Only what Nix needs; nothing the client sent (sshd may pass LANG, TERM, …)."""
    import pwd  # noqa: PLC0415

    entry = pwd.getpwuid(os.getuid())
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": entry.pw_dir,
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
        "LANG": "C.UTF-8",
    }
    if gate.ssl_cert_file:
        env["NIX_SSL_CERT_FILE"] = gate.ssl_cert_file
    return env


def _read_line_mode(session: _Session, stdin_fd: int, stdout_fd: int) -> request.Request:
    """Lix 2.93: answer `echo started`; the first allowed command wins, anything else ends it."""
    deadline = time.monotonic() + LINE_MODE_TIMEOUT
    for _ in range(MAX_LINES):
        line = _read_line(stdin_fd, deadline)
        session.request = request.describe(line)
        if line == b"echo started":
            os.write(stdout_fd, b"started\n")
            continue
        return request.parse(line)
    raise request.RequestRefused(f"more than {MAX_LINES} lines without an allowed command")


def _read_line(fd: int, deadline: float) -> bytes:
    """One line from fd, a byte at a time: what follows the command belongs to Nix's protocol."""
    buffer = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise request.RequestRefused("timed out waiting for a command on stdin")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        byte = os.read(fd, 1)
        if not byte:
            if buffer:
                raise request.RequestRefused("input ended in the middle of a line")
            raise request.RequestRefused("input ended without an allowed command")
        if byte == b"\n":
            return bytes(buffer)
        buffer += byte
        if len(buffer) > request.MAX_REQUEST_BYTES:
            raise request.RequestRefused(
                f"line longer than {request.MAX_REQUEST_BYTES} bytes on stdin"
            )


def _client(connection: bytes) -> str | None:
    parts = connection.decode("ascii", "replace").split()
    if len(parts) < 2:
        return None
    address, port = parts[0], parts[1]
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _auth_keys(path: bytes | None) -> list[str]:
    """Fingerprints of the keys sshd says this session authenticated with (ExposeAuthInfo).

    Only a file as sshd makes it: under /tmp/sshauth., a regular file of this user, read
    without following a symlink or blocking on a FIFO. Without ExposeAuthInfo the variable
    is unset, and a client that may set variables (AcceptEnv) must not choose the file."""
    if not path or not path.startswith(AUTH_INFO_PREFIX) or b"/" in path[len(AUTH_INFO_PREFIX) :]:
        return []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            return []
        content = os.read(fd, MAX_AUTH_INFO_BYTES)
    except OSError:
        return []
    finally:
        os.close(fd)
    # binascii, not base64: base64 imports re, which the gate's start-up avoids.
    import binascii  # noqa: PLC0415
    import hashlib  # noqa: PLC0415

    keys = []
    for line in content.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == b"publickey":
            try:
                blob = binascii.a2b_base64(fields[2], strict_mode=True)
            except (binascii.Error, ValueError):
                continue
            digest = binascii.b2a_base64(hashlib.sha256(blob).digest(), newline=False).rstrip(b"=")
            keys.append(f"{fields[1].decode('ascii', 'replace')} SHA256:{digest.decode()}")
    return keys


def _user_name() -> str:
    import pwd  # noqa: PLC0415

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
