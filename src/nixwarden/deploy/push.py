"""The client of a push: one SSH session per target, speaking the deploy wire protocol.

    nixwarden push --to [user@]host[:port] … [--profile NAME] [--dry-run | --rollback] PATH…

Per target: `ssh` (our defaults, then `NIX_SSHOPTS`; BatchMode, no TTY) runs
`nixwarden-receive --protocol 1`, which the target's gate relays to its receive service.
The client says what it pushes (HELLO), sends its whole closure (WANT), learns what the
target lacks (MISSING), describes exactly those paths with their signatures and the
signers' certificates (MANIFEST), and sends a single NAR byte only after the target
has accepted the whole set (VERDICT). NARs are dumped from the local store as they are
sent, never whole in memory. The target answers with one RESULT.

The pure part (targets, ssh's argv, outcomes and their JSON, the progress line) is at
the top; the sessions below it. Every outcome names its category: `verification` (the
target refused what was pushed), `transport` (ssh, the gate, the connection, the
protocol), `import` (the target failed to take accepted paths) or `activation`.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import os
import re
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, cast

from nixwarden import process
from nixwarden.deploy import wire
from nixwarden.display import escape
from nixwarden.errors import CommandFailed, FormatError, InvalidInput, NixwardenError, UsageError
from nixwarden.nix.storepath import STORE_DIR, StorePath
from nixwarden.trust import pathinfo

if TYPE_CHECKING:
    from nixwarden.trust.keys import SecretKey, Signature

SSHOPTS_ENV = "NIX_SSHOPTS"
CERTS_ENV = "NIXWARDEN_CERTS"
# Ours come first: for `-o` options ssh keeps the first value it reads, so NIX_SSHOPTS
# can add options but never turn BatchMode off or ask for a TTY.
SSH_DEFAULTS = (
    "-T",
    "-x",
    "-a",
    "-o",
    "BatchMode=yes",
    "-o",
    "ServerAliveInterval=15",
    "-o",
    "ServerAliveCountMax=4",
)
REMOTE_COMMAND = f"nixwarden-receive --protocol {wire.PROTOCOL_ARGUMENT}"
MAX_TARGET_TEXT = 1024
STDERR_LINES = 20
_HOST = re.compile(r"[A-Za-z0-9_.-]+")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")
MIB = 1 << 20


# --- targets and ssh ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """`[user@]host[:port]`, as Nix's ssh:// store URLs name machines."""

    text: str
    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        if not text or len(text) > MAX_TARGET_TEXT:
            raise UsageError(f"target {_shown(text)}: expected [user@]host[:port]")
        if "://" in text:
            raise UsageError(f"target {_shown(text)}: expected [user@]host[:port], not a URL")
        user: str | None = None
        rest = text
        if "@" in rest:
            user, _, rest = rest.rpartition("@")
            if not _USER.fullmatch(user):
                raise UsageError(f"target {_shown(text)}: {_shown(user)} is not a user name")
        port: int | None = None
        if rest.startswith("["):  # [v6-address] or [v6-address]:port
            close = rest.find("]")
            host, tail = rest[: close + 1], rest[close + 1 :]
            if close < 0 or (tail and not tail.startswith(":")):
                raise UsageError(f"target {_shown(text)}: malformed [address]")
            port_text = tail[1:] if tail else None
            host = host[1:-1]
        else:
            host, colon, port_text_or_empty = rest.partition(":")
            port_text = port_text_or_empty if colon else None
        if port_text is not None:
            if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise UsageError(f"target {_shown(text)}: port must be 1 to 65535")
            port = int(port_text)
        # A host starting with '-' would be read by ssh as an option.
        valid = _IPV6.fullmatch(host) if rest.startswith("[") else _HOST.fullmatch(host)
        if not valid or host.startswith("-"):
            raise UsageError(f"target {_shown(text)}: {_shown(host)} is not a host name or address")
        return cls(text, host, user, port)


def ssh_options(environ: Mapping[str, str]) -> tuple[str, ...]:
    """`NIX_SSHOPTS`, split as a shell would (quotes allowed; plain words as Nix splits them)."""
    text = environ.get(SSHOPTS_ENV, "")
    try:
        return tuple(shlex.split(text))
    except ValueError as error:
        raise UsageError(f"{SSHOPTS_ENV}: {error}") from None


def ssh_argv(target: Target, options: Sequence[str], ssh: str = "ssh") -> list[str]:
    """ssh's argv for `target`: our defaults, NIX_SSHOPTS, then the target and the command."""
    argv = [ssh, *SSH_DEFAULTS, *options]
    if target.port is not None:
        argv += ["-p", str(target.port)]
    if target.user is not None:
        argv += ["-l", target.user]
    return [*argv, "--", target.host, REMOTE_COMMAND]


