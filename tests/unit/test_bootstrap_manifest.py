"""Each piece of machine state the testbed uses is one scripts/bootstrap.sh ensures.

testbed/requirements.py declares what the testbed, demo, bench and system tests need
(groups, users, directories, the daemon, tools and their Debian packages); the bootstrap
states what it installs and creates (its package list and `# kind: …` manifest lines).
The two must agree both ways, the bootstrap must act on each manifest line, and every
program those modules start by name must be declared. `.ci/run` then runs
`scripts/bootstrap.sh --check`, which tests the manifest against the machine.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from testbed import harness, requirements

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "scripts" / "bootstrap.sh"
SCRIPT = BOOTSTRAP.read_text()
# The same lines `bootstrap.sh --check` reads (its sed expression).
MANIFEST_LINE = re.compile(r"^\s*# (group|user|directory|daemon): (.*)$", re.MULTILINE)
CODE = "\n".join(line for line in SCRIPT.splitlines() if not line.lstrip().startswith("#"))


def manifest(kind: str) -> list[list[str]]:
    return [rest.split() for found, rest in MANIFEST_LINE.findall(SCRIPT) if found == kind]


def stated_packages() -> set[str]:
    match = re.search(r"^apt_packages=\(([^)]*)\)", SCRIPT, re.MULTILINE)
    assert match, "scripts/bootstrap.sh has no apt_packages=(…) list"
    return set(match.group(1).split())


def stated_groups() -> set[str]:
    return {words[0] for words in manifest("group")}


def stated_users() -> set[str]:
    users: set[str] = set()
    for words in manifest("user"):
        if len(words) >= 3 and words[1] == "…":  # a range: nixbld1 … nixbld10
            first = re.fullmatch(r"(.*\D)(\d+)", words[0])
            assert first and words[2].startswith(first.group(1)), f"bad user range {words}"
            prefix, last = first.group(1), int(words[2].removeprefix(first.group(1)))
            users |= {f"{prefix}{n}" for n in range(int(first.group(2)), last + 1)}
        else:
            users.add(words[0])
    return users


def stated_directories() -> dict[str, tuple[int, str | None]]:
    directories = {}
    for words in manifest("directory"):
        owner = words[2] if len(words) > 2 and re.fullmatch(r"[\w-]+:[\w-]+", words[2]) else None
        directories[words[0]] = (int(words[1], 8), owner)
    return directories


def stated_daemons() -> set[str]:
    return {words[0] for words in manifest("daemon")}


def test_the_manifest_is_not_empty() -> None:
    assert stated_groups() and stated_users() and stated_directories() and stated_daemons()


@pytest.mark.parametrize("group", sorted(requirements.GROUPS))
def test_each_group_the_testbed_uses_is_ensured(group: str) -> None:
    assert group in stated_groups(), (
        f"group {group} ({requirements.GROUPS[group]}) is used by the testbed but "
        f"scripts/bootstrap.sh does not state it (`# group: {group}`)"
    )
    assert re.search(rf"(?<![\w-]){re.escape(group)}(?![\w-])", CODE), (
        f"scripts/bootstrap.sh states group {group} but never creates it"
    )


def test_the_bootstrap_states_no_group_the_testbed_does_not_declare() -> None:
    extra = stated_groups() - set(requirements.GROUPS)
    assert not extra, f"scripts/bootstrap.sh states groups testbed/requirements.py lacks: {extra}"


def test_the_build_users_are_ensured() -> None:
    stated = stated_users()
    missing = set(requirements.USERS) - stated
    assert not missing, f"users {sorted(missing)} are not stated in scripts/bootstrap.sh"
    extra = stated - set(requirements.USERS)
    assert not extra, f"scripts/bootstrap.sh states users testbed/requirements.py lacks: {extra}"
    assert requirements.BUILD_USERS_GROUP in CODE


@pytest.mark.parametrize("path", sorted(requirements.DIRECTORIES))
def test_each_directory_the_testbed_assumes_is_ensured(path: str) -> None:
    wanted = requirements.DIRECTORIES[path]
    stated = stated_directories()
    assert path in stated, (
        f"directory {path} ({wanted.why}) is assumed by the testbed but scripts/bootstrap.sh "
        f"does not state it (`# directory: {path} {wanted.mode:04o}`)"
    )
    assert stated[path] == (wanted.mode, wanted.owner), (
        f"directory {path}: the testbed needs {wanted.mode:04o} {wanted.owner}, "
        f"scripts/bootstrap.sh states {stated[path][0]:04o} {stated[path][1]}"
    )
    assert path in CODE, f"scripts/bootstrap.sh states directory {path} but never creates it"
    assert not wanted.mode & 0o002, f"directory {path} would be world-writable"


def test_the_bootstrap_states_no_directory_the_testbed_does_not_declare() -> None:
    extra = set(stated_directories()) - set(requirements.DIRECTORIES)
    assert not extra, f"scripts/bootstrap.sh states directories requirements.py lacks: {extra}"


def test_the_daemons_are_the_ones_the_testbed_runs() -> None:
    assert stated_daemons() == set(requirements.DAEMONS)
    for daemon in requirements.DAEMONS:
        assert daemon in requirements.TOOLS, f"daemon {daemon} has no package in TOOLS"


@pytest.mark.parametrize("tool", sorted(requirements.TOOLS))
def test_each_tool_comes_from_a_package_the_bootstrap_installs(tool: str) -> None:
    package = requirements.TOOLS[tool]
    assert package in stated_packages(), (
        f"tool {tool} ships in Debian package {package}, which scripts/bootstrap.sh does "
        "not install (add it to apt_packages)"
    )


def test_the_bootstrap_installs_no_package_the_testbed_does_not_declare() -> None:
    extra = stated_packages() - requirements.packages()
    assert not extra, f"scripts/bootstrap.sh installs packages requirements.py lacks: {extra}"
    missing = requirements.packages() - stated_packages()
    assert not missing, f"scripts/bootstrap.sh does not install {sorted(missing)}"


def test_the_harness_checks_only_declared_tools() -> None:
    undeclared = set(harness.TOOLS) - set(requirements.TOOLS)
    assert not undeclared, f"harness.TOOLS names undeclared tools: {undeclared}"


# Calls that start a program: the argv is their first argument (run, Popen, argv …) or,
# for the demo's `step(what, argv)`, their second; and lists assigned to `…argv`.
ARGV_FIRST = {"run", "Popen", "check_output", "check_call", "call", "argv"}
ARGV_SECOND = {"step"}


def program_named(argv: ast.expr) -> str | None:
    """The program an argv list (or a lone first argument) starts, if it is a literal."""
    first = argv.elts[0] if isinstance(argv, ast.List) and argv.elts else argv
    # An option (`["-q", "-k", …]` handed to a helper that adds the program) names none.
    if (
        isinstance(first, ast.Constant)
        and isinstance(first.value, str)
        and not first.value.startswith("-")
    ):
        return first.value.rsplit("/", 1)[-1]
    return None


def started_programs(source: str) -> set[str]:
    found: list[str | None] = []
    for node in ast.walk(ast.parse(source)):
        match node:
            case ast.Assign(targets=targets, value=ast.List() as argv) if any(
                isinstance(target, ast.Name) and target.id.endswith("argv") for target in targets
            ):
                found.append(program_named(argv))  # argv = ["useradd", …], called later
            case ast.Call(func=ast.Attribute(attr=name) | ast.Name(id=name), args=args):
                index = 0 if name in ARGV_FIRST else 1 if name in ARGV_SECOND else None
                if index is not None and len(args) > index:
                    found.append(program_named(args[index]))
    return {program for program in found if program is not None}


@pytest.mark.parametrize(
    "package", ["testbed", "demo", "bench", "tests/system", "src/nixwarden/provision"]
)
def test_every_program_started_by_name_is_declared(package: str) -> None:
    undeclared = {
        f"{program} ({path.relative_to(REPO)})"
        for path in sorted((REPO / package).rglob("*.py"))
        for program in started_programs(path.read_text())
        if program not in requirements.TOOLS
    }
    assert not undeclared, (
        f"programs not declared in testbed/requirements.py TOOLS: {sorted(undeclared)}"
    )


def test_the_scan_sees_programs() -> None:
    # Guards the scan above against silently finding nothing.
    assert {"useradd", "ssh-keygen", "pkill"} <= started_programs(
        (REPO / "testbed" / "harness.py").read_text()
    )
    assert {"cat", "nix-store"} <= started_programs((REPO / "demo" / "tenants.py").read_text())
    provision = REPO / "src" / "nixwarden" / "provision"
    assert {"useradd", "sshd", "systemd-tmpfiles"} <= started_programs(
        (provision / "execute.py").read_text()
    )
