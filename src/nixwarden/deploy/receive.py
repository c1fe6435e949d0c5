"""The receive service: verified, all-or-nothing pushes into the host store, as a non-root,
untrusted user (`nixwarden receive-daemon`; design in docs/deploy.md).

One thread per connection on an AF_UNIX socket. The peer's uid comes from the kernel
(SO_PEERCRED); the first frame must be RELAY, whose principal must be configured with
`role = "deploy"` and `user` = that uid's name. Then, for a push:

    HELLO → WELCOME · WANT → MISSING · MANIFEST → VERDICT   (nothing staged yet)
    NAR_START, NAR_DATA…, NAR_END per manifest path         (hash and size checked)
    COMMIT → last imports, profile switch, activation → RESULT

Paths are imported while later NARs still arrive (deploy/importer.py): a path goes to
the daemon, in a batch, once it and every path of the push it refers to have arrived
and verified. So the daemon may hold verified paths of a push before its last NAR has
arrived; if the push then fails, they are deleted again.

Everything the peer sends is untrusted. Every refusal or failure is one line on stderr
(escaped) and to the peer, and leaves the store's valid paths and every profile as they
were: the staging directory is removed, paths the push added are deleted again, a
switched profile is switched back and its new generation deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from nixwarden import process
from nixwarden.config import Config, Principal
from nixwarden.deploy import admission, provenance, wire
from nixwarden.deploy.importer import Importer
from nixwarden.deploy.profiles import Profiles
from nixwarden.deploy.store import TargetStore
from nixwarden.display import escape
from nixwarden.errors import CommandFailed, NixwardenError, Refused
from nixwarden.nix.storepath import STORE_DIR, StorePath
from nixwarden.trust import narinfo
from nixwarden.trust.keys import SecretKey

CACHE_INFO = f"StoreDir: {STORE_DIR}\n"
_M = TypeVar("_M", bound=wire.Message)
_LOG_LOCK = threading.Lock()


def log(line: str) -> None:
    """One line on stderr (the journal under systemd); callers escape untrusted parts."""
    with _LOG_LOCK:
        sys.stderr.write(f"nixwarden receive: {line}\n")
        sys.stderr.flush()


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- who is on the other end ------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    user: str

    def __str__(self) -> str:
        return f"uid {self.uid} ({escape(self.user)})"


def peer_of(connection: socket.socket) -> Peer:
    """The connecting process's credentials, from the kernel (not from anything it sent)."""
    ucred = struct.Struct("3i")
    pid, uid, _gid = ucred.unpack(
        connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, ucred.size)
    )
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"#{uid}"  # no such user: matches no principal's `user`
    return Peer(pid, uid, user)


class Stalled(NixwardenError):
    """The peer sent no whole frame within the idle timeout."""


class PeerGone(NixwardenError):
    """The peer closed the connection between frames."""


class Failed(NixwardenError):
    """The push failed on the target (not the pusher's fault); nothing was changed."""


class Channel:
    """Frames over one connection; each frame must arrive whole within `idle_timeout`."""

    def __init__(self, connection: socket.socket, idle_timeout: float) -> None:
        self.connection = connection
        self.idle_timeout = idle_timeout
        self.deadline = 0.0

    def readinto(self, buffer: memoryview, /) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise Stalled(f"no whole frame within {self.idle_timeout:g} s")
        self.connection.settimeout(remaining)
        try:
            return self.connection.recv_into(buffer)
        except TimeoutError:
            raise Stalled(f"no whole frame within {self.idle_timeout:g} s") from None

    def read(self) -> wire.Message:
        self.deadline = time.monotonic() + self.idle_timeout
        message = wire.read_message(self)
        if message is None:
            raise PeerGone("the peer closed the connection")
        return message

    def expect(self, kind: type[_M]) -> _M:
        return wire.expect(self.read(), kind)

    def send(self, message: wire.Message) -> None:
        self.connection.settimeout(self.idle_timeout)
        self.connection.sendall(wire.encode(message))


# --- staging --------------------------------------------------------------------------


