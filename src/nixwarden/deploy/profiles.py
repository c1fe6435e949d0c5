"""Real Nix profiles under the receive service's profiles directory.

`DIR/NAME` is a symlink to `NAME-N-link`, which points at the store path of generation
N; `nix-env --profile DIR/NAME` makes and switches generations, and registers each as
a garbage-collector root through the daemon, so root's `nix-store --gc` keeps them. The
service owns DIR and is its only writer; a lock file per profile (`DIR/.NAME.lock`,
`flock`) serializes everything that changes one profile.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from nixwarden.errors import CommandFailed, InvalidInput
from nixwarden.nix import commands

_GENERATION_LINK = re.compile(r"(.+)-([0-9]{1,9})-link")


def generation_of(name: str, link_target: str) -> int:
    """The generation number of `NAME-N-link` (what `DIR/NAME` points at)."""
    match = _GENERATION_LINK.fullmatch(link_target)
    if match is None or match.group(1) != name:
        raise CommandFailed(f"profile {name}: points at {link_target!r}, not {name}-N-link")
    return int(match.group(2))


@dataclass(frozen=True)
class Profiles:
    directory: str
    env: Mapping[str, str]
    timeout: float = 120

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold the profile's lock (blocking) for the duration."""
        lock = os.path.join(self.directory, f".{name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidInput(f"{lock}: not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def current(self, name: str) -> int | None:
        """The current generation, or None when the profile does not exist yet."""
        try:
            target = os.readlink(self.path(name))
        except FileNotFoundError:
            return None
        except OSError as error:
            raise CommandFailed(f"profile {name}: {error.strerror}") from None
        return generation_of(name, target)

    def store_path(self, name: str, generation: int) -> str:
        """What generation `generation` holds."""
        link = os.path.join(self.directory, f"{name}-{generation}-link")
        try:
            return os.readlink(link)
        except OSError as error:
            raise CommandFailed(
                f"profile {name}: generation {generation}: {error.strerror}"
            ) from None

    def generations(self, name: str) -> tuple[int, ...]:
        if self.current(name) is None:
            return ()
        listed = commands.profile_generations(self.path(name), env=self.env, timeout=self.timeout)
        return tuple(number for number, _ in listed)

    def _nix_env(self, name: str, *arguments: str) -> None:
        commands.nix_env_profile(self.path(name), arguments, env=self.env, timeout=self.timeout)

    def set(self, name: str, store_path: str) -> int:
        """A new generation holding `store_path`, made current; its number."""
        self._nix_env(name, "--set", store_path)
        generation = self.current(name)
        if generation is None:
            raise CommandFailed(f"profile {name}: nix-env --set left no profile")
        return generation

    def switch(self, name: str, generation: int) -> None:
        self._nix_env(name, "--switch-generation", str(generation))

    def previous(self, name: str, generation: int) -> int | None:
        """The newest generation older than `generation` (what `--rollback` would pick)."""
        older = [number for number in self.generations(name) if number < generation]
        return max(older) if older else None

    def undo(self, name: str, made: int, before: int | None) -> None:
        """Put the profile back as it was before generation `made` was created: switch to
        `before` and delete `made`, or remove the profile when it did not exist."""
        if before is not None:
            self.switch(name, before)
            self._nix_env(name, "--delete-generations", str(made))
            return
        # nix-env cannot delete the only (current) generation: the service owns the
        # directory and is its only writer, so it removes the two links itself.
        for link in (self.path(name), os.path.join(self.directory, f"{name}-{made}-link")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
