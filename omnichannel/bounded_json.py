"""JSON from outside, parsed with a bound on how deeply it nests.

Python's parser recurses once per level of nesting, and so does most code that walks what it
returns (pydantic, jsonschema, Rasa's event classes): a body of a few kilobytes of ``[`` brings
either the parser or a later walk to ``RecursionError``, which no handler expects, and the
client gets a 500. Every JSON that arrives from a client (an HTTP body, a chat frame, the
arguments string VAPI nests inside a tool call) goes through :func:`loads` instead, which refuses
anything nested deeper than :data:`MAX_DEPTH` with :class:`TooDeep`, a ``ValueError`` like every
other malformed JSON. No real payload comes near the bound: VAPI's deepest is about 10 levels,
Rasa's tracker events about 8.
"""

from __future__ import annotations

import json
from typing import Any, List, Tuple, Union

#: The deepest nesting accepted (``[]`` is depth 1, ``[[]]`` depth 2).
MAX_DEPTH = 64


class TooDeep(ValueError):
    """The JSON nests deeper than the bound."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels")
        self.max_depth = max_depth


def loads(data: Union[str, bytes, bytearray], max_depth: int = MAX_DEPTH) -> Any:
    """The parsed JSON; ``TooDeep`` past ``max_depth``, ``ValueError`` when malformed."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise TooDeep(max_depth) from None
    if deeper_than(value, max_depth):
        raise TooDeep(max_depth)
    return value


def deeper_than(value: Any, max_depth: int) -> bool:
    """Whether parsed JSON nests deeper than ``max_depth`` (walked without recursion)."""
    if not isinstance(value, (dict, list)):
        return False
    pending: List[Tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > max_depth:
            return True
        pending.extend(
            (child, depth + 1) for child in children if isinstance(child, (dict, list))
        )
    return False