# --- outcomes ------------------------------------------------------------------------------


class Category(enum.Enum):
    VERIFICATION = "verification"
    TRANSPORT = "transport"
    IMPORT = "import"
    ACTIVATION = "activation"


GOOD = frozenset({wire.Status.DEPLOYED, wire.Status.PLANNED, wire.Status.UP_TO_DATE})


@dataclass(frozen=True)
class Outcome:
    """What happened at one target: the object `--json` prints for it."""

    target: str
    status: wire.Status
    reason: str | None = None
    category: Category | None = None
    generation: int | None = None
    paths: int = 0
    bytes: int = 0
    failures: tuple[wire.Failure, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in GOOD

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "status": self.status.value,
            "reason": self.reason,
            "category": None if self.category is None else self.category.value,
            "generation": self.generation,
            "paths": self.paths,
            "bytes": self.bytes,
            "failures": [failure.to_json() for failure in self.failures],
        }

    def summary(self) -> str:
        """One line for a person (stderr); every piece from the target escaped."""
        if self.ok:
            details = [f"{self.paths} paths", _mib(self.bytes)]
            if self.generation is not None:
                details.append(f"generation {self.generation}")
        else:
            category = self.category.value if self.category else "unknown"
            details = [f"[{category}] {escape(self.reason or 'no reason given')}"]
        return f"{escape(self.target)}: {self.status.value}: {', '.join(details)}"


def exit_status(outcomes: Iterable[Outcome]) -> int:
    """0 when every target is deployed, planned or up to date; 1 otherwise."""
    return 0 if all(outcome.ok for outcome in outcomes) else 1


def from_error(target: str, message: wire.Error, *, committed: bool) -> Outcome:
    """The outcome of an ERROR from the service."""
    match message.kind:
        case wire.ErrorKind.REFUSED:
            return Outcome(target, wire.Status.REFUSED, message.reason, Category.VERIFICATION)
        case wire.ErrorKind.PROTOCOL:
            return Outcome(target, wire.Status.FAILED, message.reason, Category.TRANSPORT)
        case wire.ErrorKind.FAILED:
            category = _failure_category(message.reason) if committed else Category.IMPORT
            return Outcome(target, wire.Status.FAILED, message.reason, category)


def from_result(target: str, result: wire.Result) -> Outcome:
    category = None
    if result.status is wire.Status.REFUSED:
        category = Category.VERIFICATION
    elif result.status is wire.Status.FAILED:
        category = _failure_category(result.reason or "")
    return Outcome(
        target,
        result.status,
        result.reason,
        category,
        result.generation,
        result.paths,
        result.bytes,
    )


def from_verdict(target: str, verdict: wire.Verdict) -> Outcome:
    failures = verdict.failures
    shown = "; ".join(f"{escape(f.path)}: {escape(f.reason)}" for f in failures[:3])
    more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
    return Outcome(
        target,
        wire.Status.REFUSED,
        f"{len(failures)} refused: {shown}{more}",
        Category.VERIFICATION,
        failures=failures,
    )


def _failure_category(reason: str) -> Category:
    # The receive service words an activation's failure so (receive.py `_activate`).
    return Category.ACTIVATION if reason.startswith("activation of ") else Category.IMPORT


def progress_line(
    paths_done: int, paths_total: int, bytes_done: int, bytes_total: int, rate: float
) -> str:
    """`[12/340 paths, 180/900 MiB, 95 MiB/s]`"""
    return (
        f"[{paths_done}/{paths_total} paths, {bytes_done // MIB}/{_ceil_mib(bytes_total)} MiB, "
        f"{rate / MIB:.0f} MiB/s]"
    )


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


