"""What the testbed raises when the machine cannot host it."""

from __future__ import annotations


class TestbedError(Exception):
    """The machine cannot host the testbed; the message says what to fix."""

    __test__ = False  # not a pytest test class, despite the name


class PrerequisiteMissing(TestbedError):
    """A tool, a privilege or a piece of system state the testbed needs is missing."""

    def __init__(self, what: str) -> None:
        super().__init__(f"system prerequisite missing: {what}")
        self.what = what


class SetupConflict(TestbedError):
    """Something on the machine that the testbed did not create is in its way."""


class Undeclared(TestbedError):
    """The testbed was asked to use something testbed/requirements.py does not declare."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} is not declared in testbed/requirements.py: declare it there, and have "
            "scripts/bootstrap.sh ensure it"
        )
