"""OpenTelemetry traces: one trace per customer message, across Rasa, the action server and the
vendors they call.

Configured only by OpenTelemetry's standard environment variables, read by its SDK:
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console`` or ``none``), ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (OTLP over HTTP/protobuf: the only protocol installed),
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and ``OTEL_SDK_DISABLED``. Tracing is **off** unless an
exporter or an OTLP endpoint is named; off, :func:`span` hands out one shared do-nothing object
and no Rasa method is patched, so a turn pays a flag test per span (``make bench`` measures it).

Spans carry only bounded, non-personal attributes: :func:`safe_attributes` keeps numbers,
booleans and short identifiers (channel kinds, outcomes, action and intent names, model names)
and drops any string with spaces, more digits than :data:`MAX_ATTRIBUTE_DIGITS` (a phone or
card number), or longer than
:data:`MAX_ATTRIBUTE_CHARS`, so no customer text or number reaches a tracing backend whatever a
caller passes. Exceptions set the span's status to the exception's class name, never its message.

Trace context crosses process boundaries as W3C ``traceparent``: in HTTP headers to the action
server (:func:`inject`), and in durable work items, so a replica that takes an item over
continues the trace of the replica that recorded it (:func:`current_traceparent`,
:func:`context_of`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Sequence, Tuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from omnichannel.errors import ConfigError

logger = logging.getLogger(__name__)

#: Span kinds, for callers that do not import OpenTelemetry.
CLIENT = SpanKind.CLIENT
SERVER = SpanKind.SERVER

#: The name of this package's tracer (instrumentation scope).
SCOPE = "rasa-omnichannel"
#: Longest string attribute value kept.
MAX_ATTRIBUTE_CHARS = 80
#: What an attribute string may look like: an identifier, never prose.
_SAFE_STRING = re.compile(rf"[A-Za-z0-9_.:/-]{{0,{MAX_ATTRIBUTE_CHARS}}}")
#: A string with this many digits could be a phone or card number: such strings are dropped.
MAX_ATTRIBUTE_DIGITS = 6
#: The key a durable work item's payload keeps its trace context under.
TRACEPARENT_KEY = "traceparent"

_propagator = TraceContextTextMapPropagator()
_state_lock = threading.Lock()


class _Tracing:
    """The process's tracing state (one per process, set by :func:`configure`)."""

    enabled: bool = False
    tracer: Any = None
    provider: Any = None


def enabled() -> bool:
    """True when this process exports spans."""
    return _Tracing.enabled


