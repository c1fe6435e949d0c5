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
