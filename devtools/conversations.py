"""Conversation tests per channel: YAML test cases played through the real connectors of a
running server, checked against what each customer actually receives.

The format follows Rasa Pro's end-to-end test cases (``test_cases:``, each a ``test_case:`` name
and ``steps:`` of ``user:`` and expected ``utter:`` / ``bot:``), plus the channel::

    test_cases:
      - test_case: order status, call then text
        channel: voice              # voice, sms, whatsapp or chat (default chat)
        never_twice: [utter_ask_order_number]   # responses the customer must not get twice
        steps:
          - user: "where is my order"
          - utter: utter_ask_order_number    # one of its variations, rendered for voice
          - user: "12345"
          - bot: "Order 1 2 3 4 5 has shipped..."   # the exact text the caller hears
          - user: "and the tracking number?"
            channel: sms                    # this step (and the next ones) by SMS
          - bot: "..."

A case can hand the customer to a person and back, as a support team would through the inbox
(its API, with an agent token signed with the server's ``INBOX_JWT_SECRET``)::

      - user: "i want to talk to a person"
        channel: sms
      - utter: utter_handoff_queued
      - user: "hello? anyone there?"
      - silent: true                     # the bot stands aside: the customer got nothing
      - agent: claim                     # claim, hand_back or resolve
      - agent_reply: "Hi, Dana here. Let me look into it."
        channel: chat                    # optional: the customer's last channel by default
      - bot: "Hi, Dana here. Let me look into it."   # what the customer got on that channel
      - agent: hand_back
      - utter: utter_handoff_returned    # the hand-back notice, on the customer's last channel

The agent is named by the case's ``agent_name`` (default ``Dana``); on SMS their replies start
with it ("Dana: …"), as the SMS renderer writes them.

Each case is one customer (a fresh phone number; on chat a signed-in site user with that
verified phone), so voice, SMS, WhatsApp and chat share one conversation, as for a real
customer. A customer's turn is sent as the channel's real client sends it: the ``openai`` SDK as
VAPI, a Twilio-signed webhook (replies inline as TwiML or, for slow turns, by REST at the Twilio
API the server uses, which must be the local fake), a WhatsApp message delivered by that fake
(so its 24-hour window opens, as at Twilio; replies with tappable options always come by REST),
a WebSocket with a JWT. The expected text is what the customer receives after rendering
(speech, SMS bodies, WhatsApp bodies in WhatsApp's formatting, chat markdown); ``{slot}`` in a
response's text matches any value. After each ``user:`` step the following ``bot:``/``utter:``
steps consume the turn's replies in order; replies left over are fine (as in Rasa's tests).

Run ``python -m devtools.conversations [files or folders]`` against ``make run``'s server (its
``.env`` secrets), or from tests with :func:`run_cases`. Every failing case is reported with a
diff per failing step, not only the first.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import re
import secrets
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from xml.etree import ElementTree

import httpx
import jwt
import websockets
import yaml

from connectors.inbox.auth import agent_token
from devtools.responses import ROOT, candidates, load_responses, render_for
from omnichannel.addresses import phone_address
from omnichannel.channels import CHAT, KINDS, SMS, VOICE, WHATSAPP
from omnichannel.identity import IdentityStore
from omnichannel.redis_client import conversation_key, redis_client
from omnichannel.settings import DEFAULT_INBOX_AUDIENCE
from testkit.twilio_webhook import WEBHOOK_PATH, signed_sms, whatsapp_form
from testkit.vapi_call import VapiCall

#: How long a turn's replies may take on any channel.
TURN_TIMEOUT = 30.0
#: After an SMS webhook answered with empty TwiML, how long replies by REST are waited for.
REST_REPLY_SECONDS = 15.0
_SPACES = re.compile(r"\s+")


class BadTestFile(ValueError):
    """A test file that does not follow the format; the message names the file and case."""


#: What a step does: the customer says, the bot (or agent) is expected to have said, the
#: customer got nothing, an agent acts or replies.
STEP_KINDS = ("user", "bot", "utter", "silent", "agent", "agent_reply")
_KINDS_TEXT = ", ".join(f"{kind}:" for kind in STEP_KINDS)
#: What an ``agent:`` step may do (the inbox's transitions).
AGENT_ACTIONS = ("claim", "hand_back", "resolve")
#: Steps that produce something the customer receives (the ``bot:``/``utter:`` after them match).
SENDING_STEPS = ("user", "agent", "agent_reply")


@dataclass(frozen=True)
class Step:
    kind: str  # one of STEP_KINDS
    value: str
    channel: Optional[str] = None


@dataclass(frozen=True)
class TestCase:
    name: str
    source: str
    channel: str
    steps: Sequence[Step]
    never_twice: Sequence[str] = ()
    #: The customer's phone (e.g. the owner of demo orders); None: a fresh number.
    phone: Optional[str] = None
    #: The name of the agent of ``agent:`` and ``agent_reply:`` steps.
    agent_name: str = "Dana"


def _step(raw: Any, where: str) -> Step:
    if not isinstance(raw, Mapping):
        raise BadTestFile(f"{where}: a step is a mapping ({_KINDS_TEXT})")
    kinds = [kind for kind in STEP_KINDS if kind in raw]
    unknown = set(raw) - {*STEP_KINDS, "channel"}
    if len(kinds) != 1 or unknown:
        raise BadTestFile(f"{where}: a step has exactly one of {_KINDS_TEXT} (and channel:)")
    kind = kinds[0]
    channel = raw.get("channel")
    if channel is not None and channel not in KINDS:
        raise BadTestFile(f"{where}: channel {channel!r} is not one of {', '.join(KINDS)}")
    if channel is not None and kind not in ("user", "agent_reply"):
        raise BadTestFile(
            f"{where}: only a user: step names a channel (the bot answers on it), and an "
            "agent_reply: (the agent sends on it)"
        )
    if kind == "agent" and raw[kind] not in AGENT_ACTIONS:
        raise BadTestFile(f"{where}: agent: is one of {', '.join(AGENT_ACTIONS)}")
    if kind == "agent_reply" and channel == VOICE:
        raise BadTestFile(f"{where}: an agent replies by sms or chat (no one calls out)")
    return Step(kind, str(raw[kind]), channel)


def load_cases(paths: Sequence[Path]) -> List[TestCase]:
    """The test cases of every YAML file given (folders: every ``*.yml`` in them)."""
    files: List[Path] = []
    for path in paths:
        files.extend(sorted(path.rglob("*.yml")) if path.is_dir() else [path])
    cases: List[TestCase] = []
    for path in files:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for raw in content.get("test_cases") or []:
            name = str(raw.get("test_case") or "")
            where = f"{path.name}: {name or '(unnamed case)'}"
            if not name:
                raise BadTestFile(f"{where}: every case needs a test_case: name")
            unknown = set(raw) - {
                "test_case",
                "channel",
                "steps",
                "never_twice",
                "phone",
                "agent_name",
            }
            if unknown:
                raise BadTestFile(f"{where}: unknown keys {', '.join(sorted(unknown))}")
            channel = raw.get("channel", CHAT)
            if channel not in KINDS:
                raise BadTestFile(f"{where}: channel {channel!r} is not one of {', '.join(KINDS)}")
            if not isinstance(raw.get("steps"), list) or not raw["steps"]:
                raise BadTestFile(f"{where}: steps: is a list of user:, bot: and utter: steps")
            steps = [_step(step, f"{where}, step {n}") for n, step in enumerate(raw["steps"], 1)]
            phone = raw.get("phone")
            cases.append(
                TestCase(
                    name,
                    str(path),
                    channel,
                    steps,
                    tuple(raw.get("never_twice") or ()),
                    str(phone) if phone else None,
                    str(raw.get("agent_name") or "Dana"),
                )
            )
    return cases


def normalised(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class Server:
    """Where the connectors run and the secrets their clients sign with."""

    base_url: str
    env: Mapping[str, str]

    @property
    def twilio_api(self) -> str:
        return self.env.get("TWILIO_API_BASE_URL", "")

    async def conversation_of(self, phone: str) -> Optional[str]:
        return await IdentityStore(redis_client(self.env["REDIS_URL"])).lookup(phone_address(phone))

    def agent_token(self, name: str) -> str:
        """A token as the host's SSO signs it for an agent called ``name``."""
        return agent_token(
            self.env["INBOX_JWT_SECRET"],
            f"conversation-test-{name.lower()}",
            name,
            audience=self.env.get("INBOX_JWT_AUDIENCE") or DEFAULT_INBOX_AUDIENCE,
        )

    async def inbox(self, path: str, token: str, body: Mapping[str, Any]) -> httpx.Response:
        """A call to the agent inbox's API, as an agent's page makes it."""
        async with httpx.AsyncClient(timeout=TURN_TIMEOUT) as client:
            return await client.post(
                f"{self.base_url}/webhooks/inbox/api/{path}",
                json=dict(body),
                headers={"Authorization": f"Bearer {token}"},
            )

    async def forget(self, phone: str) -> None:
        """Starts the phone's next contact in a new conversation (identity erasure), so a case
        with a fixed phone begins where a first-time customer would."""
        identity = IdentityStore(redis_client(self.env["REDIS_URL"]))
        conversation_id = await identity.lookup(phone_address(phone))
        if conversation_id is not None:
            await identity.forget(conversation_id)


