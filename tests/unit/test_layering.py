"""The code's layers point one way: a module imports only from layers below its own.

Every `import` in src/nixwarden (function-level ones included, since they are how the
gate keeps its start-up lean) is read with `ast` and checked against LAYERS. demo/ and
bench/ run without pytest and never import tests/. A new top-level module or package
must be placed in LAYERS, on purpose.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "src" / "nixwarden"

# component -> layer. Lower layers never import higher ones; a component imports itself.
LAYERS: dict[str, int] = {
    # foundation: imports nothing of ours, or only errors
    "__init__": 0,
    "errors": 0,
    "display": 0,
    "defaults": 0,
    "process": 1,
    "files": 1,
    "cliutil": 1,
    "sshkeys": 1,
    "sessions": 1,
    # questions to the file system, asked again to tell whether a cached result holds
    "probes": 0,
    # Nix itself: store paths, nix32, the store database, closures, Nix's commands
    "nix": 2,
    # pure models and formats
    "config": 3,
    "sandbox": 3,
    "trust": 3,
    "ca": 4,
    # the parts
    "tenants": 5,
    "confine": 5,
    # below the gate: a deploy principal's session relays through deploy.wire
    "deploy": 5,
    "gate": 6,
    "audit": 7,
    "provision": 8,
    "cli": 9,
    # writes the launcher at install time
    "launcher": 9,
    "__main__": 10,
}


def _component(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "nixwarden":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, package: str) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from nixwarden import config` imports a component
                yield node.lineno, f"{module}.{alias.name}"


def _modules(root: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        name = ".".join(relative.parts)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        yield path, package.removesuffix(".__init__")


def test_every_component_has_a_layer() -> None:
    found = {
        path.stem if path.is_file() else path.name
        for path in SOURCE.iterdir()
        if (path.is_file() and path.suffix == ".py") or (path / "__init__.py").exists()
    }
    assert found <= set(LAYERS), f"place these in LAYERS: {sorted(found - set(LAYERS))}"


def test_imports_point_down() -> None:
    violations = []
    for path, package in _modules(SOURCE):
        relative = path.relative_to(SOURCE)
        own = relative.parts[0].removesuffix(".py")
        seen: set[tuple[int, str]] = set()
        for line, module in _imports(path, package):
            target = _component(module)
            if target is None or target == own or target not in LAYERS or (line, target) in seen:
                continue
            seen.add((line, target))
            if LAYERS[target] >= LAYERS[own]:
                violations.append(
                    f"{relative}:{line}: {own} (layer {LAYERS[own]}) imports {module} "
                    f"(layer {LAYERS[target]})"
                )
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("directory", ["demo", "bench", "testbed"])
def test_demo_bench_and_testbed_never_import_tests_or_pytest(directory: str) -> None:
    offenders = []
    for path in sorted((REPO / directory).rglob("*.py")):
        for line, module in _imports(path, directory):
            top = module.split(".")[0]
            shown = f"{path.relative_to(REPO)}:{line}: imports {top}"
            if top in ("tests", "pytest", "_pytest", "hypothesis") and shown not in offenders:
                offenders.append(shown)
    assert not offenders, "\n".join(offenders)
