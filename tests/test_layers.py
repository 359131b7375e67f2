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


@pytest.mark.parametrize("package", ["omnichannel", "actions", "connectors"])
def test_no_module_imports_a_layer_above_it(package: str) -> None:
    above = {
        "omnichannel": ("connectors", "actions", "rasa", "rasa_sdk", "devtools", "tests"),
        "actions": ("connectors", "rasa", "devtools", "tests"),
        "connectors": ("actions", "devtools", "tests"),
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
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if name.split(".")[0] in above
            ]
    assert offenders == [], json.dumps(offenders, indent=1)
