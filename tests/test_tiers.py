"""The fast tier's rule (tests/tiers.py): a test marked ``unit`` cannot start a server, a process
or a model, and cannot ask for a fixture that does."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional, Tuple

import pytest

from testkit.processes import ROOT
from tests.parallel import SECONDS
from tests.tiers import NotAUnitTest, refuse_server_fixtures


@pytest.mark.unit
def test_a_unit_test_cannot_listen_spawn_or_load_a_model() -> None:
    with socket.socket() as sock, pytest.raises(NotAUnitTest, match="listen"):
        sock.bind(("127.0.0.1", 0))
        sock.listen()
    with pytest.raises(NotAUnitTest, match="start a process"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    from rasa.engine.storage.local_model_storage import LocalModelStorage

    with pytest.raises(NotAUnitTest, match="load a trained model"):
        LocalModelStorage.from_model_archive(None, None)  # type: ignore[arg-type]


def test_other_tests_may() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
    assert subprocess.run([sys.executable, "-c", "pass"], check=True).returncode == 0


@dataclass
class _Item:
    nodeid: str
    fixturenames: Tuple[str, ...]
    marks: Tuple[str, ...] = field(default=("unit",))

    def get_closest_marker(self, name: str) -> Optional[str]:
        return name if name in self.marks else None


@pytest.mark.unit
def test_a_unit_test_asking_for_a_server_fixture_is_refused_at_collection() -> None:
    refuse_server_fixtures([_Item("t.py::pure", ("tmp_path", "monkeypatch"))])
    refuse_server_fixtures([_Item("t.py::slow", ("rasa_stack",), marks=())])
    with pytest.raises(pytest.UsageError, match="t.py::bad is marked unit but uses redis_url"):
        refuse_server_fixtures([_Item("t.py::bad", ("tmp_path", "redis_url"))])


@pytest.mark.unit
def test_the_modules_the_schedule_starts_first_exist() -> None:
    """tests/parallel.py starts the longest modules (and groups of modules) first; a renamed
    one would quietly start last and stretch the run."""
    tests = [path.read_text() for path in (ROOT / "tests").rglob("test_*.py")]
    missing = [
        unit
        for unit in SECONDS
        if not (ROOT / unit).is_file()
        and not any(f'xdist_group("{unit}")' in text for text in tests)
    ]
    assert missing == [], f"rename them in tests/parallel.py SECONDS: {missing}"