# -- one customer on three channels ---------------------------------------------------------


@dataclass
class Customer:
    """One customer of a test case: a phone number, a call, a chat socket, texts."""

    server: Server
    phone: str = field(default_factory=lambda: f"+1415555{secrets.randbelow(10000):04d}")
    call: Optional[VapiCall] = None
    chat: Any = None
    greeting: str = ""
    #: Messages to each address (``+1…``, ``whatsapp:+1…``) already accounted for.
    seen: Dict[str, int] = field(default_factory=dict)

    async def say(self, channel: str, text: str) -> List[str]:
        """What the customer receives in answer to ``text`` on ``channel``."""
        if channel == VOICE:
            replies = await self._speak(text)
        elif channel == SMS:
            replies = await self._text(text)
        elif channel == WHATSAPP:
            replies = await self._whatsapp(text)
        else:
            replies = await self._type(text)
        await self._texts_since()
        return replies

    async def _texts_since(self) -> List[Tuple[str, str]]:
        """(channel, text) of the SMS and WhatsApp messages sent to the customer since last
        looked, which are then accounted for."""
        found: List[Tuple[str, str]] = []
        if not self.server.twilio_api:
            return found
        for channel, to in ((SMS, self.phone), (WHATSAPP, f"{WHATSAPP}:{self.phone}")):
            messages = await asyncio.to_thread(self._rest_messages, to)
            found += [(channel, _received(m)) for m in messages[self.seen.get(to, 0) :]]
            self.seen[to] = len(messages)
        return found

    async def unsolicited(self, wait: float = 0.0) -> List[Tuple[str, str]]:
        """(channel, text) of what reached the customer outside their turns (a notification
        from the shop): texts since last looked, and chat messages that arrive within ``wait``
        seconds on an open chat."""
        found = await self._texts_since()
        deadline = time.monotonic() + wait
        while self.chat is not None:
            try:
                left = max(0.05, deadline - time.monotonic())
                frame = json.loads(await asyncio.wait_for(self.chat.recv(), left))
            except asyncio.TimeoutError:
                break
            if frame["type"] == "message" and frame["message"]["role"] == "bot":
                found.append((CHAT, frame["message"].get("text") or ""))
                deadline = time.monotonic()  # take what is queued, then stop
        return found

    async def open_chat(self) -> List[Dict[str, Any]]:
        """Opens the chat (signed in with the customer's verified phone), as a tab left open;
        returns the history it showed (nothing when the tab is open already)."""
        if self.chat is not None:
            return []
        self.chat = await websockets.connect(
            self.server.base_url.replace("http", "ws", 1) + "/webhooks/webchat/ws"
        )
        token = jwt.encode(
            {
                "sub": f"conversation-test-{secrets.token_hex(6)}",
                "phone_number": self.phone,
                "phone_number_verified": True,
                "exp": int(time.time()) + 3600,
            },
            self.server.env["WEBCHAT_JWT_SECRET"],
            algorithm="HS256",
        )
        await self.chat.send(json.dumps({"type": "auth", "token": token}))
        history = await self._frame(lambda f: f["type"] == "history")
        return list(history.get("messages") or [])

    async def _speak(self, text: str) -> List[str]:
        if self.call is None:
            self.call = VapiCall(
                self.server.base_url, self.server.env["VAPI_SERVER_SECRET"], number=self.phone
            )
            answer = await self.call.assistant_request()
            self.greeting = (answer.get("assistant") or {}).get("firstMessage") or ""
        reply = await self.call.say(text)
        return [reply.text] if reply.text else []

    def _rest_messages(self, to: str) -> List[Dict[str, Any]]:
        with urllib.request.urlopen(self.server.twilio_api + "/fake/messages", timeout=5) as got:
            return [m for m in json.load(got) if m["to"] == to]

    async def _text(self, text: str) -> List[str]:
        before = len(await asyncio.to_thread(self._rest_messages, self.phone))
        sms = signed_sms(self.server.env, self.phone, text)
        async with httpx.AsyncClient(timeout=TURN_TIMEOUT) as client:
            answer = await client.post(
                self.server.base_url + sms.path, data=sms.form, headers=sms.headers
            )
        if answer.status_code != 200:
            return [f"(webhook answered HTTP {answer.status_code}: {answer.text[:100]})"]
        return await self._replies(answer.text, self.phone, before, sms.form["MessageSid"])

    async def _whatsapp(self, text: str) -> List[str]:
        """A WhatsApp message, delivered by the fake Twilio (which opens the window)."""
        to = f"whatsapp:{self.phone}"
        before = len(await asyncio.to_thread(self._rest_messages, to))
        form = whatsapp_form(self.server.env, self.phone, text)
        request = {
            "url": self.server.env["PUBLIC_BASE_URL"].rstrip("/") + WEBHOOK_PATH,
            "form": form,
        }
        async with httpx.AsyncClient(timeout=TURN_TIMEOUT) as client:
            delivered = await client.post(self.server.twilio_api + "/fake/inbound", json=request)
        answer = delivered.json()
        if answer["status"] != 200:
            return [f"(webhook answered HTTP {answer['status']}: {answer['body'][:100]})"]
        return await self._replies(answer["body"], to, before, form["MessageSid"])

    async def _replies(self, twiml: str, to: str, before: int, message_sid: str) -> List[str]:
        """A turn's replies: inline in the TwiML, else those sent by REST after ``before``
        (none when the turn, ``message_sid``'s, ended with nothing to say)."""
        inline = [m.text or "" for m in ElementTree.fromstring(twiml).findall("Message")]
        if inline:
            return inline
        if not await self._replies_follow(message_sid):
            return []
        deadline = time.monotonic() + REST_REPLY_SECONDS
        while time.monotonic() < deadline:
            found = (await asyncio.to_thread(self._rest_messages, to))[before:]
            if found:
                await asyncio.sleep(0.5)  # the turn's other parts, sent one after another
                later = (await asyncio.to_thread(self._rest_messages, to))[before:]
                return [_received(m) for m in later]
            await asyncio.sleep(0.2)
        return []

    async def _replies_follow(self, message_sid: str) -> bool:
        """Whether an SMS answered with an empty TwiML gets replies by REST: its turn item says
        so once done (a turn that ended within the inline budget with nothing to say, as while
        a person holds the conversation, did not)."""
        conversation_id = await self.server.conversation_of(self.phone)
        if conversation_id is None:
            return True
        key = conversation_key(conversation_id, "work", "sms_turn", message_sid)
        client = redis_client(self.server.env["REDIS_URL"])
        deadline = time.monotonic() + REST_REPLY_SECONDS
        while time.monotonic() < deadline:
            state, outcome = await client.hmget(key, "state", "outcome")
            if state == b"done":
                return bool(json.loads(outcome or b"{}").get("by_rest"))
            await asyncio.sleep(0.05)
        return True

    async def _type(self, text: str) -> List[str]:
        await self.open_chat()
        await self.chat.send(
            json.dumps({"type": "message", "id": secrets.token_hex(8), "text": text})
        )
        replies: List[str] = []
        while True:
            frame = await self._frame(lambda f: f["type"] in ("message", "typing", "error"))
            if frame["type"] == "error":
                replies.append(f"(error: {frame.get('message')})")
                return replies
            if frame["type"] == "typing" and not frame["on"]:
                return replies
            if frame["type"] == "message" and frame["message"]["role"] in ("bot", "agent"):
                replies.append(frame["message"].get("text") or "")

    async def _frame(self, wanted: Any) -> Dict[str, Any]:
        while True:
            frame = json.loads(await asyncio.wait_for(self.chat.recv(), TURN_TIMEOUT))
            if wanted(frame):
                return frame

    # -- a person from the team, through the inbox --------------------------------------------

    async def _mark(self, channel: str) -> int:
        """Where the customer's messages on ``channel`` stand now (SMS: how many were texted)."""
        if channel == SMS:
            return len(await asyncio.to_thread(self._rest_messages, self.phone))
        return 0

    async def _arrived(self, channel: str, mark: int) -> List[str]:
        """What reached the customer on ``channel`` since ``mark``: texts by SMS, or the next
        message in the chat (the newest of its history, when the chat was not open)."""
        if channel == SMS:
            deadline = time.monotonic() + REST_REPLY_SECONDS
            while time.monotonic() < deadline:
                found = (await asyncio.to_thread(self._rest_messages, self.phone))[mark:]
                if found:
                    return [m["body"] for m in found]
                await asyncio.sleep(0.1)
            return []
        if self.chat is None:
            shown = [m for m in await self.open_chat() if m["role"] in ("bot", "agent")]
            return [shown[-1].get("text") or ""] if shown else []
        frame = await self._frame(
            lambda f: f["type"] == "message" and f["message"]["role"] in ("bot", "agent")
        )
        return [frame["message"].get("text") or ""]

    async def _handoff(self, token: str) -> Tuple[str, Dict[str, Any]]:
        conversation_id = await self.server.conversation_of(self.phone) or ""
        answer = await self.server.inbox(
            "conversation", token, {"conversation_id": conversation_id}
        )
        return conversation_id, answer.json() if answer.status_code == 200 else {}

    async def agent_acts(self, action: str, agent_name: str) -> Tuple[List[str], Optional[str]]:
        """An agent claims, hands back or resolves the customer's hand-off; returns what the
        customer received (a hand-back's notice) and on which channel."""
        token = self.server.agent_token(agent_name)
        conversation_id, detail = await self._handoff(token)
        channel = (detail.get("reach") or {}).get("default") if action == "hand_back" else None
        mark = await self._mark(channel) if channel else 0
        answer = await self.server.inbox(action, token, {"conversation_id": conversation_id})
        if answer.status_code != 200:
            return [f"(inbox answered HTTP {answer.status_code}: {answer.text[:100]})"], None
        return (await self._arrived(channel, mark) if channel else []), channel

    async def agent_replies(
        self, text: str, channel: Optional[str], agent_name: str
    ) -> Tuple[List[str], Optional[str]]:
        """An agent answers from the inbox (on ``channel``, else the customer's last one);
        returns what the customer received and on which channel."""
        token = self.server.agent_token(agent_name)
        conversation_id, detail = await self._handoff(token)
        channel = channel or (detail.get("reach") or {}).get("default")
        if channel is None:
            return ["(the inbox knows no channel to reach the customer on)"], None
        mark = await self._mark(channel)
        answer = await self.server.inbox(
            "reply",
            token,
            {
                "conversation_id": conversation_id,
                "message_id": secrets.token_hex(8),
                "channel": channel,
                "text": text,
            },
        )
        if answer.status_code != 202:
            return [f"(inbox answered HTTP {answer.status_code}: {answer.text[:100]})"], channel
        return await self._arrived(channel, mark), channel

    async def close(self) -> None:
        if self.call is not None:
            await self.call.hang_up(summary="Conversation test call.")
            await self.call.aclose()
        if self.chat is not None:
            await self.chat.close()


