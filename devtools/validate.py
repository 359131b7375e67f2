"""``make validate``: Rasa's ``rasa data validate --fail-on-warnings``, where a warning means a
problem again.

Rasa warns "The utterance 'utter_x' is not used in any story or rule" for every response that
only code sends (actions dispatch ``utter_order_not_found``, the voice connector picks
``utter_welcome_back_sms``): 15 of them here, so the output was noise nobody read, and Rasa 3.6
never fails on that warning even with ``--fail-on-warnings``. Here the code is the source: the
responses that ``actions/``, ``connectors/`` and ``omnichannel/`` name (a string constant
``"utter_…"``, or an f-string starting with one, which covers every response with that prefix)
are used; so are the responses Rasa sends itself (``utter_default``, a form's
``utter_ask_<slot>``) and those designers marked sendable by the notifications API
(``metadata.notification: true``); that warning about them is dropped, as is the one warning
Rasa 3.6 raises on every project whatever its data, and the one about ``nlu_confirm``, an
intent the NLU pipeline sets (the confirmation gate) that no example trains. Every other warning
fails the run, an unused response included, and so does a response the code names that the
domain lacks (the customer would get nothing).
"""

from __future__ import annotations

import ast
import re
import sys
import warnings
from pathlib import Path
from typing import Iterable, List, Set, Tuple

from omnichannel.nlu.confirmation import CONFIRM_INTENT
from testkit.processes import ROOT

CODE_DIRECTORIES = ("actions", "connectors", "omnichannel")
#: Strings in our code that look like response names but are Rasa's field names (the metadata
#: key Rasa puts on a bot event naming the response it came from).
RASA_FIELD_NAMES = frozenset({"utter_action"})
#: Responses Rasa itself sends: the default fallback's.
RASA_RESPONSES = frozenset({"utter_default"})
#: Warnings Rasa 3.6 raises on every project whatever the data (``validate_slot_mappings``
#: always warns that slot auto-fill was removed in 3.0): they say nothing about this one.
RASA_UNCONDITIONAL = ("Slot auto-fill has been removed in 3.0",)
#: Intents no example trains: the NLU pipeline sets them (the confirmation gate's), so Rasa's
#: "listed in the domain file, but is not found in the NLU training data" is not about the data.
PIPELINE_INTENTS = frozenset({CONFIRM_INTENT})
_NOT_TRAINED = re.compile(
    r"The intent '(\w+)' is listed in the domain file, but is not found in the NLU training data\."
)
_RESPONSE_NAME = re.compile(r"utter_[a-z0-9_]+")
_UNUSED = re.compile(r"The utterance '(utter_[a-z0-9_]+)' is not used in any story or rule\.")


def responses_named_in_code(root: Path = ROOT) -> Tuple[Set[str], Set[str]]:
    """Response names the code uses: exact names, and prefixes of names it builds."""
    names: Set[str] = set()
    prefixes: Set[str] = set()
    for directory in CODE_DIRECTORIES:
        for path in sorted((root / directory).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            # The literal parts of an f-string are constants too; they are prefixes, not names.
            parts = {
                id(part)
                for node in ast.walk(tree)
                if isinstance(node, ast.JoinedStr)
                for part in node.values
            }
            for node in ast.walk(tree):
                if id(node) in parts:
                    continue
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if _RESPONSE_NAME.fullmatch(node.value) and node.value not in RASA_FIELD_NAMES:
                        names.add(node.value)
                elif isinstance(node, ast.JoinedStr) and node.values:
                    head = node.values[0]
                    if isinstance(head, ast.Constant) and str(head.value).startswith("utter_"):
                        prefixes.add(str(head.value))
    return names, prefixes


def used_by_code(response: str, names: Set[str], prefixes: Iterable[str]) -> bool:
    return response in names or any(response.startswith(prefix) for prefix in prefixes)


def validate(root: Path = ROOT) -> Tuple[bool, List[str], Set[str]]:
    """Runs Rasa's validation; returns (Rasa found no errors, real warnings, what was dropped:
    response names and the first words of Rasa's unconditional warnings)."""
    import rasa.cli.utils
    from rasa.shared.importers.importer import TrainingDataImporter

    importer = TrainingDataImporter.load_from_config(
        domain_path=str(root / "domain.yml"),
        training_data_paths=[str(root / "data")],
        config_path=str(root / "config.yml"),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rasa.cli.utils.validate_files(True, None, importer)
            passed = True
        except SystemExit as stop:
            passed = stop.code in (0, None)
        domain = importer.get_domain()
    domain_responses = set(domain.responses)
    names, prefixes = responses_named_in_code(root)
    # A form asks for each of its slots with utter_ask_<form>_<slot> or utter_ask_<slot>.
    asked = {
        f"utter_ask_{prefix}{slot}"
        for form, definition in domain.forms.items()
        for slot in definition.get("required_slots") or []
        for prefix in ("", f"{form}_")
    }
    # Responses the shop's backend sends through the notifications API.
    notifications = {
        name
        for name, variations in domain.responses.items()
        if any(
            isinstance(v.get("metadata"), dict) and v["metadata"].get("notification") is True
            for v in variations
        )
    }
    real: List[str] = []
    dropped: Set[str] = set()
    for warning in caught:
        # Rasa's own findings are UserWarnings; libraries' deprecations are not the data's.
        if warning.category is not UserWarning:
            continue
        message = str(warning.message).strip()
        unused = _UNUSED.fullmatch(message)
        if unused and (
            used_by_code(unused.group(1), names, prefixes)
            or unused.group(1) in RASA_RESPONSES | asked | notifications
        ):
            dropped.add(unused.group(1))
        elif (untrained := _NOT_TRAINED.fullmatch(message)) and untrained.group(1) in (
            PIPELINE_INTENTS
        ):
            dropped.add(untrained.group(1))
        elif message.startswith(RASA_UNCONDITIONAL):
            dropped.add(message[:40])
        else:
            real.append(message)
    for missing in sorted(names - domain_responses):
        real.append(f"The code sends the response '{missing}', which domain.yml does not have.")
    return passed, real, dropped


def main() -> int:
    passed, real, dropped = validate()
    for message in real:
        print(f"WARNING: {message}")
    print(
        f"rasa data validate: {'no errors' if passed else 'ERRORS (see above)'}, "
        f"{len(real)} warning(s); not reported as noise: {len(dropped)} (responses sent by "
        "code, by forms or by Rasa itself, and the warning Rasa raises on every project)"
    )
    return 0 if passed and not real else 1


if __name__ == "__main__":
    sys.exit(main())