def _ceil_mib(size: int) -> int:
    return -(-size // MIB)


def _shown(text: str) -> str:
    return repr(escape(text if len(text) <= 80 else text[:77] + "..."))


# --- the local side: closure, path infos, signatures, certificates -------------------------


@dataclass(frozen=True)
class Plan:
    """What every target is asked for."""

    action: wire.Action
    profile: str | None
    tops: tuple[str, ...]
    closure: tuple[str, ...]


class LocalStore:
    """The local store's path infos, asked once per path whatever the number of targets.

    With a signing key, paths that lack its signature get it first: through the daemon
    (`nix store sign`) for a push, in memory only for a dry run (nothing changes here).
    """

    def __init__(
        self,
        *,
        key_file: str | None = None,
        key: SecretKey | None = None,
        sign_in_memory: bool = False,
        certificates: Sequence[tuple[str, bytes]] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.key_file = key_file
        self.key = key
        self.sign_in_memory = sign_in_memory
        self.certificates = tuple(certificates)  # (key id, certificate blob)
        self.env = env
        self._infos: dict[str, wire.PathInfo] = {}
        self._lock = threading.Lock()

    def infos(self, paths: Sequence[str]) -> list[wire.PathInfo]:
        with self._lock:
            wanted = [path for path in paths if path not in self._infos]
            if wanted:
                found = self._query(wanted)
                if self.key is not None:
                    found = self._signed(found)
                self._infos.update(found)
            return [self._infos[path] for path in paths]

    def certificates_for(self, infos: Iterable[wire.PathInfo]) -> tuple[bytes, ...]:
        """The certificates of every key that signed one of `infos`, each once."""
        names = {signature.key_name for info in infos for signature in info.signatures}
        chosen = dict.fromkeys(blob for key_id, blob in self.certificates if key_id in names)
        if len(chosen) > wire.MAX_CERTIFICATES:
            raise InvalidInput(
                f"{len(chosen)} certificates match the signers; at most "
                f"{wire.MAX_CERTIFICATES} may be sent"
            )
        return tuple(chosen)

    def _query(self, paths: Sequence[str]) -> dict[str, wire.PathInfo]:
        query = pathinfo.query([StorePath.parse(path) for path in paths])
        if query.invalid:
            raise InvalidInput(f"{query.invalid[0].absolute()} is not valid in the local store")
        found = {info.absolute: _wire_info(info) for info in query.infos.values()}
        lacking = [path for path in paths if path not in found]
        if lacking:
            raise CommandFailed(f"nix path-info said nothing about {lacking[0]}")
        return found

    def _signed(self, found: dict[str, wire.PathInfo]) -> dict[str, wire.PathInfo]:
        key = self.key
        assert key is not None
        unsigned = sorted(
            path
            for path, info in found.items()
            if not any(signature.key_name == key.name for signature in info.signatures)
        )
        if not unsigned:
            return found
        if self.sign_in_memory:
            from nixwarden.trust.keys import fingerprint  # noqa: PLC0415

            for path in unsigned:
                info = found[path]
                signature = key.sign(
                    fingerprint(info.path, info.nar_hash, info.nar_size, info.references)
                )
                found[path] = _with_signature(info, signature)
            return found
        from nixwarden.nix import commands  # noqa: PLC0415

        assert self.key_file is not None
        commands.sign_paths(unsigned, self.key_file, env=self.env or commands.nix_env())
        return found | self._query(unsigned)


def _wire_info(info: pathinfo.PathInfo) -> wire.PathInfo:
    from nixwarden.trust.keys import Signature  # noqa: PLC0415 - cryptography: only when needed

    signatures = []
    for text in info.signatures:
        with contextlib.suppress(FormatError):  # one the target could not check anyway
            signatures.append(Signature.parse(text))
    unique = tuple(dict.fromkeys(signatures))[: wire.MAX_SIGNATURES]
    return wire.PathInfo(
        path=info.absolute,
        nar_hash=info.nar_hash,
        nar_size=info.nar_size,
        references=tuple(info.reference_paths()),
        deriver=None if info.deriver is None else info.deriver.absolute(info.store_dir),
        ca=info.ca,
        signatures=unique,
    )


def _with_signature(info: wire.PathInfo, signature: Signature) -> wire.PathInfo:
    kept = tuple(s for s in info.signatures if s.key_name != signature.key_name)
    return wire.PathInfo(
        info.path,
        info.nar_hash,
        info.nar_size,
        info.references,
        info.deriver,
        info.ca,
        (*kept, signature)[-wire.MAX_SIGNATURES :],
    )


# --- progress --------------------------------------------------------------------------------


@dataclass
class Progress:
    """Paths and bytes sent, over every target; a line on stderr while it is a terminal."""

    stream: IO[str] | None = None
    paths_total: int = 0
    paths_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    shown: bool = False

    def planned(self, paths: int, size: int) -> None:
        with self.lock:
            self.paths_total += paths
            self.bytes_total += size

    def sent(self, size: int) -> None:
        with self.lock:
            self.bytes_done += size

    def path_done(self) -> None:
        with self.lock:
            self.paths_done += 1

    def line(self) -> str:
        with self.lock:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            return progress_line(
                self.paths_done,
                self.paths_total,
                self.bytes_done,
                self.bytes_total,
                self.bytes_done / elapsed,
            )

    def show(self) -> None:
        if self.stream is not None:
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.stream is not None and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


@contextlib.contextmanager
def ticking(progress: Progress, interval: float = 0.5) -> Iterator[None]:
    """Redraw the progress line every `interval` seconds while the block runs."""
    if progress.stream is None:
        yield
        return
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(interval):
            progress.show()

    thread = threading.Thread(target=tick, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        progress.clear()


# --- one session ------------------------------------------------------------------------------


class Chunker:
    """Gathers a stream's pieces into chunks of exactly `size` bytes (the last one less),
    each handed to `emit` as a view that is valid only during the call."""

    def __init__(self, emit: Callable[[memoryview], None], size: int = wire.MAX_NAR_CHUNK):
        self.emit = emit
        # One reused buffer: a fresh 1 MiB one per chunk costs a page fault per 4 KiB.
        self.buffer = bytearray(size)
        self.filled = 0

    def add(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        size = len(self.buffer)
        while view:
            if not self.filled and len(view) >= size:
                self.emit(view[:size])  # a whole chunk goes out without a copy
                view = view[size:]
                continue
            take = min(len(view), size - self.filled)
            self.buffer[self.filled : self.filled + take] = view[:take]
            self.filled += take
            view = view[take:]
            if self.filled == size:
                self.flush()

    def flush(self) -> None:
        if self.filled:
            self.emit(memoryview(self.buffer)[: self.filled])
            self.filled = 0


class _Gone(Exception):
    """The connection ended: ssh exited, the gate refused, the target closed it."""


class Connection:
    """One ssh process: frames out on its stdin, messages in from its stdout."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.process = process.start_piped(argv, env=env)
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self.out = self.process.stdin.fileno()
        _grow_pipe(self.out)
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._stderr = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr.start()
        self.closed = False

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.strip():
                self.stderr_lines.append(line)

    def send(self, message: wire.Message) -> None:
        self._write([wire.encode(message)])

    def _write(self, parts: list[bytes | bytearray | memoryview]) -> None:
        views = [memoryview(part) for part in parts]
        try:
            while views:
                written = os.writev(self.out, views)
                while views and written >= len(views[0]):
                    written -= len(views[0])
                    views.pop(0)
                if views and written:
                    views[0] = views[0][written:]
        except (BrokenPipeError, ConnectionResetError):
            raise _Gone from None

    def read(self) -> wire.Message:
        assert self.process.stdout is not None
        message = wire.read_message(cast("wire.Readable", self.process.stdout))
        if message is None:
            raise _Gone
        return message

    def send_nar(self, path: str, progress: Progress) -> None:
        """NAR_START, the path's NAR in chunks of at most 1 MiB, NAR_END."""
        from nixwarden.trust import nar  # noqa: PLC0415

        def send_chunk(data: memoryview) -> None:
            self._write([wire.frame_header(wire.MessageType.NAR_DATA, len(data)), data])
            progress.sent(len(data))

        self.send(wire.NarStart(path))
        chunks = Chunker(send_chunk)
        nar.dump(path, chunks.add)
        chunks.flush()
        self.send(wire.NarEnd())

    def gone_reason(self) -> str:
        """Why the connection ended, from ssh's (or the gate's) last words."""
        self.close()
        last = next(
            (line for line in reversed(self.stderr_lines) if line.strip()),
            f"ssh exited with status {self.process.returncode}",
        )
        return escape(last.strip())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=30)
        except Exception:  # still running after 30 s: killed
            self.process.kill()
            self.process.wait()
        self._stderr.join(timeout=5)
        with contextlib.suppress(OSError):
            self.process.stdout.close()  # type: ignore[union-attr]


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe to ssh: fewer, larger writes for the NAR stream (where allowed)."""
    import fcntl  # noqa: PLC0415

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ


@dataclass
class Session:
    """One target's push, from ssh's start to the RESULT."""

    target: Target
    plan: Plan
    store: LocalStore
    progress: Progress
    ssh_argv: Sequence[str]
    env: Mapping[str, str]
    connection: Connection | None = None  # started early (see push_cli), or here
    committed: bool = False

    def run(self) -> Outcome:
        try:
            connection = self.connection or Connection(self.ssh_argv, self.env)
        except CommandFailed as error:
            return self._failed(str(error), Category.TRANSPORT)
        try:
            return self._converse(connection)
        except _Gone:
            reason = connection.gone_reason()
            return self._failed(reason, Category.TRANSPORT)
        except wire.WireError as error:
            return self._failed(f"protocol error: {error}", Category.TRANSPORT)
        except NixwardenError as error:  # the local store (path infos, signing, a NAR)
            return self._failed(f"local: {error}", Category.TRANSPORT)
        finally:
            connection.close()

    def _failed(self, reason: str, category: Category) -> Outcome:
        return Outcome(self.target.text, wire.Status.FAILED, reason, category)

    def _reply(self, connection: Connection, *kinds: type[wire.Message]) -> wire.Message:
        message = connection.read()
        if isinstance(message, wire.Error):
            return message
        return wire.expect(message, *kinds)

    def _converse(self, connection: Connection) -> Outcome:
        plan = self.plan
        name = self.target.text
        connection.send(wire.Hello(None, plan.action, plan.profile, plan.tops))
        welcome = self._reply(connection, wire.Welcome)
        if isinstance(welcome, wire.Error):
            return from_error(name, welcome, committed=False)
        assert isinstance(welcome, wire.Welcome)
        if welcome.store_dir != STORE_DIR:
            return self._failed(
                f"the target's store is {escape(welcome.store_dir)}, ours is {STORE_DIR}",
                Category.TRANSPORT,
            )
        if plan.action is wire.Action.ROLLBACK:
            return self._result(connection)
        connection.send(wire.Want(plan.closure))
        missing = self._reply(connection, wire.Missing)
        if isinstance(missing, wire.Error):
            return from_error(name, missing, committed=False)
        assert isinstance(missing, wire.Missing)
        outside = set(missing.paths) - set(plan.closure)
        if outside:
            raise wire.WireError(f"wire: MISSING names {min(outside)}, which was not offered")
        infos = _references_first(self.store.infos(missing.paths))
        size = sum(info.nar_size for info in infos)
        connection.send(wire.Manifest(tuple(infos), self.store.certificates_for(infos)))
        verdict = self._reply(connection, wire.Verdict)
        if isinstance(verdict, wire.Error):
            return from_error(name, verdict, committed=False)
        assert isinstance(verdict, wire.Verdict)
        if not verdict.accepted:
            return from_verdict(name, verdict)
        if plan.action is wire.Action.PLAN:
            outcome = self._result(connection)
            return (
                outcome if outcome.status is not wire.Status.PLANNED else _planned(outcome, infos)
            )
        self.progress.planned(len(infos), size)
        try:
            for info in infos:
                connection.send_nar(info.path, self.progress)
                self.progress.path_done()
            connection.send(wire.Commit())
        except _Gone:
            # The target stopped reading: its ERROR (a NAR that does not match, …) says why.
            return self._after_abort(connection)
        self.committed = True
        return self._result(connection)

    def _result(self, connection: Connection) -> Outcome:
        result = self._reply(connection, wire.Result)
        if isinstance(result, wire.Error):
            return from_error(self.target.text, result, committed=self.committed)
        assert isinstance(result, wire.Result)
        return from_result(self.target.text, result)

    def _after_abort(self, connection: Connection) -> Outcome:
        with contextlib.suppress(wire.WireError):
            while True:
                message = connection.read()  # raises _Gone at the end of the stream
                if isinstance(message, wire.Error):
                    return from_error(self.target.text, message, committed=False)
        raise _Gone


def _references_first(infos: Sequence[wire.PathInfo]) -> list[wire.PathInfo]:
    """`infos` in the order the NARs go: references first, so the target can import the
    first layers while later NARs are still on their way (a cycle, which the target
    refuses, keeps its paths at the end)."""
    by_path = {info.path: info for info in infos}
    order, stuck = wire.references_first(infos)
    return [by_path[path] for path in (*order, *stuck)]


def _planned(outcome: Outcome, infos: Sequence[wire.PathInfo]) -> Outcome:
    """A plan's RESULT counts what a push would send: the paths the target lacks."""
    return Outcome(
        outcome.target,
        outcome.status,
        outcome.reason,
        outcome.category,
        outcome.generation,
        len(infos),
        sum(info.nar_size for info in infos),
    )


def push_all(
    targets: Sequence[Target],
    make_session: Callable[[Target], Session],
    *,
    jobs: int,
) -> list[Outcome]:
    """Every target's outcome, in the order of `targets`; at most `jobs` at once."""
    if jobs <= 1 or len(targets) <= 1:
        return [make_session(target).run() for target in targets]
    with ThreadPoolExecutor(max_workers=min(jobs, len(targets)), thread_name_prefix="push") as pool:
        return list(pool.map(lambda target: make_session(target).run(), targets))


def stderr_progress() -> Progress:
    """Progress on stderr when it is a terminal, silent otherwise."""
    return Progress(sys.stderr if sys.stderr.isatty() else None)