def _received(message: Mapping[str, Any]) -> str:
    """A message sent by REST as its recipient sees it: the body, and the options it offered
    to tap (WhatsApp), after it in brackets."""
    options = message.get("options") or []
    return message["body"] + (f"\n[{' | '.join(options)}]" if options else "")


# -- expectations -----------------------------------------------------------------------------


def _pattern(text: str) -> str:
    """``text`` as a regex in which each ``{name}`` (a slot in a response, or anything a test
    leaves open, such as a date) matches any text; one that ends the text matches up to the end
    of its sentence."""
    pattern = re.sub(r"\\\{[^}]*\\\}", ".+?", re.escape(normalised(text)))
    if pattern.endswith(".+?"):
        pattern = pattern[: -len(".+?")] + r".+?(?:[.!?](?= |$)|$)"
    return pattern


def expected_forms(step: Step, channel: str, responses: Mapping[str, Any]) -> List[str]:
    """The texts a ``bot:`` or ``utter:`` step accepts on ``channel``, as regexes."""
    if step.kind == "bot":
        return [_pattern(step.value)]
    return [
        _pattern(render_for(channel, variation))
        for variation in candidates(responses.get(step.value) or [], channel)
    ]


@dataclass
class StepResult:
    number: int
    channel: str
    step: Step
    received: str
    failure: Optional[str] = None


