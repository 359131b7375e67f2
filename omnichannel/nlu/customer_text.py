"""Customer text as the intent classifier should read it, whatever the channel.

Customers do not write the way training examples are written. By SMS they type ``u``, ``pls``,
``wheres``, ``hiii``; on a call a speech-to-text transcript brings ``um``, ``uh``, stutters
("I- I want"), repeats ("wait wait wait") and a trailing hedge ("has it shipped yet or"). The
words differ, the request does not. :func:`normalise` maps each word onto the form the
classifier learns, for the training examples and for every message alike, so one example
covers its shorthand, its transcript and its typed form:

- apostrophes inside a word are dropped (``what's`` and ``whats`` read the same);
- letters repeated for emphasis are squeezed to an English word (``hiii`` -> ``hi``);
- common SMS shorthand is spelled out (``u`` -> ``you``, ``ttyl`` -> ``talk to you later``);
- speech fillers (``um``, ``uh``) and laughter (``lol``) are dropped, unless nothing else is left;
- a word said twice in a row counts once (digits excepted), and a trailing ``or`` is dropped.

The words keep their place (character offsets) in the original text, so entities found in
the text still line up with them. Which words are English is read from symspellpy's
frequency dictionary (82,765 words), not from a list kept here.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from dataclasses import dataclass
from typing import Container, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

#: Speech-to-text fillers: sounds, not words, dropped wherever they fall.
FILLERS: FrozenSet[str] = frozenset({"um", "umm", "uhm", "uh", "uhh", "er", "erm", "ehm"})
#: Laughter in a text message: tone, not request.
LAUGHTER: FrozenSet[str] = frozenset({"lol", "lolol", "lmao", "haha", "hahaha", "hehe"})
#: Digits as a transcript writes them: "five five five five five" is an order number, not a
#: stutter.
NUMBER_WORDS: FrozenSet[str] = frozenset(
    "zero oh one two three four five six seven eight nine".split()
)
#: Trailing words of spoken hedges ("is it out for delivery or").
TRAILING_HEDGES: FrozenSet[str] = frozenset({"or"})

#: SMS and chat shorthand, spelled out. Only forms whose meaning is the same in any support
#: conversation: ``y`` (yes or why) and ``ya`` (yes or you) are left to the classifier.
SHORTHAND: Mapping[str, Tuple[str, ...]] = {
    "u": ("you",),
    "r": ("are",),
    "ur": ("your",),
    "yr": ("your",),
    "pls": ("please",),
    "plz": ("please",),
    "pleas": ("please",),
    "thx": ("thanks",),
    "thnx": ("thanks",),
    "thanx": ("thanks",),
    "tx": ("thanks",),
    "ty": ("thank", "you"),
    "tysm": ("thank", "you", "so", "much"),
    "tyvm": ("thank", "you", "very", "much"),
    "k": ("ok",),
    "kk": ("ok",),
    "okie": ("ok",),
    "wen": ("when",),
    "wat": ("what",),
    "wut": ("what",),
    "wot": ("what",),
    "whr": ("where",),
    "txt": ("text",),
    "txting": ("texting",),
    "msg": ("message",),
    "pic": ("picture",),
    "pics": ("pictures",),
    "pkg": ("package",),
    "num": ("number",),
    "#": ("number",),
    "nvm": ("never", "mind"),
    "idk": ("i", "dont", "know"),
    "brb": ("be", "right", "back"),
    "ttyl": ("talk", "to", "you", "later"),
    "cya": ("see", "you"),
    "l8r": ("later",),
    "g2g": ("got", "to", "go"),
    "gm": ("good", "morning"),
    "gn": ("good", "night"),
    "nite": ("night",),
    "gr8": ("great",),
    "w8": ("wait",),
    "bc": ("because",),
    "cuz": ("because",),
    "b4": ("before",),
    "2day": ("today",),
    "tmrw": ("tomorrow",),
    "tmr": ("tomorrow",),
    "any1": ("anyone",),
    "some1": ("someone",),
    "sum1": ("someone",),
    "w": ("with",),
    "gonna": ("going", "to"),
    "wanna": ("want", "to"),
    "gotta": ("got", "to"),
    "lemme": ("let", "me"),
    "gimme": ("give", "me"),
    "rn": ("right", "now"),
    "abt": ("about",),
    "thru": ("through",),
    "ppl": ("people",),
    "rep": ("representative",),
    "reps": ("representatives",),
    "mgr": ("manager",),
    "addr": ("address",),
}

_APOSTROPHES = "'’`"
_REPEATS = re.compile(r"(\w)\1{2,}")


@dataclass(frozen=True)
class Word:
    """A word of a message and where it stands in the message's text."""

    text: str
    start: int
    end: int


