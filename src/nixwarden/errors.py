"""One exception hierarchy for the whole project, and the exit codes it maps to.

The CLI turns any `NixwardenError` into a one-line message on stderr and its
`exit_code`: 1 for a refusal or a finding, 2 for bad usage or bad input.
This module is imported by the gate on every SSH connection: keep it free of imports.
"""

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


class NixwardenError(Exception):
    """Base of every error nixwarden raises on purpose."""

    exit_code = EXIT_USAGE
    prefix = "error"


class UsageError(NixwardenError):
    """The command line itself is wrong."""


class InvalidInput(NixwardenError):
    """An input (file, stream, argument value) is malformed or not acceptable."""


class ConfigError(InvalidInput):
    """The configuration file is malformed; the message names the file and the key."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


class Refused(NixwardenError):
    """A policy said no, or a check found a problem."""

    exit_code = EXIT_REFUSED
    prefix = "denied"


class EnvironmentFailure(NixwardenError):
    """The machine could not do what was asked: a full disk, no file descriptors left,
    a file-size limit, an I/O error. Nothing was wrong with the input; exit 1."""

    exit_code = EXIT_REFUSED


class CommandFailed(NixwardenError):
    """A program nixwarden started failed; the message says which and how."""

    exit_code = EXIT_REFUSED


class FormatError(InvalidInput):
    """Bytes that are not valid in one of the formats nixwarden reads (NAR, narinfo, keys,
    signatures, hashes, export streams, certificates, revocation lists).

    The message is one line saying what was wrong (and where, when it is known); it never
    contains secret material.
    """
