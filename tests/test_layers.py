"""The layers import downwards only (docs/DESIGN.md): the core never loads Rasa or rasa_sdk, the
actions never load Rasa (the action server stays light), and neither reaches into connectors/."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What the product never imports: the tools, the test kit, the benchmarks and the tests.
TOOLING = ("devtools", "testkit", "bench", "tests")


def _modules(package: str) -> list[str]:
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / package).rglob("*.py")
    )


def _loaded_after_importing(modules: list[str]) -> list[str]:
    """Every module loaded once ``modules`` are imported, in a fresh interpreter."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _of(package: str, loaded: list[str]) -> list[str]:
    return [name for name in loaded if name == package or name.startswith(package + ".")]


def test_the_core_loads_neither_rasa_nor_rasa_sdk() -> None:
    loaded = _loaded_after_importing(_modules("omnichannel"))
    assert _of("rasa", loaded) == []
    assert _of("rasa_sdk", loaded) == []
    assert _of("connectors", loaded) == [] and _of("actions", loaded) == []


def test_every_action_module_loads_without_rasa() -> None:
    modules = _modules("actions")
    assert "actions.llm_fallback" in modules and "actions.send_by_sms" in modules
    loaded = _loaded_after_importing(modules)
    assert _of("rasa", loaded) == [], "an action module pulled in Rasa itself"
    assert _of("connectors", loaded) == []
    assert "rasa_sdk" in loaded


@pytest.mark.unit
@pytest.mark.parametrize("package", ["omnichannel", "actions", "connectors"])
def test_no_module_imports_a_layer_above_it(package: str) -> None:
    above = {
        "omnichannel": ("connectors", "actions", "rasa", "rasa_sdk", *TOOLING),
        "actions": ("connectors", "rasa", *TOOLING),
        "connectors": ("actions", *TOOLING),
    }[package]
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] in above
            ]
    assert offenders == [], json.dumps(offenders, indent=1)


#: Every top-level package of the project, and what each may not import. Product code imports
#: downwards only (docs/DESIGN.md); the tooling sits above it: the test kit serves tests,
#: benchmarks and the designers' tools and imports none of them; the tools never need the
#: benchmarks or the tests; the benchmarks never need the tests.
PROJECT_PACKAGES = ("omnichannel", "connectors", "actions", "testkit", "devtools", "bench", "tests")
TOOLING_NOT_ABOVE = {
    "testkit": ("connectors", "actions", "devtools", "bench", "tests", "rasa", "rasa_sdk"),
    "devtools": ("bench", "tests"),
    "bench": ("tests",),
}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _project_modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PROJECT_PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }


def _imports_of(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import statement of a module, wherever it stands (a
    function's body and an ``if TYPE_CHECKING:`` block count too), relative imports resolved."""
    found = []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names]))
    return found


def _import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (``from package import module`` names
    the module; ``from module import name`` the module)."""
    known = _project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for module, names in _imports_of(name, path, known):
            targets |= {f"{module}.{n}" for n in names if f"{module}.{n}" in known}
            if module in known and not all(f"{module}.{n}" in known for n in names or ["*"]):
                targets.add(module)
        graph[name] = targets - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


@pytest.mark.unit
def test_the_graph_sees_imports_of_every_kind() -> None:
    """The cycle check below is only as good as the graph: it must see a module imported by
    name, from its package, relatively, and under ``if TYPE_CHECKING:``."""
    graph = _import_graph()
    assert "connectors.turns.once" in graph["connectors.twilio_sms.turns"]
    assert "testkit.tls" in graph["testkit.processes"]  # an ``if TYPE_CHECKING:`` import
    assert "connectors.webchat.connection" in graph["connectors.webchat.channel"]
    assert len(graph) > 150
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.unit
def test_no_import_cycles_anywhere() -> None:
    assert _cycles(_import_graph()) == []


@pytest.mark.unit
@pytest.mark.parametrize("package", sorted(TOOLING_NOT_ABOVE))
def test_tooling_imports_only_what_it_serves(package: str) -> None:
    forbidden = TOOLING_NOT_ABOVE[package]
    known = _project_modules()
    offenders = [
        f"{name}: {module}"
        for name, path in known.items()
        if name.split(".")[0] == package
        for module, _ in _imports_of(name, path, known)
        if module.split(".")[0] in forbidden
    ]
    assert offenders == [], json.dumps(offenders, indent=1)


@pytest.mark.unit
def test_each_name_is_imported_from_its_home() -> None:
    """A project name has one import path: the module that defines it, never a module that
    merely imported it (ConfigError once had two)."""
    known = _project_modules()
    homes: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names |= {t.id for t in ast.walk(target) if isinstance(t, ast.Name)}
        homes[name] = names
    offenders = [
        f"{name}: from {module} import {imported}"
        for name, path in known.items()
        for module, names in _imports_of(name, path, known)
        if module in known
        for imported in names
        if imported not in homes[module] and f"{module}.{imported}" not in known
    ]
    assert offenders == [], json.dumps(offenders, indent=1)


CHANNELS = ("vapi", "twilio_sms", "webchat", "viewer", "ops")


def _channel_of(module: str) -> str:
    """The channel package a module belongs to ('' for any other module)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "connectors" and parts[1] in CHANNELS else ""


@pytest.mark.unit
def test_no_channel_package_imports_another() -> None:
    """What two channels share lives below them (connectors/turns/, connectors/event_log/, the
    core), so a channel can change, or go, without touching another."""
    known = _project_modules()
    offenders = [
        f"{name}: {module}"
        for name, path in known.items()
        if _channel_of(name)
        for module, _ in _imports_of(name, path, known)
        if _channel_of(module) not in ("", _channel_of(name))
    ]
    assert _channel_of("connectors.viewer.lookup") == "viewer"
    assert offenders == [], json.dumps(offenders, indent=1)
