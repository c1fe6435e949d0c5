"""`confine run`'s plans, cached per user, used only while nothing they came from changed.

A plan is the bubblewrap command line that `confine run` worked out for one command
line: resolving the roots, reading the store database, finding `/bin/sh` and its
libraries (`ld.so --list`), importing the modules that do all that. It costs tens of
milliseconds; checking that a stored plan is still right costs a few dozen `stat`s.

**Key.** A plan is stored under its key, which the file repeats in full: the cache
format, nixwarden's version, the effective uid, the working directory, the variables
that choose the command (`PATH`) and the store database (`ENVIRONMENT`), and the
command line after `confine run` itself, word for word.

**Staleness.** With the plan goes every question its computation asked the file
system and the answer (`nix.probes`): each link followed from a root to the store
and each `PATH` entry tried; the state (identity: device, inode, size, times) of
the store database and its write-ahead log; for a host `/bin/sh`, its link chain,
the binary, its loader, the loader's cache and preload files and each library; and
the source file of every nixwarden module that took part. A plan is used only when
every question gets the same answer again; otherwise the plan is computed afresh
(and stored again). Store paths themselves never change while they are valid, so the
database's state covers the closure and the links in it. A closure that came from
`nix-store -qR` (the database unreadable) is not stored: nothing here could tell when
it changes. Nor is a plan whose inputs changed less than two seconds before it was
computed (`probes.unsettled`): time stamps are coarse.

**Trust.** The cache directory is `$XDG_CACHE_HOME/nixwarden/confine` (or
`~/.cache/…`), made with mode 0700. It, and each plan file, is used only when it is
owned by the effective uid and nobody else may read or write it, checked on the open
descriptor (`O_NOFOLLOW`): the trust Python gives its own `.pyc` files, which is what
`marshal` needs. `NIXWARDEN_CONFINE_CACHE=off` turns the cache off.

**Start-up.** `nixwarden confine run` comes here first (`cli.SUBCOMMANDS`), not to the
confine part's parser: on a cache hit this module, `probes`, `launch` and `process`
are all of nixwarden that is imported, and the interpreter's own start-up is most of
what the run costs. So they import nothing but `posix`, `sys`, `marshal` and each
other, and none of them has `from __future__ import annotations`, which imports a
module of its own (their annotations that name typing-only types are strings). Not
`os`: its import alone (`_collections_abc`) costs more than checking a plan;
`environment` reads the variables from `posix` as `os.environ` would.
"""

import marshal
import posix
import sys

from nixwarden import __version__, probes

TYPE_CHECKING = False  # not typing's: this module is on `confine run`'s start-up path
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import TypeGuard

    from nixwarden.probes import Seen

FORMAT = 1
CACHE_ENV = "NIXWARDEN_CONFINE_CACHE"  # "off": plans are neither read nor stored
# What a plan depends on in the environment: PATH finds a bare command name; the others
# choose the store database or make nixwarden ask nix-store instead (nix.closure).
ENVIRONMENT = ("PATH", "NIXWARDEN_STORE_DB", "NIX_REMOTE", "NIX_STATE_DIR", "NIX_STORE_DIR")
MAX_PLAN_BYTES = 64 << 20
MAX_PLANS = 256  # beyond this many, storing a plan removes the least recently stored
_PRIVATE = 0o077  # no permission bits for group or others
_MERSENNE_61 = (1 << 61) - 1


def environment() -> dict[str, str]:
    """The environment as `os.environ` decodes it (file system encoding, surrogateescape)."""
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return {
        name.decode(encoding, errors): value.decode(encoding, errors)
        for name, value in posix.environ.items()
    }


def directory(environ: "Mapping[str, str]") -> str | None:
    """The cache directory, or None when the cache is off or there is nowhere to put it."""
    if environ.get(CACHE_ENV) == "off":
        return None
    base = environ.get("XDG_CACHE_HOME", "")
    if not base.startswith("/"):  # the XDG spec: a relative value is to be ignored
        home = environ.get("HOME", "")
        if not home.startswith("/"):
            return None
        base = _join(home, ".cache")
    return _join(base, "nixwarden/confine")


def _join(directory: str, name: str) -> str:
    """`os.path.join` of a directory and a relative name."""
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


