"""Tracing's settings and its guard on attributes (no exporter started here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omnichannel import tracing
from omnichannel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.unit
def test_tracing_is_off_unless_an_exporter_or_endpoint_is_named() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"})
    assert not tracing.wanted(
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    )


@pytest.mark.unit
def test_only_what_is_installed_is_accepted() -> None:
    with pytest.raises(ConfigError, match="http/protobuf"):
        tracing._exporters({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    with pytest.raises(ConfigError, match="zipkin"):
        tracing._exporters({"OTEL_TRACES_EXPORTER": "zipkin"})


@pytest.mark.unit
def test_attributes_keep_identifiers_and_drop_text_and_numbers() -> None:
    kept = tracing.safe_attributes(
        {
            "channel": "sms",
            "rasa.action": "action_llm_fallback",
            "gen_ai.request.model": "gpt-4o-mini",
            "attempt": 2,
            "ok": True,
            "text": "my card is 4111 1111 1111 1111",
            "phone": "+14155550100",
            "dashed": "415-555-0100",
            "email": "jane@example.org",
            "long": "x" * 81,
            "none": None,
        }
    )
    assert kept == {
        "channel": "sms",
        "rasa.action": "action_llm_fallback",
        "gen_ai.request.model": "gpt-4o-mini",
        "attempt": 2,
        "ok": True,
    }


def test_spans_cost_nothing_while_tracing_is_off() -> None:
    """In a fresh process without OpenTelemetry's variables (this one may have turned tracing
    on for another test)."""
    check = (
        "from omnichannel import tracing\n"
        "assert tracing.configure('x') is False\n"
        "assert tracing.span('turn', {'channel': 'sms'}) is tracing.NO_SPAN\n"
        "assert tracing.current_traceparent() is None and tracing.current_ids() is None\n"
        "assert tracing.context_of('00-' + '1' * 32 + '-' + '2' * 16 + '-01') is None\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    subprocess.run([sys.executable, "-c", check], env=env, cwd=ROOT, check=True)