class Staging:
    """A private `file://` binary cache for one push (0700, the service's own), removed
    by `remove` whatever happened."""

    def __init__(self, parent: str) -> None:
        self.root = tempfile.mkdtemp(prefix="push-", dir=parent)  # mode 0700
        os.mkdir(os.path.join(self.root, "nar"), 0o700)
        self._write(os.path.join(self.root, "nix-cache-info"), CACHE_INFO.encode())
        self.cache_home = os.path.join(self.root, ".cache")  # Nix's narinfo cache for it

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _write(path: str, data: bytes) -> None:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def receive_nar(self, channel: Channel, info: wire.PathInfo) -> None:
        """NAR_DATA… NAR_END for `info`, written to nar/<hash part>.nar; its size and
        SHA-256 are checked as it arrives (too long: refused at once)."""
        base = StorePath.parse(info.path).hash_part
        fd = os.open(
            os.path.join(self.root, "nar", f"{base}.nar"),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        try:
            digest = hashlib.sha256()
            size = 0
            while True:
                message = channel.read()
                if isinstance(message, wire.NarEnd):
                    break
                if not isinstance(message, wire.NarData):
                    raise wire.WireError(
                        f"wire: expected NAR_DATA or NAR_END, got {message.TYPE.name}"
                    )
                size += len(message.data)
                if size > info.nar_size:
                    raise Refused(
                        f"{info.path}: NAR longer than the {info.nar_size} bytes announced"
                    )
                digest.update(message.data)
                view = memoryview(message.data)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        if size != info.nar_size:
            raise Refused(f"{info.path}: NAR has {size} bytes, {info.nar_size} were announced")
        if digest.digest() != info.nar_hash.digest:
            raise Refused(f"{info.path}: NAR does not match the narHash announced and signed")

    def discard_nars(self, paths: Sequence[str]) -> None:
        """Remove the NARs of imported paths: the staging area holds only what is in flight."""
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.root, "nar", f"{StorePath.parse(path).hash_part}.nar"))

    def write_narinfo(self, info: wire.PathInfo, key: SecretKey) -> None:
        """The narinfo Nix reads, with the client's signatures and the host's countersignature."""
        path = StorePath.parse(info.path)
        made = narinfo.make(
            path,
            url=f"nar/{path.hash_part}.nar",
            compression="none",
            file_hash=info.nar_hash,
            file_size=info.nar_size,
            nar_hash=info.nar_hash,
            nar_size=info.nar_size,
            references=[StorePath.parse(reference) for reference in info.references],
            deriver=None if info.deriver is None else StorePath.parse(info.deriver),
            ca=info.ca,
        )
        signed = replace(made, signatures=info.signatures).signed(key)
        self._write(os.path.join(self.root, f"{path.hash_part}.narinfo"), signed.render())


# --- the service ------------------------------------------------------------------------


@dataclass
class Service:
    config: Config
    key: SecretKey
    store: TargetStore
    env: Mapping[str, str]  # for Nix commands: the service's own, narrowed
    host: str = field(default_factory=socket.gethostname)
    # Held while a push imports a batch, deletes what it added, or makes its import final,
    # and for `in_flight`, the pushes whose import is not final yet (by number).
    import_lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: dict[int, Push] = field(default_factory=dict)
    provenance_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def profiles(self) -> Profiles:
        return Profiles(self.config.receive.profiles_dir, self.env)

    def record(self, entry: provenance.Record) -> provenance.Record | None:
        with self.provenance_lock:
            try:
                return provenance.append(self.config.receive.provenance, entry)
            except Exception as error:  # the push's outcome stands; the log says what was lost
                log(f"provenance: cannot append a record: {escape(str(error))}")
                return None

    def activate(self, profile: str, generation: int, store_path: str) -> None:
        """The profile's activation command, if root configured one; raises CommandFailed."""
        activation = self.config.receive.activation.get(profile)
        if activation is None:
            return
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "NIXWARDEN_PROFILE": profile,
            "NIXWARDEN_PROFILE_PATH": self.profiles.path(profile),
            "NIXWARDEN_GENERATION": str(generation),
            "NIXWARDEN_STORE_PATH": store_path,
        }
        process.run(activation.command, env=env, check=True, timeout=activation.timeout)


@dataclass
class Push:
    """What one session learned, for its log lines, its RESULT and its provenance record."""

    number: int
    peer: Peer
    relay: wire.Relay | None = None
    hello: wire.Hello | None = None
    want: tuple[str, ...] = ()
    needs: frozenset[str] = frozenset()  # the closure: what this push counts on being valid
    accepted: admission.Accepted | None = None
    added: tuple[str, ...] = ()
    generation: int | None = None
    profile_changed: bool = False

    def who(self) -> str:
        principal = escape(self.relay.principal) if self.relay else "?"
        return f"#{self.number} {self.peer} principal {principal}"


