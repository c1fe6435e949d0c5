"""The demo's plumbing: each part's `demo/<part>.py` gets a `Demo` and shows real commands.

A step prints the command, runs it for real, prints what it said and checks the exit
status it should have; a step that does not behave stops the demo with exit 1, so
`make demo` never claims what did not happen.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NIXWARDEN = str(REPO / ".venv" / "bin" / "nixwarden")
BOLD = "\033[1m" if sys.stdout.isatty() else ""
DIM = "\033[2m" if sys.stdout.isatty() else ""
RESET = "\033[0m" if sys.stdout.isatty() else ""


class DemoFailed(Exception):
    """A demo step did not do what the demo says it does."""


@dataclass
class Demo:
    scratch: Path  # a fresh directory, world-traversable, removed afterwards
    env: dict[str, str]  # base environment for commands (PATH, HOME, NIX_CONF_DIR …)

    def section(self, title: str) -> None:
        print(f"\n{BOLD}== {title}{RESET}", flush=True)

    def say(self, text: str) -> None:
        print(text, flush=True)

    def step(
        self,
        what: str,
        argv: Sequence[str],
        *,
        expect_exit: int = 0,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        show_lines: int = 12,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[bytes]:
        shown = [("nixwarden" if arg == NIXWARDEN else arg) for arg in argv]
        print(f"\n# {what}\n$ {shlex.join(shown)}", flush=True)
        result = subprocess.run(
            list(argv),
            env=dict(env if env is not None else self.env),
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        for stream in (result.stdout, result.stderr):
            lines = stream.decode("utf-8", "replace").rstrip("\n").splitlines()
            for line in lines[:show_lines]:
                print(f"  {DIM}{line}{RESET}")
            if len(lines) > show_lines:
                print(f"  {DIM}… ({len(lines) - show_lines} more lines){RESET}")
        print(f"  → exit {result.returncode}", flush=True)
        if result.returncode != expect_exit:
            raise DemoFailed(f"{what}: expected exit {expect_exit}, got {result.returncode}")
        return result

    def nixwarden(
        self, what: str, *args: str, **kwargs: object
    ) -> subprocess.CompletedProcess[bytes]:
        return self.step(what, [NIXWARDEN, *args], **kwargs)  # type: ignore[arg-type]


def default_env(**extra: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env
