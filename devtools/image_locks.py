"""The pinned requirements of each container image: what its code imports, and nothing else.

``requirements.lock`` pins everything the project's machines install, test tools included
(pytest, Playwright, the linters: about 2.9 GB with TensorFlow). An image needs only the
distributions its own code imports and what those require. For each image this module scans
the code the image copies (:data:`IMAGES`) for third-party imports, maps each module to the
distribution that provides it, closes the set over the distributions' requirements (markers
evaluated for this Python), and writes the result with the versions ``requirements.lock``
pins, to ``deploy/<image>.requirements.lock``. The Rasa server image gets Rasa (and with it
TensorFlow); the action server image gets rasa-sdk and the core's clients, not Rasa.

``make lock`` regenerates them with the lock; ``tests/test_deploy_files.py`` fails when a
committed file differs from what the installed environment gives.

    python -m devtools.image_locks          # rewrite deploy/*.requirements.lock
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Set

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"

#: Each image's code (the packages its Dockerfile copies) and the distributions it runs
#: without importing them (the servers' own command-line entry points).
IMAGES: Dict[str, Dict[str, List[str]]] = {
    "rasa": {"code": ["omnichannel", "connectors"], "runs": ["rasa"]},
    "actions": {"code": ["omnichannel", "actions"], "runs": ["rasa-sdk"]},
}


#: Left out of every lock (``pip freeze`` leaves them out of requirements.lock): the Python
#: image ships them, and the Dockerfiles pin pip itself.
INSTALLER_TOOLS = frozenset({"pip", "setuptools", "wheel"})


def lock_path(image: str) -> Path:
    return DEPLOY / f"{image}.requirements.lock"


def imported_modules(packages: Iterable[str], root: Path = ROOT) -> Set[str]:
    """Top-level names imported anywhere in ``packages`` (absolute imports only)."""
    names: Set[str] = set()
    for package in packages:
        for path in (root / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def module_providers() -> Dict[str, Set[str]]:
    """Top-level module name → the installed distributions providing it. (Python 3.10's
    ``packages_distributions`` reads only ``top_level.txt``, which newer wheels omit; their
    file lists are read here as well.)"""
    providers: Dict[str, Set[str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        tops = set((dist.read_text("top_level.txt") or "").split())
        for file in dist.files or []:
            top = file.parts[0]
            if top.endswith((".dist-info", ".data")) or top in ("..", "__pycache__"):
                continue
            if len(file.parts) > 1 or file.suffix in (".py", ".so"):
                tops.add(top.split(".")[0])
        for top in tops:
            providers.setdefault(top, set()).add(name)
    return providers


def third_party_distributions(modules: Iterable[str], own: Iterable[str]) -> Set[str]:
    """The distributions providing ``modules``, leaving out the standard library and ``own``."""
    providers = module_providers()
    skipped = set(sys.stdlib_module_names) | set(own) | {"__future__"}
    found: Set[str] = set()
    for module in modules:
        if module in skipped:
            continue
        if module not in providers:
            raise LookupError(f"no installed distribution provides the module {module!r}")
        found.update(canonicalize_name(name) for name in providers[module])
    return found


def closure(distributions: Iterable[str]) -> Set[str]:
    """The distributions and everything they require here (extras not taken)."""
    environment = {"extra": ""}
    pending = [canonicalize_name(name) for name in distributions]
    seen: Set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                pending.append(canonicalize_name(requirement.name))
    return seen


def pinned_lines(lock: Path = ROOT / "requirements.lock") -> Dict[str, str]:
    """requirements.lock's ``name==version`` lines, by canonical name."""
    lines: Dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            lines[canonicalize_name(line.split("==")[0])] = line
    return lines


def image_lock(image: str) -> str:
    """The text of ``deploy/<image>.requirements.lock``."""
    spec = IMAGES[image]
    own = [path.name for path in ROOT.iterdir() if (path / "__init__.py").exists()]
    wanted = third_party_distributions(imported_modules(spec["code"]), own) | set(spec["runs"])
    pins = pinned_lines()
    needed = closure(wanted) - INSTALLER_TOOLS
    missing = sorted(needed - pins.keys())
    if missing:
        raise LookupError(f"{image}: not pinned in requirements.lock: {', '.join(missing)}")
    body = sorted((pins[name] for name in needed), key=str.lower)
    header = (
        f"# The {image} image's requirements: {', '.join(spec['code'])} import these (and they "
        "require the rest).\n# Generated from requirements.lock by `python -m "
        "devtools.image_locks` (`make lock` runs it). Do not edit by hand.\n"
    )
    return header + "\n".join(body) + "\n"


def main() -> int:
    for image in IMAGES:
        lock_path(image).write_text(image_lock(image), encoding="utf-8")
        print(f"wrote {lock_path(image).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
