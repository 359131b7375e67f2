"""Cross-validation of the intent classifier, in this process, over the hand-written examples.

Rasa's ``rasa test nlu --cross-validation`` (rasa/nlu/test.py ``cross_validate``) parses every
training example of every fold as well as the test examples (a train-set figure nobody reads
here), draws its plots, and starts a Rasa of its own; it shuffles with numpy's unseeded global
generator. This does the part that gives the figure: the same stratified folds, seeded (the same
data always gives the same folds, so a threshold tests the data, not the dice), each fold's NLU
trained with ``rasa.model_training.train_nlu`` on ``config.yml`` and only the test fold parsed.

What counts as predicted is the classifier's intent, as Rasa's evaluation counts it: Rasa undoes
the FallbackClassifier's ``nlu_fallback`` before scoring (``undo_fallback_prediction``), and the
same is done here for the markers that stand on top of the classifier (``nlu_fallback`` of the
no-known-word fallback, ``nlu_confirm`` of the confirmation gate): the first intent of the ranking
that is not a marker (``omnichannel.nlu.confirmation.understood_intent``). How often a customer is
asked to confirm, or falls back, is the held-out evaluation's business (devtools/nlu_heldout.py).

The report has the shape of Rasa's ``intent_report.json`` (scikit-learn's classification report
per intent, ``accuracy``, ``macro avg``, ``weighted avg``), and ``intent_errors.json`` lists the
test examples predicted wrong, as Rasa's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from omnichannel.nlu.confirmation import understood_intent
from testkit.processes import ROOT


@dataclass(frozen=True)
class Prediction:
    text: str
    intent: str
    predicted: str
    confidence: float


@dataclass(frozen=True)
class CrossValidation:
    predictions: List[Prediction]
    report: Dict[str, Any]
    seconds: float

    @property
    def errors(self) -> List[Prediction]:
        return [p for p in self.predictions if p.predicted != p.intent]


def fold_indices(labels: Sequence[str], folds: int, seed: int) -> List[List[int]]:
    """The test indices of each fold: stratified by intent and shuffled with ``seed``, as Rasa's
    ``generate_folds`` (scikit-learn's StratifiedKFold) but the same every run."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [list(test) for _, test in splitter.split(list(labels), list(labels))]


def cross_validate(
    sources: Sequence[str], folds: int, seed: int, config: Path = ROOT / "config.yml"
) -> CrossValidation:
    """``folds``-fold cross-validation of the intents of the NLU data in ``sources``."""
    from rasa.model_training import train_nlu
    from rasa.shared.importers.importer import TrainingDataImporter
    from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLWriter
    from rasa.shared.nlu.training_data.training_data import TrainingData
    from rasa.utils.log_utils import configure_structlog
    from sklearn.metrics import classification_report

    configure_structlog(logging.WARNING)
    logging.getLogger("rasa").setLevel(logging.WARNING)
    started = time.monotonic()
    data = TrainingDataImporter.load_from_dict(
        training_data_paths=[str(ROOT / source) for source in sources]
    ).get_nlu_data()
    examples = [e for e in data.intent_examples]
    labels = [e.get("intent") for e in examples]
    predictions: List[Prediction] = []
    with tempfile.TemporaryDirectory() as folder:
        for number, test in enumerate(fold_indices(labels, folds, seed)):
            held = set(test)
            train = TrainingData(
                [e for i, e in enumerate(examples) if i not in held],
                entity_synonyms=data.entity_synonyms,
                regex_features=data.regex_features,
                lookup_tables=data.lookup_tables,
            )
            data_file = Path(folder) / f"fold{number}.yml"
            RasaYAMLWriter().dump(data_file, train)
            with contextlib.redirect_stdout(io.StringIO()):  # "Your Rasa model is trained…"
                model = train_nlu(
                    str(config), str(data_file), folder, fixed_model_name=f"fold{number}"
                )
            if model is None:
                raise RuntimeError(f"training fold {number} failed")
            predictions += _predict(Path(model), [examples[i] for i in test])
    truth = [p.intent for p in predictions]
    guessed = [p.predicted for p in predictions]
    report = classification_report(truth, guessed, output_dict=True, zero_division=0)
    # Only the intents of the data (a marker never predicted stays out of the per-intent rows).
    report = {k: v for k, v in report.items() if k in set(truth) or k in _AVERAGES}
    return CrossValidation(predictions, report, time.monotonic() - started)


_AVERAGES = {"accuracy", "macro avg", "weighted avg", "micro avg"}


def _predict(model: Path, examples: Sequence[Any]) -> List[Prediction]:
    from rasa.core.agent import Agent

    agent = Agent.load(str(model))

    async def parse() -> List[Dict[str, Any]]:
        return [await agent.parse_message(e.get("text")) for e in examples]

    results = asyncio.run(parse())
    return [
        Prediction(example.get("text"), example.get("intent"), *classifier_intent(result))
        for example, result in zip(examples, results, strict=True)
    ]


def classifier_intent(result: Dict[str, Any]) -> Tuple[str, float]:
    """The classifier's intent in a parse and its confidence: the predicted intent, or under
    ``nlu_fallback``/``nlu_confirm`` the first intent ranked that is not a marker."""
    ranking = result.get("intent_ranking") or []
    predicted = understood_intent((result.get("intent") or {}).get("name"), ranking) or ""
    confidence = next(
        (r.get("confidence", 0.0) for r in ranking if r.get("name") == predicted), 0.0
    )
    return predicted, confidence


def write_results(result: CrossValidation, out: Path) -> None:
    """``intent_report.json`` and ``intent_errors.json`` into ``out``, as Rasa names them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "intent_report.json").write_text(json.dumps(result.report, indent=1), encoding="utf-8")
    errors = [
        {
            "text": p.text,
            "intent": p.intent,
            "intent_prediction": {"name": p.predicted, "confidence": p.confidence},
        }
        for p in result.errors
    ]
    (out / "intent_errors.json").write_text(json.dumps(errors, indent=1), encoding="utf-8")
