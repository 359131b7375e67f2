"""``SpellingCorrector``: after the tokenizer, words the classifier never saw and that are not
English are replaced by the training word they misspell (``omnichannel.nlu.spelling``).

In config.yml, right after the tokenizer::

    - name: connectors.nlu.spelling.SpellingCorrector

and, after the FallbackClassifier, the fallback for messages with no word the model knows::

    - name: connectors.nlu.spelling.NoKnownWordFallback

It learns the vocabulary of the training examples' tokens when the model is trained and keeps
it in the model, so a model corrects towards exactly the words it was trained on.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Type

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.nlu.constants import TOKENS_NAMES
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from connectors.nlu import source_fingerprint
from omnichannel.nlu import customer_text, spelling
from omnichannel.nlu.confirmation import FALLBACK_INTENT
from omnichannel.nlu.spelling import SpellingCorrector as Corrector

logger = logging.getLogger(__name__)
VOCABULARY_FILE = "vocabulary.json"
#: How many of a message's words the model knows (after correction), for NoKnownWordFallback.
KNOWN_WORDS = "known_words"


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=True)
class SpellingCorrector(GraphComponent):
    """Corrects the tokens of each message towards the training vocabulary."""

    def __init__(
        self,
        model_storage: ModelStorage,
        resource: Resource,
        corrector: Optional[Corrector] = None,
    ) -> None:
        self._model_storage = model_storage
        self._resource = resource
        self._corrector = corrector

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        return source_fingerprint(spelling, customer_text)

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> SpellingCorrector:
        return cls(model_storage, resource)

    @classmethod
    def load(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> SpellingCorrector:
        with model_storage.read_from(resource) as directory:
            vocabulary = json.loads((directory / VOCABULARY_FILE).read_text(encoding="utf-8"))
        return cls(model_storage, resource, Corrector(vocabulary))

    def train(self, training_data: TrainingData) -> Resource:
        words = [
            token.text
            for example in training_data.training_examples
            for token in example.get(TOKENS_NAMES[TEXT]) or []
        ]
        self._corrector = Corrector.learn(words)
        with self._model_storage.write_to(self._resource) as directory:
            (directory / VOCABULARY_FILE).write_text(
                json.dumps(self._corrector.vocabulary, sort_keys=True), encoding="utf-8"
            )
        return self._resource

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        """Training examples are the vocabulary: nothing to correct."""
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        if self._corrector is None:
            return messages
        for message in messages:
            tokens = message.get(TOKENS_NAMES[TEXT])
            if not tokens:
                continue
            corrected = [self._corrector.correct(token.text) for token in tokens]
            message.set(KNOWN_WORDS, sum(self._corrector.knows(word) for word in corrected))
            if corrected != [token.text for token in tokens]:
                message.set(
                    TOKENS_NAMES[TEXT],
                    [
                        Token(text, t.start, t.end)
                        for text, t in zip(corrected, tokens, strict=True)
                    ],
                )
        return messages


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class NoKnownWordFallback(GraphComponent, IntentClassifier):
    """``nlu_fallback`` for a message none of whose words the model knows: the classifier's
    guess for it says nothing (Rasa's FallbackClassifier convention: the guess stays ranked
    under the fallback)."""

    @classmethod
    def required_components(cls) -> List[Type]:
        return [SpellingCorrector, IntentClassifier]

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> NoKnownWordFallback:
        return cls()

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            intent = message.get(INTENT) or {}
            if message.get(KNOWN_WORDS) != 0 or intent.get("name") == FALLBACK_INTENT:
                continue
            fallback = {"name": FALLBACK_INTENT, "confidence": intent.get("confidence", 0.0)}
            message.set(INTENT, fallback, add_to_output=True)
            ranking = message.get(INTENT_RANKING_KEY) or []
            message.set(INTENT_RANKING_KEY, [fallback, *ranking], add_to_output=True)
        return messages
