"""`make demo`: a throwaway builder on loopback, then each landed part in turn.

Sets up what a real builder has (a nix-daemon, an sshd on a loopback port, unix users
whose keys are pinned by the gate) with the same harness the system tests use, runs
every step for real and prints what happened. A step that does not behave as the
demo says stops it with exit 1. Everything it creates is removed at the end.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from demo.framework import Demo, DemoFailed, default_env
from testbed import harness
from testbed.errors import TestbedError
from testbed.gate_setup import client_store, gated_builder

# Parts that need the gated builder take (demo, builder, client); the others (demo).
BUILDER_PARTS = ("gate", "tenants", "deploy")
OTHER_PARTS = ("provision", "trust", "ca", "confine", "audit")


def main() -> int:
    if os.geteuid() != 0:
        print("demo: run as root (make demo): it creates users and starts sshd", file=sys.stderr)
        return 2
    try:
        harness.require_system()
    except TestbedError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="nixwarden-demo-"))
    scratch.chmod(0o755)
    demo = Demo(scratch=scratch, env=default_env())
    users = harness.Users()
    try:
        demo.section("A throwaway builder on loopback")
        daemon = harness.ensure_nix_daemon()
        demo.say(f"nix-daemon serving {daemon.socket} (settings: {daemon.conf_dir}/nix.conf)")
        try:
            with harness.started_sshd() as sshd, gated_builder(sshd, users) as builder:
                demo.say(f"sshd on 127.0.0.1:{sshd.port}, host key pinned in {sshd.known_hosts}")
                with client_store(sshd) as client:
                    demo.say(f"the client has a store of its own: {client.root} bound at /nix")
                    for name in BUILDER_PARTS:
                        module = _part(name)
                        if module is not None:
                            demo.section(module.TITLE)
                            module.run(demo, builder, client)
        finally:
            users.cleanup()  # before the audit, which would list them
        for name in OTHER_PARTS:
            module = _part(name)
            if module is not None:
                demo.section(module.TITLE)
                module.run(demo)
    except DemoFailed as failure:
        print(f"\ndemo: FAILED: {failure}", file=sys.stderr)
        return 1
    except TestbedError as error:
        print(f"\ndemo: cannot set up the builder: {error}", file=sys.stderr)
        return 2
    finally:
        users.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    print("\ndemo: every step behaved as described.")
    return 0


def _part(name: str) -> Any:
    try:
        return importlib.import_module(f"demo.{name}")
    except ModuleNotFoundError as error:
        if error.name == f"demo.{name}":
            return None  # that part has not landed
        raise


if __name__ == "__main__":
    sys.exit(main())