def wanted(env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether the environment asks for traces: an exporter other than ``none`` or an OTLP
    endpoint is named, and ``OTEL_SDK_DISABLED`` is not true."""
    env = os.environ if env is None else env
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return False
    exporter = (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or "").strip()
        or (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    )


def _exporters(env: Mapping[str, str]) -> Sequence[Any]:
    names = [
        name.strip().lower()
        for name in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")
        if name.strip() and name.strip().lower() != "none"
    ]
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    found: List[Any] = []
    for name in names:
        if name == "otlp":
            if protocol != "http/protobuf":
                raise ConfigError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} is not installed: traces are "
                    "exported as OTLP over HTTP/protobuf (http/protobuf, port 4318)"
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            found.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append(ConsoleSpanExporter())
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER {name!r} is not supported: use otlp, console or none"
            )
    return found


def configure(default_service: str, env: Optional[Mapping[str, str]] = None) -> bool:
    """Start exporting spans when the environment asks for it (idempotent); True when on.

    ``default_service`` names the process when ``OTEL_SERVICE_NAME`` does not (the Rasa server
    and the action server are two services of one trace).
    """
    env = os.environ if env is None else env
    with _state_lock:
        if _Tracing.provider is not None or not wanted(env):
            return _Tracing.enabled
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = (
            {} if (env.get("OTEL_SERVICE_NAME") or "").strip() else {SERVICE_NAME: default_service}
        )
        provider = TracerProvider(resource=Resource.create(attributes))
        for exporter in _exporters(env):
            provider.add_span_processor(BatchSpanProcessor(exporter))
        _Tracing.provider = provider
        _Tracing.tracer = provider.get_tracer(SCOPE)
        _Tracing.enabled = True
    logger.info("tracing: exporting spans (%s)", env.get("OTEL_TRACES_EXPORTER") or "otlp")
    return True


def force_flush(timeout_ms: int = 5000) -> None:
    """Export the spans ended so far (tests, shutdown)."""
    if _Tracing.provider is not None:
        _Tracing.provider.force_flush(timeout_ms)


def shutdown() -> None:
    """Flush and stop exporting (a draining server, before it exits)."""
    if _Tracing.provider is not None:
        _Tracing.provider.shutdown()


#: Strings already judged by :func:`_safe_string` (attribute values repeat: channel kinds,
#: intent and action names), emptied when it reaches :data:`_VERDICTS_KEPT` entries.
_verdicts: Dict[str, bool] = {}
_VERDICTS_KEPT = 4096


def _safe_string(value: str) -> bool:
    verdict = _verdicts.get(value)
    if verdict is None:
        verdict = bool(_SAFE_STRING.fullmatch(value)) and (
            sum(map(str.isdigit, value)) <= MAX_ATTRIBUTE_DIGITS
        )
        if len(_verdicts) >= _VERDICTS_KEPT:
            _verdicts.clear()
        _verdicts[value] = verdict
    return verdict


def safe_attributes(attributes: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The attributes a span may carry: numbers, booleans and short identifiers only."""
    kept: Dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        if isinstance(value, (bool, int, float)) or (
            isinstance(value, str) and _safe_string(value)
        ):
            kept[key] = value
    return kept


class _NoSpan:
    """What :func:`span` returns while tracing is off: enters and exits, records nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *_: Any) -> None:
        return None

    def set(self, **attributes: Any) -> None:
        return None


NO_SPAN = _NoSpan()


class _Span:
    """One span made current while its block runs; :meth:`set` adds safe attributes.

    Started and made current directly (``start_span`` and a context token) rather than through
    the SDK's generator-based ``start_as_current_span``: a third less time per span."""

    __slots__ = ("_name", "_attributes", "_parent", "_kind", "_links", "_token", "span")

    def __init__(
        self,
        name: str,
        attributes: Optional[Mapping[str, Any]],
        parent: Optional[Any],
        kind: SpanKind,
        links: Optional[Sequence[Link]],
    ) -> None:
        self._name = name
        self._attributes = attributes
        self._parent = parent
        self._kind = kind
        self._links = links
        self._token: Any = None
        self.span: Any = None

    def __enter__(self) -> _Span:
        self.span = _Tracing.tracer.start_span(
            self._name,
            context=self._parent,
            kind=self._kind,
            attributes=safe_attributes(self._attributes) if self._attributes else None,
            links=self._links,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if kind is not None:
            if issubclass(kind, asyncio.CancelledError):
                self.span.set_attribute("cancelled", True)
            else:
                self.span.set_status(Status(StatusCode.ERROR, kind.__name__))
        try:
            otel_context.detach(self._token)
        finally:
            self.span.end()

    def set(self, **attributes: Any) -> None:
        self.span.set_attributes(safe_attributes(attributes))


def span(
    name: str,
    attributes: Optional[Mapping[str, Any]] = None,
    *,
    parent: Optional[Any] = None,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Optional[Sequence[Link]] = None,
) -> Any:
    """A context manager running its block in a new span named ``name`` (a fixed string), the
    child of the current span or of ``parent`` (a context from :func:`context_of`)."""
    if not _Tracing.enabled:
        return NO_SPAN
    return _Span(name, attributes, parent, kind, links)


def record(name: str, start_ns: int, attributes: Optional[Mapping[str, Any]] = None) -> None:
    """Records a finished leaf span, the child of the current span, that began at ``start_ns``
    (``time.time_ns()``) and ends now: for a short step that starts no span of its own and is
    only worth a span once its outcome is known (nothing is made current, so it costs less
    than :func:`span`)."""
    if not _Tracing.enabled:
        return
    _Tracing.tracer.start_span(
        name,
        start_time=start_ns,
        attributes=safe_attributes(attributes) if attributes else None,
        record_exception=False,
        set_status_on_exception=False,
    ).end()


class RequestSpan:
    """A request's root span, current from :func:`request_span` until :meth:`end`, for code
    whose start and end are separate callbacks (a web server's request signals)."""

    __slots__ = ("span", "_token")

    def __init__(
        self,
        name: str,
        parent: Optional[Any] = None,
        attributes: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.span = _Tracing.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=safe_attributes(attributes)
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span))

    def end(self, status: Optional[int]) -> None:
        if status is not None:
            self.span.set_attribute("http.response.status_code", int(status))
            if status >= 500:
                self.span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        try:
            otel_context.detach(self._token)
        except ValueError:
            pass  # ended from another context: the span still ends
        self.span.end()


def request_span(
    name: str, parent: Optional[Any] = None, attributes: Optional[Mapping[str, Any]] = None
) -> RequestSpan:
    """Starts a request's span, the child of ``parent`` (the caller's context, from
    :func:`extract`) or a new trace's root (tracing must be on: see :func:`enabled`)."""
    return RequestSpan(name, parent, attributes)


def set_attributes(**attributes: Any) -> None:
    """Adds safe attributes to the current span (no-op when tracing is off)."""
    if _Tracing.enabled:
        trace.get_current_span().set_attributes(safe_attributes(attributes))


def current_traceparent() -> Optional[str]:
    """The current span's W3C ``traceparent``, to store with work that may resume elsewhere."""
    if not _Tracing.enabled:
        return None
    carrier: Dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT_KEY)


def context_of(traceparent: Optional[str]) -> Optional[Any]:
    """The context a stored ``traceparent`` names (None when absent or invalid), for
    :func:`span`'s ``parent``."""
    if not _Tracing.enabled or not isinstance(traceparent, str):
        return None
    found = _propagator.extract({TRACEPARENT_KEY: traceparent})
    if not trace.get_current_span(found).get_span_context().is_valid:
        return None
    return found


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Adds the current trace context to outgoing HTTP ``headers`` (in place)."""
    if _Tracing.enabled:
        _propagator.inject(headers)
    return headers


def extract(headers: Mapping[str, str]) -> Optional[Any]:
    """The trace context an incoming request carries (None when tracing is off)."""
    if not _Tracing.enabled:
        return None
    return _propagator.extract({k.lower(): v for k, v in headers.items()})


def attach(context: Any) -> Any:
    """Makes ``context`` current; returns the token for :func:`detach`."""
    return otel_context.attach(context)


def detach(token: Any) -> None:
    otel_context.detach(token)


def current_ids() -> Optional[Tuple[str, str]]:
    """(trace id, span id) in hex of the current span, for log lines; None outside a span."""
    if not _Tracing.enabled:
        return None
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


def current_trace_id() -> Optional[str]:
    ids = current_ids()
    return ids[0] if ids else None


def link_to(traceparent: Optional[str]) -> Optional[Sequence[Link]]:
    """A link to the span a stored ``traceparent`` names, for a span that cannot be its child."""
    found = context_of(traceparent)
    if found is None:
        return None
    return [Link(trace.get_current_span(found).get_span_context())]