def key(argv: "Sequence[str]", environ: "Mapping[str, str]") -> tuple[object, ...]:
    """Everything a plan is looked up by (raises OSError when there is no working dir)."""
    return (
        FORMAT,
        __version__,
        posix.geteuid(),
        posix.getcwd(),
        tuple(environ.get(name) for name in ENVIRONMENT),
        tuple(argv),
    )


def file_name(wanted: tuple[object, ...]) -> str:
    """Where the plan for `wanted` lives; the file repeats the key, so a collision of
    these 61 bits costs a recomputation, never a wrong plan. (The key's bytes as a
    number modulo the prime 2**61 - 1: one C operation, where `zlib` would cost a
    shared library's loading on every cached run.)"""
    data = repr(wanted).encode("utf-8", "surrogatepass")
    return f"{int.from_bytes(data, 'little') % _MERSENNE_61:016x}.plan"


def _private(info: posix.stat_result) -> bool:
    return info.st_uid == posix.geteuid() and not info.st_mode & _PRIVATE


def _open_directory(path: str) -> tuple[int | None, str]:
    """(a descriptor of the cache directory, "") or (None, why it is not used)."""
    try:
        fd = posix.open(
            path, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC
        )
    except FileNotFoundError:
        return None, f"no cache directory {path} yet"
    except OSError as error:
        return None, f"{path}: {error.strerror}"
    if _private(posix.fstat(fd)):
        return fd, ""
    posix.close(fd)
    return None, f"{path} is not a private directory of this user"


def _read(where: str, name: str) -> tuple[bytes | None, str]:
    directory_fd, why = _open_directory(where)
    if directory_fd is None:
        return None, why
    try:
        fd = posix.open(
            name,
            posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC | posix.O_NONBLOCK,
            dir_fd=directory_fd,
        )
    except OSError:
        return None, "none for this command line"
    finally:
        posix.close(directory_fd)
    try:
        info = posix.fstat(fd)
        if info.st_mode & probes.S_IFMT != probes.S_IFREG or not _private(info):
            return None, f"{name} is not a private file"
        if info.st_size > MAX_PLAN_BYTES:
            return None, f"{name} is too large"
        chunks = []
        remaining = info.st_size + 1  # one more: to see that it did not grow meanwhile
        while remaining > 0 and (chunk := posix.read(fd, remaining)):
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks), ""
    finally:
        posix.close(fd)


def _valid_seen(seen: object) -> "TypeGuard[Seen]":
    return isinstance(seen, list) and all(
        isinstance(item, tuple)
        and len(item) == 3
        and item[0] in probes.QUESTIONS
        and isinstance(item[1], str)
        for item in seen
    )


def load(argv: "Sequence[str]", environ: "Mapping[str, str]") -> tuple[list[str] | None, bool, str]:
    """(the cached bubblewrap argv, whether to print it rather than run it, "") when a
    plan for this command line is stored and still right; else (None, False, why not)."""
    where = directory(environ)
    if where is None:
        return None, False, "the cache is off"
    try:
        wanted = key(argv, environ)
    except OSError as error:
        return None, False, f"no working directory: {error.strerror}"
    data, why = _read(where, file_name(wanted))
    if data is None:
        return None, False, why
    try:
        plan = marshal.loads(data)  # noqa: S302 - a private file of our own, as a .pyc is
    except (EOFError, ValueError, TypeError):
        return None, False, "unreadable"
    if not isinstance(plan, dict) or plan.get("key") != wanted:
        return None, False, "none for this command line"
    seen, bwrap_argv, print_only = plan.get("seen"), plan.get("argv"), plan.get("print")
    if (
        not _valid_seen(seen)
        or not isinstance(bwrap_argv, list)
        or not bwrap_argv
        or not all(isinstance(word, str) for word in bwrap_argv)
        or not isinstance(print_only, bool)
    ):
        return None, False, "unreadable"
    changed = probes.first_change(seen)
    if changed is not None:
        return None, False, f"stale: {changed}"
    return bwrap_argv, print_only, ""


def main(command: str, argv: list[str]) -> int:
    """`nixwarden confine run ARGS…` (argv: `run`, ARGS…): the stored plan for this
    command line when one is still right, else a plan worked out afresh (confine.cli)."""
    import time  # noqa: PLC0415 - built in, loaded at interpreter start-up

    started_ns = time.time_ns()  # before any question to the file system
    arguments = argv[1:]
    bwrap_argv, print_only, why = load(arguments, environment())
    if bwrap_argv is None:
        debug(f"confine run: no cached plan used: {why}")
        from nixwarden.confine import cli  # noqa: PLC0415 - only to work a plan out

        return cli.run_fresh(arguments, started_ns)
    debug("confine run: cached plan used")
    return perform(bwrap_argv, print_only=print_only)


