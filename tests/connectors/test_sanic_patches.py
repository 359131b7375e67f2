"""The pinned Sanic patch (connectors/sanic_patches.py), through the shared stack's web chat: a
text frame that is not UTF-8 closes the socket with 1007, and the version check refuses a Sanic
the patch was not read from."""

from __future__ import annotations

import asyncio
import time

import pytest
import sanic
import websockets
from websockets.frames import OP_TEXT

from connectors import sanic_patches
from testkit.stack import RasaStack
from tests.connectors.webchat.helpers import open_chat, user_token


@pytest.mark.rasa_server
async def test_a_text_frame_that_is_not_utf8_closes_the_socket_with_1007(
    rasa_stack: RasaStack,
) -> None:
    """Before: the decode error was logged by a task nobody awaited, the frame was dropped, and
    the socket stayed open (no close within 10 s)."""
    token = user_token(rasa_stack.env["WEBCHAT_JWT_SECRET"], f"utf8-{time.monotonic_ns()}")
    chat = await open_chat(rasa_stack, token)
    try:
        # Below the client's encoder: the payload bytes as a browser with a bug would send them.
        await chat.ws.write_frame(True, OP_TEXT, b'{"type": "message", "text": "\xff\xfe"}')
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(chat.ws.recv(), 10)
        assert chat.ws.close_code == sanic_patches.CLOSE_INVALID_PAYLOAD
        assert chat.ws.close_reason == "text frame is not valid UTF-8"
    finally:
        await chat.ws.close()
    # The server goes on: a new socket is served.
    again = await open_chat(rasa_stack, token)
    await again.ws.close()


@pytest.mark.unit
def test_another_sanic_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sanic, "__version__", "22.12.0")
    with pytest.raises(RuntimeError, match="21.12.2, found 22.12.0"):
        sanic_patches.install()