@functools.lru_cache(maxsize=1)
def english_words() -> FrozenSet[str]:
    """The words of symspellpy's English frequency dictionary (lower case)."""
    dictionary = importlib.resources.files("symspellpy") / "frequency_dictionary_en_82_765.txt"
    return frozenset(
        line.split(" ", 1)[0] for line in dictionary.read_text(encoding="utf-8").splitlines()
    )


def join_contractions(words: Sequence[Word], text: str) -> List[Word]:
    """Words split at an apostrophe (``what`` ``s`` of "what's") joined into one (``whats``)."""
    joined: List[Word] = []
    for word in words:
        previous = joined[-1] if joined else None
        gap = text[previous.end : word.start] if previous else ""
        if previous and gap and all(c in _APOSTROPHES for c in gap) and word.text.isalpha():
            joined[-1] = Word(previous.text + word.text, previous.start, word.end)
        else:
            joined.append(word)
    return joined


class _Known:
    """English words and a shorthand table's words, asked without building their union (82,765
    words copied on every message cost 13 ms a message)."""

    def __init__(self, table: Mapping[str, Tuple[str, ...]]) -> None:
        self.table = table

    def __contains__(self, word: object) -> bool:
        return (
            word in english_words()
            or word in self.table
            or any(word in spelled for spelled in self.table.values())
        )


def squeezed(word: str, known: Container[str]) -> str:
    """``word`` with letters repeated three times or more cut to two, or to one when that makes
    a known word (``hiii`` -> ``hi``, ``sooo`` -> ``so``, ``yesss`` -> ``yes``)."""
    if not _REPEATS.search(word):
        return word
    double = _REPEATS.sub(r"\1\1", word)
    single = _REPEATS.sub(r"\1", word)
    if double not in known and single in known:
        return single
    return double


def normalise(
    words: Sequence[Word],
    shorthand: Optional[Mapping[str, Tuple[str, ...]]] = None,
) -> List[Word]:
    """The words as the classifier reads them (see the module's docstring); never empty when
    ``words`` is not."""
    table = SHORTHAND if shorthand is None else shorthand
    known = _Known(table)
    spelled: List[Word] = []
    for word in words:
        lower = word.text.lower().strip(_APOSTROPHES)
        lower = "".join(c for c in lower if c not in _APOSTROPHES) or lower
        lower = squeezed(lower, known)
        for part in table.get(lower, (lower,)):
            spelled.append(Word(part, word.start, word.end))
    kept = [w for w in spelled if w.text not in FILLERS and w.text not in LAUGHTER]
    deduplicated: List[Word] = []
    for word in kept:
        repeated = deduplicated and deduplicated[-1].text == word.text
        if not repeated or word.text in NUMBER_WORDS or word.text.isdigit():
            deduplicated.append(word)
    while len(deduplicated) > 1 and deduplicated[-1].text in TRAILING_HEDGES:
        deduplicated.pop()
    return deduplicated or spelled


def shorthand_with(extra: Optional[Mapping[str, object]]) -> Dict[str, Tuple[str, ...]]:
    """:data:`SHORTHAND` with a component's ``shorthand`` option over it: ``{"cx": "customer"}``
    adds a form, ``{"rep": null}`` removes one."""
    table = dict(SHORTHAND)
    for short, spelled in (extra or {}).items():
        key = str(short).lower()
        if spelled is None:
            table.pop(key, None)
        elif isinstance(spelled, str) and spelled.split():
            table[key] = tuple(spelled.lower().split())
        else:
            raise ValueError(f"shorthand {short!r} must map to words or null")
    return table