def debug(message: str) -> None:
    if posix.environ.get(b"NIXWARDEN_DEBUG") == b"1":
        print(f"nixwarden: debug: {message}", file=sys.stderr)


def perform(bwrap_argv: list[str], *, print_only: bool) -> int:
    """Print the plan's command line, or run it and end with the program's status."""
    if print_only:
        import shlex  # noqa: PLC0415

        print(shlex.join(bwrap_argv))
        return 0
    from nixwarden.confine import launch  # noqa: PLC0415

    sys.stdout.flush()
    status = launch.execute(bwrap_argv)
    # The program has ended and nothing of ours needs cleaning up: skip the interpreter's
    # teardown (a millisecond or two), as dying of the program's signal does (die_of).
    sys.stdout.flush()
    sys.stderr.flush()
    posix._exit(status)


def _code_files() -> list[str]:
    """The source of every nixwarden module loaded: the code that computed the plan."""
    found = {
        module.__file__
        for name, module in list(sys.modules.items())
        if (name == "nixwarden" or name.startswith("nixwarden.")) and module.__file__
    }
    return sorted(found)


def store(
    argv: "Sequence[str]",
    environ: "Mapping[str, str]",
    bwrap_argv: "Sequence[str]",
    *,
    print_only: bool,
    seen: "Seen",
    started_ns: int,
    settle_ns: int = probes.SETTLE_NS,
) -> str:
    """Store the plan for `argv`; returns "" or why it was not stored.

    `seen` holds what the computation asked the file system, `started_ns` when it began
    (`time.time_ns()`, before the first question).
    """
    where = directory(environ)
    if where is None:
        return "the cache is off"
    seen = list(seen)
    for path in _code_files():
        probes.ask(seen, "identity", path)
    unsettled = probes.unsettled(seen, started_ns, settle_ns)
    if unsettled is not None:
        return f"{unsettled} changed too recently to tell a later change"
    try:
        wanted = key(argv, environ)
        import os  # noqa: PLC0415 - storing a plan follows its (much longer) computation

        os.makedirs(where, mode=0o700, exist_ok=True)
    except OSError as error:
        return f"{where}: {error.strerror}"
    directory_fd, why = _open_directory(where)
    if directory_fd is None:
        return why
    plan = {
        "format": FORMAT,
        "key": wanted,
        "seen": seen,
        "argv": list(bwrap_argv),
        "print": print_only,
    }
    name = file_name(wanted)
    try:
        _write(directory_fd, name, marshal.dumps(plan))
        _prune(directory_fd, keep=name)
    except OSError as error:
        return f"{where}/{name}: {error.strerror}"
    finally:
        posix.close(directory_fd)
    return ""


def _write(directory_fd: int, name: str, data: bytes) -> None:
    """`name` holds `data` (mode 0600), replaced in one rename; readers see old or new."""
    temporary = f".{name}.{posix.getpid()}"
    fd = posix.open(
        temporary,
        posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC,
        0o600,
        dir_fd=directory_fd,
    )
    try:
        view = memoryview(data)
        while view:
            view = view[posix.write(fd, view) :]
        posix.close(fd)
        fd = -1
        posix.replace(temporary, name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
    except BaseException:
        if fd >= 0:
            posix.close(fd)
        try:  # noqa: SIM105 - no contextlib on the start-up path
            posix.unlink(temporary, dir_fd=directory_fd)
        except OSError:
            pass
        raise


def _prune(directory_fd: int, keep: str) -> None:
    names = [name for name in posix.listdir(directory_fd) if name.endswith(".plan")]
    if len(names) <= MAX_PLANS:
        return
    aged = []
    for name in names:
        try:
            aged.append((posix.stat(name, dir_fd=directory_fd).st_mtime_ns, name))
        except OSError:
            continue
    aged.sort()
    for _, name in aged[: len(aged) - MAX_PLANS]:
        if name != keep:
            try:  # noqa: SIM105 - no contextlib on the start-up path
                posix.unlink(name, dir_fd=directory_fd)
            except OSError:
                pass