class Session:
    def __init__(self, service: Service, connection: socket.socket, number: int) -> None:
        self.service = service
        self.connection = connection
        self.channel = Channel(connection, service.config.receive.idle_timeout)
        self.push = Push(number, peer_of(connection))
        self.staging: Staging | None = None
        self.importer: Importer | None = None
        self.timings: dict[str, float] = {}  # step -> seconds, for the log line
        self.batches = 0

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        """Add the block's wall time to `step` (logged with the outcome: where time went)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.monotonic() - start

    def _timing_text(self) -> str:
        steps = [f"{step} {seconds:.2f} s" for step, seconds in self.timings.items()]
        if self.batches:
            steps.append(f"{self.batches} import batches")
        return ", ".join(steps)

    # The outcome of a session is one of: RESULT sent (deployed, up-to-date, planned,
    # failed after COMMIT), VERDICT refusing, or ERROR. Each path below ends in one.
    def run(self) -> None:
        try:
            self._run()
        except Stalled as error:
            self._end("failed", f"stalled: {error}; dropped", wire.ErrorKind.FAILED)
        except PeerGone as error:
            self._end("failed", f"{error} before the push was complete", None)
        except wire.WireError as error:
            self._end("failed", str(error), wire.ErrorKind.PROTOCOL)
        except admission.Refusal as refusal:
            self._end("refused", str(refusal), None, verdict=refusal.failures)
        except Refused as error:
            self._end("refused", str(error), wire.ErrorKind.REFUSED)
        except (Failed, CommandFailed) as error:
            self._end("failed", str(error), wire.ErrorKind.FAILED)
        except NixwardenError as error:  # the target's files or configuration
            self._end("failed", str(error), wire.ErrorKind.FAILED)
        except OSError as error:  # disk full, the peer reset the connection, …
            self._end("failed", f"{error.strerror or error}", wire.ErrorKind.FAILED)
        except Exception as error:  # a bug: fail closed, one line
            self._end(
                "failed", f"internal error: {type(error).__name__}: {error}", wire.ErrorKind.FAILED
            )
        finally:
            self._clean_up()

    def _end(
        self,
        outcome: str,
        reason: str,
        kind: wire.ErrorKind | None,
        *,
        verdict: Sequence[wire.Failure] = (),
    ) -> None:
        self._settle()  # the target is as it was before the peer or the log hears of it
        log(f"{self.push.who()}: {outcome}: {escape(reason)}")
        with contextlib.suppress(OSError, wire.WireError):
            if verdict:
                self.channel.send(wire.Verdict(False, tuple(verdict)))
            elif kind is not None:
                self.channel.send(wire.Error(_one_line(reason), kind))
        self._record(outcome, reason)

    def _settle(self) -> None:
        """Stop importing; remove the staging directory, and the paths an unfinished
        import added."""
        if self.importer is not None:
            self.importer.stop()  # after the batch under way: it may add paths
            self.importer = None
        if self.staging is not None:
            self.staging.remove()
            self.staging = None
        if self.push.number in self.service.in_flight:  # left only when final
            self._delete_added()

    def _clean_up(self) -> None:
        self._settle()
        with contextlib.suppress(OSError):
            self.connection.close()

    def _delete_added(self) -> None:
        """Delete what this push added, except paths another push under way counts on:
        those become that push's to delete if it fails in turn (it saw them valid, or
        imports them too, so it needs them whatever happens to this one)."""
        service = self.service
        store = service.store
        with service.import_lock:
            added, self.push.added = self.push.added, ()
            service.in_flight.pop(self.push.number, None)
            handed_over: set[str] = set()
            for other in service.in_flight.values():
                theirs = set(other.added)
                shared = [path for path in added if path in other.needs and path not in theirs]
                other.added += tuple(shared)
                handed_over.update(shared)
            # Only what became valid: a failed import may have added a part or nothing.
            never_added = store.invalid(added)
            left = store.delete(
                [
                    path
                    for path in reversed(added)  # referrers before their references
                    if path not in never_added and path not in handed_over
                ]
            )
        if handed_over:
            log(
                f"{self.push.who()}: left {len(handed_over)} added paths to pushes under way "
                "that need them"
            )
        if left:
            log(
                f"{self.push.who()}: could not remove {len(left)} added paths (still alive), "
                f"e.g. {escape(min(left))}"
            )

    def _record(self, outcome: str, reason: str | None) -> None:
        push = self.push
        if push.relay is None or push.hello is None:
            return  # not past the principal check: the log line is the record
        accepted = push.accepted
        paths: list[provenance.PathEntry] = []
        if outcome == "deployed" and accepted is not None:
            paths = [
                provenance.PathEntry(path, accepted.path_signers.get(path, ()))
                for path in accepted.order
            ]
        if outcome in ("deployed", "up-to-date"):
            listed = {entry.path for entry in paths}
            paths += [provenance.PathEntry(top) for top in push.hello.tops if top not in listed]
        self.service.record(
            provenance.Record(
                time=now_utc(),
                principal=push.relay.principal,
                unix_user=push.peer.user,
                action=push.hello.action.value,
                outcome=outcome,
                ssh_keys=push.relay.ssh_keys,
                client=push.relay.client,
                signers=accepted.signers if accepted else (),
                tops=push.hello.tops,
                closure_digest=provenance.closure_digest(push.want) if push.want else "",
                reason=reason,
                profile=push.hello.profile,
                generation=push.generation,
                paths=tuple(paths),
            )
        )

    # --- the protocol ---------------------------------------------------------------

    def _run(self) -> None:
        relay = self.channel.expect(wire.Relay)
        self.push.relay = relay  # claimed: logged as such, recorded only once checked
        principal = self._principal(relay)
        hello = self.channel.expect(wire.Hello)
        if hello.principal is not None and hello.principal != relay.principal:
            raise wire.WireError(
                f"wire: HELLO names principal {hello.principal}, the session is {relay.principal}"
            )
        self.push.hello = hello
        self._check_profile(principal, hello)
        self.channel.send(wire.Welcome(STORE_DIR, self.service.host))
        match hello.action:
            case wire.Action.ROLLBACK:
                self._rollback(hello)
            case wire.Action.PUSH | wire.Action.PLAN:
                self._push(hello)

    def _principal(self, relay: wire.Relay) -> Principal:
        peer = self.push.peer
        principal = self.service.config.principals.get(relay.principal)
        if principal is None or principal.role != "deploy":
            raise Refused(f"principal {relay.principal} is not a deploy principal here")
        if principal.user is None or principal.user != peer.user:
            raise Refused(f"principal {relay.principal} may not deploy as unix user {peer.user}")
        return principal

    @staticmethod
    def _check_profile(principal: Principal, hello: wire.Hello) -> None:
        if hello.profile is not None and hello.profile not in principal.profiles:
            raise Refused(f"principal {principal.name} may not set profile {hello.profile}")
        if (
            hello.profile is not None
            and hello.action is not wire.Action.ROLLBACK
            and len(hello.tops) != 1
        ):
            raise Refused(f"a profile holds one store path; the push names {len(hello.tops)}")

    def _push(self, hello: wire.Hello) -> None:
        service = self.service
        want = self.channel.expect(wire.Want)
        outside = [top for top in hello.tops if top not in set(want.paths)]
        if outside:
            raise wire.WireError(f"wire: WANT does not list the top path {outside[0]}")
        self.push.want = want.paths
        self.push.needs = frozenset(want.paths)
        if hello.action is wire.Action.PUSH:  # a plan needs nothing to stay valid
            with service.import_lock:  # from now on, no other push deletes what this one needs
                service.in_flight[self.push.number] = self.push
        with self._timed("validity"):
            lacking = service.store.invalid(want.paths)
        missing = tuple(path for path in want.paths if path in lacking)
        self.channel.send(wire.Missing(missing))
        manifest = self.channel.expect(wire.Manifest)
        try:
            with self._timed("admission"):
                accepted = admission.admit(
                    manifest,
                    missing=missing,
                    known_valid=frozenset(want.paths) - lacking,
                    invalid=service.store.invalid,
                    settings=service.config.trust,
                    at=int(time.time()),
                )
        except (admission.Refusal, CommandFailed):
            raise
        except NixwardenError as error:  # [trust] files unreadable or malformed: fail closed
            raise Failed(f"the target's [trust] policy cannot be used: {error}") from None
        self.push.accepted = accepted
        self.channel.send(wire.Verdict(True))
        if hello.action is wire.Action.PLAN:
            self._finish(wire.Status.PLANNED)
            return
        if manifest.paths:
            self._receive(manifest.paths)
        self.channel.expect(wire.Commit)
        try:
            if self.importer is not None:
                with self._timed("import after the last NAR"):
                    self.importer.finish()
            self._commit(hello)
        except (Failed, CommandFailed, OSError, Refused) as error:
            # After COMMIT the answer is a RESULT, as for a success.
            reason = str(error) if not isinstance(error, OSError) else f"{error.strerror or error}"
            self._settle()
            outcome = "refused" if isinstance(error, Refused) else "failed"
            log(f"{self.push.who()}: {outcome}: {escape(reason)}")
            status = wire.Status.REFUSED if outcome == "refused" else wire.Status.FAILED
            with contextlib.suppress(OSError, wire.WireError):
                self.channel.send(wire.Result(status, _one_line(reason)))
            self._record(outcome, reason)
            return
        changed = bool(self.push.added) or self.push.profile_changed
        self._finish(wire.Status.DEPLOYED if changed else wire.Status.UP_TO_DATE)

    def _receive(self, infos: Sequence[wire.PathInfo]) -> None:
        """Every NAR of the manifest, in its order, staged and verified as it arrives and
        handed to the importer."""
        self.staging = Staging(self.service.config.receive.staging_dir)
        self.importer = Importer(infos, self._import_batch, name=f"import-{self.push.number}")
        with self._timed("transfer"):
            for info in infos:
                start = self.channel.expect(wire.NarStart)
                if start.path != info.path:
                    raise wire.WireError(f"wire: NAR_START for {start.path}, expected {info.path}")
                self.staging.receive_nar(self.channel, info)
                self.staging.write_narinfo(info, self.service.key)
                self.importer.arrived(info.path)
                self.importer.check()  # a refused batch ends the push now

    def _import_batch(self, batch: Sequence[str]) -> None:
        """Import `batch` (on the importer's thread): those of its paths still invalid
        are this push's to delete again unless it completes."""
        service = self.service
        staging = self.staging
        assert staging is not None
        with self._timed("import batches"):
            with service.import_lock:
                lacking = service.store.invalid(batch)
                ours = tuple(path for path in batch if path in lacking)
                self.push.added += ours
                if ours:
                    env = dict(service.env) | {"XDG_CACHE_HOME": staging.cache_home}
                    service.store.import_from(staging.root, ours, env)
            staging.discard_nars(batch)
        self.batches += 1

    def _finish(self, status: wire.Status) -> None:
        accepted = self.push.accepted
        count = len(accepted.order) if accepted else 0
        size = accepted.nar_bytes if accepted else 0
        if status is wire.Status.UP_TO_DATE:
            count, size = 0, 0
        with self.service.import_lock:  # final: no longer to be removed
            self.push.added = ()
            self.service.in_flight.pop(self.push.number, None)
        self._settle()
        outcome = status.value
        generation = self.push.generation
        detail = f"{count} paths, {size} bytes" + (
            f", generation {generation}" if generation is not None else ""
        )
        with self._timed("provenance"):
            self._record(outcome, None)
        if self.timings:
            detail += f" ({self._timing_text()})"
        log(f"{self.push.who()}: {outcome}: {detail}")
        with contextlib.suppress(OSError, wire.WireError):
            self.channel.send(wire.Result(status, None, generation, count, size))

    # --- commit: import, profile, activation -------------------------------------------

    def _commit(self, hello: wire.Hello) -> None:
        """Every path imported: check the closure is valid, switch the profile, activate."""
        service = self.service
        profile = hello.profile
        with (
            self._timed("profile"),
            service.profiles.locked(profile) if profile else contextlib.nullcontext(),
        ):
            before = service.profiles.current(profile) if profile else None
            with service.import_lock:
                # What this push imported is checked again (nix copy said yes; the store
                # must agree). Nothing imported: the closure was valid at WANT, and no
                # other push deletes what this one needs (`in_flight`), so no query.
                lacking = service.store.invalid(self.push.want) if self.push.added else ()
                if lacking:
                    raise Failed(
                        f"{len(lacking)} paths of the closure are not valid after the import, "
                        f"e.g. {min(lacking)}"
                    )
                if profile:
                    self._switch(profile, hello.tops[0], before)
            if profile and self.push.profile_changed:
                assert self.push.generation is not None
                self._activate(profile, self.push.generation, before, hello.tops[0])

    def _switch(self, profile: str, top: str, before: int | None) -> None:
        profiles = self.service.profiles
        if before is not None and profiles.store_path(profile, before) == top:
            self.push.generation = before
            return
        self.push.generation = profiles.set(profile, top)
        self.push.profile_changed = True

    def _activate(self, profile: str, generation: int, before: int | None, top: str) -> None:
        service = self.service
        try:
            service.activate(profile, generation, top)
        except (CommandFailed, OSError) as error:  # OSError: not executable, …
            service.profiles.undo(profile, generation, before)
            self.push.generation = before
            self.push.profile_changed = False
            restored = "removed" if before is None else f"back at generation {before}"
            if before is not None:
                again = service.profiles.store_path(profile, before)
                try:
                    service.activate(profile, before, again)
                except (CommandFailed, OSError) as second:
                    log(
                        f"{self.push.who()}: re-activating generation {before} failed: "
                        + escape(str(second))
                    )
            raise Failed(f"activation of {profile} failed: {error}; profile {restored}") from None

    def _rollback(self, hello: wire.Hello) -> None:
        profile = hello.profile
        assert profile is not None
        profiles = self.service.profiles
        with profiles.locked(profile):
            current = profiles.current(profile)
            if current is None:
                raise Refused(f"profile {profile} has no generation to roll back from")
            previous = profiles.previous(profile, current)
            if previous is None:
                raise Refused(f"profile {profile} has no generation before {current}")
            profiles.switch(profile, previous)
            target = profiles.store_path(profile, previous)
            self.push.hello = replace(hello, tops=(target,))
            try:
                self.service.activate(profile, previous, target)
            except (CommandFailed, OSError) as error:
                profiles.switch(profile, current)
                with contextlib.suppress(CommandFailed, OSError):
                    self.service.activate(profile, current, profiles.store_path(profile, current))
                raise Failed(
                    f"activation of {profile} generation {previous} failed: {error}; "
                    f"profile back at generation {current}"
                ) from None
        self.push.generation = previous
        self.push.profile_changed = True
        self._finish(wire.Status.DEPLOYED)


def _one_line(text: str) -> str:
    """A reason for the peer: one line, escaped (it may quote a program's stderr)."""
    line = escape(" ".join(text.split()))
    return line[: wire.MAX_STRING - 1] or "failed"


# --- serving ---------------------------------------------------------------------------


class _Stop(Exception):
    pass


def listening_socket(path: str) -> socket.socket:
    """The socket systemd passed (socket activation), else one bound at `path` (0666:
    who may push is decided per connection, from the peer's uid)."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        listener = socket.socket(fileno=3)
        if listener.family != socket.AF_UNIX or listener.type != socket.SOCK_STREAM:
            raise CommandFailed("the socket systemd passed is not an AF_UNIX stream socket")
        return listener
    with contextlib.suppress(FileNotFoundError):
        status = os.lstat(path)
        import stat  # noqa: PLC0415

        if not stat.S_ISSOCK(status.st_mode) or status.st_uid != os.geteuid():
            raise CommandFailed(f"{path}: exists and is not this service's socket")
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o666)  # noqa: S103 - any local user may connect; the uid decides
    listener.listen(64)
    return listener


def serve(service: Service, listener: socket.socket) -> None:
    """Accept connections until SIGTERM or SIGINT, then wait for the sessions under way."""
    import signal  # noqa: PLC0415

    slots = threading.BoundedSemaphore(service.config.receive.max_connections)
    threads: list[threading.Thread] = []

    def stop(_signum: int, _frame: object) -> None:
        raise _Stop

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    number = 0
    try:
        while True:
            connection, _ = listener.accept()
            number += 1
            if not slots.acquire(blocking=False):
                log(
                    f"#{number}: refused: {service.config.receive.max_connections} pushes under way"
                )
                with contextlib.suppress(OSError):
                    connection.settimeout(5)
                    reason = "busy: too many pushes under way; try again later"
                    connection.sendall(wire.encode(wire.Error(reason, wire.ErrorKind.FAILED)))
                connection.close()
                continue

            def handle(connection: socket.socket = connection, number: int = number) -> None:
                try:
                    Session(service, connection, number).run()
                finally:
                    slots.release()

            thread = threading.Thread(target=handle, name=f"push-{number}", daemon=True)
            thread.start()
            threads = [t for t in threads if t.is_alive()] + [thread]
    except _Stop:
        log("stopping: no new pushes; waiting for those under way")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        listener.close()
    for thread in threads:
        thread.join()
