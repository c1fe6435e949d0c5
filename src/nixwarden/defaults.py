"""Where nixwarden looks for its configuration. Imports nothing: used on the gate's path."""

import os

DEFAULT_CONFIG_PATH = "/etc/nixwarden/config.toml"
CONFIG_ENV = "NIXWARDEN_CONFIG"


def config_path(explicit: str | None, *, from_environment: bool = True) -> str:
    """The explicit path, else $NIXWARDEN_CONFIG (where allowed), else the default.

    The gate never reads the environment for this: with a permissive sshd AcceptEnv a
    client could otherwise point it at a policy of its own.
    """
    if explicit:
        return explicit
    if from_environment:
        return os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
    return DEFAULT_CONFIG_PATH
