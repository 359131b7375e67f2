"""An OTLP/HTTP trace receiver on loopback, standing in for a tracing backend (a collector,
Jaeger, Tempo): no OpenTelemetry Collector installs offline here.

``POST /v1/traces`` takes an ``ExportTraceServiceRequest`` as OTLP's HTTP binding specifies it
(``Content-Type: application/x-protobuf``, optionally ``Content-Encoding: gzip``), decoded with
the official ``opentelemetry-proto`` classes, and answers an ``ExportTraceServiceResponse``. Tests
read the spans back (:meth:`FakeOtlp.spans`) as :class:`ReceivedSpan`, with their resource's
service name, and can wait for a trace to hold the spans they expect.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from testkit.fake_http import FakeServer, JsonHandler


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, its ids in hex (a parent of "" is a trace's root)."""

    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: Dict[str, Any] = field(default_factory=dict)
    status_code: int = 0
    status_message: str = ""
    links: tuple = ()


class _Handler(JsonHandler):
    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        fake: FakeOtlp = self.server.fake  # type: ignore[attr-defined]
        if self.path.split("?")[0] != "/v1/traces":
            self.send_json(404, {"error": "only /v1/traces"})
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self.send_json(415, {"error": "OTLP/HTTP binary protobuf expected"})
            return
        body = self.read_body()
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        fake.receive(request, body)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class FakeOtlp(FakeServer):
    """Collects every span exported to it; :attr:`raw` keeps the request bodies as received."""

    handler_class = _Handler

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._spans: List[ReceivedSpan] = []
        self.raw: List[bytes] = []
        self._arrived = threading.Condition(self.lock)

    @property
    def endpoint(self) -> str:
        """What ``OTEL_EXPORTER_OTLP_ENDPOINT`` should be set to."""
        return self.url

    def receive(self, request: ExportTraceServiceRequest, body: bytes) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            service=service,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status_code=span.status.code,
                            status_message=span.status.message,
                            links=tuple(
                                (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ),
                        )
                    )
        with self._arrived:
            self._spans.extend(received)
            self.raw.append(body)
            self._arrived.notify_all()

    def spans(self, trace_id: Optional[str] = None) -> List[ReceivedSpan]:
        with self.lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def wait_for(
        self, condition: Callable[[List[ReceivedSpan]], Any], timeout: float = 15.0
    ) -> Any:
        """Waits until ``condition(every span so far)`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = condition(list(self._spans))
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"spans not received in {timeout:g} s; have "
                        f"{sorted({s.name for s in self._spans})}"
                    )
                self._arrived.wait(left)
