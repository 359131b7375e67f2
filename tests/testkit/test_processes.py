"""The local processes' helpers (testkit/processes.py): ports handed out once, and Rasa's command
line with skops.io imported first."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from testkit.processes import RASA_MAIN, ROOT, free_port, rasa_cli

#: Prints the types skops trusts when it loads a model (what Rasa's classifier relies on).
_TRUSTED = """
import json
import skops.io._trusted_types as trusted
print(json.dumps({name: getattr(trusted, name) for name in dir(trusted) if name.isupper()},
                 default=str))
"""


def _trusted_types(first: str) -> dict:
    ran = subprocess.run(
        [sys.executable, "-c", first + _TRUSTED], cwd=ROOT, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    return json.loads(ran.stdout.strip().splitlines()[-1])


def test_skops_imported_before_rasa_trusts_the_same_types() -> None:
    """rasa_cli imports skops.io before Rasa, which saves most of a model load's CPU; skops
    then finds each ufunc's module among fewer modules, and must find the same ones."""
    with ThreadPoolExecutor(2) as pool:
        early, late = pool.map(_trusted_types, ["", "import rasa.core.agent\n"])
    assert early["NUMPY_UFUNC_TYPE_NAMES"] and early["SCIPY_UFUNC_TYPE_NAMES"]
    assert early == late


@pytest.mark.unit
def test_rasa_cli_runs_rasas_own_main_with_its_arguments() -> None:
    command = rasa_cli("test", "--out", "x", seed=42)
    assert command[:3] == [sys.executable, "-c", RASA_MAIN]
    assert command[3:] == ["42", "test", "--out", "x"]
    assert rasa_cli("run")[3:] == ["", "run"]
    assert "from rasa.__main__ import main" in RASA_MAIN
    assert RASA_MAIN.index("import skops.io") < RASA_MAIN.index("from rasa")


@pytest.mark.unit
def test_free_port_never_hands_out_the_same_port_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