@dataclass
class CaseResult:
    case: TestCase
    steps: List[StepResult] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def failures(self) -> List[StepResult]:
        return [result for result in self.steps if result.failure]

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures

    def report(self) -> str:
        """The case's failures as a readable diff per failing step."""
        lines = [f"FAILED {self.case.name} ({self.case.source})"]
        if self.error:
            lines.append(f"  {self.error}")
        for result in self.failures:
            lines.append(
                f"  step {result.number} ({result.step.kind}: {result.step.value!r}) on "
                f"{result.channel}: {result.failure}"
            )
            if result.step.kind == "bot":
                diff = difflib.ndiff([normalised(result.step.value)], [result.received])
                lines.extend(f"    {line}" for line in diff if not line.startswith("?"))
            else:
                lines.append(f"    received: {result.received!r}")
        return "\n".join(lines)


async def run_case(case: TestCase, server: Server, responses: Mapping[str, Any]) -> CaseResult:
    result = CaseResult(case)
    customer = Customer(server)
    if case.phone:
        customer.phone = case.phone
        await server.forget(case.phone)
    channel = case.channel
    #: The channel the customer last received something on (what bot:/utter: steps match).
    answered_on = channel
    remaining = ""
    received_all: List[str] = []
    try:
        for number, step in enumerate(case.steps, 1):
            if step.kind in SENDING_STEPS:
                if step.kind == "user":
                    channel = step.channel or channel
                    replies, answered_on = await customer.say(channel, step.value), channel
                elif step.kind == "agent":
                    replies, on = await customer.agent_acts(step.value, case.agent_name)
                    answered_on = on or answered_on
                else:
                    replies, on = await customer.agent_replies(
                        step.value, step.channel, case.agent_name
                    )
                    answered_on = on or answered_on
                received_all.extend(replies)
                remaining = normalised(" ".join(replies))
                result.steps.append(StepResult(number, answered_on, step, remaining))
                continue
            if step.kind == "silent":
                outcome = StepResult(number, answered_on, step, remaining)
                if remaining:
                    outcome.failure = "the customer received something (expected nothing)"
                result.steps.append(outcome)
                continue
            forms = expected_forms(step, answered_on, responses)
            outcome = StepResult(number, answered_on, step, remaining)
            if step.kind == "utter" and not forms:
                outcome.failure = f"no response {step.value} in the domain for {channel}"
            else:
                match = next((m for f in forms if (m := re.match(f"(?:{f})", remaining))), None)
                if match is None:
                    outcome.failure = (
                        "the customer did not receive this next"
                        if remaining
                        else "nothing (more) was received"
                    )
                else:
                    remaining = remaining[match.end() :].strip()
            result.steps.append(outcome)
    except Exception as error:  # noqa: BLE001 - one broken case must not hide the others
        result.error = f"{type(error).__name__}: {error}"
    finally:
        try:
            await customer.close()
        except Exception as error:  # noqa: BLE001
            result.error = result.error or f"closing the customer failed: {error!r}"
    for name in case.never_twice:
        forms = [
            form for kind in KINDS for form in expected_forms(Step("utter", name), kind, responses)
        ]
        hits = [text for text in received_all if any(re.search(f, normalised(text)) for f in forms)]
        if len(hits) > 1:
            result.steps.append(
                StepResult(
                    len(case.steps) + 1,
                    "all",
                    Step("utter", name),
                    " | ".join(hits),
                    f"received {len(hits)} times (never_twice)",
                )
            )
    return result


