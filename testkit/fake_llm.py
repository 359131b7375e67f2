"""A local OpenAI-compatible chat-completions server standing in for an LLM provider.

``POST /v1/chat/completions`` (also without ``/v1``) answers in OpenAI's shape, as JSON or, with
``"stream": true``, as ``chat.completion.chunk`` server-sent events, so the real ``openai`` SDK
talks to it unchanged. Tests queue what the next requests get (:meth:`FakeLlm.script`): a normal
answer, an over-long one, an HTTP error such as 429 or 500, or a delay past the client's timeout;
and read back every request the fake received (:attr:`FakeLlm.requests`), prompts included.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from testkit.fake_http import FakeServer, JsonHandler

DEFAULT_ANSWER = "I can help with orders, tracking and refunds."


@dataclass(frozen=True)
class LlmReply:
    """What one request gets: ``content`` with HTTP ``status`` after ``delay`` seconds."""

    content: str = DEFAULT_ANSWER
    status: int = 200
    delay: float = 0.0


class _Handler(JsonHandler):
    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        fake: FakeLlm = self.server.fake  # type: ignore[attr-defined]
        path = self.path.split("?")[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self.send_json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            return
        try:
            request = json.loads(self.read_body() or b"{}")
        except ValueError:
            self.send_json(400, {"error": {"message": "invalid JSON", "type": "invalid_request"}})
            return
        reply = fake.take(request, self.request_headers())
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status != 200:
            self.send_json(
                reply.status,
                {"error": {"message": f"scripted {reply.status}", "type": "server_error"}},
                headers=(("Retry-After", "0"),) if reply.status == 429 else (),
            )
            return
        model = request.get("model") or "fake"
        if request.get("stream"):
            usage = (request.get("stream_options") or {}).get("include_usage")
            self._stream(model, reply.content, _usage(request, reply.content) if usage else None)
        else:
            self.send_json(200, _completion(model, reply.content))

    def _stream(self, model: str, content: str, usage: Optional[Dict[str, int]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        created = int(time.time())
        words = content.split(" ")
        pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
        for delta in [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]:
            self._event(_chunk(model, created, delta, None))
        self._event(_chunk(model, created, {}, "stop"))
        if usage is not None:
            # OpenAI's last chunk with stream_options.include_usage: no choices, the usage.
            self._event({**_chunk(model, created, {}, None), "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _event(self, payload: Dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()


def _usage(request: Dict[str, Any], content: str) -> Dict[str, int]:
    """Token counts as words: enough for a test to see that usage travelled."""
    prompt = sum(len(str(m.get("content") or "").split()) for m in request.get("messages") or ())
    completion = len(content.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(model: str, content: str) -> Dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _chunk(model: str, created: int, delta: Dict[str, Any], finish: Optional[str]) -> Dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class FakeLlm(FakeServer):
    """An OpenAI-compatible server whose answers tests script in advance."""

    handler_class = _Handler

    def __init__(self, port: int = 0, default: LlmReply = LlmReply()) -> None:
        super().__init__(port)
        self.default = default
        self.requests: List[Dict[str, Any]] = []
        self.headers: List[Dict[str, str]] = []
        self._script: List[LlmReply] = []

    @property
    def base_url(self) -> str:
        """What ``OPENAI_BASE_URL`` should be set to."""
        return f"{self.url}/v1"

    def script(self, *replies: LlmReply) -> None:
        """The next requests get these replies, in order; after them, ``default``."""
        with self.lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self.lock:
            self._script.clear()
            self.requests.clear()
            self.headers.clear()

    def take(self, request: Dict[str, Any], headers: Dict[str, str]) -> LlmReply:
        with self.lock:
            self.requests.append(request)
            self.headers.append(headers)
            return self._script.pop(0) if self._script else self.default
