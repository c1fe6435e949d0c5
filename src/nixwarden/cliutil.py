"""Argument parsing shared by the parts' command modules."""

from __future__ import annotations

import argparse
from typing import NoReturn

from nixwarden.errors import UsageError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become `UsageError` (one line, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def parser(command: str, description: str, **kwargs: object) -> Parser:
    return Parser(
        prog=f"nixwarden {command}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,  # type: ignore[arg-type]
    )
