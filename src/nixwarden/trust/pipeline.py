"""Overlap the two halves of moving an archive: walking or parsing it, and hashing or
writing its bytes.

SHA-256 in `hashlib` and `os.write` release the GIL on large buffers, so a second
thread that hashes (or writes) block N while the first reads and parses block N+1
uses a second core for what is otherwise a serial pipeline. Memory stays bounded: at
most `depth` blocks are in flight, and the producer waits when the consumer is behind.

The consumer's errors (a broken pipe, a full disk) reach the producer at its next
hand-over and at `close`; the thread never outlives the `with` block.
"""

from __future__ import annotations

import os

# `threading`, `queue` and `hashlib` are imported by the classes that use them, so that
# `nar dump`, which runs in one thread and hashes nothing, does not wait for them; nor
# is `typing` (nor `re`, which it imports) loaded for annotations.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import queue
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any, Self

    Consume = Callable[[memoryview], object]


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """write(2) all of `data` to `fd`: one call, unless the kernel takes less."""
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


class _Stopping:
    """`with` calls `_stop` when the block ends, whatever happened in it."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        raise NotImplementedError


class _Worker(_Stopping):
    """A daemon thread that runs `_work` on each item put in `todo`, in order.

    Leaving `with` stops the thread after the items already put. Subclasses set
    `error` when an item fails; `_check` raises it in the caller's thread.
    """

    def __init__(self, name: str) -> None:
        import queue  # noqa: PLC0415 - see the top of the module
        import threading  # noqa: PLC0415

        self.error: BaseException | None = None
        self.todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread: threading.Thread | None = threading.Thread(
            target=self._drain, name=name, daemon=True
        )
        self.thread.start()

    def _stop(self) -> None:
        if self.thread is not None:
            self.todo.put(_STOP)
            self.thread.join()
            self.thread = None

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def _drain(self) -> None:
        while (item := self.todo.get()) is not _STOP:
            self._work(item)

    def _work(self, item: Any) -> None:
        raise NotImplementedError


_STOP = object()


class _Slots:
    """A counting semaphore made of a `queue.SimpleQueue` of tokens: its get and put are
    C calls, where `threading.BoundedSemaphore` runs a Condition in Python on every
    acquire and release (thousands of times per archive)."""

    def __init__(self, count: int) -> None:
        import queue  # noqa: PLC0415 - see the top of the module

        self.tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(count):
            self.tokens.put(None)

    def acquire(self) -> None:
        self.tokens.get()  # waits, without the GIL, until a token is free

    def release(self) -> None:
        self.tokens.put(None)


class BlockSink(_Stopping):
    """Bytes gathered into fixed-size blocks, each handed to `consume` when full.

    With `threaded`, `consume` runs in a second thread on one block while this one
    fills the next (`depth` blocks in all, allocated once and reused). `consume` gets a
    view of a block that is reused afterwards: it must not keep it.
    """

    def __init__(self, consume: Consume, *, block: int, threaded: bool, depth: int = 4) -> None:
        self.consume = consume
        self.block_size = block
        self.size = 0  # bytes handed over so far
        self.block = bytearray(block)
        self.view = memoryview(self.block)
        self.used = 0
        self.worker = _BlockWorker(consume, block, depth) if threaded else None

    def _stop(self) -> None:
        if self.worker is not None:
            self.worker._stop()

    def put(self, data: bytes) -> None:
        """Append `data` (shorter than a block: headers, names, small contents)."""
        used = self.used
        end = used + len(data)
        if end > self.block_size:
            self.hand_over()
            used, end = 0, len(data)
        self.view[used:end] = data
        self.used = end

    def space(self) -> memoryview:
        """The free rest of the current block (a full block is handed over first)."""
        if self.used == self.block_size:
            self.hand_over()
        return self.view[self.used :]

    def hand_over(self) -> None:
        used = self.used
        if not used:
            return
        self.size += used
        self.used = 0
        if self.worker is None:
            self.consume(self.view[:used])
            return
        self.block = self.worker.swap(self.block, used)
        self.view = memoryview(self.block)

    def close(self) -> None:
        """Hand over what is left and wait for the consumer; raises its error, if any."""
        self.hand_over()
        self._stop()
        if self.worker is not None:
            self.worker._check()


class _BlockWorker(_Worker):
    """`BlockSink`'s second thread: consumes full blocks, returns them empty."""

    def __init__(self, consume: Consume, block: int, depth: int) -> None:
        import queue  # noqa: PLC0415 - see the top of the module

        self.consume = consume
        self.free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(depth - 1):
            self.free.put(bytearray(block))
        super().__init__("nixwarden-sink")

    def swap(self, full: bytearray, used: int) -> bytearray:
        """Queue `full` (its first `used` bytes); an empty block, once one is free."""
        self._check()
        self.todo.put((full, used))
        return self.free.get()

    def _work(self, item: tuple[bytearray, int]) -> None:
        block, used = item
        if self.error is None:
            try:
                self.consume(memoryview(block)[:used])
            except BaseException as error:  # handed to the producer
                self.error = error
        self.free.put(block)


