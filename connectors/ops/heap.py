"""The Rasa server's heap after its model loads: moved out of the garbage collector's sight.

A loaded model leaves about half a million long-lived Python objects (the graph, the domain,
the featurizers' vocabularies). CPython's full collection walks all of them: about 250 ms of
CPU on this project's model, held on the event loop, and it comes round every few hundred
turns, sooner the more objects each turn keeps alive for a while (spans waiting in the tracing
exporter's queue are such objects: ``make bench``'s tracing part found one extra full collection
a hundred-odd turns, over 2 ms of CPU a turn). :func:`freeze_when_loaded` waits for the model,
collects once and freezes what survives (``gc.freeze``, the permanent generation): a full
collection then walks only what the turns made since, a few milliseconds.

What is frozen is never collected; it is what lives as long as the process anyway. A model
loaded later (``PUT /model``) is collected as usual.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Callable

logger = logging.getLogger(__name__)

#: How often the model's readiness is checked while it loads.
POLL_SECONDS = 0.5


def freeze() -> int:
    """Collects, then freezes every object alive; returns how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def freeze_when_loaded(loaded: Callable[[], bool]) -> int:
    """Waits until ``loaded()`` is true, then :func:`freeze` (run as a background task)."""
    while not loaded():  # noqa: ASYNC110 - Rasa signals no event when its model is ready
        await asyncio.sleep(POLL_SECONDS)
    frozen = freeze()
    logger.info("heap: %d objects of the loaded model frozen out of garbage collection", frozen)
    return frozen
