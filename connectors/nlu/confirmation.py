"""``ConfirmationGate``: an intent that acts on the customer's behalf, predicted with less
confidence than its threshold, becomes ``nlu_confirm`` (``omnichannel.nlu.confirmation``), and
the dialogue asks before acting. Rasa's FallbackClassifier does the same with ``nlu_fallback``
for every intent and one threshold.

In config.yml, after the FallbackClassifier::

    - name: connectors.nlu.confirmation.ConfirmationGate
      thresholds:
        talk_to_human: 0.6   # below: "Do you want me to put you through to a person?"
        send_by_sms: 0.6
        goodbye: 0.6

Each intent named here needs an ``utter_confirm_<intent>`` response and the rules that act on
the yes (data/rules.yml).
"""

from __future__ import annotations

from typing import Any, Dict, List, Type

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY
from rasa.shared.nlu.training_data.message import Message

from omnichannel.nlu.confirmation import gated, thresholds_from


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class ConfirmationGate(GraphComponent, IntentClassifier):
    """Per-intent thresholds below which an acting intent is confirmed first."""

    @classmethod
    def required_components(cls) -> List[Type]:
        return [IntentClassifier]

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {"thresholds": {}}

    def __init__(self, config: Dict[str, Any]) -> None:
        self.thresholds = thresholds_from(config)

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> ConfirmationGate:
        return cls(config)

    @classmethod
    def validate_config(cls, config: Dict[str, Any]) -> None:
        thresholds_from(config)

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            intent = message.get(INTENT)
            if not intent:
                continue
            result = gated(intent, message.get(INTENT_RANKING_KEY) or [], self.thresholds)
            if result is not None:
                message.set(INTENT, result[0], add_to_output=True)
                message.set(INTENT_RANKING_KEY, result[1], add_to_output=True)
        return messages
