"""Hanging up and transferring through Live Call Control: the payloads, and the calls that use
them against the real stack and VAPI's fake control URL."""

from __future__ import annotations

import uuid

import pytest

from connectors.vapi.call_control import (
    control_payload,
    control_policy,
    requested_control,
    send_control,
)
from connectors.vapi.voice_turn import APOLOGY
from omnichannel.rendering.messages import BotMessage


@pytest.mark.rasa_server
async def test_goodbye_ends_the_call_after_saying_it(stack, make_call, control):
    call = make_call()
    await call.say("hello")
    reply = await call.say("bye")
    assert reply.finish_reason == "stop"
    requests = control.wait_for(call.call_id)
    assert requests[0].payload == {
        "type": "say",
        "content": "Goodbye, and thanks for calling Acme!",
        "endCallAfterSpoken": True,
    }
    # Said by VAPI through the control request, so not streamed too.
    assert "Goodbye" not in reply.text


@pytest.mark.rasa_server
async def test_asking_for_a_human_transfers_the_call(stack, make_call, control):
    call = make_call()
    reply = await call.say("I want to talk to a human")
    requests = control.wait_for(call.call_id)
    payload = requests[0].payload
    assert payload["type"] == "transfer"
    destination = payload["destination"]
    assert {k: destination[k] for k in ("type", "number")} == {
        "type": "number",
        "number": "+14155550100",
    }
    # A warm transfer: the person who answers hears a summary first (VAPI's transferPlan).
    assert destination["transferPlan"]["mode"].startswith("warm-transfer")
    assert destination["transferPlan"]["summaryPlan"]["enabled"] is True
    assert payload["content"].endswith("Transferring you now.")
    assert reply.finish_reason == "stop"


@pytest.mark.rasa_server
async def test_failing_control_url_does_not_break_the_turn(stack, make_call, control):
    control.fail_next(500)
    call = make_call()
    reply = await call.say("bye")
    assert reply.finish_reason == "stop"
    # The turn asks VAPI before its stream ends and streams the goodbye only once the request
    # failed: every request it made is in by now. One, refused; no second try.
    [attempt] = control.attempts_for(call.call_id)
    assert (attempt.status, attempt.payload["type"]) == (500, "say")
    assert control.requests_for(call.call_id) == []
    assert "call control say answered HTTP 500" in stack.rasa_log()
    # VAPI was not asked to say the goodbye, so it is streamed: never silence.
    assert reply.text == "Goodbye, and thanks for calling Acme!"


@pytest.mark.rasa_server
async def test_failed_transfer_is_an_apology_not_an_announcement(stack, make_call, control):
    control.fail_next(503)
    call = make_call()
    reply = await call.say("I want to talk to a human")
    assert reply.finish_reason == "stop"
    assert reply.text == APOLOGY
    assert "call control transfer answered HTTP 503" in stack.rasa_log()


@pytest.mark.rasa_server
@pytest.mark.parametrize(
    "template",
    [
        # aiohttp's InvalidURL quotes the URL (and so the token) in its repr.
        "http://127.0.0.1:99999/calls/{call}/control/{token}",
        # A host IDNA cannot encode: a UnicodeError, not an aiohttp error.
        "http://a..b/calls/{call}/control/{token}",
    ],
    ids=["invalid-port", "unencodable-host"],
)
async def test_unusable_control_url_ends_the_turn_and_stays_out_of_logs(stack, make_call, template):
    call = make_call(timeout=10)
    token = "tok" + uuid.uuid4().hex
    call.control_url = template.format(call=call.call_id, token=token)
    reply = await call.say("bye")
    assert reply.finish_reason == "stop"
    assert reply.text == "Goodbye, and thanks for calling Acme!"
    log = stack.rasa_log()
    assert f"call {call.call_id}: control URL on a host not allowed; not used" in log
    assert token not in log


@pytest.mark.rasa_server
@pytest.mark.parametrize(
    "url",
    [
        "http://{fake}/calls/{call}/control",  # a private-range host stands in: same port
        "https://attacker.example/calls/{call}/control",
        "https://vapi.ai.attacker.example/calls/{call}/control",
    ],
    ids=["loopback-by-other-name", "other-host", "lookalike-suffix"],
)
async def test_a_forged_control_url_is_never_requested(stack, make_call, control, url):
    """Blind SSRF: only VAPI's hosts (and, in local development, the
    loopback fake) receive control requests."""
    call = make_call(timeout=10)
    fake_host = control.control_url("x").split("/")[2].replace("127.0.0.1", "127.0.0.1.nip.io")
    call.control_url = url.format(fake=fake_host, call=call.call_id)
    before = len(control.requests)
    reply = await call.say("bye")
    assert reply.text == "Goodbye, and thanks for calling Acme!"
    assert len(control.requests) == before
    assert f"call {call.call_id}: control URL on a host not allowed; not used" in stack.rasa_log()


@pytest.mark.unit
def test_control_url_policy() -> None:
    production = control_policy(["*.vapi.ai"], "https://bot.example.com")
    assert production.allows("https://phone-call-websocket.aws-us-west-2.vapi.ai/c1/control")
    for refused in [
        "http://phone-call-websocket.aws-us-west-2.vapi.ai/c1/control",  # not https
        "https://vapi.ai.evil.example/control",
        "https://127.0.0.1:8443/control",
        "https://10.0.0.8/control",
        "https://169.254.169.254/latest/meta-data",
        "https://x.vapi.ai:bad/control",
        "file:///etc/passwd",
        "",
        None,
    ]:
        assert not production.allows(refused), refused
    local = control_policy(["*.vapi.ai"], "http://127.0.0.1:5005")
    assert local.allows("http://127.0.0.1:9999/calls/c1/control")
    assert local.allows("http://localhost:9999/calls/c1/control")
    assert not local.allows("http://10.0.0.8/control")
    exact = control_policy(["control.example.net"], "https://bot.example.com")
    assert exact.allows("https://control.example.net/c")
    assert not exact.allows("https://sub.control.example.net/c")


# -- the payloads, on data ---------------------------------------------------------------------


@pytest.mark.unit
def test_the_control_a_bot_message_asks_for() -> None:
    end = {"call_control": "end_call"}
    transfer = {"call_control": "transfer", "destination": "+14155550100", "content": "Hold on."}
    assert requested_control(BotMessage(text="Bye", custom=end)) == end
    assert requested_control(BotMessage(text="Bye", custom=transfer)) == transfer
    assert requested_control(BotMessage(text="Plain")) is None
    # Malformed: no destination, an unknown kind.
    assert requested_control(BotMessage(custom={"call_control": "transfer"})) is None
    assert requested_control(BotMessage(custom={"call_control": "explode"})) is None


@pytest.mark.unit
def test_control_payloads_say_the_message_first() -> None:
    end = {"call_control": "end_call"}
    assert control_payload(end, "Bye!") == {
        "type": "say",
        "content": "Bye!",
        "endCallAfterSpoken": True,
    }
    assert control_payload(end, "") == {"type": "end-call"}
    transfer = {"call_control": "transfer", "destination": "+14155550100", "content": "**Now.**"}
    assert control_payload(transfer, "Putting you through.") == {
        "type": "transfer",
        "destination": {"type": "number", "number": "+14155550100"},
        "content": "Putting you through. Now.",
    }
    bare = control_payload({"call_control": "transfer", "destination": "+14155550100"}, "")
    assert "content" not in bare


@pytest.mark.unit
async def test_an_unusable_control_url_fails_quietly() -> None:
    payload = {"type": "end-call"}
    assert not await send_control("call-1", "http://a..b/control/secret-token", payload)