class BackgroundHasher(_Worker):
    """SHA-256 and size of a stream, computed in a second thread from immutable chunks.

    `update` takes `bytes` (never a view of a buffer that will be reused) and returns
    at once unless `depth` chunks are already waiting. Small updates are gathered so
    the thread sees few, large ones. `result` waits for the thread.
    """

    GATHER = 64 << 10

    def __init__(self, *, depth: int = 8) -> None:
        import hashlib  # noqa: PLC0415 - see the top of the module

        self.hasher = hashlib.sha256()
        self.size = 0
        self.slots = _Slots(depth)
        self.small = bytearray()
        super().__init__("nixwarden-hash")

    def update(self, data: bytes, /) -> None:
        if len(data) < self.GATHER:
            self.small += data
            if len(self.small) < self.GATHER:
                return
            data, self.small = bytes(self.small), bytearray()
        elif self.small:
            self._send(bytes(self.small))
            self.small = bytearray()
        self._send(data)

    def _send(self, data: bytes) -> None:
        self.slots.acquire()
        self.todo.put(data)

    def result(self) -> tuple[bytes, int]:
        """The SHA-256 digest and the number of bytes of everything `update` was given."""
        if self.small:
            self._send(bytes(self.small))
            self.small = bytearray()
        self._stop()
        return self.hasher.digest(), self.size

    def _work(self, item: bytes) -> None:
        self.hasher.update(item)
        self.size += len(item)
        self.slots.release()


# What `FileWriter`'s thread is asked to do with a descriptor.
_WRITE, _CLOSE, _CREATE, _RELEASE, _SIGNAL = range(5)


class FileWriter(_Worker):
    """Writes files in a second thread, in either of two ways.

    The caller opens a file with `open`, hands over its contents in order (`write`,
    immutable `bytes` only) and gives it back (`close`). Or it hands over a whole file
    with `create`: the thread opens it in a directory the caller has `share`d, has
    `fill` write it, and closes it; the caller gives the directory back with
    `release`, and the thread closes it after the files in it.

    At most `max_files` files and `max_directories` shared directories are the
    thread's at once, at most `max_chunks` chunks wait to be written and `max_created`
    files to be created:
    `open`, `share`, `write` and `create` block until the thread has caught up. A
    write error (a full disk, a size limit, a truncated archive) is raised by the next
    call, and by `finish`; every file and directory handed over is closed whatever
    happens, before `finish` or `__exit__` returns.
    """

    def __init__(
        self,
        *,
        max_files: int = 8,
        max_directories: int = 64,
        max_chunks: int = 64,
        max_created: int = 4096,
    ) -> None:
        self.files = _Slots(max_files)
        self.directories = _Slots(max_directories)
        self.chunks = _Slots(max_chunks)
        self.created = _Slots(max_created)
        self.cancelled = False
        super().__init__("nixwarden-write")

    def open(self, name: bytes | str, flags: int, mode: int, *, dir_fd: int) -> int:
        """`os.open`, once fewer than `max_files` files are open."""
        self._check()
        self.files.acquire()
        try:
            return os.open(name, flags, mode, dir_fd=dir_fd)
        except BaseException:
            self.files.release()
            raise

    def write(self, fd: int, data: bytes) -> None:
        self._check()
        self.chunks.acquire()
        self.todo.put((_WRITE, fd, data))

    def close(self, fd: int) -> None:
        self.todo.put((_CLOSE, fd, None))

    def share(self) -> None:
        """Take a slot for a directory the caller will `create` files in."""
        self._check()
        self.directories.acquire()

    def create(
        self,
        name: bytes | str,
        flags: int,
        mode: int,
        fill: Callable[[int], object],
        *,
        dir_fd: int,
    ) -> None:
        """Have the thread open `name` in the shared directory `dir_fd`, call
        `fill(fd)` and close it. An exception `fill` raises is a write error."""
        self._check()
        self.created.acquire()
        self.todo.put((_CREATE, dir_fd, (name, flags, mode, fill)))

    def release(self, dir_fd: int) -> None:
        """Give back a shared directory: the thread closes it after the files in it."""
        self.todo.put((_RELEASE, dir_fd, None))

    def drain(self) -> None:
        """Wait until everything handed over so far is done; raises a write error.

        For a caller about to write to a file or change a directory itself."""
        import queue  # noqa: PLC0415 - see the top of the module

        done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.todo.put((_SIGNAL, -1, done.put))
        done.get()
        self._check()

    def finish(self) -> None:
        self._stop()
        self._check()

    def cancel(self) -> None:
        """Write and create nothing more (still closing everything): the caller failed
        and will remove what was written."""
        self.cancelled = True

    def _work(self, item: tuple[int, int, Any]) -> None:
        operation, fd, data = item
        if operation == _WRITE:
            if self.error is None and not self.cancelled:
                try:
                    write_all(fd, data)
                except OSError as error:
                    self.error = error
            self.chunks.release()
        elif operation == _CREATE:
            if self.error is None and not self.cancelled:
                name, flags, mode, fill = data
                try:
                    created = os.open(name, flags, mode, dir_fd=fd)
                    try:
                        fill(created)
                    finally:
                        os.close(created)
                except BaseException as error:  # handed to the producer
                    self.error = error
            self.created.release()
        elif operation == _SIGNAL:
            data(fd)
        else:  # _CLOSE, _RELEASE
            try:
                os.close(fd)
            except OSError as error:  # e.g. EIO or EDQUOT reported at close
                self.error = self.error or error
            (self.files if operation == _CLOSE else self.directories).release()
