"""The testbed's missing prerequisites become failures in CI and skips elsewhere.

The testbed (the repository's support package) raises `PrerequisiteMissing` and knows
nothing of pytest. Here a missing prerequisite fails the test when
NIXWARDEN_REQUIRE_SYSTEM=1 (as `.ci/run` sets) and skips it on a developer's machine;
anything else the testbed cannot do fails with its one-line reason.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import NoReturn

import pytest

from testbed.errors import PrerequisiteMissing, TestbedError

REQUIRE_SYSTEM = os.environ.get("NIXWARDEN_REQUIRE_SYSTEM") == "1"


def _judge(error: TestbedError) -> NoReturn:
    if isinstance(error, PrerequisiteMissing) and not REQUIRE_SYSTEM:
        pytest.skip(str(error))
    pytest.fail(str(error), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except TestbedError as error:
        _judge(error)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except TestbedError as error:
        _judge(error)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove pytest's leftover temporary trees without recursion.

    Some tests build trees deeper than Python's recursion limit (a 1,500-level directory
    chain for the audit's bounds); pytest removes old temporary directories with the
    recursive shutil.rmtree, which then fails the whole run with RecursionError. `rm -rf`
    removes them iteratively first. (The recursion limit is left alone on purpose: tests
    of our own nesting bounds must still meet it.)
    """
    import getpass  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    base = Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    if not base.is_dir():
        return
    # What pytest failed to delete it renamed garbage-*: dead for sure, unlike a numbered
    # directory, which another pytest run may be using right now.
    stale = list(base.glob("garbage-*"))
    if stale:
        subprocess.run(["rm", "-rf", "--", *map(str, stale)], check=False)
