"""Spelling mistakes corrected towards the words the classifier knows.

A customer who types ``ordr``, ``trackin`` or ``refnd`` means a word the training examples use.
A general spelling corrector would "fix" shorthand and names into the wrong common word (``lol``
-> ``low``, ``frother`` -> ``brother``), and a word the classifier never saw helps it no more
than the typo did. So :class:`SpellingCorrector` corrects only a word that is neither in the
training vocabulary nor an English word (symspellpy's frequency dictionary), and only to a
training word within a small edit distance (1 for words of up to 5 letters, else 2): symspellpy
finds the candidates, the most frequent closest training word wins.

A message none of whose words the model knows, even corrected ("zxqv blorft wibble", "shh krr"),
tells the classifier nothing: its guess is only the intent whose examples are shortest. Such a
message falls back (``connectors.nlu.spelling.NoKnownWordFallback``).
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping

from symspellpy import SymSpell, Verbosity

from omnichannel.nlu.customer_text import english_words

#: Words shorter than this are left alone: too many words lie one edit from them.
MIN_LENGTH = 4
#: Longest word an edit distance of 1 is allowed for; longer words may be 2 edits off.
SHORT_WORD = 5


class SpellingCorrector:
    """Corrects unknown words to the closest word of a vocabulary (word -> count)."""

    def __init__(self, vocabulary: Mapping[str, int]) -> None:
        self.vocabulary: Dict[str, int] = {w: int(c) for w, c in vocabulary.items() if c > 0}
        self._symspell = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
        for word, count in self.vocabulary.items():
            if len(word) >= MIN_LENGTH - 1 and word.isalpha():
                self._symspell.create_dictionary_entry(word, count)

    @classmethod
    def learn(cls, words: Iterable[str]) -> SpellingCorrector:
        """A corrector towards ``words`` (each occurrence counts). A word met once, not English
        and within reach of a surer word (``mibile`` of ``mobile``) is left out: it is a typo of
        the generated variations or a slip in an example, and correcting towards it would spread
        the slip. A rare word of its own (``uh-huh``) stays."""
        counts: Dict[str, int] = {}
        for word in words:
            word = word.lower()
            counts[word] = counts.get(word, 0) + 1
        english = english_words()
        sure = cls({w: c for w, c in counts.items() if c > 1 or w in english})
        slips = {w for w, c in counts.items() if c == 1 and w not in english and sure.reaches(w)}
        return cls({w: c for w, c in counts.items() if w not in slips})

    def reaches(self, word: str) -> bool:
        """True when a vocabulary word other than ``word`` is within correcting distance."""
        distance = 1 if len(word) <= SHORT_WORD else 2
        found = self._symspell.lookup(word.lower(), Verbosity.CLOSEST, max_edit_distance=distance)
        return any(s.term != word.lower() for s in found)

    def knows(self, word: str) -> bool:
        """True for a word of the vocabulary and for anything with a digit (an order number)."""
        lower = word.lower()
        return lower in self.vocabulary or any(c.isdigit() for c in lower)

    def correct(self, word: str) -> str:
        """``word``, or the training word it is a misspelling of."""
        lower = word.lower()
        if (
            len(lower) < MIN_LENGTH
            or not lower.isalpha()
            or lower in self.vocabulary
            or lower in english_words()
        ):
            return word
        distance = 1 if len(lower) <= SHORT_WORD else 2
        found = self._symspell.lookup(lower, Verbosity.CLOSEST, max_edit_distance=distance)
        return max(found, key=lambda s: s.count).term if found else word
