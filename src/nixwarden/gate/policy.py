"""The decision: a parsed request, a principal's policy → the argv to exec, or a refusal.

Pure. Deny by default: every branch that does not build an argv raises `PolicyRefused`.
"""

from __future__ import annotations

from nixwarden.errors import Refused
from nixwarden.gate.request import DAEMON, Request, quoted

TYPE_CHECKING = False  # not typing's: this module is on the gate's start-up path
if TYPE_CHECKING:
    from nixwarden.config import GateSettings, Principal


class PolicyRefused(Refused):
    """The request is well-formed but this principal may not make it."""


def decide(request: Request, principal: Principal, gate: GateSettings) -> tuple[str, ...]:
    """The argv of the pinned Nix program to run for this request, or raise `PolicyRefused`.

    The client's own program path is never used: the gate runs the binary pinned in
    its configuration. For a tenant principal the caller wraps this argv in the
    tenant's sandbox, where the pinned path names the same program.
    """
    if request.protocol not in principal.protocols:
        raise PolicyRefused(
            f"protocol {request.protocol} is not allowed "
            f"(allowed: {', '.join(principal.protocols)})"
        )
    if request.write and not principal.write:
        raise PolicyRefused("nix-store --serve --write is not allowed (write = false)")
    if request.store is not None and (
        principal.store != "host" or request.store not in principal.allowed_stores
    ):
        raise PolicyRefused(
            f"--store {quoted(request.store)} refused: the gate chooses the store "
            '(list exact URLs in allowed_stores for a store = "host" principal)'
        )
    if request.program == DAEMON:
        argv: tuple[str, ...] = (gate.nix_daemon, "--stdio")
    else:
        argv = (gate.nix_store, "--serve", *(("--write",) if request.write else ()))
    if request.store is not None:
        argv += ("--store", request.store)
    return argv
