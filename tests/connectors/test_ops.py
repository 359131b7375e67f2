"""Probes and metrics: readiness follows Redis for real, the routes answer as probes expect, and
``/metrics`` moves when traffic flows through the shared stack."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Dict, Tuple

import httpx
import psutil
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from connectors.ops.channel import SECTION, OpsInput, OpsOptions
from connectors.ops.checks import ACTION_SERVER, MODEL, REDIS, Readiness
from omnichannel.errors import ConfigError
from omnichannel.metrics import metrics_address, metrics_port
from omnichannel.redis_client import REDIS_FAILURES, redis_client, redis_config
from testkit.phone_numbers import new_phone_number
from testkit.processes import RedisServer, free_port
from testkit.stack import RasaStack
from testkit.twilio_webhook import signed_sms
from tests.actions.helpers import phone_call
from tests.support import post_sms

ROOT = Path(__file__).resolve().parents[2]

#: Every metric omnichannel/metrics.py defines, as the exposition names its family.
FAMILIES = {
    "omnichannel_dependency_up",
    "omnichannel_turns",
    "omnichannel_turn_seconds",
    "omnichannel_redis_retries",
    "omnichannel_redis_command_failures",
    "omnichannel_chat_open_sockets",
    "omnichannel_dedupe_hits",
    "omnichannel_voice_turn_part_seconds",
    "omnichannel_lock_wait_seconds",
    "omnichannel_handoffs",
    "omnichannel_handoff_claim_seconds",
    "omnichannel_handoffs_open",
}


@pytest.mark.rasa_server
async def test_readiness_goes_false_while_redis_is_down_and_true_once_it_is_back(
    tmp_path: Path, rasa_stack: RasaStack
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    readiness = Readiness(server.url, lambda: rasa_stack.action_url, timeout=0.5, cache_seconds=1)
    try:
        first = await readiness.report()
        assert first.checks == {REDIS: True, ACTION_SERVER: True} and first.ready

        # A Redis that hangs (stopped by SIGSTOP: it accepts connections, never answers).
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            assert await readiness.report() is first, "a verdict younger than cache_seconds"
            await asyncio.sleep(1.1)
            started = time.monotonic()
            hung = await readiness.report()
            waited = time.monotonic() - started
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        # The check gave up at its timeout, where a ping alone would wait for ever.
        assert 0.5 <= waited < 10, "a check is bounded by its timeout"
        assert hung.as_json() == {
            "status": "not ready",
            "checks": {"redis": "failed", "action_server": "ok"},
        }

        # A Redis that is gone, then back.
        server.stop()
        await asyncio.sleep(1.1)
        down = await readiness.report()
        assert not down.ready and down.checks == {REDIS: False, ACTION_SERVER: True}
        server.start()
        await asyncio.sleep(1.1)
        back = await readiness.report()
        assert back.ready and back.checks == {REDIS: True, ACTION_SERVER: True}
    finally:
        server.stop()


async def test_concurrent_probes_share_one_round_of_checks(redis_url: str) -> None:
    asked = []

    def action_server_url() -> str:
        asked.append(1)
        return "http://127.0.0.1:9/webhook"  # the discard port: nothing listens

    readiness = Readiness(redis_url, action_server_url, timeout=0.5, cache_seconds=5)
    reports = await asyncio.gather(*(readiness.report() for _ in range(10)))
    assert len(asked) == 1
    assert all(report is reports[0] for report in reports)
    assert reports[0].checks == {REDIS: True, ACTION_SERVER: False}


async def test_an_action_server_outage_leaves_the_replica_ready_and_says_so(
    redis_url: str,
) -> None:
    """Before: readiness failed with the action server, so one outage of that shared service
    took every replica out of the balancer (503 from the probe, while the replica itself
    answered a signed SMS with the apology). Now it is reported, and counted, not deciding."""
    dead = f"http://127.0.0.1:{free_port()}/webhook"
    readiness = Readiness(redis_url, lambda: dead, model_loaded=lambda: True, timeout=0.5)
    report = await readiness.report()
    assert report.checks == {REDIS: True, ACTION_SERVER: False, MODEL: True}
    assert report.ready
    assert report.as_json() == {
        "status": "degraded",
        "checks": {"redis": "ok", "action_server": "failed", "model": "ok"},
    }
    assert REGISTRY.get_sample_value("omnichannel_dependency_up", {"dependency": "redis"}) == 1
    assert (
        REGISTRY.get_sample_value("omnichannel_dependency_up", {"dependency": "action_server"})
        == 0
    )
    # What still decides: the model, and Redis.
    unloaded = Readiness(redis_url, lambda: dead, model_loaded=lambda: False, timeout=0.5)
    assert not (await unloaded.report()).ready
    no_url = Readiness(redis_url, lambda: None, timeout=0.5, cache_seconds=0)
    assert (await no_url.report()).checks == {REDIS: True, ACTION_SERVER: False}


@pytest.mark.unit
def test_options_from_credentials_yml_and_metrics_port_checked_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials = yaml.safe_load((ROOT / "credentials.yml").read_text(encoding="utf-8"))
    monkeypatch.delenv("METRICS_PORT", raising=False)
    channel = OpsInput.from_credentials(credentials[SECTION])
    assert channel.readiness.timeout == OpsOptions().check_timeout
    assert channel.metrics_port is None
    monkeypatch.setenv("METRICS_PORT", "70000")
    with pytest.raises(ConfigError, match="METRICS_PORT"):
        OpsInput.from_credentials(None)
    with pytest.raises(ConfigError, match="check_timeout"):
        OpsInput.from_credentials({"check_timeout": 0})
    assert metrics_port({"METRICS_PORT": " 9464 "}) == 9464


async def test_redis_retries_and_failures_are_counted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = redis_client(redis_config(server.url).replace(retry_seconds=0.5))
    labels = {"command": "PING"}
    retries = REGISTRY.get_sample_value("omnichannel_redis_retries_total", labels) or 0
    failures = REGISTRY.get_sample_value("omnichannel_redis_command_failures_total", labels) or 0
    try:
        assert await client.ping()
        server.stop()
        with pytest.raises(REDIS_FAILURES):
            await client.ping()
    finally:
        server.stop()
    assert REGISTRY.get_sample_value("omnichannel_redis_retries_total", labels) > retries
    assert (
        REGISTRY.get_sample_value("omnichannel_redis_command_failures_total", labels)
        == failures + 1
    )


@pytest.mark.rasa_server
async def test_probe_routes_answer_without_auth(rasa_stack: RasaStack) -> None:
    async with httpx.AsyncClient(base_url=rasa_stack.base_url, timeout=10) as http:
        live = await http.get("/webhooks/ops/livez")
        ready = await http.get("/webhooks/ops/readyz")
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {REDIS: "ok", ACTION_SERVER: "ok", MODEL: "ok"},
    }
    assert ready.headers["cache-control"] == "no-store"


def scrape(stack: RasaStack) -> Tuple[set, Dict[Tuple[str, frozenset], float]]:
    """The stack's metric family names, and every sample by (name, labels)."""
    answer = httpx.get(f"http://127.0.0.1:{stack.env['METRICS_PORT']}/metrics", timeout=10)
    assert answer.status_code == 200
    families = list(text_string_to_metric_families(answer.text))
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    return {family.name for family in families}, samples