async def run_cases(
    cases: Sequence[TestCase], server: Server, domain: Path = ROOT / "domain.yml"
) -> List[CaseResult]:
    """Plays every case, one after another; returns every result (failed ones included)."""
    responses = load_responses(domain)
    return [await run_case(case, server, responses) for case in cases]


def summary(results: Sequence[CaseResult]) -> str:
    failed = [r for r in results if not r.passed]
    lines = [r.report() for r in failed]
    lines.append(f"{len(results) - len(failed)} of {len(results)} conversation tests passed")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from devtools.launcher import RASA_PORT, REDIS_PORT
    from testkit.local_env import local_settings

    parser = argparse.ArgumentParser(
        prog="python -m devtools.conversations", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("paths", nargs="*", type=Path, default=[ROOT / "tests" / "conversations"])
    parser.add_argument("--server", default=f"http://127.0.0.1:{RASA_PORT}")
    parser.add_argument("--domain", type=Path, default=ROOT / "domain.yml")
    arguments = parser.parse_args(argv)
    try:
        cases = load_cases(arguments.paths)
    except (BadTestFile, OSError, yaml.YAMLError) as error:
        print(error, file=sys.stderr)
        return 2
    env = {"REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}", **local_settings()}
    server = Server(arguments.server.rstrip("/"), env)
    results = asyncio.run(run_cases(cases, server, arguments.domain))
    print(summary(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
