"""The bubblewrap argv builder is deterministic and refuses impossible sandboxes."""

from __future__ import annotations

import pytest

from nixwarden.errors import InvalidInput
from nixwarden.sandbox.bwrap import ALL_NAMESPACES, Namespace, Sandbox, ro_bind, symlink, tmpfs


def test_argv_shape() -> None:
    sandbox = Sandbox(
        mounts=(ro_bind("/usr"), symlink("usr/bin", "/bin"), tmpfs("/tmp")),
        unshare=ALL_NAMESPACES,
        uid=0,
        gid=0,
        hostname="tenant",
        env={"PATH": "/usr/bin", "HOME": "/homeless"},
        chdir="/",
    )
    argv = sandbox.argv("/usr/bin/bwrap", ["nix-daemon", "--stdio"])
    assert argv[0] == "/usr/bin/bwrap"
    assert argv[-3:] == ["--", "nix-daemon", "--stdio"]
    assert "--unshare-net" in argv and "--unshare-user" in argv
    assert argv[argv.index("--uid") + 1] == "0"
    assert "--clearenv" in argv and "--die-with-parent" in argv and "--new-session" in argv
    assert argv.index("--clearenv") < argv.index("--setenv")
    joined = " ".join(argv)
    assert "--ro-bind /usr /usr --symlink usr/bin /bin --tmpfs /tmp" in joined
    assert sandbox.argv("/usr/bin/bwrap", ["x"]) == sandbox.argv("/usr/bin/bwrap", ["x"])


def test_network_shared_unless_asked() -> None:
    assert "--unshare-net" not in Sandbox().argv("/usr/bin/bwrap", ["true"])


@pytest.mark.parametrize(
    ("sandbox", "message"),
    [
        (Sandbox(unshare=frozenset({Namespace.PID}), uid=0), "user namespace"),
        (Sandbox(unshare=frozenset(), hostname="x"), "UTS"),
        (Sandbox(env={"A=B": "c"}), "environment"),
        (Sandbox(env={"A": "b\0c"}), "environment"),
    ],
)
def test_impossible_sandboxes(sandbox: Sandbox, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        sandbox.argv("/usr/bin/bwrap", ["true"])


def test_no_command() -> None:
    with pytest.raises(InvalidInput):
        Sandbox().argv("/usr/bin/bwrap", [])
