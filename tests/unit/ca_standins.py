"""A stand-in, for the unit tests only, of a module another helper is writing.

`nixwarden.trust.verify` (verification that raises) is an agreed interface (Verified,
SignatureRejected). Until the real module is on this branch, `install` puts a minimal
one in its place so the certificate policy can be tested; once it exists this does
nothing, and the same tests run against the real one. Remove this file then.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass


@dataclass(frozen=True)
class Verified:
    signers: tuple[str, ...]


class SignatureRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def install() -> None:
    if importlib.util.find_spec("nixwarden.trust.verify") is None:
        module = types.ModuleType("nixwarden.trust.verify")
        module.Verified = Verified  # type: ignore[attr-defined]
        module.SignatureRejected = SignatureRejected  # type: ignore[attr-defined]
        sys.modules["nixwarden.trust.verify"] = module
