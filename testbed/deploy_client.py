"""The pushing side for the deploy tests: closures built in a client store of its own,
signed by certified keys, and a wire-protocol client that talks to a receive service's
socket directly as a given unix user (what arbitrary code run as the SSH user can do,
and what the gate's relay does), and can misbehave on purpose: tamper with a NAR, cut
the stream, leave a path out, claim another principal.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from nixwarden.deploy import wire
from nixwarden.nix.storepath import StorePath
from nixwarden.trust import nar
from nixwarden.trust.keys import Signature
from nixwarden.trust.pathinfo import PathInfo
from testbed import harness
from testbed.deploy_setup import CertifiedKey
from testbed.gate_setup import ClientStore

# Not left to the shared client nix.conf, which other runs of the harness rewrite.
NIX_COMMAND = ("--extra-experimental-features", "nix-command")

# app -> lib -> data: a closure of three, built by the client's own Nix in its own /nix.
# With `blob`, data is that (large) added file instead of a small text.
EXPRESSION = r"""
{ tag, blob ? null }:
let
  mk = name: script: derivation {
    name = "${name}-${tag}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
  data = if blob == null
    then builtins.toFile "nwt-ddata-${tag}" "data ${tag}\n"
    else builtins.storePath blob;
  lib = mk "nwt-dlib" "echo 'lib ${tag} ${data}' > $out";
  app = mk "nwt-dapp" "/bin/mkdir $out && echo '${lib}' > $out/lib && echo app-${tag} > $out/name";
  plain = mk "nwt-dplain" "echo plain-${tag} > $out";
in { inherit lib app plain; }
"""


@dataclass(frozen=True)
class ClientClosure:
    """A closure in the client store, as `nix path-info --json --sigs -r` reports it."""

    client: ClientStore
    top: str
    infos: tuple[PathInfo, ...]

    @property
    def paths(self) -> list[str]:
        return [info.absolute for info in self.infos]

    def info(self, path: str) -> PathInfo:
        return next(info for info in self.infos if info.absolute == path)

    def named(self, part: str) -> str:
        return next(path for path in self.paths if part in path)

    def nar(self, path: str) -> bytes:
        return nar.dump_bytes(self.client.root / "store" / StorePath.parse(path).base_name)


def build(
    client: ClientStore, *, tag: str | None = None, blob_size: int = 0, attribute: str = "app"
) -> str:
    """A fresh app -> lib -> data closure in the client store; its top path. `plain` is
    one input-addressed path without references."""
    tag = tag or secrets.token_hex(4)
    expression = client.root.parent / f"deploy-{tag}.nix"
    expression.write_text(EXPRESSION)
    argv = ["nix-build", "--no-out-link", str(expression), "-A", attribute, "--argstr", "tag", tag]
    if blob_size:
        source = client.root.parent / f"nwt-dblob-{tag}"
        with open(source, "wb") as handle:
            handle.write(os.urandom(blob_size))
        blob = client.run("nix-store", "--add", str(source)).stdout.decode().strip()
        argv += ["--argstr", "blob", blob]
    return client.run(*argv).stdout.decode().strip().splitlines()[-1]


def sign(client: ClientStore, top: str, *keys: CertifiedKey) -> None:
    """Sign the closure of `top` in the client store, as `nix store sign -r` does."""
    for key in keys:
        client.run("nix", *NIX_COMMAND, "store", "sign", "--key-file", str(key.secret), "-r", top)


def closure(client: ClientStore, top: str) -> ClientClosure:
    output = client.run("nix", *NIX_COMMAND, "path-info", "--json", "--sigs", "-r", top).stdout
    infos = tuple(PathInfo.from_json(entry) for entry in json.loads(output))
    return ClientClosure(client, top, infos)


# --- the wire client ----------------------------------------------------------------------


_IDENTITY = threading.Lock()  # effective ids are the whole process's


def connect_as(user: harness.User, path: Path) -> socket.socket:
    """A connection whose SO_PEERCRED is `user` (the kernel records the effective ids at
    connect time; the rest of the conversation needs no privilege)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with _IDENTITY:
        os.setegid(user.gid)
        os.seteuid(user.uid)
        try:
            connection.connect(str(path))
        finally:
            os.seteuid(0)
            os.setegid(0)
    connection.settimeout(120)
    return connection


@dataclass
class Outcome:
    """Everything the service said, and how the conversation ended."""

    received: list[wire.Message] = field(default_factory=list)
    closed_early: bool = False
    stderr: str = ""  # of the ssh command, when there was one

    @property
    def last(self) -> wire.Message | None:
        return self.received[-1] if self.received else None

    @property
    def status(self) -> str:
        """`deployed`, `up-to-date`, `planned`, `failed` (RESULT); `refused` (a refusing
        VERDICT, an ERROR of kind refused, a RESULT refused); `error:KIND`; `closed`."""
        match self.last:
            case wire.Result(status=status):
                return status.value
            case wire.Verdict(accepted=False):
                return "refused"
            case wire.Error(kind=wire.ErrorKind.REFUSED):
                return "refused"
            case wire.Error(kind=kind):
                return f"error:{kind.value}"
        return "closed"

    @property
    def reason(self) -> str:
        match self.last:
            case wire.Result(reason=reason):
                return reason or ""
            case wire.Verdict(failures=failures):
                return "; ".join(f"{f.path}: {f.reason}" for f in failures)
            case wire.Error(reason=reason):
                return reason
        return ""

    @property
    def generation(self) -> int | None:
        match self.last:
            case wire.Result(generation=generation):
                return generation
        return None


class _Conversation:
    """The client's side of one conversation, over a socket or an ssh command's pipes."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        reader: wire.Readable,
        close_write: Callable[[], None],
        close: Callable[[], None],
    ) -> None:
        self.write = write
        self.reader = reader
        self.close_write = close_write
        self.close = close
        self.outcome = Outcome()

    @classmethod
    def over_socket(cls, connection: socket.socket) -> _Conversation:
        reader = connection.makefile("rb")

        def close() -> None:
            reader.close()
            connection.close()

        return cls(connection.sendall, reader, lambda: connection.shutdown(socket.SHUT_WR), close)

    @classmethod
    def over_process(cls, child: subprocess.Popen[bytes]) -> _Conversation:
        assert child.stdin is not None and child.stdout is not None
        stdin, stdout = child.stdin, child.stdout

        def write(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        def close() -> None:
            with contextlib.suppress(OSError):
                stdin.close()
            stdout.close()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

        return cls(write, cast("io.BufferedReader", stdout), stdin.close, close)

    def send(self, message: wire.Message) -> bool:
        """False when the service has closed its side (it said why, or will)."""
        try:
            self.write(wire.encode(message))
        except (BrokenPipeError, ConnectionResetError):
            self.outcome.closed_early = True
            return False
        return True

    def read(self) -> wire.Message | None:
        try:
            message = wire.read_message(self.reader)
        except (ConnectionResetError, wire.WireError):
            return None
        if message is not None:
            self.outcome.received.append(message)
        return message

    def drain(self) -> Outcome:
        """Read what the service still says until it closes."""
        with contextlib.suppress(OSError):
            self.close_write()
        while self.read() is not None:
            pass
        return self.outcome

    def cut(self, data: bytes) -> None:
        """Send `data`, then end the stream in both directions (a cable pulled)."""
        with contextlib.suppress(OSError):
            self.write(data)
        self.outcome.closed_early = True
        self.close()


def _signed_info(info: PathInfo) -> wire.PathInfo:
    return wire.PathInfo(
        path=info.absolute,
        nar_hash=info.nar_hash,
        nar_size=info.nar_size,
        references=tuple(info.reference_paths()),
        deriver=None if info.deriver is None else info.deriver.absolute(),
        ca=info.ca,
        signatures=tuple(Signature.parse(text) for text in info.signatures),
    )


CHUNK = 1 << 20


@dataclass(frozen=True)
class Options:
    """How a push goes, and how it misbehaves (see `push`)."""

    keys: Sequence[CertifiedKey] = ()
    profile: str | None = "web"
    action: wire.Action = wire.Action.PUSH
    want: Sequence[str] | None = None
    leave_out: Sequence[str] = ()
    tamper: Callable[[str, bytes], bytes] | None = None
    cut_after: int | None = None
    after_missing: Callable[[], None] | None = None
    before_nar: Callable[[str], None] | None = None


def push(
    socket_path: Path,
    user: harness.User,
    principal: str,
    pushed: ClientClosure | None,
    *,
    relay_principal: str | None = None,
    ssh_keys: Sequence[str] = ("SHA256:test-session-key",),
    client: str | None = "127.0.0.1 50000 22",
    **options: Any,
) -> Outcome:
    """One push (or plan, or rollback) over the service's socket, as `user`, which first
    sends the RELAY frame the gate would (`relay_principal`, default `principal`).

    `want` replaces the WANT list (default: the whole closure); `leave_out` paths are
    left out of the MANIFEST; `tamper(path, nar)` changes a NAR before it is sent;
    `cut_after` ends the stream inside a frame after that many NAR bytes;
    `after_missing()` runs once MISSING has arrived, `before_nar(path)` before each NAR
    is sent (to line up concurrent pushes). The MANIFEST lists references first, as
    `nixwarden push` does.
    """
    talk = _Conversation.over_socket(connect_as(user, socket_path))
    try:
        relay = wire.Relay(relay_principal or principal, tuple(ssh_keys), client)
        if talk.send(relay):
            _push(talk, principal, pushed, Options(**options))
        return talk.outcome
    finally:
        talk.close()


def push_over_ssh(
    ssh_argv: Sequence[str],
    env: dict[str, str],
    pushed: ClientClosure | None,
    *,
    principal: str | None = None,
    **options: Any,
) -> Outcome:
    """The same conversation through `ssh … nixwarden-receive --protocol 1`: sshd, the
    gate's decision and its relay, which sends the RELAY frame for the session."""
    child = subprocess.Popen(
        [*ssh_argv, "nixwarden-receive", "--protocol", "1"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    talk = _Conversation.over_process(child)
    try:
        _push(talk, principal, pushed, Options(**options))
        return talk.outcome
    finally:
        talk.close()
        if child.stderr is not None:
            talk.outcome.stderr = child.stderr.read().decode(errors="replace")
            child.stderr.close()


def _push(
    talk: _Conversation, principal: str | None, pushed: ClientClosure | None, options: Options
) -> None:
    action = options.action
    tops = () if pushed is None or action is wire.Action.ROLLBACK else (pushed.top,)
    if not talk.send(wire.Hello(principal, action, options.profile, tops)):
        talk.drain()
        return
    if not isinstance(talk.read(), wire.Welcome) or action is wire.Action.ROLLBACK:
        talk.drain()
        return
    assert pushed is not None
    want = options.want if options.want is not None else pushed.paths
    if not talk.send(wire.Want(tuple(want))):
        talk.drain()
        return
    missing = talk.read()
    if not isinstance(missing, wire.Missing):
        talk.drain()
        return
    if options.after_missing is not None:
        options.after_missing()
    announced = {
        path: _signed_info(pushed.info(path))
        for path in missing.paths
        if path not in set(options.leave_out)
    }
    order, stuck = wire.references_first(announced.values())
    infos = [announced[path] for path in (*order, *stuck)]
    certificates = tuple(key.blob() for key in options.keys)
    if not talk.send(wire.Manifest(tuple(infos), certificates)):
        talk.drain()
        return
    verdict = talk.read()
    if not isinstance(verdict, wire.Verdict) or not verdict.accepted or action is wire.Action.PLAN:
        talk.drain()
        return
    sent = 0
    for info in infos:
        data = pushed.nar(info.path)
        if options.tamper is not None:
            data = options.tamper(info.path, data)
        if options.before_nar is not None:
            options.before_nar(info.path)
        if not talk.send(wire.NarStart(info.path)):
            talk.drain()
            return
        for start in range(0, len(data), CHUNK):
            chunk = data[start : start + CHUNK]
            if options.cut_after is not None and sent + len(chunk) >= options.cut_after:
                # The stream ends inside a frame: its header announces the whole chunk.
                frame = wire.encode(wire.NarData(chunk))
                talk.cut(frame[: wire.HEADER.size + max(1, options.cut_after - sent)])
                return
            if not talk.send(wire.NarData(chunk)):
                talk.drain()
                return
            sent += len(chunk)
        if not talk.send(wire.NarEnd()):
            talk.drain()
            return
    talk.send(wire.Commit())
    talk.drain()
