"""``CustomerTextTokenizer``: Rasa's WhitespaceTokenizer, then the words normalised as
``omnichannel.nlu.customer_text`` says (shorthand spelled out, fillers dropped, apostrophes and
emphasis evened out), for training examples and messages alike.

In config.yml, in place of WhitespaceTokenizer::

    - name: connectors.nlu.tokenizer.CustomerTextTokenizer
      shorthand:            # optional: more forms ({"cx": "customer"}), or null to drop one
        cx: customer

Only the message text is normalised (not intent or action names), and each word keeps its
offsets in the original text, so the regex entity extractor and featurizer still line up.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message

from connectors.nlu import source_fingerprint
from omnichannel.nlu import customer_text
from omnichannel.nlu.customer_text import Word, join_contractions, normalise, shorthand_with


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER, is_trainable=False)
class CustomerTextTokenizer(WhitespaceTokenizer):
    """Whitespace tokens of customer text, normalised for the classifier."""

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return {**WhitespaceTokenizer.get_default_config(), "shorthand": {}}

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        return source_fingerprint(customer_text)

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__(config)
        self._shorthand = shorthand_with(config.get("shorthand"))

    def tokenize(self, message: Message, attribute: str) -> List[Token]:
        tokens = super().tokenize(message, attribute)
        if attribute != TEXT or not tokens:
            return tokens
        text = message.get(attribute)
        words = join_contractions([Word(t.text, t.start, t.end) for t in tokens], text)
        return [Token(w.text, w.start, w.end) for w in normalise(words, self._shorthand)]
