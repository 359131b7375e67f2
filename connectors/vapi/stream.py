"""The answer to one custom-LLM request: what a turn says, streamed as OpenAI SSE chunks.

Each piece of speech is written the moment the turn says it, so a filler ("One moment.") is
spoken while a slow action runs; a stream that then goes quiet gets a ``<flush />`` so VAPI's
TTS does not hold the words back. The stream ends with ``finish_reason: "stop"`` and
``data: [DONE]``. The stream is the ``vapi.sse`` span, its first words ``vapi.sse.first_chunk``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional, Sequence

from connectors.vapi.voice_turn import END, VoiceTurn
from connectors.vapi.wire import FLUSH, ChunkWriter
from omnichannel import tracing

#: A turn quiet this long after speaking gets a FLUSH, so its last words are not held back.
FLUSH_AFTER_SECONDS = 0.15


async def stream_speech(
    request: Any, writer: ChunkWriter, listener: asyncio.Queue, turn: Optional[VoiceTurn]
) -> Optional[float]:
    """Streams what ``listener`` yields until :data:`END` (or ``turn`` is superseded) as the
    response to the Sanic ``request``; returns when the first words left (perf_counter)."""
    with tracing.span("vapi.sse") as span:
        first_speech = await _stream(request, writer, listener, turn)
        span.set(spoke=first_speech is not None)
    return first_speech


async def _stream(
    request: Any, writer: ChunkWriter, listener: asyncio.Queue, turn: Optional[VoiceTurn]
) -> Optional[float]:
    stream = await request.respond(
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    await stream.send(writer.role())
    first = True
    first_speech: Optional[float] = None
    flush_due = False
    getter: Optional[asyncio.Future] = None
    try:
        while True:
            if getter is None:
                getter = asyncio.ensure_future(listener.get())
            timeout = FLUSH_AFTER_SECONDS if flush_due else None
            done, _ = await asyncio.wait({getter}, timeout=timeout)
            if not done:
                # The turn went quiet after some speech (a filler before a slow action):
                # VAPI holds buffered text until more comes, so make it speak now.
                await stream.send(writer.content(FLUSH))
                flush_due = False
                continue
            speech, getter = getter.result(), None
            if speech is END:
                break
            if turn is not None and turn.superseded:
                break
            if first:
                with tracing.span("vapi.sse.first_chunk"):
                    await stream.send(writer.content(speech))
                first_speech = time.perf_counter()
            else:
                await stream.send(writer.content(" " + speech))
            first = False
            flush_due = turn is not None
    finally:
        if getter is not None:
            getter.cancel()
    await stream.send(writer.stop())
    await stream.eof()
    return first_speech


async def stream_static(request: Any, writer: ChunkWriter, speech: Sequence[str]) -> None:
    """Streams fixed speech (a greeting, an apology, nothing) as a complete answer."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in speech:
        if item:
            queue.put_nowait(item)
    queue.put_nowait(END)
    await stream_speech(request, writer, queue, None)
