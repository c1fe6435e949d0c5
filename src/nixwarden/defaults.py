"""Where nixwarden looks for its configuration. Imports nothing: used on the gate's path."""

import os

DEFAULT_CONFIG_PATH = "/etc/nixwarden/config.toml"
CONFIG_ENV = "NIXWARDEN_CONFIG"


def config_path(explicit: str | None, *, from_environment: bool = True) -> str:
    """The explicit path, else $NIXWARDEN_CONFIG (where allowed), else the default."""
    if explicit:
        return explicit
    if from_environment:
        return os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
    return DEFAULT_CONFIG_PATH


def gate_config_path(explicit: str | None) -> str:
    """The gate's rule, for every form of `nixwarden gate` (serving, --check, --compile):
    the explicit path, else the default, never the environment. With a permissive sshd
    AcceptEnv a client could otherwise point the gate at a policy of its own, and a
    check or a compile that read the environment could describe another policy than the
    one the gate serves."""
    return config_path(explicit, from_environment=False)
