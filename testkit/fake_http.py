"""A small threaded HTTP server base for the local fakes of outside services.

Tests and `make run` fake only what lies outside this machine (Twilio's REST API, an LLM
provider), and they fake it as a real HTTP server on loopback speaking that service's protocol,
so our code runs its real client libraries against it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple, TypeVar

_Server = TypeVar("_Server", bound="FakeServer")


class FakeServer:
    """Runs ``handler_class`` on 127.0.0.1 in a daemon thread; handlers reach the fake as
    ``self.server.fake``."""

    handler_class: type[BaseHTTPRequestHandler]

    def __init__(self, port: int = 0) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self.handler_class)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread: Optional[threading.Thread] = None
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self: _Server) -> _Server:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class JsonHandler(BaseHTTPRequestHandler):
    """Request helpers shared by the fakes; quiet unless a test asks for logs."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(
        self, status: int, payload: Any, headers: Tuple[Tuple[str, str], ...] = ()
    ) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def request_headers(self) -> Dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}
