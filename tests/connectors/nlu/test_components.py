"""The NLU plug-ins as Rasa runs them (connectors/nlu/): the tokenizer normalises message text
only and keeps offsets, the spelling corrector learns and persists its vocabulary, the
confirmation gate turns an unsure acting intent into nlu_confirm."""

from __future__ import annotations

from pathlib import Path

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.constants import TOKENS_NAMES
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from connectors.nlu.confirmation import ConfirmationGate
from connectors.nlu.spelling import KNOWN_WORDS, NoKnownWordFallback, SpellingCorrector
from connectors.nlu.tokenizer import CustomerTextTokenizer

pytestmark = pytest.mark.unit


def _tokenizer(**config) -> CustomerTextTokenizer:
    return CustomerTextTokenizer({**CustomerTextTokenizer.get_default_config(), **config})


def _token_texts(message: Message) -> list:
    return [t.text for t in message.get(TOKENS_NAMES[TEXT])]


def test_the_tokenizer_normalises_text_and_keeps_offsets() -> None:
    message = Message(data={TEXT: "um wheres my ordr #40213 pls"})
    _tokenizer().process([message])
    tokens = message.get(TOKENS_NAMES[TEXT])
    assert [t.text for t in tokens] == ["wheres", "my", "ordr", "#40213", "please"]
    text = message.get(TEXT)
    assert [text[t.start : t.end] for t in tokens] == ["wheres", "my", "ordr", "#40213", "pls"]
    assert text == "um wheres my ordr #40213 pls"  # the text itself is never rewritten


def test_the_tokenizer_takes_designers_shorthand() -> None:
    message = Message(data={TEXT: "cx rep pls"})
    _tokenizer(shorthand={"cx": "customer service"}).process([message])
    assert _token_texts(message) == ["customer", "service", "representative", "please"]


def test_intent_names_are_not_normalised() -> None:
    message = Message(data={TEXT: "thx", INTENT: "thank"})
    tokenizer = _tokenizer()
    tokenizer.process_training_data(TrainingData([message]))
    assert _token_texts(message) == ["thanks"]
    assert [t.text for t in message.get(TOKENS_NAMES[INTENT])] == ["thank"]


@pytest.fixture
def storage(tmp_path: Path) -> LocalModelStorage:
    return LocalModelStorage(tmp_path)


def _context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), "test")


def test_the_spelling_corrector_learns_persists_and_corrects(storage: LocalModelStorage) -> None:
    resource = Resource("spelling")
    examples = [Message(data={TEXT: t, INTENT: "x"}) for t in ["where is my order", "tracking"]]
    training = TrainingData(examples)
    _tokenizer().process_training_data(training)
    trained = SpellingCorrector.create({}, storage, resource, _context())
    trained.train(training)

    loaded = SpellingCorrector.load({}, storage, resource, _context())
    message = Message(data={TEXT: "wheres my ordr trackin frother"})
    _tokenizer().process([message])
    loaded.process([message])
    assert _token_texts(message) == ["wheres", "my", "order", "tracking", "frother"]
    text = message.get(TEXT)
    assert [text[t.start : t.end] for t in message.get(TOKENS_NAMES[TEXT])][2] == "ordr"


def _classified(name: str, confidence: float) -> Message:
    ranking = [{"name": name, "confidence": confidence}, {"name": "greet", "confidence": 0.1}]
    return Message(data={TEXT: "t", INTENT: dict(ranking[0]), INTENT_RANKING_KEY: ranking})


def test_the_gate_confirms_unsure_acting_intents_only() -> None:
    gate = ConfirmationGate({"thresholds": {"talk_to_human": 0.6}})
    unsure, sure, other = (
        _classified("talk_to_human", 0.45),
        _classified("talk_to_human", 0.8),
        _classified("check_order_status", 0.35),
    )
    gate.process([unsure, sure, other])
    assert unsure.get(INTENT) == {"name": "nlu_confirm", "confidence": 0.45}
    assert [r["name"] for r in unsure.get(INTENT_RANKING_KEY)][:2] == [
        "nlu_confirm",
        "talk_to_human",
    ]
    assert "intent" in unsure.as_dict(only_output_properties=True)
    assert sure.get(INTENT)["name"] == "talk_to_human"
    assert other.get(INTENT)["name"] == "check_order_status"


def test_the_gate_refuses_a_bad_config() -> None:
    with pytest.raises(ValueError):
        ConfirmationGate.validate_config({"thresholds": {"talk_to_human": 2}})


def test_a_message_with_no_known_word_falls_back(storage: LocalModelStorage) -> None:
    resource = Resource("spelling")
    training = TrainingData([Message(data={TEXT: "wait wait hold on", INTENT: "hold_on"})])
    _tokenizer().process_training_data(training)
    corrector = SpellingCorrector.create({}, storage, resource, _context())
    corrector.train(training)
    noise, known = Message(data={TEXT: "zxqv blorft"}), Message(data={TEXT: "um wait"})
    _tokenizer().process([noise, known])
    corrector.process([noise, known])
    assert (noise.get(KNOWN_WORDS), known.get(KNOWN_WORDS)) == (0, 1)
    for message in (noise, known):
        guess = {"name": "hold_on", "confidence": 0.5}
        message.set(INTENT, guess)
        message.set(INTENT_RANKING_KEY, [guess])
    NoKnownWordFallback().process([noise, known])
    assert noise.get(INTENT) == {"name": "nlu_fallback", "confidence": 0.5}
    assert [r["name"] for r in noise.get(INTENT_RANKING_KEY)] == ["nlu_fallback", "hold_on"]
    assert known.get(INTENT)["name"] == "hold_on"
