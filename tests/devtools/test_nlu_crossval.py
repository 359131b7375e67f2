"""The cross-validation of the intent classifier (devtools/nlu_crossval.py): seeded stratified
folds, and the classifier's intent counted under the markers that stand on top of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.nlu_crossval import (
    CrossValidation,
    Prediction,
    classifier_intent,
    fold_indices,
    write_results,
)

pytestmark = pytest.mark.unit


def test_folds_split_every_example_once_stratified_and_the_same_every_run() -> None:
    labels = ["greet"] * 10 + ["affirm"] * 5 + ["deny"] * 20
    folds = fold_indices(labels, 5, seed=42)
    assert sorted(i for fold in folds for i in fold) == list(range(len(labels)))
    for fold in folds:
        assert [labels[i] for i in fold].count("greet") == 2
        assert [labels[i] for i in fold].count("affirm") == 1
        assert [labels[i] for i in fold].count("deny") == 4
    assert fold_indices(labels, 5, seed=42) == folds
    assert fold_indices(labels, 5, seed=7) != folds


def _parse(intent: str, confidence: float, *ranking: tuple) -> dict:
    return {
        "intent": {"name": intent, "confidence": confidence},
        "intent_ranking": [{"name": n, "confidence": c} for n, c in ranking],
    }


def test_the_classifiers_intent_is_counted_under_fallback_and_confirmation() -> None:
    plain = _parse("affirm", 0.9, ("affirm", 0.9), ("deny", 0.1))
    assert classifier_intent(plain) == ("affirm", 0.9)
    # Rasa undoes its FallbackClassifier before scoring; the same here, and for the gate.
    fallback = _parse("nlu_fallback", 0.3, ("nlu_fallback", 0.3), ("help", 0.28), ("greet", 0.2))
    assert classifier_intent(fallback) == ("help", 0.28)
    confirm = _parse("nlu_confirm", 0.5, ("nlu_confirm", 0.5), ("goodbye", 0.5), ("thank", 0.3))
    assert classifier_intent(confirm) == ("goodbye", 0.5)
    assert classifier_intent({"intent": None, "intent_ranking": []}) == ("", 0.0)


def test_results_are_written_as_rasa_names_them(tmp_path: Path) -> None:
    predictions = [
        Prediction("hi", "greet", "greet", 0.9),
        Prediction("yo", "greet", "affirm", 0.4),
    ]
    report = {"greet": {"f1-score": 0.67}, "weighted avg": {"f1-score": 0.67}}
    write_results(CrossValidation(predictions, report, 1.0), tmp_path)
    assert json.loads((tmp_path / "intent_report.json").read_text()) == report
    errors = json.loads((tmp_path / "intent_errors.json").read_text())
    wrong = {"name": "affirm", "confidence": 0.4}
    assert errors == [{"text": "yo", "intent": "greet", "intent_prediction": wrong}]