@pytest.mark.rasa_server
def test_the_exporter_listens_on_loopback_unless_told_otherwise(rasa_stack: RasaStack) -> None:
    """Before: /metrics listened on every interface (0.0.0.0) wherever METRICS_PORT was set."""
    port = int(rasa_stack.env["METRICS_PORT"])
    listening = {
        connection.laddr.ip
        for connection in psutil.Process(rasa_stack.rasa_proc.pid).net_connections("tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }
    assert listening == {"127.0.0.1"}
    assert metrics_address({}) == "127.0.0.1"
    assert metrics_address({"METRICS_ADDRESS": " 0.0.0.0 "}) == "0.0.0.0"
    assert metrics_address({"METRICS_ADDRESS": "::"}) == "::"
    with pytest.raises(ConfigError, match="METRICS_ADDRESS"):
        metrics_address({"METRICS_ADDRESS": "metrics.internal"})


@pytest.mark.rasa_server
async def test_metrics_expose_the_counters_and_they_move_with_traffic(
    rasa_stack: RasaStack,
) -> None:
    turns = ("omnichannel_turns_total", frozenset({("channel", "sms"), ("outcome", "ok")}))
    latency = ("omnichannel_turn_seconds_count", frozenset({("channel", "sms")}))
    dedupe = ("omnichannel_dedupe_hits_total", frozenset({("channel", "sms")}))
    names, before = scrape(rasa_stack)
    assert FAMILIES <= names

    sms = signed_sms(rasa_stack.env, new_phone_number(), "hello")
    async with httpx.AsyncClient(base_url=rasa_stack.base_url, timeout=30) as http:
        assert (await http.post(sms.path, data=sms.form, headers=sms.headers)).status_code == 200
        # Twilio's redelivery of the same MessageSid: answered from the ledger, not a turn.
        assert (await http.post(sms.path, data=sms.form, headers=sms.headers)).status_code == 200
    assert (await post_sms(rasa_stack, new_phone_number(), "hello")).status_code == 200

    deadline = time.monotonic() + 30
    while True:
        _, after = scrape(rasa_stack)
        if after.get(turns, 0) >= before.get(turns, 0) + 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    # At least: turns of earlier tests may still end meanwhile.
    assert after.get(turns, 0) >= before.get(turns, 0) + 2
    assert after.get(latency, 0) >= before.get(latency, 0) + 2
    assert after.get(dedupe, 0) >= before.get(dedupe, 0) + 1
    # Every turn took its conversation's lock, and the lock's wait was observed.
    lock_waits = ("omnichannel_lock_wait_seconds_count", frozenset())
    assert after.get(lock_waits, 0) >= before.get(lock_waits, 0) + 2


@pytest.mark.rasa_server
async def test_a_voice_turn_is_timed_in_its_parts(rasa_stack: RasaStack) -> None:
    """First words out, time in Rasa and the connector's own time, as histograms Prometheus
    can sum over the replicas (the benchmark reads its medians there too)."""
    parts = {
        part: ("omnichannel_voice_turn_part_seconds_count", frozenset({("part", part)}))
        for part in ("first_speech", "rasa", "connector")
    }
    _, before = scrape(rasa_stack)
    reply = await phone_call(rasa_stack).say("hello")
    assert reply.finish_reason == "stop"
    _, after = scrape(rasa_stack)
    for key in parts.values():
        assert after.get(key, 0) >= before.get(key, 0) + 1, key
