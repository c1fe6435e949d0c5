"""Questions to the file system, recorded with their answers so they can be asked again.

A result computed from the file system (which store path a root names, what `/bin/sh`
is, what the store database held) stays right exactly as long as every question it
was computed from gets the same answer. Code that computes such a result asks through
`ask`, which appends `(question, path, answer)` to a `Seen` list; `first_change` asks
every recorded question again and names the first one whose answer differs.

Imports nothing but `posix` (not `os`, whose import alone costs more than checking a
plan; nor `stat`): `confine run` checks a cached plan with it before anything else is
imported. Only `realpath` needs `os.path`, and imports it when asked.
"""

import posix

TYPE_CHECKING = False  # not typing's: this module is on `confine run`'s start-up path
if TYPE_CHECKING:
    from collections.abc import Callable

Answer = object  # a bool, a str, an identity tuple or None: what marshal can store
Seen = list[tuple[str, str, Answer]]  # (question, path, answer), in the order asked

# Coarse file-system clocks (a kernel tick; whole seconds on some file systems) can give
# a change the same time stamp as the state before it. An identity whose modification or
# change time is this close to when a computation started may hide such a change.
SETTLE_NS = 2_000_000_000


# stat.S_ISREG and S_ISLNK without the `stat` module: (mode & S_IFMT) == S_IFREG, …
S_IFMT, S_IFREG, S_IFLNK = 0o170000, 0o100000, 0o120000

# The questions `os.path` answers, asked as `genericpath` asks them, without `os`.


def _lexists(path: str) -> bool:
    try:
        posix.lstat(path)
    except (OSError, ValueError):
        return False
    return True


def _islink(path: str) -> bool:
    try:
        return posix.lstat(path).st_mode & S_IFMT == S_IFLNK
    except (OSError, ValueError):
        return False


def _realpath(path: str) -> str:
    import os.path  # noqa: PLC0415 - only plans that resolved a link ask this

    return os.path.realpath(path)


def _executable(path: str) -> bool:
    try:
        regular = posix.stat(path).st_mode & S_IFMT == S_IFREG
    except (OSError, ValueError):
        return False
    return regular and posix.access(path, posix.X_OK)


def identity(path: str) -> tuple[int, ...] | None:
    """What `path` (symlinks followed) is, in numbers that change when the file does:
    device, inode, type and mode, size, modification and change times; None if absent."""
    try:
        info = posix.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (
        info.st_dev,
        info.st_ino,
        info.st_mode,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
    )


def database(path: str) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """An SQLite database's state: the identity of the file and of its write-ahead log.

    Every committed write changes one of the two (Nix keeps its database in WAL mode,
    where commits append to `-wal` and checkpoints copy into the file). An empty log
    holds nothing, so it counts as no log: readers create and remove one as they come.
    """
    wal = identity(path + "-wal")
    if wal is not None and wal[3] == 0:
        wal = None
    return identity(path), wal


QUESTIONS: "dict[str, Callable[[str], Answer]]" = {
    "lexists": _lexists,
    "islink": _islink,
    "readlink": posix.readlink,
    "realpath": _realpath,
    "executable": _executable,
    "identity": identity,
    "database": database,
}


def ask(seen: Seen | None, question: str, path: str) -> Answer:
    """The answer to `question` about `path`, recorded in `seen` (when given)."""
    answer = QUESTIONS[question](path)
    if seen is not None:
        seen.append((question, path, answer))
    return answer


def first_change(seen: Seen) -> str | None:
    """The first recorded question whose answer is now different ("realpath /bin/sh"),
    or None when every answer is the same. An answer that cannot be had is a change."""
    for question, path, answer in seen:
        try:
            if QUESTIONS[question](path) != answer:
                return f"{question} {path}"
        except (OSError, ValueError, KeyError):
            return f"{question} {path}"
    return None


def _identities(question: str, answer: Answer) -> tuple[object, ...]:
    match question:
        case "identity":
            return (answer,)
        case "database" if isinstance(answer, tuple):
            return answer
    return ()


def unsettled(seen: Seen, started_ns: int, settle_ns: int = SETTLE_NS) -> str | None:
    """The first recorded identity that changed less than `settle_ns` before `started_ns`
    (when the computation that used it began), or None.

    A result may be reused only when this is None: then any later change of those files
    gets a time stamp later than the recorded one, even on a coarse clock, and shows.
    """
    limit = started_ns - settle_ns
    for question, path, answer in seen:
        for found in _identities(question, answer):
            if isinstance(found, tuple) and max(found[4], found[5]) >= limit:
                return f"{question} {path}"
    return None
