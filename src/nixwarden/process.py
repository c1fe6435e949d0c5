"""The one module that starts programs.

Every program is started from an argv list with an explicit environment and an
explicit decision on whether failure raises. Nothing here ever uses a shell.
"""

# `posix`, not `os`: `supervise` is on a cached `confine run`'s start-up path, and
# importing `os` costs about as much as the rest of that path (confine.plans).
import posix

TYPE_CHECKING = False  # not typing's: this module is on the gate's start-up path
if TYPE_CHECKING:
    import signal as _signal
    import subprocess
    from collections.abc import Callable, Mapping, Sequence

    Argv = Sequence[str]
else:
    import _signal  # signal's C core, loaded at start-up; `signal` imports enum to wrap it


def _failed(message: str) -> Exception:
    """`CommandFailed(message)`. The errors module is imported when a command fails, not
    with this one: its classes are a tenth of a cached `confine run`'s own work."""
    from nixwarden.errors import CommandFailed  # noqa: PLC0415

    return CommandFailed(message)


def _describe(argv: "Argv") -> str:
    return " ".join(argv[:3]) + (" …" if len(argv) > 3 else "")


def run(
    argv: "Argv",
    *,
    env: "Mapping[str, str] | None",
    check: bool,
    input: bytes | None = None,
    timeout: float | None = None,
    cwd: str | None = None,
    capture: bool = True,
) -> "subprocess.CompletedProcess[bytes]":
    """Run argv to completion. `env=None` inherits ours, which callers must choose on purpose."""
    import subprocess  # noqa: PLC0415 - kept off the gate's start-up path

    try:
        result = subprocess.run(
            list(argv),
            env=None if env is None else dict(env),
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as error:
        raise _failed(f"{argv[0]}: not found") from error
    except subprocess.TimeoutExpired as error:
        raise _failed(f"{_describe(argv)}: timed out after {timeout} s") from error
    if check and result.returncode != 0:
        detail = (result.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        last = detail[-1] if detail else ""
        raise _failed(
            f"{_describe(argv)}: exit status {result.returncode}" + (f": {last}" if last else "")
        )
    return result


def start_piped(argv: "Argv", *, env: "Mapping[str, str]") -> "subprocess.Popen[bytes]":
    """Start argv with pipes on stdin, stdout and stderr; the caller owns the process
    (reads its stderr while it runs, waits for it)."""
    import subprocess  # noqa: PLC0415 - kept off the gate's start-up path

    try:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as error:
        raise _failed(f"{argv[0]}: not found") from error


def exec_replace(argv: "Argv", env: "Mapping[str, str]") -> None:
    """Replace this process with argv (absolute path, no PATH search). Only returns by raising."""
    if not argv or not argv[0].startswith("/"):
        raise _failed(f"refusing to exec a relative program: {argv[:1]!r}")
    posix.execve(argv[0], list(argv), dict(env))


def supervise(
    argv: "Argv",
    *,
    env: "Mapping[str, str]",
    forward: "Sequence[int]",
    targets: "Callable[[int], Sequence[int]]",
    pass_fds: "Sequence[int] | None" = (),
    on_start: "Callable[[int], None] | None" = None,
    watch: "Callable[[int], None] | None" = None,
    every: float = 1.0,
) -> int:
    """Run argv as a child in its own session and wait for it; return its exit status.

    Each signal in `forward` that reaches us is sent on to `targets(child_pid)` (the
    child itself when that names no process), so the child decides what a SIGTERM or a
    Ctrl-C means. The child is in a new session, so a terminal's signals reach only us.
    The result is `subprocess`'s returncode: negative when a signal killed the child.

    `confine run` waits here for every confined program, so this uses `posix.posix_spawn`
    and the C core of `signal`, not `subprocess` and `signal` (with their imports, about
    as long as the rest of a cached `confine run`). The child gets what `subprocess`
    would give it: no descriptors but 0, 1, 2 and `pass_fds`, and the default action
    for SIGPIPE and SIGXFSZ, which Python ignores. With `pass_fds=None` it gets every
    descriptor exec would hand on (those not close-on-exec), as if we had exec'd it.

    With `watch`, it is called with the child's pid every `every` seconds while the child
    runs, and once more when it has ended (the gate's supervisor reads counters there).
    """
    if not argv or not argv[0].startswith("/"):
        raise _failed(f"refusing to run a relative program: {argv[:1]!r}")
    child: list[int] = []
    pending: list[int] = []  # signals that came before the child existed

    def relay(signum: int, _frame: object) -> None:
        if not child:
            pending.append(signum)
            return
        for target in targets(child[0]) or (child[0],):
            try:  # noqa: SIM105 - no contextlib on the start-up path
                posix.kill(target, signum)
            except (ProcessLookupError, PermissionError):
                pass

    previous = {signum: _signal.signal(signum, relay) for signum in forward}
    try:
        if pass_fds is not None:
            _inherit_only(pass_fds)
        try:
            child.append(
                posix.posix_spawn(
                    argv[0],
                    list(argv),
                    dict(env),
                    setsid=True,
                    setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ),
                )
            )
        except FileNotFoundError as error:
            raise _failed(f"{argv[0]}: not found") from error
        if on_start is not None:
            on_start(child[0])
        while pending:
            relay(pending.pop(0), None)
        if watch is not None:
            _watch_until_exit(child[0], watch, every)
        _, status = posix.waitpid(child[0], 0)  # retried after each relayed signal (PEP 475)
        return posix.waitstatus_to_exitcode(status)
    finally:
        for signum, handler in previous.items():
            _signal.signal(signum, handler)


def _watch_until_exit(pid: int, watch: "Callable[[int], None]", every: float) -> None:
    """Call `watch(pid)` every `every` seconds until the child `pid` ends, then once more.
    A pidfd becomes readable when the process ends; select retries after a signal."""
    import select  # noqa: PLC0415 - a C module, only for a watched child

    pidfd = posix.pidfd_open(pid)
    try:
        while True:
            ended, _, _ = select.select([pidfd], [], [], every)
            watch(pid)
            if ended:
                return
    finally:
        posix.close(pidfd)


def _inherit_only(pass_fds: "Sequence[int]") -> None:
    """Let a spawned child inherit descriptors 0, 1, 2 and `pass_fds`, and no others.

    Python opens its own descriptors close-on-exec, but one inherited from whoever
    started us may not be; what `subprocess`'s `close_fds` does in the child, this does
    here, before the spawn, by marking each of them close-on-exec.
    """
    try:
        open_fds = [int(name) for name in posix.listdir("/proc/self/fd")]
    except OSError:  # no /proc: every descriptor there may be
        open_fds = list(range(3, min(posix.sysconf("SC_OPEN_MAX"), 1 << 16)))
    for fd in open_fds:
        if fd > 2:
            try:  # noqa: SIM105 - no contextlib on the start-up path
                posix.set_inheritable(fd, fd in pass_fds)
            except OSError:
                pass  # closed meanwhile (the listing's own descriptor), or never open


def kill_all_of(uid: int, *, rounds: int = 3) -> None:
    """SIGKILL every process of unix user `uid`.

    A child takes the uid (and nothing else) and sends SIGKILL to every process it may
    signal, which is exactly that user's (kill(2) with pid -1 spares the sender): no scan
    of /proc that a process could slip past by forking or renaming itself. A few rounds
    catch what was being forked meanwhile. (Zombies stay until their parent reaps them:
    they run nothing, and no signal removes them.)"""
    import signal  # noqa: PLC0415
    import time  # noqa: PLC0415

    if uid == 0:
        raise ValueError("refusing to kill every process of root")
    pid = posix.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            posix.setgroups([])
            posix.setgid(65534)
            posix.setuid(uid)
            for _round in range(rounds):
                try:
                    posix.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    break
                time.sleep(0.01)
            status = 0
        finally:
            posix._exit(status)
    posix.waitpid(pid, 0)


def converse(
    argv: "Argv",
    *,
    env: "Mapping[str, str]",
    send: bytes,
    enough: "Callable[[bytes], bool]",
    timeout: float,
    limit: int = 1 << 16,
) -> tuple[bytes, bytes]:
    """Start argv, write `send` to it, and read its output until `enough(output)` says so (or
    it ends, `limit` bytes are read, or `timeout` passes); then close its input and stop it.
    For a protocol's first exchange, where closing the input early would end the peer
    before it has answered. Returns (stdout so far, stderr's last bytes)."""
    import contextlib  # noqa: PLC0415 - kept off the gate's start-up path
    import selectors  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import time  # noqa: PLC0415

    try:
        child = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as error:
        raise _failed(f"{argv[0]}: not found") from error
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    output = bytearray()
    errors = bytearray()
    deadline = time.monotonic() + timeout
    try:
        child.stdin.write(send)
        child.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            selector.register(child.stderr, selectors.EVENT_READ)
            open_streams = 2
            while open_streams and not enough(bytes(output)) and len(output) < limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _failed(f"{_describe(argv)}: no answer after {timeout} s")
                for key, _events in selector.select(left):
                    chunk = posix.read(key.fd, 4096)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        open_streams -= 1
                    elif key.fileobj is child.stdout:
                        output += chunk
                    else:
                        errors = (errors + chunk)[-4096:]
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(OSError):
            child.stdin.close()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    return bytes(output), bytes(errors)
