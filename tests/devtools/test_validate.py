"""``make validate`` (devtools/validate.py): Rasa's validation where a warning is a problem:
the noise is dropped at its source, a response nobody sends and one the code sends but the
domain lacks both fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devtools.validate import CODE_DIRECTORIES, responses_named_in_code, validate
from testkit.processes import ROOT

pytestmark = pytest.mark.unit


def project_copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for name in ("domain.yml", "config.yml"):
        shutil.copy(ROOT / name, root / name)
    for directory in ("data", *CODE_DIRECTORIES):
        shutil.copytree(ROOT / directory, root / directory)
    return root


def test_the_project_validates_without_noise() -> None:
    passed, real, dropped = validate()
    assert passed and real == []
    # Sent by actions, by the voice connector (an f-string prefix), by the form, by Rasa.
    assert {
        "utter_order_not_found",
        "utter_welcome_back_sms",
        "utter_ask_order_number",
        "utter_default",
    } <= dropped


def test_code_names_and_prefixes_are_found(tmp_path: Path) -> None:
    names, _ = responses_named_in_code()
    assert {"utter_order_not_found", "utter_welcome_back_sms"} <= names
    assert "utter_action" not in names  # Rasa's metadata key, not a response
    code = tmp_path / "actions"
    code.mkdir()
    (code / "promo.py").write_text(
        'def name(season):\n    return f"utter_promo_{season}"\n\nDOC = "see utter_x docs"\n'
    )
    names, prefixes = responses_named_in_code(tmp_path)
    assert names == set() and prefixes == {"utter_promo_"}


def test_an_unused_response_and_a_missing_one_fail_by_name(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    domain = root / "domain.yml"
    domain.write_text(
        domain.read_text().replace(
            "responses:\n", 'responses:\n  utter_forgotten:\n    - text: "Nobody sends me."\n', 1
        )
    )
    (root / "actions" / "extra.py").write_text('RESPONSE = "utter_nowhere_to_be_found"\n')
    passed, real, _ = validate(root)
    assert passed  # Rasa itself never fails on these two
    assert "The utterance 'utter_forgotten' is not used in any story or rule." in real
    assert (
        "The code sends the response 'utter_nowhere_to_be_found', which domain.yml does not have."
        in real
    )
